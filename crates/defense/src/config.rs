//! The defense's tables of `pipeline.toml`: `[profile]`, `[prune]`, `[finetune]`,
//! `[evaluate]`.

use formats::config::{check_count, check_rate, Table, MAX_BATCH, MAX_EPOCHS, MAX_STEPS};
use model::train::Recipe;
use model::LayerName;
use model::{cleanse, rnp};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Statistic {
    /// After ReLU and max-pooling, as the reference implementation ranks.
    #[serde(rename = "pool_3_mean")]
    Pool3Mean,
    /// After ReLU, before pooling.
    #[serde(rename = "conv_3_mean")]
    Conv3Mean,
    /// Reconstructive neuron pruning's channel masks ([`model::rnp`]): ranks the backdoor's
    /// channels first rather than the least active ones.
    Rnp,
}

/// `[profile]`: the ranking, and RNP's settings (used by `statistic = "rnp"` alone).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProfileConfig {
    pub statistic: Statistic,
    /// The lowest layer unlearned: `conv_3` freezes conv_1 and conv_2, `conv_1` unlearns
    /// every layer.
    pub unlearn_from: LayerName,
    pub unlearn_learning_rate: f64,
    pub unlearn_weight_decay: f64,
    /// Unlearning stops at the first batch on which accuracy (percent) is below this.
    pub unlearn_accuracy: f64,
    pub unlearn_max_steps: usize,
    pub mask_learning_rate: f64,
    pub mask_epochs: usize,
    pub mask_l1: f64,
    /// SGD's momentum, unlearning and masks alike.
    pub momentum: f64,
    pub batch_size: usize,
    pub seed: u64,
}

impl Default for ProfileConfig {
    fn default() -> Self {
        Self {
            statistic: Statistic::Pool3Mean,
            unlearn_from: LayerName::Conv3,
            unlearn_learning_rate: 0.01,
            unlearn_weight_decay: 5e-4,
            unlearn_accuracy: 20.0,
            unlearn_max_steps: 2000,
            mask_learning_rate: 0.04,
            mask_epochs: 20,
            mask_l1: 0.0,
            momentum: 0.9,
            batch_size: 128,
            seed: 13,
        }
    }
}

impl ProfileConfig {
    /// RNP's settings as this table gives them (checked names).
    pub fn rnp(&self) -> rnp::Settings {
        rnp::Settings {
            unlearn_from: self.unlearn_from,
            unlearn_learning_rate: self.unlearn_learning_rate,
            unlearn_weight_decay: self.unlearn_weight_decay,
            unlearn_accuracy: self.unlearn_accuracy,
            unlearn_max_steps: self.unlearn_max_steps,
            mask_learning_rate: self.mask_learning_rate,
            mask_epochs: self.mask_epochs,
            mask_l1: self.mask_l1,
            momentum: self.momentum,
            batch_size: self.batch_size,
            seed: self.seed,
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

/// `[scan]`: trigger inversion on B and on every network finetune made, from clean images.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScanConfig {
    /// `false`: the stage writes an empty summary and the report has no scan.
    pub enabled: bool,
    /// Labels given a full inversion because stimulated channels sent the most images there.
    pub candidates: usize,
    /// Other labels, drawn at random, given a full inversion too: the baseline the anomaly
    /// index measures against. With at most `candidates + reference` classes every label is
    /// inverted (all of them the baseline) and nothing is screened.
    pub reference: usize,
    /// Fit images the screen stimulates channels on.
    pub screen_images: usize,
    /// Steps and images per step of a full inversion.
    pub steps: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub init_cost: f64,
    pub cost_multiplier: f64,
    pub patience: usize,
    /// Percent of a batch the trigger must send to the label to count as working.
    pub success: f64,
    /// Share of the validation images kept out of the inversion to score the triggers.
    pub holdout: f64,
    /// A label whose anomaly index exceeds this is flagged as a backdoor's target.
    pub anomaly_threshold: f64,
    pub seed: u64,
}

impl Default for ScanConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            candidates: 6,
            reference: 14,
            screen_images: 256,
            steps: 200,
            batch_size: 16,
            learning_rate: 0.1,
            init_cost: 1e-3,
            cost_multiplier: 1.5,
            patience: 10,
            success: 99.0,
            holdout: 0.2,
            anomaly_threshold: 2.0,
            seed: 17,
        }
    }
}

