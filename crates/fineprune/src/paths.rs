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
    pub const ALL: [Split; 3] = [Split::Valid, Split::Test, Split::PoisonedTest];

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
        self.at("ingest", format!("{split}.parquet"))
    }

    pub fn model(&self) -> PathBuf {
        self.at("ingest", "model.safetensors")
    }

    pub fn activations(&self) -> PathBuf {
        self.at("profile", "activations.parquet")
    }

    pub fn prune_sweep(&self) -> PathBuf {
        self.at("prune", "sweep.parquet")
    }

    pub fn pruned_model(&self, threshold: f64) -> PathBuf {
        self.at(
            "prune",
            format!(
                "bd_net_prime_{}_percent_threshold.safetensors",
                label(threshold)
            ),
        )
    }

    pub fn finetuned_model(&self, threshold: f64) -> PathBuf {
        self.at(
            "finetune",
            format!(
                "bd_net_fineprune_{}_percent_threshold.safetensors",
                label(threshold)
            ),
        )
    }

    pub fn eval_sweep(&self) -> PathBuf {
        self.at("evaluate", "sweep.parquet")
    }

    pub fn eval_summary(&self) -> PathBuf {
        self.at("evaluate", "summary.parquet")
    }
}

/// How a threshold appears in file names: `2` for 2.0, `2.5` for 2.5.
pub fn label(threshold: f64) -> String {
    format!("{threshold}")
}
