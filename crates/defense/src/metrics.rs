//! The repaired network G and how often it raises the backdoor label.

use model::metrics::percent;

/// The repaired network G(B, B'): B's class where B and B' agree, `backdoor` (the extra label
/// N) where they disagree.
pub fn repaired(b: &[u32], b_prime: &[u32], backdoor: u32) -> Vec<u32> {
    b.iter()
        .zip(b_prime)
        .map(|(x, y)| if x == y { *x } else { backdoor })
        .collect()
}

/// Share of images on which B and B' disagree (G answers "backdoor"), in percent.
pub fn flagged(b: &[u32], b_prime: &[u32]) -> f64 {
    percent(
        b.iter().zip(b_prime).filter(|(x, y)| x != y).count(),
        b.len(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repaired_flags_disagreement() {
        let g = repaired(&[1, 2, 3], &[1, 5, 3], 9);
        assert_eq!(g, [1, 9, 3]);
        assert_eq!(flagged(&[1, 2, 3], &[1, 5, 3]), 33.33333333333333);
    }
}
