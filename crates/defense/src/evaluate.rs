//! The evaluate stage: clean test accuracy and attack success rate of B, of B' after every
//! pruning step and at each threshold, of the fine-tuned networks, and of the repaired
//! G(B, B'), the latter per target label too; and the per-image mode that scores any pair of
//! networks on any dataset.

use crate::features::{extract_many, Features};
use crate::fingerprint::check_same_model;
use crate::metrics::{flagged, repaired};
use crate::models::finetuned;
use crate::results::{
    EvaluateSweep, Kind, NetworkTargets, Scores, Summary, SummaryRow, SweepStep, TargetScore,
    Targets,
};
use crate::sweep::PruneSweep;
use crate::Result;
use formats::paths::{self, Split, Stage, WorkPaths};
use formats::source::Images;
use formats::ModelFile;
use model::head::Head;
use model::metrics::accuracy;
use model::progress::Progress;
use model::trunk::{Trunk, Trunks};
use model::{DeepIdWeights, Network};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A labelled dataset's predictions by several networks.
pub struct Labelled<'a> {
    pub labels: &'a [i32],
    /// The identity behind each triggered image, where the data keeps it.
    pub true_labels: Option<&'a [i32]>,
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

/// Attack success per target label, ascending: the share of each label's triggered images
/// that the network sends to it. With several triggers, each with its own target, this is the
/// attack success of each trigger.
pub fn per_target(poisoned: &Labelled, poisoned_pred: &[u32]) -> Vec<TargetScore> {
    let targets: BTreeSet<i32> = poisoned.labels.iter().copied().collect();
    targets
        .into_iter()
        .map(|target| {
            let (pred, labels): (Vec<u32>, Vec<i32>) = poisoned_pred
                .iter()
                .zip(poisoned.labels)
                .filter(|(_, l)| **l == target)
                .map(|(p, l)| (*p, *l))
                .unzip();
            TargetScore {
                target,
                images: labels.len(),
                attack_success_rate: accuracy(&pred, &labels),
            }
        })
        .collect()
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

/// What the evaluate stage reads and writes.
pub struct EvaluateFiles {
    pub model: PathBuf,
    pub prune_sweep: PathBuf,
    pub test: PathBuf,
    pub poisoned_test: PathBuf,
    /// Where `finetune` wrote its networks and `models.json`.
    pub finetune_dir: PathBuf,
    pub output_dir: PathBuf,
}

impl EvaluateFiles {
    /// The files make gives the stage in the work folder `work`.
    pub fn in_work(work: &WorkPaths) -> Self {
        Self {
            model: work.model(),
            prune_sweep: work.prune_sweep(),
            test: work.dataset(Split::Test),
            poisoned_test: work.dataset(Split::PoisonedTest),
            finetune_dir: work.stage(Stage::Finetune),
            output_dir: work.stage(Stage::Evaluate),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct EvaluateSummary {
    pub summary: Vec<SummaryRow>,
    /// Floating-point operations of the trunks (shared layers once) and the heads
    /// ([`model::flops`]); the sweep's updates after each channel are not counted.
    pub work_flops: f64,
    /// Sweep, targets, summary.
    pub outputs: [PathBuf; 3],
}

fn labelled(f: &Features) -> Labelled<'_> {
    Labelled {
        labels: &f.labels,
        true_labels: f.true_labels.as_deref(),
    }
}

/// Every image of a dataset through several networks' trunks.
fn extract(
    nets: &[&Network],
    path: &Path,
    classes: usize,
    what: &str,
    progress: &dyn Progress,
) -> Result<Vec<Features>> {
    let images = Images::open(path, classes)?;
    progress.start(what, images.len() as u64);
    let f = extract_many(nets, images, &|n| progress.advance(n as u64))?;
    progress.finish();
    Ok(f)
}

pub fn run(files: &EvaluateFiles, progress: &dyn Progress) -> Result<EvaluateSummary> {
    let [sweep_out, targets_out, summary_out] =
        [paths::EVAL_SWEEP, paths::EVAL_TARGETS, paths::EVAL_SUMMARY]
            .map(|f| files.output_dir.join(f));
    formats::written::check_paths(
        &[
            ("the network", &files.model),
            ("the prune sweep", &files.prune_sweep),
            ("the test images", &files.test),
            ("the triggered test images", &files.poisoned_test),
            (
                "the fine-tuned networks' list",
                &files.finetune_dir.join(paths::FINETUNE_MODELS),
            ),
        ],
        &[
            ("the per-step scores", &sweep_out),
            ("the per-target scores", &targets_out),
            ("the summary", &summary_out),
        ],
    )?;
    let weights = DeepIdWeights::load(&files.model)?;
    let prune = PruneSweep::read(&files.prune_sweep)?;
    check_same_model(
        &files.prune_sweep,
        &prune.model_fingerprint,
        &weights.fingerprint(),
    )?;
    let classes = weights.classes();
    let backdoor = classes as u32;
    let net = Network::new(&weights);
    let tuned = finetuned(&files.finetune_dir, &prune, &weights)?;
    let tuned_nets: Vec<Network> = tuned.iter().map(|t| Network::new(&t.weights)).collect();
    // Networks with equal weights (thresholds that prune the same channels, so fine-tune the
    // same network) are scored once: `slot` is each fine-tuned network's place in `nets`.
    let mut nets: Vec<&Network> = vec![&net];
    let slot: Vec<usize> = tuned_nets
        .iter()
        .map(|n| {
            let same = |d: &&Network| d.input_scale == n.input_scale && d.params == n.params;
            nets.iter().position(same).unwrap_or_else(|| {
                nets.push(n);
                nets.len() - 1
            })
        })
        .collect();
    let clean_all = extract(&nets, &files.test, classes, "test", progress)?;
    let triggered_all = extract(&nets, &files.poisoned_test, classes, "poisoned", progress)?;
    let (clean, triggered) = (&clean_all[0], &triggered_all[0]);
    let work_flops = (clean.len() + triggered.len()) as f64
        * (Trunks::new(nets.iter().map(|n| Trunk::new(n)).collect()).flops_per_image()
            + nets.len() as f64 * model::flops::forward(model::flops::head(), classes));
    // Each scored network's classes on both sets (B's come from the sweep's step 0).
    let classified: Vec<(Vec<u32>, Vec<u32>)> = nets
        .iter()
        .zip(clean_all.iter().zip(&triggered_all))
        .skip(1)
        .map(|(n, (fc, fp))| {
            let head = Head::new(n);
            (head.classify(&fc.pool_3), head.classify(&fp.pool_3))
        })
        .collect();

    let head = Head::new(&net);
    progress.start("sweep", (clean.len() + triggered.len()) as u64);
    let clean_steps = head.sweep(&clean.pool_3, &prune.order, &|n| progress.advance(n as u64));
    let poisoned_steps = head.sweep(&triggered.pool_3, &prune.order, &|n| {
        progress.advance(n as u64)
    });
    progress.finish();

    let (c, p) = (labelled(clean), labelled(triggered));
    let b = (clean_steps[0].as_slice(), poisoned_steps[0].as_slice());
    let steps: Vec<_> = clean_steps
        .iter()
        .zip(&poisoned_steps)
        .map(|(cs, ps)| score_pair(&c, &p, b, (cs, ps), backdoor))
        .collect();

    let mut rows = vec![SummaryRow {
        network: Kind::Backdoored,
        threshold_percent: None,
        channels_pruned: 0,
        valid_accuracy: Some(prune.valid_accuracy[0]),
        scores: score(&c, b.0, &p, b.1),
    }];
    // Each row's network's answers on the triggered images, for its per-target figures.
    let mut answers = vec![b.1.to_vec()];
    for hit in &prune.hits {
        let Some(k) = hit.channels_pruned else {
            continue;
        };
        let pruned = &poisoned_steps[k];
        for (network, scores, pred) in [
            (Kind::Pruned, &steps[k].0, pruned.clone()),
            (Kind::Repaired, &steps[k].1, repaired(b.1, pruned, backdoor)),
        ] {
            rows.push(SummaryRow {
                network,
                threshold_percent: Some(hit.threshold_percent),
                channels_pruned: k,
                valid_accuracy: Some(prune.valid_accuracy[k]),
                scores: scores.clone(),
            });
            answers.push(pred);
        }
    }
    for (tuned, &k) in tuned.iter().zip(&slot) {
        let f_pred = match k {
            0 => (b.0.to_vec(), b.1.to_vec()),
            k => classified[k - 1].clone(),
        };
        let (fine, g) = score_pair(&c, &p, b, (&f_pred.0, &f_pred.1), backdoor);
        let kinds = match tuned.threshold {
            Some(_) => [Kind::FinePruned, Kind::RepairedFinePruned],
            None => [Kind::FineTuned, Kind::RepairedFineTuned],
        };
        let g_pred = repaired(b.1, &f_pred.1, backdoor);
        for ((network, scores), pred) in kinds.into_iter().zip([fine, g]).zip([f_pred.1, g_pred]) {
            rows.push(SummaryRow {
                network,
                threshold_percent: tuned.threshold,
                channels_pruned: tuned.channels_pruned,
                valid_accuracy: None,
                scores,
            });
            answers.push(pred);
        }
    }
    let targets = Targets {
        networks: rows
            .iter()
            .zip(&answers)
            .map(|(r, pred)| NetworkTargets {
                network: r.network,
                threshold_percent: r.threshold_percent,
                targets: per_target(&p, pred),
            })
            .collect(),
    };
    if targets.networks[0].targets.len() > 1 {
        for n in &targets.networks {
            let by_target: Vec<String> = n
                .targets
                .iter()
                .map(|t| format!("{} {:.2}%", t.target, t.attack_success_rate))
                .collect();
            tracing::info!(
                "{}: attack success by target: {}",
                n.name(),
                by_target.join(", ")
            );
        }
    }
    let sweep = EvaluateSweep {
        steps: steps
            .into_iter()
            .enumerate()
            .map(|(k, (pruned, repaired))| SweepStep {
                channels_pruned: k,
                pruned_channel: k.checked_sub(1).map(|i| prune.order[i]),
                valid_accuracy: prune.valid_accuracy[k],
                pruned,
                repaired,
            })
            .collect(),
    };
    sweep.write(&sweep_out)?;
    targets.write(&targets_out)?;
    // The summary goes last: it is what make takes as the stage's completion.
    let summary = Summary { rows };
    summary.write(&summary_out)?;
    Ok(EvaluateSummary {
        summary: summary.rows,
        work_flops,
        outputs: [sweep_out, targets_out, summary_out],
    })
}

impl std::fmt::Display for EvaluateSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for r in &self.summary {
            let threshold = r
                .threshold_percent
                .map(|t| format!("{t} points"))
                .unwrap_or_default();
            let flags = r
                .scores
                .flagged_poisoned
                .map(|f| format!(", flags {f:.2}% of triggered images"));
            writeln!(
                f,
                "{:<12} {threshold:>9} {:>2} channels: clean accuracy {:6.2}%, attack success {:6.2}%{}",
                r.network.as_str(),
                r.channels_pruned,
                r.scores.clean_test_accuracy,
                r.scores.attack_success_rate,
                flags.unwrap_or_default()
            )?;
        }
        let [sweep, targets, summary] = &self.outputs;
        write!(
            f,
            "-> {}, {}, {}",
            sweep.display(),
            targets.display(),
            summary.display()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attack_success_per_target() {
        // Two triggers: four images with target 3, three with target 7 (labels unsorted).
        let labels = [7, 3, 3, 7, 3, 7, 3];
        let poisoned = Labelled {
            labels: &labels,
            true_labels: None,
        };
        let pred = [7, 3, 0, 1, 3, 2, 3];
        let want = |target, images, attack_success_rate| TargetScore {
            target,
            images,
            attack_success_rate,
        };
        let per = per_target(&poisoned, &pred);
        assert_eq!(per, [want(3, 4, 75.0), want(7, 3, 33.33333333333333)]);
        // Weighted by their images, the targets' figures give the whole set's: 4 of 7.
        let whole = score(&poisoned, &pred, &poisoned, &pred).attack_success_rate;
        assert_eq!(whole, 57.14285714285714);
        let n = NetworkTargets {
            network: Kind::Backdoored,
            threshold_percent: None,
            targets: per,
        };
        assert!((n.attack_success_rate() - whole).abs() < 1e-12);
        // A network that sends every triggered image to target 7.
        assert_eq!(
            per_target(&poisoned, &[7; 7]),
            [want(3, 4, 0.0), want(7, 3, 100.0)]
        );
    }
}
