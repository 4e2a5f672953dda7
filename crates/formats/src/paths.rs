//! Where each stage writes under the work folder: the file contract between stages.

use std::fmt;
use std::path::{Path, PathBuf};

/// The three datasets of a fine-pruning run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Clean validation data: the defender's only clean data.
    Valid,
    Test,
    /// Triggered test images labelled with the attack target.
    PoisonedTest,
}

impl Split {
    pub fn name(self) -> &'static str {
        match self {
            Split::Valid => "valid",
            Split::Test => "test",
            Split::PoisonedTest => "poisoned_test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Paths below the work folder.
#[derive(Debug, Clone)]
pub struct WorkPaths {
    pub dir: PathBuf,
}

impl WorkPaths {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    fn at(&self, stage: &str, file: impl AsRef<Path>) -> PathBuf {
        self.dir.join(stage).join(file)
    }

    pub fn dataset(&self, split: Split) -> PathBuf {
        self.at("ingest", dataset_file(split))
    }

    pub fn model(&self) -> PathBuf {
        self.at("ingest", INGEST_MODEL)
    }

    pub fn activations(&self) -> PathBuf {
        self.at("profile", "activations.parquet")
    }

    pub fn valid_pool_3(&self) -> PathBuf {
        self.at("profile", "valid_pool_3.safetensors")
    }

    pub fn prune_sweep(&self) -> PathBuf {
        self.at("prune", PRUNE_SWEEP)
    }

    /// A stage's output folder.
    pub fn stage(&self, stage: &str) -> PathBuf {
        self.dir.join(stage)
    }

    pub fn eval_sweep(&self) -> PathBuf {
        self.at("evaluate", EVAL_SWEEP)
    }

    pub fn eval_summary(&self) -> PathBuf {
        self.at("evaluate", EVAL_SUMMARY)
    }
}

/// The ingest stage's image table of `split`.
pub fn dataset_file(split: Split) -> String {
    format!("{split}.parquet")
}

/// The ingest stage's copy of B (the file make tracks, so written last).
pub const INGEST_MODEL: &str = "model.safetensors";

/// The prune stage's accuracy after every step (the file make tracks, so written last).
pub const PRUNE_SWEEP: &str = "sweep.parquet";

/// The finetune stage's list of the networks it trained (the file make tracks).
pub const FINETUNE_MODELS: &str = "models.json";

/// The scan stage's one row per network (the file make tracks, so written last).
pub const SCAN_SUMMARY: &str = "summary.parquet";

/// The evaluate stage's files: B' and G after every pruning step, attack success per target
/// label, and one row per network (the file make tracks, so written last).
pub const EVAL_SWEEP: &str = "sweep.parquet";
pub const EVAL_TARGETS: &str = "targets.parquet";
pub const EVAL_SUMMARY: &str = "summary.parquet";

/// How a threshold appears in file names: `2` for 2.0, `2.5` for 2.5.
pub fn label(threshold: f64) -> String {
    format!("{threshold}")
}

pub const PRUNED_PREFIX: &str = "bd_net_prime_";
pub const FINETUNED_PREFIX: &str = "bd_net_fineprune_";

pub fn pruned_model_file(threshold: f64) -> String {
    format!(
        "{PRUNED_PREFIX}{}_percent_threshold.safetensors",
        label(threshold)
    )
}

/// The unpruned network fine-tuned with the same recipe (the comparison without pruning).
pub const FINETUNED_UNPRUNED: &str = "bd_net_finetuned.safetensors";
/// Its name without extension: the stem of its safetensors and Keras files.
pub const FINETUNED_UNPRUNED_STEM: &str = "bd_net_finetuned";

pub fn finetuned_model_file(threshold: f64) -> String {
    format!(
        "{FINETUNED_PREFIX}{}_percent_threshold.safetensors",
        label(threshold)
    )
}

/// The folders the stages write under the work folder (`config` holds make's stamps).
pub const STAGE_DIRS: [&str; 7] = [
    "config", "ingest", "profile", "prune", "finetune", "scan", "evaluate",
];

/// The files the report stage writes.
pub const REPORT_FILES: [&str; 6] = [
    "performance.csv",
    "sweep.csv",
    "summary.csv",
    "targets.csv",
    "plot.png",
    "plot.svg",
];
