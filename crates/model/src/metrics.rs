//! Scores, in percent, computed as the reference does (`np.mean(pred == label) * 100`).

/// Share of `predictions` equal to `labels`, in percent.
pub fn accuracy(predictions: &[u32], labels: &[i32]) -> f64 {
    let hits = predictions
        .iter()
        .zip(labels)
        .filter(|(p, l)| **p as i64 == **l as i64)
        .count();
    percent(hits, predictions.len())
}

/// `count` out of `total` in percent, rounded like numpy's mean of booleans times 100.
pub fn percent(count: usize, total: usize) -> f64 {
    count as f64 / total as f64 * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_like_numpy() {
        // 4 of 300 is what numpy prints as 1.3333333333333335.
        assert_eq!(percent(4, 300), 1.3333333333333335);
        assert_eq!(accuracy(&[1, 2, 3], &[1, 2, 0]), 66.66666666666666);
    }
}
