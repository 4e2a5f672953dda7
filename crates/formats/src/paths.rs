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
        self.at("ingest", format!("{split}.parquet"))
    }

    pub fn model(&self) -> PathBuf {
        self.at("ingest", "model.safetensors")
    }

    pub fn activations(&self) -> PathBuf {
        self.at("profile", "activations.parquet")
    }

    pub fn valid_pool_3(&self) -> PathBuf {
        self.at("profile", "valid_pool_3.safetensors")
    }

    pub fn prune_sweep(&self) -> PathBuf {
        self.at("prune", "sweep.parquet")
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
pub const STAGE_DIRS: [&str; 6] = [
    "config", "ingest", "profile", "prune", "finetune", "evaluate",
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

/// A file a stage writes, or one of its temporary files.
fn is_temp_of(name: &str, is_output: impl Fn(&str) -> bool) -> bool {
    match name
        .strip_prefix(".tmp-")
        .and_then(|rest| rest.split_once('-'))
    {
        Some((pid, rest)) if pid.bytes().all(|b| b.is_ascii_digit()) => is_output(rest),
        _ => is_output(name),
    }
}

/// A derived network's files: safetensors and its Keras copy.
const MODEL_EXTENSIONS: [&str; 2] = ["safetensors", "h5"];

fn is_model_file(name: &str, stem_ok: impl Fn(&str) -> bool) -> bool {
    name.rsplit_once('.')
        .is_some_and(|(stem, ext)| MODEL_EXTENSIONS.contains(&ext) && stem_ok(stem))
}

fn is_threshold_model(name: &str, prefix: &str) -> bool {
    is_model_file(name, |stem| {
        stem.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix("_percent_threshold"))
            .is_some_and(|t| t.parse::<f64>().is_ok())
    })
}

/// Whether `name` in the work folder's `stage` folder is something the pipeline writes there
/// (what `make clean` removes).
pub fn written_by(stage: &str, name: &str) -> bool {
    is_temp_of(name, |name| match stage {
        "config" => name.ends_with(".json") || name.ends_with(".sha256") || name.ends_with(".key"),
        "ingest" => {
            name == "model.safetensors"
                || [Split::Valid, Split::Test, Split::PoisonedTest]
                    .iter()
                    .any(|s| name == format!("{s}.parquet"))
        }
        "profile" => name == "activations.parquet" || name == "valid_pool_3.safetensors",
        "prune" => name == "sweep.parquet" || is_threshold_model(name, PRUNED_PREFIX),
        "finetune" => {
            name == "models.json"
                || is_model_file(name, |stem| stem == FINETUNED_UNPRUNED_STEM)
                || is_threshold_model(name, FINETUNED_PREFIX)
        }
        "evaluate" => [EVAL_SWEEP, EVAL_TARGETS, EVAL_SUMMARY].contains(&name),
        _ => false,
    })
}

/// Whether `name` in the reports folder is a file the report stage writes.
pub fn is_report_file(name: &str) -> bool {
    is_temp_of(name, |name| REPORT_FILES.contains(&name))
}

/// Removes files named `prefix*` in `dir` that are not in `keep` (a kept safetensors file
/// keeps its Keras copy): outputs of thresholds no longer asked for would mislead later
/// stages.
pub fn remove_stale(dir: &Path, prefix: &str, keep: &[PathBuf]) -> crate::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let kept =
            keep.contains(&e.path()) || keep.contains(&e.path().with_extension("safetensors"));
        if name.starts_with(prefix) && !kept {
            std::fs::remove_file(e.path()).map_err(|err| crate::Error::io(e.path(), err))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_knows_the_evaluate_and_report_files() {
        for name in [EVAL_SWEEP, EVAL_TARGETS, EVAL_SUMMARY] {
            assert!(written_by("evaluate", name), "{name}");
            assert!(written_by("evaluate", &format!(".tmp-42-{name}")), "{name}");
        }
        assert!(!written_by("evaluate", "notes.parquet"));
        assert!(is_report_file("targets.csv") && is_report_file(".tmp-7-targets.csv"));
        assert!(!is_report_file("targets.parquet"));
    }
}
