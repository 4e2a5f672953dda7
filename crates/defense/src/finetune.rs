//! The finetune stage: train each pruned network B' (one per threshold reached; thresholds
//! that prune the same channels share one run) on the clean validation set, keeping the pruned
//! conv_3 channels exactly zero, and, unless `[finetune] unpruned = false`, the unpruned
//! network B with the same recipe, for the comparison the paper makes.

use crate::config::FinetuneConfig;
use crate::fingerprint::check_same_model;
use crate::models::{load_pruned, Manifest, ManifestEntry};
use crate::sweep::PruneSweep;
use crate::{Error, Result};
use formats::paths::{self, label, Split, Stage, WorkPaths};
use formats::source::Images;
use formats::weights::{derived_files, save_derived};
use formats::ModelFile;
use model::progress::Progress;
use model::train::{self, Checkpoint, Examples, FeatureShift, Fitted};
use model::weights::{Finetuned, Pruned};
use model::DeepIdWeights;
use rayon::prelude::*;
use serde::Serialize;
use std::path::PathBuf;

/// What the finetune stage reads and writes.
pub struct FinetuneFiles {
    pub model: PathBuf,
    /// Clean validation images.
    pub valid: PathBuf,
    /// The pruned networks and their sweep.
    pub prune_dir: PathBuf,
    pub output_dir: PathBuf,
}

impl FinetuneFiles {
    /// The files make gives the stage in the work folder `work`.
    pub fn in_work(work: &WorkPaths) -> Self {
        Self {
            model: work.model(),
            valid: work.dataset(Split::Valid),
            prune_dir: work.stage(Stage::Prune),
            output_dir: work.stage(Stage::Finetune),
        }
    }
}

/// One network to fine-tune and the files it becomes.
struct Job {
    /// `None` for the unpruned network.
    channels_pruned: Option<usize>,
    thresholds: Vec<f64>,
    source: PathBuf,
    outputs: Vec<PathBuf>,
}

impl Job {
    fn name(&self) -> String {
        match self.channels_pruned {
            Some(_) => {
                let t: Vec<String> = self.thresholds.iter().map(|t| label(*t)).collect();
                format!("threshold {} pt", t.join("/"))
            }
            None => "unpruned".to_string(),
        }
    }
}

/// One fine-tuning run and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Trained {
    pub name: String,
    pub thresholds_percent: Vec<f64>,
    pub channels_pruned: usize,
    pub models: Vec<PathBuf>,
    pub checkpoints: Vec<Checkpoint>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FinetuneSummary {
    pub models: Vec<Trained>,
    pub train_images: usize,
    pub holdout_images: usize,
    /// Images through forward, backward and optimiser step, per second of the training phase
    /// (all networks side by side, held-out scoring included).
    pub training_images_per_second: f64,
    /// Floating-point operations of the training, the held-out scoring and the frozen layers'
    /// passes ([`model::flops`]).
    pub work_flops: f64,
    pub manifest: PathBuf,
}

