//! The evaluate stage's two tables, typed: `evaluate/sweep.parquet` (B' and G after every
//! pruning step) and `evaluate/summary.parquet` (one row per network kind). Each is written
//! and read here, and a read checks what the report relies on.

use formats::table::{Column, Table};
use formats::{Error, Result};
use serde::Serialize;
use std::path::Path;

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

/// One pruning step: B with its `channels_pruned` least active conv_3 channels removed.
#[derive(Debug, Clone, PartialEq)]
pub struct SweepStep {
    pub channels_pruned: usize,
    /// The channel removed at this step (none at step 0).
    pub pruned_channel: Option<usize>,
    pub valid_accuracy: f64,
    pub pruned: Scores,
    pub repaired: Scores,
}

/// `evaluate/sweep.parquet`: steps 0..=channels.
#[derive(Debug, Clone, PartialEq)]
pub struct EvaluateSweep {
    pub steps: Vec<SweepStep>,
}

/// What a summary row describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Backdoored,
    Pruned,
    Repaired,
    FinePruned,
    RepairedFinePruned,
    FineTuned,
    RepairedFineTuned,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Backdoored,
        Kind::Pruned,
        Kind::Repaired,
        Kind::FinePruned,
        Kind::RepairedFinePruned,
        Kind::FineTuned,
        Kind::RepairedFineTuned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Backdoored => "backdoored",
            Kind::Pruned => "pruned",
            Kind::Repaired => "repaired",
            Kind::FinePruned => "fine_pruned",
            Kind::RepairedFinePruned => "repaired_fine_pruned",
            Kind::FineTuned => "fine_tuned",
            Kind::RepairedFineTuned => "repaired_fine_tuned",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// G(B, X) for the network X this kind is a repair of.
    pub fn is_repaired(self) -> bool {
        matches!(
            self,
            Kind::Repaired | Kind::RepairedFinePruned | Kind::RepairedFineTuned
        )
    }

    /// Made at an accuracy-drop threshold of the sweep.
    pub fn has_threshold(self) -> bool {
        matches!(
            self,
            Kind::Pruned | Kind::Repaired | Kind::FinePruned | Kind::RepairedFinePruned
        )
    }

    /// A network of the sweep itself, whose scores are one of its steps.
    fn in_sweep(self) -> bool {
        matches!(self, Kind::Backdoored | Kind::Pruned | Kind::Repaired)
    }
}

/// One row of `summary.parquet` / `summary.csv`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryRow {
    pub network: Kind,
    pub threshold_percent: Option<f64>,
    pub channels_pruned: usize,
    pub valid_accuracy: Option<f64>,
    #[serde(flatten)]
    pub scores: Scores,
}

/// `evaluate/summary.parquet`: B first, then every network made from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub rows: Vec<SummaryRow>,
}

fn floats<T>(rows: &[T], f: impl Fn(&T) -> Option<f64>) -> Column {
    Column::Float(rows.iter().map(f).collect())
}

/// A column of percentages: each present value finite and within 0..=100.
fn percents(t: &Table, name: &str) -> Result<Vec<Option<f64>>> {
    let v = t.floats(name)?;
    if let Some((row, x)) = v
        .iter()
        .enumerate()
        .find_map(|(i, x)| x.filter(|x| !(0.0..=100.0).contains(x)).map(|x| (i, x)))
    {
        return Err(Error::invalid(
            &t.path,
            format!("`{name}` is {x} in row {row}, not a percentage"),
        ));
    }
    Ok(v)
}

/// A column of percentages without nulls.
fn full_percents(t: &Table, name: &str) -> Result<Vec<f64>> {
    percents(t, name)?
        .into_iter()
        .enumerate()
        .map(|(row, x)| {
            x.ok_or_else(|| Error::invalid(&t.path, format!("`{name}` is null in row {row}")))
        })
        .collect()
}

/// Optional percentage columns: all present or none.
fn optional_percents(t: &Table, name: &str) -> Result<Vec<Option<f64>>> {
    if t.columns.iter().any(|(n, _)| n == name) {
        percents(t, name)
    } else {
        Ok(vec![None; t.rows()])
    }
}

impl EvaluateSweep {
    /// Channels of conv_3, the last step's `channels_pruned`.
    pub fn channels(&self) -> usize {
        self.steps.len() - 1
    }

