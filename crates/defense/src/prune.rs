//! The prune stage: remove conv_3 channels one at a time in profile order, record validation
//! accuracy after each step, and keep the pruned network B' at the first step that loses each
//! accuracy-drop threshold.

use crate::features::Features;
use crate::fingerprint::check_same_model;
use crate::profile::Profile;
use crate::sweep::{thresholds_reached, PruneSweep, ThresholdHit};
use crate::{Error, Result};
use formats::paths::{self, label, Stage, WorkPaths};
use formats::weights::{derived_files, save_derived};
use formats::ModelFile;
use model::head::Head;
use model::metrics::accuracy;
use model::progress::Progress;
use model::weights::Pruned;
use model::{DeepIdWeights, Network};
use serde::Serialize;
use std::path::PathBuf;

/// What the prune stage reads and writes.
pub struct PruneFiles {
    pub model: PathBuf,
    pub profile: PathBuf,
    /// The validation pool_3 activations `profile` saved.
    pub features: PathBuf,
    /// Where the sweep and the pruned networks go.
    pub output_dir: PathBuf,
}

impl PruneFiles {
    /// The files make gives the stage in the work folder `work`.
    pub fn in_work(work: &WorkPaths) -> Self {
        Self {
            model: work.model(),
            profile: work.activations(),
            features: work.valid_pool_3(),
            output_dir: work.stage(Stage::Prune),
        }
    }
}

/// A pruned network written for one threshold.
#[derive(Debug, Clone, Serialize)]
pub struct PrunedModel {
    pub threshold_percent: f64,
    pub channels_pruned: usize,
    pub valid_accuracy: f64,
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct PruneSummary {
    pub valid_accuracy_unpruned: f64,
    /// Accuracy after pruning every channel.
    pub valid_accuracy_all_pruned: f64,
    pub thresholds: Vec<ThresholdHit>,
    pub models: Vec<PrunedModel>,
    pub steps: usize,
    /// Floating-point operations of the head's first pass over the validation images
    /// ([`model::flops`]); the sweep's updates after each channel, which depend on the data,
    /// are not counted, so this is a lower bound.
    pub work_flops: f64,
    pub output: PathBuf,
}

/// The profile and the activations must come from one profile run: the activations give
/// the profile's channel means (to rounding, as the sums run in another order).
fn check_same_images(files: &PruneFiles, profile: &Profile, features: &Features) -> Result<()> {
    let means = features.pool_3_mean();
    let differs = |(a, b): (&f64, &f64)| (a - b).abs() > 1e-9 * a.abs().max(b.abs()).max(1e-6);
    match means.iter().zip(&profile.pool_3_mean).position(differs) {
        Some(c) => Err(Error::invalid(
            &files.features,
            format!(
                "its activations give channel {c} a mean of {}, the profile {} says {}; the two come from different profile runs: re-run profile",
                means[c],
                files.profile.display(),
                profile.pool_3_mean[c]
            ),
        )),
        None => Ok(()),
    }
}

pub fn run(
    files: &PruneFiles,
    thresholds: &[f64],
    progress: &dyn Progress,
) -> Result<PruneSummary> {
    let out = &files.output_dir;
    let sweep_out = out.join(paths::PRUNE_SWEEP);
    let model_path = |t| out.join(paths::pruned_model_file(t));
    let models: Vec<PathBuf> = thresholds
        .iter()
        .flat_map(|&t| derived_files(&model_path(t)))
        .collect();
    formats::written::check_paths(
        &[
            ("the network", &files.model),
            ("the channel profile", &files.profile),
            ("the pool_3 activations", &files.features),
        ],
        &std::iter::once(("the prune sweep", sweep_out.as_path()))
            .chain(models.iter().map(|m| ("a pruned network", m.as_path())))
            .collect::<Vec<_>>(),
    )?;
    let weights = DeepIdWeights::load(&files.model)?;
    let fingerprint = weights.fingerprint();
    let profile = Profile::read(&files.profile)?;
    check_same_model(&files.profile, &profile.model_fingerprint, &fingerprint)?;
    let features = Features::load(&files.features, &fingerprint, weights.classes())?;
    if features.is_empty() {
        return Err(Error::invalid(
            &files.features,
            "the validation set is empty",
        ));
    }
    check_same_images(files, &profile, &features)?;

    let network = Network::new(&weights);
    let head = Head::new(&network);
    progress.start("prune", features.len() as u64);
    let steps = head.sweep(&features.pool_3, &profile.order, &|n| {
        progress.advance(n as u64)
    });
    progress.finish();
    let valid_accuracy: Vec<f64> = steps
        .iter()
        .map(|p| accuracy(p, &features.labels))
        .collect();
    let hits = thresholds_reached(&valid_accuracy, thresholds);

    let keep: Vec<PathBuf> = hits
        .iter()
        .filter(|h| h.channels_pruned.is_some())
        .map(|h| model_path(h.threshold_percent))
        .collect();
    formats::written::remove_stale(out, paths::PRUNED_PREFIX, &keep)?;
    let repaired: Vec<PathBuf> = keep.iter().map(|k| derived_files(k)[3].clone()).collect();
    formats::written::remove_stale(out, paths::REPAIRED_PREFIX, &repaired)?;
    let mut models = Vec::new();
    for hit in &hits {
        let Some(k) = hit.channels_pruned else {
            tracing::warn!(
                "threshold {} points never reached: pruning every channel leaves validation accuracy at {:.2}% (from {:.2}%)",
                label(hit.threshold_percent),
                valid_accuracy.last().copied().unwrap_or_default(),
                valid_accuracy[0]
            );
            continue;
        };
        let channels = &profile.order[..k];
        let mut pruned = weights.clone();
        pruned.prune_conv3(channels);
        pruned.provenance.pruned = Some(Pruned {
            channels: channels.to_vec(),
            threshold_percent: Some(hit.threshold_percent),
            backdoored: fingerprint.clone(),
        });
        let path = model_path(hit.threshold_percent);
        save_derived(&pruned, &weights, &path)?;
        models.push(PrunedModel {
            threshold_percent: hit.threshold_percent,
            channels_pruned: k,
            valid_accuracy: valid_accuracy[k],
            path,
        });
    }
    let sweep = PruneSweep {
        order: profile.order,
        valid_accuracy,
        hits,
        model_fingerprint: fingerprint,
    };
    sweep.write(&sweep_out)?;
    Ok(PruneSummary {
        valid_accuracy_unpruned: sweep.valid_accuracy[0],
        valid_accuracy_all_pruned: sweep.valid_accuracy.last().copied().unwrap_or_default(),
        thresholds: sweep.hits,
        models,
        steps: sweep.order.len(),
        work_flops: features.len() as f64
            * model::flops::forward(model::flops::head(), weights.classes()),
        output: sweep_out,
    })
}

impl std::fmt::Display for PruneSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for m in &self.models {
            writeln!(
                f,
                "threshold {} points: {} channels pruned, validation accuracy {:.2}% -> {}",
                formats::paths::label(m.threshold_percent),
                m.channels_pruned,
                m.valid_accuracy,
                m.path.display()
            )?;
        }
        write!(f, "{} steps -> {}", self.steps, self.output.display())
    }
}
