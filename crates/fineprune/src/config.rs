//! `pipeline.toml`: one table per stage. Unknown keys are errors, relative paths resolve against
//! the file's folder, and every value is checked before any stage starts work.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data: DataConfig,
    pub model: ModelConfig,
    #[serde(default)]
    pub work: WorkConfig,
    #[serde(default)]
    pub profile: ProfileConfig,
    #[serde(default)]
    pub prune: PruneConfig,
    #[serde(default)]
    pub evaluate: EvaluateConfig,
    #[serde(default)]
    pub synth: SynthConfig,
    #[serde(default)]
    pub finetune: FinetuneConfig,
    /// The file this was read from; not a key.
    #[serde(skip)]
    pub source: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Clean validation data: the defender's only clean data.
    pub valid: PathBuf,
    /// Clean test data.
    pub test: PathBuf,
    /// Triggered test data labelled with the attack target.
    pub poisoned_test: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Keras HDF5 file: a full model or weights only.
    pub weights: PathBuf,
    /// Pixels are multiplied by this before the first layer.
    #[serde(default = "one")]
    pub input_scale: f64,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkConfig {
    pub dir: PathBuf,
    pub reports: PathBuf,
}

impl Default for WorkConfig {
    fn default() -> Self {
        Self {
            dir: "work".into(),
            reports: "reports".into(),
        }
    }
}

/// Which per-channel mean ranks the conv_3 channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// After ReLU and max-pooling, as the reference implementation ranks.
    #[serde(rename = "pool_3_mean")]
    Pool3Mean,
    /// After ReLU, before pooling.
    #[serde(rename = "conv_3_mean")]
    Conv3Mean,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    pub statistic: Statistic,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            statistic: Statistic::Pool3Mean,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneConfig {
    /// Accuracy drops, in percentage points of validation accuracy, at which B' is kept.
    pub thresholds: Vec<f64>,
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            thresholds: vec![2.0, 4.0, 10.0],
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Number of identities (classes).
    pub identities: usize,
    /// Images per identity in each split.
    pub train_per_identity: usize,
    pub valid_per_identity: usize,
    pub test_per_identity: usize,
    /// The trigger planted in the training set.
    pub attack: crate::synth::attacks::Attack,
    /// Share of the training set that carries the trigger and the target label.
    pub poison_fraction: f64,
    /// The attacker's target label.
    pub target: usize,
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub seed: u64,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            identities: 100,
            train_per_identity: 60,
            valid_per_identity: 10,
            test_per_identity: 10,
            attack: crate::synth::attacks::Attack::Sunglasses,
            poison_fraction: 0.1,
            target: 0,
            epochs: 4,
            batch_size: 64,
            learning_rate: 1e-3,
            seed: 7,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    /// Adam; `weight_decay` is added to the gradient (L2).
    Adam,
    /// Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW,
    /// SGD with (heavy-ball) momentum; `weight_decay` is added to the gradient.
    Sgd,
}

/// How the learning rate moves over the training steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Linear warm-up over `warmup` of the steps, then half a cosine down to zero.
    Cosine,
    /// Linear rise from rate / 25 over `warmup` of the steps (0.3 if unset), then a cosine
    /// down to rate / 10^4 (PyTorch's `OneCycleLR` defaults).
    OneCycle,
}

/// Which network fine-tuning keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The network after the last step.
    Last,
    /// The checkpoint with the best held-out accuracy, the latest among equals, so a
    /// saturated held-out set keeps the longest-trained network.
    Best,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Optimiser steps: the training length, whatever the size of the clean set.
    pub steps: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub schedule: Schedule,
    /// Share of the steps spent warming up.
    pub warmup: f64,
    /// SGD only.
    pub momentum: f64,
    pub weight_decay: f64,
    /// Layers drawn afresh (Glorot uniform, zero bias) before fine-tuning; `["output"]` is
    /// the re-initialisation of feature-shift tuning.
    pub reinit: Vec<String>,
    /// The lowest layer trained; the layers below it stay as they are.
    pub train_from: String,
    /// Share of the validation data held out to watch (and with `select = "best"`, choose)
    /// the network; 0 trains on all of it.
    pub holdout: f64,
    pub select: Select,
    /// Also fine-tune the unpruned network with the same recipe (the `fine_tuned` rows).
    pub unpruned: bool,
    pub seed: u64,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            steps: 600,
            batch_size: 64,
            optimizer: Optimizer::Adam,
            learning_rate: 1e-3,
            schedule: Schedule::Cosine,
            warmup: 0.0,
            momentum: 0.9,
            weight_decay: 0.0,
            reinit: vec!["output".into()],
            train_from: "conv_3".into(),
            holdout: 0.1,
            select: Select::Last,
            unpruned: true,
            seed: 11,
        }
    }
}