pub fn run(
    files: &FinetuneFiles,
    ft: &FinetuneConfig,
    progress: &dyn Progress,
) -> Result<FinetuneSummary> {
    let backdoored = DeepIdWeights::load(&files.model)?;
    let sweep_path = files.prune_dir.join(paths::PRUNE_SWEEP);
    let sweep = PruneSweep::read(&sweep_path)?;
    check_same_model(
        &sweep_path,
        &sweep.model_fingerprint,
        &backdoored.fingerprint(),
    )?;
    let out_dir = &files.output_dir;

    // Thresholds that prune the same number of channels prune the same network.
    let mut jobs: Vec<Job> = Vec::new();
    for hit in &sweep.hits {
        let Some(k) = hit.channels_pruned else {
            continue;
        };
        let out = out_dir.join(paths::finetuned_model_file(hit.threshold_percent));
        match jobs.iter_mut().find(|j| j.channels_pruned == Some(k)) {
            Some(j) => {
                j.thresholds.push(hit.threshold_percent);
                j.outputs.push(out);
            }
            None => jobs.push(Job {
                channels_pruned: Some(k),
                thresholds: vec![hit.threshold_percent],
                source: files
                    .prune_dir
                    .join(paths::pruned_model_file(hit.threshold_percent)),
                outputs: vec![out],
            }),
        }
    }
    if ft.unpruned {
        jobs.push(Job {
            channels_pruned: None,
            thresholds: Vec::new(),
            source: files.model.clone(),
            outputs: vec![out_dir.join(paths::FINETUNED_UNPRUNED)],
        });
    }
    let manifest = out_dir.join(paths::FINETUNE_MODELS);
    let outputs: Vec<PathBuf> = jobs
        .iter()
        .flat_map(|j| &j.outputs)
        .flat_map(|o| derived_files(o))
        .collect();
    formats::written::check_paths(
        &[
            ("the network", &files.model),
            ("the validation images", &files.valid),
            ("the prune sweep", &sweep_path),
        ],
        &outputs
            .iter()
            .map(|o| ("a fine-tuned network", o.as_path()))
            .chain([("the list of networks", manifest.as_path())])
            .collect::<Vec<_>>(),
    )?;
    let valid = Images::open(&files.valid, backdoored.classes())?.read_all()?;
    let data = Examples {
        labels: valid.labels.iter().map(|&l| l as u32).collect(),
        pixels: valid.pixels,
    };
    if data.len() < ft.min_valid_images() {
        return Err(Error::invalid(
            &files.valid,
            format!(
                "{} validation image(s); fine-tuning with hold-out {} needs at least {}",
                data.len(),
                ft.holdout,
                ft.min_valid_images()
            ),
        ));
    }
    let (train_set, holdout) = data.split(ft.holdout, ft.recipe.seed);
    if train_set.len() < ft.recipe.batch_size {
        tracing::warn!(
            "{} training images after holding out {}: fewer than finetune.batch_size ({}), so every step sees all of them",
            train_set.len(),
            holdout.len(),
            ft.recipe.batch_size
        );
    }
    let mut recipe = ft.recipe.clone();
    if ft.feature_shift > 0.0 {
        recipe.feature_shift = Some(FeatureShift {
            alpha: ft.feature_shift,
            head: backdoored.layers.output.clone(),
        });
    }

    let settings = serde_json::to_string(ft).expect("settings serialize");
    let backdoored_fingerprint = backdoored.fingerprint();
    let mut starts = Vec::new();
    for job in &jobs {
        let mut start = match job.channels_pruned {
            Some(k) => load_pruned(&job.source, &backdoored, &sweep.order[..k], "re-run prune")?,
            None => backdoored.clone(),
        };
        train::reinitialise(&mut start, &ft.reinit, ft.recipe.seed);
        starts.push(start);
    }
    // One pass through the frozen layers serves every network that agrees below the first
    // trained layer (B and B' do: pruning touches conv_3 alone).
    let frozen = starts
        .first()
        .and_then(|w| train::Frozen::new(w, &data, recipe.train_from));
    let batch = ft.recipe.batch_size.min(train_set.len());
    progress.start(
        &format!("fine-tuning {} network(s)", jobs.len()),
        (jobs.len() * ft.recipe.steps * batch) as u64,
    );
    // The networks train side by side; each one's steps are the same whatever the cores.
    let clock = std::time::Instant::now();
    let fitted: Vec<Result<Fitted>> = jobs
        .par_iter()
        .zip(&starts)
        .map(|(job, start)| {
            let name = job.name();
            let mut log = |c: &Checkpoint| {
                let line = format!(
                    "{name}: step {}/{}: loss {:.4}, training accuracy {:.2}%{}",
                    c.step,
                    ft.recipe.steps,
                    c.loss,
                    c.train_accuracy,
                    c.holdout_accuracy
                        .map(|a| format!(", held-out accuracy {a:.2}%"))
                        .unwrap_or_default()
                );
                progress.status(&line);
                tracing::info!("{line}");
            };
            train::fit(
                start,
                &train_set,
                (!holdout.is_empty()).then_some(&holdout),
                &recipe,
                start.pruned_channels(),
                frozen.as_ref(),
                &mut log,
                &|n| progress.advance(n as u64),
            )
            .map_err(|e| {
                let setting = format!("finetune.learning_rate (now {})", ft.recipe.learning_rate);
                Error::diverged(e, &name, setting)
            })
        })
        .collect();
    progress.finish();
    let training_s = clock.elapsed().as_secs_f64();
    let trained_images = jobs.len() * ft.recipe.steps * batch;
    tracing::info!(
        "{} network(s) trained in {training_s:.1} s ({:.0} images/s)",
        jobs.len(),
        trained_images as f64 / training_s
    );
    let mut trained = Vec::new();
    let mut work_flops = frozen
        .as_ref()
        .map_or(0.0, |f| f.work_flops(backdoored.classes()));
    for ((job, start), fitted) in jobs.iter().zip(&starts).zip(fitted) {
        let Fitted {
            weights: mut tuned,
            history,
            work_flops: flops,
        } = fitted?;
        work_flops += flops;
        let name = job.name();
        let channels = start.pruned_channels().to_vec();
        let from = file_name(&job.source);
        tuned.provenance.finetuned = Some(Finetuned {
            from,
            settings: settings.clone(),
        });
        let thresholds: Vec<Option<f64>> = match job.channels_pruned {
            Some(_) => job.thresholds.iter().map(|&t| Some(t)).collect(),
            None => vec![None],
        };
        for (threshold, out) in thresholds.iter().zip(&job.outputs) {
            tuned.provenance.pruned = Some(Pruned {
                channels: channels.clone(),
                threshold_percent: *threshold,
                backdoored: backdoored_fingerprint.clone(),
            });
            save_derived(&tuned, &backdoored, out)?;
        }
        trained.push(Trained {
            name,
            thresholds_percent: job.thresholds.clone(),
            channels_pruned: channels.len(),
            models: job.outputs.clone(),
            checkpoints: history,
        });
    }
    // Networks of settings no longer asked for go once the new ones are written.
    let keep: Vec<PathBuf> = jobs.iter().flat_map(|j| j.outputs.clone()).collect();
    formats::written::remove_stale(out_dir, paths::FINETUNED_PREFIX, &keep)?;
    let repaired: Vec<PathBuf> = keep.iter().map(|k| derived_files(k)[3].clone()).collect();
    formats::written::remove_stale(out_dir, paths::REPAIRED_PREFIX, &repaired)?;
    if !ft.unpruned {
        formats::written::remove_stale(out_dir, paths::FINETUNED_UNPRUNED_STEM, &[])?;
    }
    Manifest {
        settings: ft.clone(),
        train_images: train_set.len(),
        holdout_images: holdout.len(),
        models: trained
            .iter()
            .map(|t| ManifestEntry {
                thresholds_percent: t.thresholds_percent.clone(),
                channels_pruned: t.channels_pruned,
                models: t.models.iter().map(|o| file_name(o)).collect(),
                checkpoints: t.checkpoints.clone(),
            })
            .collect(),
    }
    .write(&manifest)?;
    Ok(FinetuneSummary {
        models: trained,
        train_images: train_set.len(),
        holdout_images: holdout.len(),
        training_images_per_second: trained_images as f64 / training_s.max(1e-9),
        work_flops,
        manifest,
    })
}

impl std::fmt::Display for FinetuneSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for m in &self.models {
            let last = m.checkpoints.last();
            let held_out = last
                .and_then(|c| c.holdout_accuracy)
                .map_or("n/a".into(), |a| format!("{a:.2}%"));
            for out in &m.models {
                writeln!(
                    f,
                    "{}: {} channels pruned, {} steps, held-out accuracy {held_out} -> {}",
                    m.name,
                    m.channels_pruned,
                    last.map_or(0, |c| c.step),
                    out.display()
                )?;
            }
        }
        write!(f, "-> {}", self.manifest.display())
    }
}

/// A path's last component, as the manifest and the provenance record files.
fn file_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}
