//! The file contract between the stages: which stages there are, what each reads and writes,
//! and where under the work folder. [`Stage`] is the one definition of the stage graph: the
//! Makefile's rules are checked against it (`tests/architecture.rs`), the zoo workflow runs the
//! jobs `pipeline zoo-plan` derives from it, and `pipeline clean` empties its folders.

use serde::{Deserialize, Serialize};
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

/// A stage of the pipeline: one binary, one folder, one file that marks it done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    /// The built-in synthetic benchmark: writes the run's inputs (only without user data).
    Synth,
    Ingest,
    Profile,
    Prune,
    Finetune,
    Scan,
    Evaluate,
    Report,
}

impl Stage {
    /// In the order make runs them.
    pub const ALL: [Stage; 8] = [
        Stage::Synth,
        Stage::Ingest,
        Stage::Profile,
        Stage::Prune,
        Stage::Finetune,
        Stage::Scan,
        Stage::Evaluate,
        Stage::Report,
    ];

    /// Its binary's name, which is also its folder's under the work folder.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Synth => "synth",
            Stage::Ingest => "ingest",
            Stage::Profile => "profile",
            Stage::Prune => "prune",
            Stage::Finetune => "finetune",
            Stage::Scan => "scan",
            Stage::Evaluate => "evaluate",
            Stage::Report => "report",
        }
    }

    /// The stages whose files it reads (ingest reads the run's inputs, which synth writes
    /// only in the synthetic mode).
    pub fn reads(self) -> &'static [Stage] {
        match self {
            Stage::Synth | Stage::Ingest => &[],
            Stage::Profile => &[Stage::Ingest],
            Stage::Prune => &[Stage::Profile],
            Stage::Finetune => &[Stage::Prune],
            Stage::Scan | Stage::Evaluate => &[Stage::Prune, Stage::Finetune],
            Stage::Report => &[Stage::Scan, Stage::Evaluate],
        }
    }

    /// The `pipeline.toml` tables it depends on (each stamped under `<work>/config/`).
    pub fn tables(self) -> &'static [&'static str] {
        match self {
            Stage::Synth => &["synth", "model"],
            Stage::Ingest => &["data", "model"],
            Stage::Profile => &["profile"],
            Stage::Prune => &["prune"],
            Stage::Finetune => &["finetune"],
            Stage::Scan => &["scan"],
            Stage::Evaluate => &["evaluate"],
            Stage::Report => &["work"],
        }
    }

    /// The file it writes last, so that its presence means the stage finished: relative to
    /// the stage's folder (the reports folder for `report`). None for synth, whose outputs
    /// are the run's inputs.
    pub fn done_file(self) -> Option<&'static str> {
        match self {
            Stage::Synth => None,
            Stage::Ingest => Some(INGEST_MODEL),
            Stage::Profile => Some(PROFILE_ACTIVATIONS),
            Stage::Prune => Some(PRUNE_SWEEP),
            Stage::Finetune => Some(FINETUNE_MODELS),
            Stage::Scan => Some(SCAN_SUMMARY),
            Stage::Evaluate => Some(EVAL_SUMMARY),
            Stage::Report => Some(REPORT_SUMMARY),
        }
    }
}

impl fmt::Display for Stage {
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

    fn at(&self, stage: Stage, file: impl AsRef<Path>) -> PathBuf {
        self.stage(stage).join(file)
    }

    pub fn dataset(&self, split: Split) -> PathBuf {
        self.at(Stage::Ingest, dataset_file(split))
    }

    pub fn model(&self) -> PathBuf {
        self.at(Stage::Ingest, INGEST_MODEL)
    }

    pub fn activations(&self) -> PathBuf {
        self.at(Stage::Profile, PROFILE_ACTIVATIONS)
    }

    pub fn valid_pool_3(&self) -> PathBuf {
        self.at(Stage::Profile, "valid_pool_3.safetensors")
    }

    pub fn prune_sweep(&self) -> PathBuf {
        self.at(Stage::Prune, PRUNE_SWEEP)
    }

    /// A stage's output folder.
    pub fn stage(&self, stage: Stage) -> PathBuf {
        self.dir.join(stage.name())
    }

    /// Where make's stamps of the configuration's tables and inputs live.
    pub fn config(&self) -> PathBuf {
        self.dir.join(CONFIG_DIR)
    }

    /// The stamp of `pipeline.toml`'s `table` (its checked content as JSON).
    pub fn table_stamp(&self, table: &str) -> PathBuf {
        self.config().join(format!("{table}.json"))
    }

    /// The stamp of input `name`'s content (its SHA-256), for user data.
    pub fn input_stamp(&self, name: &str) -> PathBuf {
        self.config().join(format!("input-{name}.sha256"))
    }

    /// The file that marks `stage` done, under the work folder (`reports`: the reports
    /// folder); None for synth.
    pub fn done_file(&self, stage: Stage, reports: &Path) -> Option<PathBuf> {
        let dir = match stage {
            Stage::Report => reports.to_path_buf(),
            s => self.stage(s),
        };
        stage.done_file().map(|f| dir.join(f))
    }

    pub fn eval_sweep(&self) -> PathBuf {
        self.at(Stage::Evaluate, EVAL_SWEEP)
    }

    pub fn eval_summary(&self) -> PathBuf {
        self.at(Stage::Evaluate, EVAL_SUMMARY)
    }
}

/// The ingest stage's image table of `split`.
pub fn dataset_file(split: Split) -> String {
    format!("{split}.parquet")
}

/// The ingest stage's copy of B (the file make tracks, so written last).
pub const INGEST_MODEL: &str = "model.safetensors";

/// The profile stage's channel statistics and pruning order (the file make tracks).
pub const PROFILE_ACTIVATIONS: &str = "activations.parquet";

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
/// The repaired ensemble G(B, network) of each derived network, as one ONNX graph
/// (`repaired_<network stem>.onnx`, [`crate::weights::derived_files`]).
pub const REPAIRED_PREFIX: &str = "repaired_";
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

/// The folder of make's stamps under the work folder.
pub const CONFIG_DIR: &str = "config";

/// The report stage's table of every network kind (the file make tracks, so written last).
pub const REPORT_SUMMARY: &str = "summary.csv";

/// The files the report stage writes.
pub const REPORT_FILES: [&str; 6] = [
    "performance.csv",
    "sweep.csv",
    REPORT_SUMMARY,
    "targets.csv",
    "plot.png",
    "plot.svg",
];
