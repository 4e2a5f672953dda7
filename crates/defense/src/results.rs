//! The evaluate stage's tables, typed: `evaluate/sweep.parquet` (B' and G after every
//! pruning step), `evaluate/summary.parquet` (one row per network kind) and
//! `evaluate/targets.parquet` (each of those networks' attack success per target label). Each
//! is written and read here, and a read checks what the report relies on.

use crate::{Error, Result};
use formats::table::{Column, Table};
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

fn kinds<T>(rows: &[T], f: impl Fn(&T) -> Kind) -> Column {
    Column::Text(rows.iter().map(|r| Some(f(r).as_str().into())).collect())
}

/// A network as people name it: its kind, and its threshold where it has one.
fn describe(network: Kind, threshold: Option<f64>) -> String {
    match threshold {
        Some(t) => format!("{} at {t} points", network.as_str()),
        None => network.as_str().into(),
    }
}

/// A row's `network` and `threshold_percent`: a known kind, with a threshold exactly where
/// the kind has one.
fn network(name: &Option<String>, threshold: Option<f64>) -> std::result::Result<Kind, String> {
    let name = name.as_deref().unwrap_or_default();
    let network = Kind::parse(name).ok_or_else(|| {
        format!(
            "`network` is {name:?}, not one of {}",
            Kind::ALL.map(Kind::as_str).join(", ")
        )
    })?;
    if network.has_threshold() != threshold.is_some() {
        return Err(format!(
            "a {name} network must {}have a threshold",
            if network.has_threshold() { "" } else { "not " }
        ));
    }
    Ok(network)
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
        Ok(self.to_table().write(path)?)
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
            .with("network", kinds(r, |r| r.network))
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
        Ok(self.to_table().write(path)?)
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
            let network = network(&names[i], thresholds[i]).map_err(|m| bad(i, m))?;
            let name = network.as_str();
            if (i == 0) != (network == Kind::Backdoored) {
                return Err(bad(
                    i,
                    "the backdoored network must be the first row, once".into(),
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

/// A network's attack success on the triggered images of one target label, in percent.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetScore {
    pub target: i32,
    /// Triggered images with this label.
    pub images: usize,
    pub attack_success_rate: f64,
}

/// One summary row's network, scored per target label.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkTargets {
    pub network: Kind,
    pub threshold_percent: Option<f64>,
    /// Every target label of the triggered set, ascending.
    pub targets: Vec<TargetScore>,
}

impl NetworkTargets {
    pub fn name(&self) -> String {
        describe(self.network, self.threshold_percent)
    }

    /// Attack success over all triggered images: the targets' figures weighted by their images.
    pub fn attack_success_rate(&self) -> f64 {
        let images: usize = self.targets.iter().map(|t| t.images).sum();
        let weighted: f64 = self
            .targets
            .iter()
            .map(|t| t.images as f64 * t.attack_success_rate)
            .sum();
        weighted / images as f64
    }
}

/// `evaluate/targets.parquet`: one row per summary row and target label, in the summary's
/// order, targets ascending within each network.
#[derive(Debug, Clone, PartialEq)]
pub struct Targets {
    pub networks: Vec<NetworkTargets>,
}

impl Targets {
    pub fn to_table(&self) -> Table {
        let r: Vec<(&NetworkTargets, &TargetScore)> = self
            .networks
            .iter()
            .flat_map(|n| n.targets.iter().map(move |t| (n, t)))
            .collect();
        Table::new()
            .with("network", kinds(&r, |(n, _)| n.network))
            .with(
                "threshold_percent",
                floats(&r, |(n, _)| n.threshold_percent),
            )
            .with("target", Column::ints(r.iter().map(|(_, t)| t.target)))
            .with(
                "images",
                Column::Int64(r.iter().map(|(_, t)| Some(t.images as i64)).collect()),
            )
            .with(
                SUMMARY_SCORES[1],
                floats(&r, |(_, t)| Some(t.attack_success_rate)),
            )
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        Ok(self.to_table().write(path)?)
    }

    /// Reads and checks: known network kinds with a threshold exactly where a kind has one,
    /// targets strictly ascending within each network, images > 0, percentages, and every
    /// network scored on the same images (the same targets and image counts).
    pub fn read(path: &Path) -> Result<Self> {
        let t = Table::read(path)?;
        let bad = |row: usize, m: String| Error::invalid(path, format!("row {row}: {m}"));
        let names = t.texts("network")?;
        let thresholds = t.floats("threshold_percent")?;
        let targets = t.ints("target")?;
        let images = t.int64s("images")?;
        let asr = full_percents(&t, SUMMARY_SCORES[1])?;
        let mut networks: Vec<NetworkTargets> = Vec::new();
        for i in 0..t.rows() {
            let network = network(&names[i], thresholds[i]).map_err(|m| bad(i, m))?;
            let score = TargetScore {
                target: targets[i],
                images: usize::try_from(images[i])
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| bad(i, format!("`images` is {}", images[i])))?,
                attack_success_rate: asr[i],
            };
            // A network's rows are consecutive; the next network starts where the key changes.
            match networks.last_mut() {
                Some(last)
                    if last.network == network && last.threshold_percent == thresholds[i] =>
                {
                    let previous = last.targets.last().map_or(i32::MIN, |t| t.target);
                    if score.target <= previous {
                        return Err(bad(
                            i,
                            format!(
                                "target {} after {previous}: the targets of a network must ascend",
                                score.target
                            ),
                        ));
                    }
                    last.targets.push(score);
                }
                _ => networks.push(NetworkTargets {
                    network,
                    threshold_percent: thresholds[i],
                    targets: vec![score],
                }),
            }
        }
        let Some(first) = networks.first() else {
            return Err(Error::invalid(path, "has no rows"));
        };
        let counts = |n: &NetworkTargets| -> Vec<(i32, usize)> {
            n.targets.iter().map(|t| (t.target, t.images)).collect()
        };
        if let Some(other) = networks.iter().find(|n| counts(n) != counts(first)) {
            return Err(Error::invalid(
                path,
                format!(
                    "{} has (target, images) {:?} but {} has {:?}: every network is scored on the same triggered images",
                    other.name(),
                    counts(other),
                    first.name(),
                    counts(first)
                ),
            ));
        }
        Ok(Self { networks })
    }

    /// The targets and the summary must come from one evaluate run: the summary's networks in
    /// its order, each with the summary's attack success as its images-weighted mean.
    pub fn check_against(&self, path: &Path, summary: &Summary) -> Result<()> {
        let rerun = |m: String| {
            Error::invalid(
                path,
                format!("{m}; the two come from different evaluate runs: re-run evaluate"),
            )
        };
        let (ours, theirs) = (self.networks.len(), summary.rows.len());
        if ours != theirs {
            return Err(rerun(format!("has {ours} networks, the summary {theirs}")));
        }
        for (i, (n, row)) in self.networks.iter().zip(&summary.rows).enumerate() {
            if (n.network, n.threshold_percent) != (row.network, row.threshold_percent) {
                return Err(rerun(format!(
                    "network {i} is {}, the summary's row {i} {}",
                    n.name(),
                    describe(row.network, row.threshold_percent)
                )));
            }
            let (mean, want) = (n.attack_success_rate(), row.scores.attack_success_rate);
            if (mean - want).abs() > 1e-9 {
                return Err(rerun(format!(
                    "the attack success of {} averages {mean}% over its targets, not the summary's {want}%",
                    n.name()
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A named way to break a table.
    type Case<'a, T> = (&'a str, &'a dyn Fn(&mut T));

    fn row(network: Kind, threshold: Option<f64>, asr: f64) -> SummaryRow {
        SummaryRow {
            network,
            threshold_percent: threshold,
            channels_pruned: threshold.map_or(0, |_| 5),
            valid_accuracy: None,
            scores: Scores {
                clean_test_accuracy: 90.0,
                attack_success_rate: asr,
                ..Scores::default()
            },
        }
    }

    fn scored(network: Kind, threshold: Option<f64>, asr: [f64; 2]) -> NetworkTargets {
        NetworkTargets {
            network,
            threshold_percent: threshold,
            targets: vec![
                TargetScore {
                    target: 3,
                    images: 4,
                    attack_success_rate: asr[0],
                },
                TargetScore {
                    target: 7,
                    images: 2,
                    attack_success_rate: asr[1],
                },
            ],
        }
    }

    /// B (3 of 4 and 1 of 2 triggered images sent to their target: 4 of 6 overall) and B' at
    /// 4 points (none, then 1 of 2: 1 of 6).
    fn run() -> (Summary, Targets) {
        let summary = Summary {
            rows: vec![
                row(Kind::Backdoored, None, 66.66666666666666),
                row(Kind::Pruned, Some(4.0), 16.666666666666664),
            ],
        };
        let targets = Targets {
            networks: vec![
                scored(Kind::Backdoored, None, [75.0, 50.0]),
                scored(Kind::Pruned, Some(4.0), [0.0, 50.0]),
            ],
        };
        (summary, targets)
    }

    fn column<'a>(t: &'a mut Table, name: &str) -> &'a mut Column {
        &mut t.columns.iter_mut().find(|(n, _)| n == name).unwrap().1
    }

    fn refused(e: Error, needle: &str) {
        let m = e.to_string();
        assert!(m.contains("targets.parquet") && m.contains(needle), "{m}");
    }

    #[test]
    fn targets_round_trip_and_agree_with_their_summary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.parquet");
        let (summary, targets) = run();
        assert_eq!(targets.networks[1].name(), "pruned at 4 points");
        assert_eq!(targets.networks[1].attack_success_rate(), 100.0 / 6.0);
        targets.write(&path).unwrap();
        let t = Table::read(&path).unwrap();
        assert_eq!(t.ints("target").unwrap(), [3, 7, 3, 7]);
        assert_eq!(t.int64s("images").unwrap(), [4, 2, 4, 2]);
        let back = Targets::read(&path).unwrap();
        assert_eq!(back, targets);
        back.check_against(&path, &summary).unwrap();

        // B' scored 1 of 4 on target 3: weighted, 2 of 6, not the summary's 1 of 6.
        let mut other = targets.clone();
        other.networks[1].targets[0].attack_success_rate = 25.0;
        refused(
            other.check_against(&path, &summary).unwrap_err(),
            "averages 33.33",
        );
        let mut other = targets.clone();
        other.networks[1].threshold_percent = Some(2.0);
        refused(
            other.check_against(&path, &summary).unwrap_err(),
            "network 1 is pruned at 2 points, the summary's row 1 pruned at 4 points",
        );
        let mut other = targets.clone();
        other.networks.pop();
        refused(
            other.check_against(&path, &summary).unwrap_err(),
            "has 1 networks, the summary 2",
        );
    }

    #[test]
    fn targets_that_break_their_rules_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.parquet");
        let (_, targets) = run();
        let cases: [Case<Table>; 5] = [
            ("row 1: target 3 after 3", &|t| {
                if let Column::Int(v) = column(t, "target") {
                    v[1] = Some(3);
                }
            }),
            ("row 3: `images` is 0", &|t| {
                if let Column::Int64(v) = column(t, "images") {
                    v[3] = Some(0);
                }
            }),
            ("not a percentage", &|t| {
                if let Column::Float(v) = column(t, "attack_success_rate") {
                    v[2] = Some(120.0);
                }
            }),
            ("row 2: a pruned network must have a threshold", &|t| {
                if let Column::Float(v) = column(t, "threshold_percent") {
                    v[2] = None;
                }
            }),
            (
                "every network is scored on the same triggered images",
                &|t| {
                    if let Column::Int64(v) = column(t, "images") {
                        v[2] = Some(5);
                    }
                },
            ),
        ];
        for (needle, edit) in cases {
            let mut t = targets.to_table();
            edit(&mut t);
            t.write(&path).unwrap();
            refused(Targets::read(&path).unwrap_err(), needle);
        }
    }
}
