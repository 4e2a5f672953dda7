//! Scoring B, B' and the repaired G(B, B') on clean and triggered test data.

use crate::metrics::{accuracy, flagged, repaired};
use crate::table::{Column, Table};
use serde::Serialize;

/// A labelled dataset's predictions by several networks.
pub struct Labelled<'a> {
    pub labels: &'a [i32],
    /// The identity behind each triggered image, where the data keeps it.
    pub true_labels: Option<&'a [i32]>,
}

/// The figures of one network, in percent.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Scores {
    pub clean_test_accuracy: f64,
    pub attack_success_rate: f64,
    /// Share of triggered images classified as their true identity.
    pub robust_accuracy: Option<f64>,
    /// For repaired networks: share of clean / triggered images answered "backdoor".
    pub flagged_clean: Option<f64>,
    pub flagged_poisoned: Option<f64>,
}

/// Scores a network from its predictions on the clean and the triggered test sets.
pub fn score(
    clean: &Labelled,
    clean_pred: &[u32],
    poisoned: &Labelled,
    poisoned_pred: &[u32],
) -> Scores {
    Scores {
        clean_test_accuracy: accuracy(clean_pred, clean.labels),
        attack_success_rate: accuracy(poisoned_pred, poisoned.labels),
        robust_accuracy: poisoned.true_labels.map(|t| accuracy(poisoned_pred, t)),
        flagged_clean: None,
        flagged_poisoned: None,
    }
}

/// B' and G(B, B') from the predictions of B and B' on both sets.
pub fn score_pair(
    clean: &Labelled,
    poisoned: &Labelled,
    b: (&[u32], &[u32]),
    b_prime: (&[u32], &[u32]),
    backdoor: u32,
) -> (Scores, Scores) {
    let pruned = score(clean, b_prime.0, poisoned, b_prime.1);
    let g_clean = repaired(b.0, b_prime.0, backdoor);
    let g_poisoned = repaired(b.1, b_prime.1, backdoor);
    let mut g = score(clean, &g_clean, poisoned, &g_poisoned);
    g.flagged_clean = Some(flagged(b.0, b_prime.0));
    g.flagged_poisoned = Some(flagged(b.1, b_prime.1));
    (pruned, g)
}

/// One row of `summary.parquet` / `summary.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    /// `backdoored`, `pruned`, `repaired`, `fine_pruned`, `repaired_fine_pruned`.
    pub network: String,
    pub threshold_percent: Option<f64>,
    pub channels_pruned: usize,
    pub valid_accuracy: Option<f64>,
    #[serde(flatten)]
    pub scores: Scores,
}

pub fn summary_table(rows: &[SummaryRow]) -> Table {
    let col = |f: &dyn Fn(&SummaryRow) -> Option<f64>| Column::Float(rows.iter().map(f).collect());
    Table::new()
        .with(
            "network",
            Column::Text(rows.iter().map(|r| Some(r.network.clone())).collect()),
        )
        .with("threshold_percent", col(&|r| r.threshold_percent))
        .with(
            "channels_pruned",
            Column::ints(rows.iter().map(|r| r.channels_pruned as i32)),
        )
        .with("valid_accuracy", col(&|r| r.valid_accuracy))
        .with(
            "clean_test_accuracy",
            col(&|r| Some(r.scores.clean_test_accuracy)),
        )
        .with(
            "attack_success_rate",
            col(&|r| Some(r.scores.attack_success_rate)),
        )
        .with("flagged_clean", col(&|r| r.scores.flagged_clean))
        .with("flagged_poisoned", col(&|r| r.scores.flagged_poisoned))
        .with("robust_accuracy", col(&|r| r.scores.robust_accuracy))
}

/// Per-step columns of `evaluate/sweep.parquet`.
pub fn sweep_table(order: &[usize], valid_accuracy: &[f64], steps: &[(Scores, Scores)]) -> Table {
    let f =
        |g: &dyn Fn(&(Scores, Scores)) -> Option<f64>| Column::Float(steps.iter().map(g).collect());
    let mut t = Table::new()
        .with("channels_pruned", Column::ints(0..steps.len() as i32))
        .with(
            "pruned_channel",
            Column::Int(
                std::iter::once(None)
                    .chain(order.iter().map(|&c| Some(c as i32)))
                    .collect(),
            ),
        )
        .with(
            "fraction_pruned",
            Column::floats((0..steps.len()).map(|k| k as f64 / order.len() as f64)),
        )
        .with(
            "valid_accuracy",
            Column::floats(valid_accuracy.iter().copied()),
        )
        .with(
            "pruned_clean_accuracy",
            f(&|s| Some(s.0.clean_test_accuracy)),
        )
        .with(
            "pruned_attack_success_rate",
            f(&|s| Some(s.0.attack_success_rate)),
        )
        .with(
            "repaired_clean_accuracy",
            f(&|s| Some(s.1.clean_test_accuracy)),
        )
        .with(
            "repaired_attack_success_rate",
            f(&|s| Some(s.1.attack_success_rate)),
        )
        .with("flagged_clean", f(&|s| s.1.flagged_clean))
        .with("flagged_poisoned", f(&|s| s.1.flagged_poisoned));
    if steps.first().is_some_and(|s| s.0.robust_accuracy.is_some()) {
        t = t
            .with("pruned_robust_accuracy", f(&|s| s.0.robust_accuracy))
            .with("repaired_robust_accuracy", f(&|s| s.1.robust_accuracy));
    }
    t
}