    pub fn to_table(&self) -> Table {
        let s = &self.steps;
        let mut t = Table::new()
            .with(
                "channels_pruned",
                Column::ints(s.iter().map(|s| s.channels_pruned as i32)),
            )
            .with(
                "pruned_channel",
                Column::Int(
                    s.iter()
                        .map(|s| s.pruned_channel.map(|c| c as i32))
                        .collect(),
                ),
            )
            .with(
                "fraction_pruned",
                Column::floats(s.iter().map(|s| self.fraction(s.channels_pruned))),
            )
            .with("valid_accuracy", floats(s, |s| Some(s.valid_accuracy)))
            .with(
                "pruned_clean_accuracy",
                floats(s, |s| Some(s.pruned.clean_test_accuracy)),
            )
            .with(
                "pruned_attack_success_rate",
                floats(s, |s| Some(s.pruned.attack_success_rate)),
            )
            .with(
                "repaired_clean_accuracy",
                floats(s, |s| Some(s.repaired.clean_test_accuracy)),
            )
            .with(
                "repaired_attack_success_rate",
                floats(s, |s| Some(s.repaired.attack_success_rate)),
            )
            .with("flagged_clean", floats(s, |s| s.repaired.flagged_clean))
            .with(
                "flagged_poisoned",
                floats(s, |s| s.repaired.flagged_poisoned),
            );
        if s.first()
            .is_some_and(|s| s.pruned.robust_accuracy.is_some())
        {
            t = t
                .with(
                    "pruned_robust_accuracy",
                    floats(s, |s| s.pruned.robust_accuracy),
                )
                .with(
                    "repaired_robust_accuracy",
                    floats(s, |s| s.repaired.robust_accuracy),
                );
        }
        t
    }

    fn fraction(&self, k: usize) -> f64 {
        k as f64 / self.channels() as f64
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        self.to_table().write(path)
    }

    /// Reads and checks: steps 0, 1, ..., n; the pruned channels a permutation of 0..n;
    /// every figure a percentage; the robust accuracies for every step or for none.
    pub fn read(path: &Path) -> Result<Self> {
        let t = Table::read(path)?;
        let bad = |m: String| Error::invalid(path, m);
        let n = t.rows();
        if n < 2 {
            return Err(bad(format!("has {n} steps; a sweep has at least 2")));
        }
        let steps = t.ints("channels_pruned")?;
        if let Some(k) = (0..n).find(|&k| steps[k] != k as i32) {
            return Err(bad(format!(
                "`channels_pruned` is {} in row {k}, expected {k}",
                steps[k]
            )));
        }
        let channel = match t.columns.iter().find(|(name, _)| name == "pruned_channel") {
            Some((_, Column::Int(v))) => v.clone(),
            _ => return Err(bad("no Int32 `pruned_channel` column".into())),
        };
        let mut seen = vec![false; n - 1];
        for (k, c) in channel.iter().enumerate() {
            let fresh = match (k, c) {
                (0, None) => true,
                (1.., Some(c)) => usize::try_from(*c)
                    .ok()
                    .and_then(|c| seen.get_mut(c))
                    .is_some_and(|s| !std::mem::replace(s, true)),
                _ => false,
            };
            if !fresh {
                return Err(bad(format!(
                    "`pruned_channel` in row {k} is {c:?}: the pruned channels must be a permutation of 0..{}, none at step 0",
                    n - 1
                )));
            }
        }
        let fraction = t.floats("fraction_pruned")?;
        if let Some(k) = (0..n)
            .find(|&k| fraction[k].is_none_or(|f| (f - k as f64 / (n - 1) as f64).abs() > 1e-9))
        {
            return Err(bad(format!(
                "`fraction_pruned` in row {k} is not {k}/{}",
                n - 1
            )));
        }
        let valid = full_percents(&t, "valid_accuracy")?;
        let [pc, pa, rc, ra] = [
            "pruned_clean_accuracy",
            "pruned_attack_success_rate",
            "repaired_clean_accuracy",
            "repaired_attack_success_rate",
        ]
        .map(|name| full_percents(&t, name));
        let (pc, pa, rc, ra) = (pc?, pa?, rc?, ra?);
        let flagged = [
            full_percents(&t, "flagged_clean")?,
            full_percents(&t, "flagged_poisoned")?,
        ];
        let robust = [
            optional_percents(&t, "pruned_robust_accuracy")?,
            optional_percents(&t, "repaired_robust_accuracy")?,
        ];
        if robust
            .iter()
            .flatten()
            .any(|r| r.is_some() != robust[0][0].is_some())
        {
            return Err(bad(
                "the robust accuracies must be given for every step or for none".into(),
            ));
        }
        let steps = (0..n)
            .map(|k| SweepStep {
                channels_pruned: k,
                pruned_channel: channel[k].map(|c| c as usize),
                valid_accuracy: valid[k],
                pruned: Scores {
                    clean_test_accuracy: pc[k],
                    attack_success_rate: pa[k],
                    robust_accuracy: robust[0][k],
                    flagged_clean: None,
                    flagged_poisoned: None,
                },
                repaired: Scores {
                    clean_test_accuracy: rc[k],
                    attack_success_rate: ra[k],
                    robust_accuracy: robust[1][k],
                    flagged_clean: Some(flagged[0][k]),
                    flagged_poisoned: Some(flagged[1][k]),
                },
            })
            .collect();
        Ok(Self { steps })
    }
}

const SUMMARY_SCORES: [&str; 5] = [
    "clean_test_accuracy",
    "attack_success_rate",
    "flagged_clean",
    "flagged_poisoned",
    "robust_accuracy",
];