impl ScanConfig {
    /// The settings of a full inversion.
    pub fn full(&self) -> cleanse::Settings {
        cleanse::Settings {
            steps: self.steps,
            batch_size: self.batch_size,
            learning_rate: self.learning_rate,
            init_cost: self.init_cost,
            cost_multiplier: self.cost_multiplier,
            patience: self.patience,
            success: self.success,
            seed: self.seed,
        }
    }
}

impl Table for ScanConfig {
    const NAME: &'static str = "scan";

    fn check(&self) -> Result<(), String> {
        for (key, v, max) in [
            ("scan.candidates", self.candidates, MAX_CLASSES),
            ("scan.screen_images", self.screen_images, MAX_SCREEN_IMAGES),
            ("scan.steps", self.steps, MAX_STEPS),
            ("scan.batch_size", self.batch_size, MAX_BATCH),
            ("scan.patience", self.patience, MAX_STEPS),
        ] {
            check_count(key, v, max)?;
        }
        // The baseline's spread needs two values at least.
        if !(2..=MAX_CLASSES).contains(&self.reference) {
            return Err(format!(
                "scan.reference must be in 2..={MAX_CLASSES}, got {}",
                self.reference
            ));
        }
        check_rate("scan.learning_rate", self.learning_rate)?;
        for (key, v, ok, range) in [
            (
                "init_cost",
                self.init_cost,
                self.init_cost > 0.0 && self.init_cost <= 1e3,
                "(0, 1000]",
            ),
            (
                "cost_multiplier",
                self.cost_multiplier,
                self.cost_multiplier > 1.0 && self.cost_multiplier <= 10.0,
                "(1, 10]",
            ),
            (
                "success",
                self.success,
                self.success > 0.0 && self.success <= 100.0,
                "(0, 100]",
            ),
            (
                "holdout",
                self.holdout,
                self.holdout > 0.0 && self.holdout <= MAX_HOLDOUT,
                "(0, 0.5]",
            ),
            (
                "anomaly_threshold",
                self.anomaly_threshold,
                self.anomaly_threshold > 0.0 && self.anomaly_threshold <= 100.0,
                "(0, 100]",
            ),
        ] {
            if !ok {
                return Err(format!("scan.{key} must be in {range}, got {v}"));
            }
        }
        Ok(())
    }
}

/// `[finetune]`: the training recipe (its keys at the table's top level) and what
/// fine-tuning does around it. Misspelt keys are refused by [`formats::config::Config::table`]
/// (serde cannot deny unknown keys beside a flattened struct).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct FinetuneConfig {
    #[serde(flatten)]
    pub recipe: Recipe,
    /// Layers drawn afresh before fine-tuning (Glorot uniform, zero bias; the output layer's
    /// draws scaled down, [`model::train::reinitialise`]); `["output"]` is the
    /// re-initialisation of feature-shift tuning.
    pub reinit: Vec<LayerName>,
    /// Feature-shift tuning's penalty weight alpha (0 = off): the re-initialised output layer
    /// is pushed away from B's and held at its norm ([`model::train::FeatureShift`]).
    pub feature_shift: f64,
    /// Share of the validation data held out to watch (and with `select = "best"`, choose)
    /// the network; 0 trains on all of it.
    pub holdout: f64,
    /// Also fine-tune the unpruned network with the same recipe (the `fine_tuned` rows).
    pub unpruned: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            recipe: Recipe::default(),
            reinit: vec![LayerName::Output],
            feature_shift: 0.0,
            holdout: 0.1,
            unpruned: true,
        }
    }
}

/// The most labels a scan setting may name (beyond any network's classes).
const MAX_CLASSES: usize = 100_000;
/// The most images the scan's screen stimulates channels on.
const MAX_SCREEN_IMAGES: usize = 65_536;

/// The largest weight decay a table takes.
pub const MAX_DECAY: f64 = 1.0;

/// The largest share of the validation set `holdout` may keep from training.
pub const MAX_HOLDOUT: f64 = 0.5;

impl FinetuneConfig {
    /// The fewest validation images fine-tuning can use: one to train on, plus one held out
    /// when `holdout` > 0.
    pub fn min_valid_images(&self) -> usize {
        if self.holdout > 0.0 {
            2
        } else {
            1
        }
    }
}

impl Table for ProfileConfig {
    const NAME: &'static str = "profile";