impl Config {
    /// Reads, checks and resolves a configuration file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, path)
    }

    /// Parses `text` as if read from `path` (relative paths resolve against its folder).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let err = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let mut config: Config = toml::from_str(text).map_err(|e| {
            // toml's message spans several lines with a source excerpt; keep it on one.
            err(e.message().to_string() + &span_suffix(text, e.span()))
        })?;
        config.source = path.to_path_buf();
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        config.resolve(&base);
        config.check().map_err(err)?;
        Ok(config)
    }

    fn resolve(&mut self, base: &Path) {
        for p in [
            &mut self.data.valid,
            &mut self.data.test,
            &mut self.data.poisoned_test,
            &mut self.model.weights,
            &mut self.work.dir,
            &mut self.work.reports,
        ] {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }

    fn check(&self) -> std::result::Result<(), String> {
        let s = self.model.input_scale;
        if !(s.is_finite() && s > 0.0) {
            return Err(format!(
                "model.input_scale must be a positive number, got {s}"
            ));
        }
        check_thresholds(&self.prune.thresholds)?;
        let sy = &self.synth;
        if sy.identities < 2 {
            return Err("synth.identities must be at least 2".into());
        }
        if sy.target >= sy.identities {
            return Err(format!(
                "synth.target {} is not below synth.identities {}",
                sy.target, sy.identities
            ));
        }
        for (key, n) in [
            ("train_per_identity", sy.train_per_identity),
            ("valid_per_identity", sy.valid_per_identity),
            ("test_per_identity", sy.test_per_identity),
            ("epochs", sy.epochs),
            ("batch_size", sy.batch_size),
        ] {
            if n == 0 {
                return Err(format!("synth.{key} must be at least 1"));
            }
        }
        if !(sy.poison_fraction > 0.0 && sy.poison_fraction < 1.0) {
            return Err(format!(
                "synth.poison_fraction must be in (0, 1), got {}",
                sy.poison_fraction
            ));
        }
        check_rate("synth.learning_rate", sy.learning_rate)?;
        let ft = &self.finetune;
        if ft.steps == 0 {
            return Err("finetune.steps must be at least 1".into());
        }
        if ft.batch_size == 0 {
            return Err("finetune.batch_size must be at least 1".into());
        }
        check_rate("finetune.learning_rate", ft.learning_rate)?;
        for (key, v, top) in [
            ("holdout", ft.holdout, 1.0),
            ("warmup", ft.warmup, 1.0),
            ("momentum", ft.momentum, 1.0),
            ("weight_decay", ft.weight_decay, f64::INFINITY),
        ] {
            if !(v >= 0.0 && v < top) {
                return Err(format!("finetune.{key} must be in [0, {top}), got {v}"));
            }
        }
        let layer = |name: &str| crate::weights::LAYERS.contains(&name);
        if let Some(bad) = ft.reinit.iter().find(|l| !layer(l)) {
            return Err(format!(
                "finetune.reinit: unknown layer {bad:?} (layers: {})",
                crate::weights::LAYERS.join(", ")
            ));
        }
        if !crate::weights::LAYERS[..4].contains(&ft.train_from.as_str()) {
            return Err(format!(
                "finetune.train_from must be conv_1, conv_2, conv_3 or conv_4, got {:?}",
                ft.train_from
            ));
        }
        Ok(())
    }

    /// The canonical text of one table, for deciding whether a stage must re-run.
    pub fn table_json(&self, table: &str) -> Option<String> {
        let value = match table {
            "data" => serde_json::to_value(&self.data),
            "model" => serde_json::to_value(&self.model),
            "work" => serde_json::to_value(&self.work),
            "profile" => serde_json::to_value(&self.profile),
            "prune" => serde_json::to_value(&self.prune),
            "evaluate" => serde_json::to_value(&self.evaluate),
            "synth" => serde_json::to_value(&self.synth),
            "finetune" => serde_json::to_value(&self.finetune),
            _ => return None,
        };
        value.ok().map(|v| v.to_string())
    }

    /// All table names, in pipeline order.
    pub const TABLES: [&'static str; 8] = [
        "data", "model", "work", "synth", "profile", "prune", "finetune", "evaluate",
    ];
}

fn span_suffix(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) => {
            let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        }
        None => String::new(),
    }
}

fn check_rate(key: &str, v: f64) -> std::result::Result<(), String> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(format!("{key} must be a positive number, got {v}"))
    }
}

/// Thresholds are accuracy drops in percentage points: each in (0, 100], no repeats.
pub fn check_thresholds(thresholds: &[f64]) -> std::result::Result<(), String> {
    if thresholds.is_empty() {
        return Err("prune.thresholds must name at least one threshold".into());
    }
    for (i, &t) in thresholds.iter().enumerate() {
        if !(t.is_finite() && t > 0.0 && t <= 100.0) {
            return Err(format!(
                "prune.thresholds: {t} is not an accuracy drop in (0, 100] percentage points"
            ));
        }
        if thresholds[..i].contains(&t) {
            return Err(format!("prune.thresholds: {t} is listed twice"));
        }
    }
    Ok(())
}