impl Summary {
    pub fn to_table(&self) -> Table {
        let r = &self.rows;
        Table::new()
            .with(
                "network",
                Column::Text(r.iter().map(|r| Some(r.network.as_str().into())).collect()),
            )
            .with("threshold_percent", floats(r, |r| r.threshold_percent))
            .with(
                "channels_pruned",
                Column::ints(r.iter().map(|r| r.channels_pruned as i32)),
            )
            .with("valid_accuracy", floats(r, |r| r.valid_accuracy))
            .with(
                SUMMARY_SCORES[0],
                floats(r, |r| Some(r.scores.clean_test_accuracy)),
            )
            .with(
                SUMMARY_SCORES[1],
                floats(r, |r| Some(r.scores.attack_success_rate)),
            )
            .with(SUMMARY_SCORES[2], floats(r, |r| r.scores.flagged_clean))
            .with(SUMMARY_SCORES[3], floats(r, |r| r.scores.flagged_poisoned))
            .with(SUMMARY_SCORES[4], floats(r, |r| r.scores.robust_accuracy))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        self.to_table().write(path)
    }

    /// Reads and checks: known network kinds, B first, a threshold exactly where a kind
    /// has one, the "backdoor" shares exactly for repaired networks, percentages.
    pub fn read(path: &Path) -> Result<Self> {
        let t = Table::read(path)?;
        let bad = |row: usize, m: String| Error::invalid(path, format!("row {row}: {m}"));
        let names = t.texts("network")?;
        let thresholds = t.floats("threshold_percent")?;
        let channels = t.ints("channels_pruned")?;
        let valid = percents(&t, "valid_accuracy")?;
        let [clean, asr] = [SUMMARY_SCORES[0], SUMMARY_SCORES[1]].map(|n| full_percents(&t, n));
        let (clean, asr) = (clean?, asr?);
        let [fc, fp, robust] =
            [SUMMARY_SCORES[2], SUMMARY_SCORES[3], SUMMARY_SCORES[4]].map(|n| percents(&t, n));
        let (fc, fp, robust) = (fc?, fp?, robust?);
        let mut rows = Vec::with_capacity(t.rows());
        for i in 0..t.rows() {
            let name = names[i].as_deref().unwrap_or_default();
            let network = Kind::parse(name).ok_or_else(|| {
                bad(
                    i,
                    format!(
                        "`network` is {name:?}, not one of {}",
                        Kind::ALL.map(Kind::as_str).join(", ")
                    ),
                )
            })?;
            if (i == 0) != (network == Kind::Backdoored) {
                return Err(bad(
                    i,
                    "the backdoored network must be the first row, once".into(),
                ));
            }
            if network.has_threshold() != thresholds[i].is_some() {
                return Err(bad(
                    i,
                    format!(
                        "a {name} network must {}have a threshold",
                        if network.has_threshold() { "" } else { "not " }
                    ),
                ));
            }
            if network.is_repaired() != (fc[i].is_some() && fp[i].is_some()) {
                return Err(bad(
                    i,
                    format!("the flagged shares are for repaired networks only, and required there; {name} has {:?}, {:?}", fc[i], fp[i]),
                ));
            }
            let channels_pruned = usize::try_from(channels[i])
                .map_err(|_| bad(i, format!("`channels_pruned` is {}", channels[i])))?;
            rows.push(SummaryRow {
                network,
                threshold_percent: thresholds[i],
                channels_pruned,
                valid_accuracy: valid[i],
                scores: Scores {
                    clean_test_accuracy: clean[i],
                    attack_success_rate: asr[i],
                    robust_accuracy: robust[i],
                    flagged_clean: fc[i],
                    flagged_poisoned: fp[i],
                },
            });
        }
        if rows.is_empty() {
            return Err(Error::invalid(path, "has no rows"));
        }
        Ok(Self { rows })
    }

    /// The summary and the sweep must come from one evaluate run: every row within the
    /// sweep's channels, and the sweep's own networks (B, B', G) scored as in the sweep.
    pub fn check_against(&self, path: &Path, sweep: &EvaluateSweep) -> Result<()> {
        for (i, row) in self.rows.iter().enumerate() {
            let Some(step) = sweep.steps.get(row.channels_pruned) else {
                return Err(Error::invalid(
                    path,
                    format!(
                        "row {i}: {} channels pruned, but the sweep has {}; re-run evaluate",
                        row.channels_pruned,
                        sweep.channels()
                    ),
                ));
            };
            let expected = match row.network {
                Kind::Repaired => &step.repaired,
                _ => &step.pruned,
            };
            let same = row.scores.clean_test_accuracy == expected.clean_test_accuracy
                && row.scores.attack_success_rate == expected.attack_success_rate
                && row.valid_accuracy == Some(step.valid_accuracy);
            if row.network.in_sweep() && !same {
                return Err(Error::invalid(
                    path,
                    format!(
                        "row {i} ({}, {} channels pruned) disagrees with the sweep; the two come from different evaluate runs: re-run evaluate",
                        row.network.as_str(),
                        row.channels_pruned
                    ),
                ));
            }
        }
        Ok(())
    }
}