    fn check(&self) -> Result<(), String> {
        if self.unlearn_from.conv().is_none() {
            return Err(format!(
                "profile.unlearn_from must be conv_1, conv_2, conv_3 or conv_4, got {}",
                self.unlearn_from
            ));
        }
        check_rate("profile.unlearn_learning_rate", self.unlearn_learning_rate)?;
        check_rate("profile.mask_learning_rate", self.mask_learning_rate)?;
        for (key, v, max) in [
            (
                "profile.unlearn_max_steps",
                self.unlearn_max_steps,
                MAX_STEPS,
            ),
            ("profile.mask_epochs", self.mask_epochs, MAX_EPOCHS),
            ("profile.batch_size", self.batch_size, MAX_BATCH),
        ] {
            check_count(key, v, max)?;
        }
        let weight = |v: f64| (0.0..f64::INFINITY).contains(&v);
        let decay_ok = (0.0..=MAX_DECAY).contains(&self.unlearn_weight_decay);
        let (decay, l1, momentum, accuracy) = (
            self.unlearn_weight_decay,
            self.mask_l1,
            self.momentum,
            self.unlearn_accuracy,
        );
        for (key, v, ok, range) in [
            ("unlearn_weight_decay", decay, decay_ok, "[0, 1]"),
            ("mask_l1", l1, weight(l1), "[0, inf)"),
            (
                "momentum",
                momentum,
                (0.0..1.0).contains(&momentum),
                "[0, 1)",
            ),
            (
                "unlearn_accuracy",
                accuracy,
                accuracy > 0.0 && accuracy <= 100.0,
                "(0, 100]",
            ),
        ] {
            if !ok {
                return Err(format!("profile.{key} must be in {range}, got {v}"));
            }
        }
        Ok(())
    }
}

impl Table for PruneConfig {
    const NAME: &'static str = "prune";

    fn check(&self) -> Result<(), String> {
        check_thresholds(&self.thresholds)
    }
}

impl Table for EvaluateConfig {
    const NAME: &'static str = "evaluate";

    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Table for FinetuneConfig {
    const NAME: &'static str = "finetune";

    fn check(&self) -> Result<(), String> {
        let recipe = &self.recipe;
        check_count("finetune.steps", recipe.steps, MAX_STEPS)?;
        check_count("finetune.batch_size", recipe.batch_size, MAX_BATCH)?;
        check_rate("finetune.learning_rate", recipe.learning_rate)?;
        if !(0.0..=MAX_HOLDOUT).contains(&self.holdout) {
            return Err(format!(
                "finetune.holdout must be in [0, {MAX_HOLDOUT}] (the rest of the validation set trains), got {}",
                self.holdout
            ));
        }
        for (key, v, top) in [
            ("warmup", recipe.warmup, 1.0),
            ("momentum", recipe.momentum, 1.0),
            ("weight_decay", recipe.weight_decay, MAX_DECAY),
        ] {
            if !(v >= 0.0 && v < top) {
                return Err(format!("finetune.{key} must be in [0, {top}), got {v}"));
            }
        }
        if !(self.feature_shift.is_finite() && (0.0..=1e3).contains(&self.feature_shift)) {
            return Err(format!(
                "finetune.feature_shift must be in [0, 1000], got {}",
                self.feature_shift
            ));
        }
        if self.feature_shift > 0.0 && !self.reinit.contains(&LayerName::Output) {
            return Err(
                "finetune.feature_shift pushes a re-initialised output layer away from B's: add \"output\" to finetune.reinit".into(),
            );
        }
        if recipe.train_from.conv().is_none() {
            return Err(format!(
                "finetune.train_from must be conv_1, conv_2, conv_3 or conv_4, got {}",
                recipe.train_from
            ));
        }
        Ok(())
    }
}

/// Thresholds are accuracy drops in percentage points: each in [0.01, 100] in hundredths (a
/// threshold names its networks' files), no repeats.
pub fn check_thresholds(thresholds: &[f64]) -> std::result::Result<(), String> {
    if thresholds.is_empty() {
        return Err("prune.thresholds must name at least one threshold".into());
    }
    for (i, &t) in thresholds.iter().enumerate() {
        if !((0.01..=100.0).contains(&t) && (t * 100.0).round() / 100.0 == t) {
            return Err(format!(
                "prune.thresholds: {t:?} is not an accuracy drop in [0.01, 100] percentage points with at most two decimals"
            ));
        }
        if thresholds[..i].contains(&t) {
            return Err(format!("prune.thresholds: {t:?} is listed twice"));
        }
    }
    Ok(())
}
