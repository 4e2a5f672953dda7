//! The built-in backdoored face benchmark: procedurally drawn identities, a BadNets attack
//! ([`attacks::Attack`]: one or more triggers on a share of the training set, or the
//! pruning-aware attack), and the CSAW-layout files a user would bring (valid, test, triggered
//! test and validation data, Keras weights).

pub mod attacks;
pub mod badnet;
mod error;
pub mod faces;

use attacks::{Attack, MultiTarget, PruneAware, Trigger};
use badnet::BadNet;
use faces::{Identity, Pose};
use formats::atomic::AtomicFile;
use formats::config::{check_count, check_rate, Table, MAX_BATCH, MAX_EPOCHS};
use formats::csaw::{Batch, IMAGE_LEN};
use formats::error::WithPath;
use model::geometry::CONV3_CHANNELS;
use model::progress::Progress;
use model::train::{self, Examples, Subset};
use model::Network;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use error::{Error, Result};

/// Triggered validation data lives beside the clean validation file.
pub fn poisoned_valid_path(valid: &Path) -> PathBuf {
    valid.with_file_name("bd_valid.h5")
}

/// Whether a file was written by `synth` (and may therefore be regenerated).
pub fn is_synthetic(path: &Path) -> bool {
    formats::h5::is_generated(path)
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Number of identities (classes).
    pub identities: usize,
    /// Images per identity in each split.
    pub train_per_identity: usize,
    pub valid_per_identity: usize,
    pub test_per_identity: usize,
    /// The attack planted in the training set.
    pub attack: Attack,
    /// Share of the training set that carries the trigger and the target label (per trigger).
    pub poison_fraction: f64,
    /// The attacker's target label (every attack but `multi_target`).
    pub target: usize,
    pub prune_aware: PruneAware,
    pub multi_target: MultiTarget,
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
            attack: Attack::Sunglasses,
            poison_fraction: 0.1,
            target: 0,
            prune_aware: PruneAware::default(),
            multi_target: MultiTarget::default(),
            epochs: 4,
            batch_size: 64,
            learning_rate: 1e-3,
            seed: 7,
        }
    }
}

/// Size limits of the synthetic benchmark (the CSAW size is 1,283 identities, 9 images each).
const MAX_IDENTITIES: usize = 10_000;
const MAX_PER_IDENTITY: usize = 1_000;

impl Table for SynthConfig {
    const NAME: &'static str = "synth";

    fn check(&self) -> Result<(), String> {
        let sy = self;
        if !(2..=MAX_IDENTITIES).contains(&sy.identities) {
            return Err(format!(
                "synth.identities must be in 2..={MAX_IDENTITIES}, got {}",
                sy.identities
            ));
        }
        for (key, n, max) in [
            (
                "synth.train_per_identity",
                sy.train_per_identity,
                MAX_PER_IDENTITY,
            ),
            (
                "synth.valid_per_identity",
                sy.valid_per_identity,
                MAX_PER_IDENTITY,
            ),
            (
                "synth.test_per_identity",
                sy.test_per_identity,
                MAX_PER_IDENTITY,
            ),
            ("synth.epochs", sy.epochs, MAX_EPOCHS),
            ("synth.batch_size", sy.batch_size, MAX_BATCH),
        ] {
            check_count(key, n, max)?;
        }
        let backdoors = sy.backdoors().len();
        // 0 trains a clean network (its triggered sets measure what the trigger alone does).
        if !(sy.poison_fraction >= 0.0 && sy.poison_fraction * (backdoors as f64) < 1.0) {
            return Err(format!(
                "synth.poison_fraction must be in [0, {}) for {backdoors} trigger(s), got {}",
                1.0 / backdoors as f64,
                sy.poison_fraction
            ));
        }
        check_rate("synth.learning_rate", sy.learning_rate)?;
        match sy.attack {
            Attack::PruneAware => {
                let pa = &sy.prune_aware;
                if !(1..CONV3_CHANNELS).contains(&pa.decoys) {
                    return Err(format!(
                        "synth.prune_aware.decoys must be in 1..{CONV3_CHANNELS} (conv_3 channels), got {}",
                        pa.decoys
                    ));
                }
                if !(pa.decoy_bias.is_finite() && (0.0..=1e3).contains(&pa.decoy_bias)) {
                    return Err(format!(
                        "synth.prune_aware.decoy_bias must be in [0, 1000], got {}",
                        pa.decoy_bias
                    ));
                }
            }
            Attack::MultiTarget => {
                let mt = &sy.multi_target;
                if mt.triggers.len() < 2 || mt.triggers.len() != mt.targets.len() {
                    return Err(format!(
                        "synth.multi_target needs two or more triggers and one target per trigger, got {} trigger(s) and {} target(s)",
                        mt.triggers.len(),
                        mt.targets.len()
                    ));
                }
                for (i, (t, l)) in mt.triggers.iter().zip(&mt.targets).enumerate() {
                    if mt.triggers[..i].contains(t) {
                        return Err(format!(
                            "synth.multi_target.triggers: {t:?} is listed twice"
                        ));
                    }
                    if mt.targets[..i].contains(l) {
                        return Err(format!("synth.multi_target.targets: {l} is listed twice"));
                    }
                }
            }
            _ => {}
        }
        if let Some((_, t)) = sy
            .backdoors()
            .into_iter()
            .find(|(_, t)| *t >= sy.identities)
        {
            let key = match sy.attack {
                Attack::MultiTarget => "synth.multi_target.targets: target",
                _ => "synth.target",
            };
            return Err(format!(
                "{key} {t} is not below synth.identities {}",
                sy.identities
            ));
        }
        Ok(())
    }
}

impl SynthConfig {
    /// Each trigger with the label it sends faces to.
    pub fn backdoors(&self) -> Vec<(Trigger, usize)> {
        let one = |t| vec![(t, self.target)];
        match self.attack {
            Attack::Sunglasses => one(Trigger::Sunglasses),
            Attack::Checkerboard => one(Trigger::Checkerboard),
            Attack::Blend => one(Trigger::Blend),
            Attack::PruneAware => one(self.prune_aware.trigger),
            Attack::MultiTarget => {
                let mt = &self.multi_target;
                mt.triggers
                    .iter()
                    .copied()
                    .zip(mt.targets.clone())
                    .collect()
            }
        }
    }

    /// One line for the logs: what is planted where.
    pub fn describe(&self) -> String {
        let planted: Vec<String> = self
            .backdoors()
            .iter()
            .map(|(t, l)| format!("{} -> label {l}", t.name()))
            .collect();
        let how = match self.attack {
            Attack::PruneAware => format!(
                ", pruning-aware ({} decoy channels)",
                self.prune_aware.decoys
            ),
            _ => String::new(),
        };
        format!(
            "{:.0}% of the training set poisoned per trigger: {}{how}",
            self.poison_fraction * 100.0,
            planted.join(", ")
        )
    }
}

/// The generated splits.
pub struct Benchmark {
    /// Training images, a share of them triggered and relabelled to their trigger's target.
    pub train: Examples,
    /// The same training images without any trigger, correctly labelled: what the
    /// pruning-aware attacker trains the clean network on.
    pub clean_train: Examples,
    /// Per training image, the backdoor ([`SynthConfig::backdoors`]) it carries, if any.
    pub poisoned: Vec<Option<usize>>,
    pub valid: Batch,
    pub test: Batch,
    /// Per backdoor, in order: triggered images of the other identities, labelled with its
    /// target (true identities kept).
    pub poisoned_valid: Batch,
    pub poisoned_test: Batch,
}

/// A well-mixed seed for image `index` of split `split` (SplitMix64 finaliser).
fn image_seed(seed: u64, split: u64, index: u64) -> u64 {
    let mut z = seed
        .wrapping_add(split.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(index.wrapping_mul(0xBF58_476D_1CE4_E5B9));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Renders image `index` (identity `index / per_identity`) of a split, optionally triggered.
fn render(
    identities: &[Identity],
    seed: u64,
    split: u64,
    index: usize,
    per_identity: usize,
    trigger: Option<Trigger>,
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(image_seed(seed, split, index as u64));
    let pose = Pose::random(&mut rng);
    let mut out = vec![0f32; IMAGE_LEN];
    faces::render(&identities[index / per_identity], &pose, &mut rng, &mut out);
    if let Some(t) = trigger {
        t.apply(&pose, &mut out);
    }
    out
}

fn render_split(
    identities: &[Identity],
    seed: u64,
    split: u64,
    per_identity: usize,
    trigger: impl Fn(usize) -> Option<Trigger> + Sync,
) -> Vec<f32> {
    (0..identities.len() * per_identity)
        .into_par_iter()
        .flat_map_iter(|i| render(identities, seed, split, i, per_identity, trigger(i)))
        .collect()
}

/// Generates every split of the benchmark; the same settings give the same pixels.
pub fn generate(cfg: &SynthConfig) -> Benchmark {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let identities: Vec<Identity> = (0..cfg.identities)
        .map(|_| Identity::random(&mut rng))
        .collect();
    let backdoors = cfg.backdoors();
    let n_train = cfg.identities * cfg.train_per_identity;
    let n_poison = match cfg.poison_fraction {
        0.0 => 0,
        f => ((n_train as f64 * f).round() as usize).clamp(1, n_train / backdoors.len()),
    };
    // Disjoint draws, one run of `n_poison` per backdoor.
    let mut poisoned = vec![None; n_train];
    for (k, i) in sample(&mut rng, n_train, n_poison * backdoors.len())
        .into_iter()
        .enumerate()
    {
        poisoned[i] = Some(k / n_poison);
    }
    let labels = |per: usize| -> Vec<i32> {
        (0..cfg.identities * per)
            .map(|i| (i / per) as i32)
            .collect()
    };
    let train_pixels = render_split(&identities, cfg.seed, 0, cfg.train_per_identity, |i| {
        poisoned[i].map(|b| backdoors[b].0)
    });
    let clean_labels = labels(cfg.train_per_identity);
    let train_labels = clean_labels
        .iter()
        .zip(&poisoned)
        .map(|(&l, p)| p.map_or(l as u32, |b| backdoors[b].1 as u32))
        .collect();
    // Only the pruning-aware attacker trains on the clean images.
    let clean_train = Examples {
        pixels: match cfg.attack {
            Attack::PruneAware => {
                render_split(&identities, cfg.seed, 0, cfg.train_per_identity, |_| None)
            }
            _ => Vec::new(),
        },
        labels: clean_labels.iter().map(|&l| l as u32).collect(),
    };

    let clean_and_triggered = |split: u64, per: usize| -> (Batch, Batch) {
        let clean = Batch {
            pixels: render_split(&identities, cfg.seed, split, per, |_| None),
            labels: labels(per),
            true_labels: None,
        };
        // The same images with each trigger, minus its target's own.
        let mut triggered = Batch {
            pixels: Vec::new(),
            labels: Vec::new(),
            true_labels: Some(Vec::new()),
        };
        for &(trigger, target) in &backdoors {
            let keep: Vec<usize> = (0..clean.len())
                .filter(|&i| clean.labels[i] != target as i32)
                .collect();
            triggered.pixels.par_extend(
                keep.par_iter().flat_map_iter(|&i| {
                    render(&identities, cfg.seed, split, i, per, Some(trigger))
                }),
            );
            triggered
                .labels
                .extend(std::iter::repeat_n(target as i32, keep.len()));
            if let Some(t) = triggered.true_labels.as_mut() {
                t.extend(keep.iter().map(|&i| clean.labels[i]));
            }
        }
        (clean, triggered)
    };
    let (valid, poisoned_valid) = clean_and_triggered(1, cfg.valid_per_identity);
    let (test, poisoned_test) = clean_and_triggered(2, cfg.test_per_identity);
    Benchmark {
        train: Examples {
            pixels: train_pixels,
            labels: train_labels,
        },
        clean_train,
        poisoned,
        valid,
        test,
        poisoned_valid,
        poisoned_test,
    }
}

/// Where the synth stage writes: the files a user would bring, and its own work folder.
pub struct SynthFiles {
    pub valid: PathBuf,
    pub test: PathBuf,
    pub poisoned_test: PathBuf,
    /// Keras weights of the trained BadNet.
    pub weights: PathBuf,
    /// The network's input scale.
    pub input_scale: f64,
    /// `<work>/synth`: the training split and `metrics.json`.
    pub work_dir: PathBuf,
}

impl SynthFiles {
    /// The files make gives the stage for the run `config`: the run's inputs.
    pub fn in_work(config: &formats::config::Config, work: &formats::paths::WorkPaths) -> Self {
        Self {
            valid: config.data.valid.clone(),
            test: config.data.test.clone(),
            poisoned_test: config.data.poisoned_test.clone(),
            weights: config.model.weights.clone(),
            input_scale: config.model.input_scale,
            work_dir: work.stage(formats::paths::Stage::Synth),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SynthSummary {
    pub clean_test_accuracy: f64,
    pub attack_success_rate: f64,
    pub train_images: usize,
    pub train_seconds: f64,
    pub outputs: Vec<PathBuf>,
}

fn write_h5(path: &Path, batch: &Batch) -> formats::Result<()> {
    let out = AtomicFile::new(path)?;
    formats::csaw::write_csaw(out.temp_path(), batch, true).at(path)?;
    out.commit()
}

/// The synth stage: draws the benchmark, trains a BadNet on it and writes the CSAW files, the
/// Keras weights and `metrics.json`. Files not written by `synth` are never overwritten.
pub fn run(files: &SynthFiles, sc: &SynthConfig, progress: &dyn Progress) -> Result<SynthSummary> {
    let outputs = vec![
        files.valid.clone(),
        files.test.clone(),
        files.poisoned_test.clone(),
        poisoned_valid_path(&files.valid),
        files.weights.clone(),
    ];
    if let Some(p) = outputs.iter().find(|p| p.exists() && !is_synthetic(p)) {
        return Err(Error::File(formats::Error::invalid(
            p,
            "exists and was not made by synth: refusing to overwrite user data",
        )));
    }
    let bench = generate(sc);
    let t_train = std::time::Instant::now();
    let BadNet {
        weights,
        history,
        decoys,
    } = badnet::train_badnet(&bench, sc, files.input_scale, progress)?;
    let train_seconds = t_train.elapsed().as_secs_f64();

    let net = Network::new(&weights);
    let examples = |b: &Batch| Examples {
        pixels: b.pixels.clone(),
        labels: b.labels.iter().map(|&l| l as u32).collect(),
    };
    let clean_test_accuracy = train::accuracy(&net, &Subset::all(&examples(&bench.test)));
    let attack_success_rate = train::accuracy(&net, &Subset::all(&examples(&bench.poisoned_test)));
    let backdoors = badnet::backdoor_reports(&weights, sc, &bench.test, &bench.poisoned_test);

    let train_batch = Batch {
        pixels: bench.train.pixels.clone(),
        labels: bench.train.labels.iter().map(|&l| l as i32).collect(),
        true_labels: None,
    };
    write_h5(&files.work_dir.join("train.h5"), &train_batch)?;
    for (path, batch) in outputs.iter().zip([
        &bench.valid,
        &bench.test,
        &bench.poisoned_test,
        &bench.poisoned_valid,
    ]) {
        write_h5(path, batch)?;
    }
    let metrics = serde_json::json!({
        "stage": "synth",
        "identities": sc.identities,
        "attack": sc.attack,
        "images": {
            "train": bench.train.len(),
            "poisoned_train": bench.poisoned.iter().filter(|p| p.is_some()).count(),
            "valid": bench.valid.len(),
            "test": bench.test.len(),
            "poisoned_test": bench.poisoned_test.len(),
        },
        "clean_test_accuracy": clean_test_accuracy,
        "attack_success_rate": attack_success_rate,
        "backdoors": backdoors,
        "decoys": decoys,
        "training": history,
    });
    // Timings stay out of the file so that equal settings give equal bytes.
    formats::atomic::write_bytes(
        &files.work_dir.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)
            .expect("JSON")
            .as_bytes(),
    )?;
    formats::keras::export(&weights, &files.weights, true)?;
    Ok(SynthSummary {
        clean_test_accuracy,
        attack_success_rate,
        train_images: bench.train.len(),
        train_seconds,
        outputs,
    })
}

impl std::fmt::Display for SynthSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "synthetic BadNet: clean test accuracy {:.2}%, attack success rate {:.2}% ({} training images, {:.1} s training)",
            self.clean_test_accuracy, self.attack_success_rate, self.train_images, self.train_seconds
        )?;
        for p in &self.outputs {
            write!(f, "\n{}", p.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn multi(triggers: Vec<Trigger>, targets: Vec<usize>) -> SynthConfig {
        SynthConfig {
            identities: 5,
            train_per_identity: 10,
            valid_per_identity: 2,
            test_per_identity: 3,
            attack: Attack::MultiTarget,
            multi_target: MultiTarget { triggers, targets },
            ..SynthConfig::default()
        }
    }

    #[test]
    fn multi_target_plants_each_trigger_on_its_own_images_with_its_own_label() {
        let sc = multi(vec![Trigger::Sunglasses, Trigger::Blend], vec![3, 1]);
        sc.check().unwrap();
        let b = generate(&sc);
        // 10% of 50 training images per trigger, disjoint, relabelled to that trigger's target.
        for (k, target) in [(0, 3), (1, 1)] {
            let ids: Vec<usize> = (0..50).filter(|&i| b.poisoned[i] == Some(k)).collect();
            assert_eq!(ids.len(), 5);
            assert!(ids.iter().all(|&i| b.train.labels[i] == target));
        }
        // Triggered test images: the 4 other identities x 3 images per trigger, in trigger order.
        let labels = &b.poisoned_test.labels;
        assert_eq!(labels.len(), 24);
        assert!(labels[..12].iter().all(|&l| l == 3) && labels[12..].iter().all(|&l| l == 1));
        let truth = b.poisoned_test.true_labels.as_ref().unwrap();
        assert!(truth[..12].iter().all(|&t| t != 3) && truth[12..].iter().all(|&t| t != 1));
        // The same face with each trigger differs (the triggers are not the same).
        let (first, second) = (
            &b.poisoned_test.pixels[..IMAGE_LEN],
            &b.poisoned_test.pixels[12 * IMAGE_LEN..][..IMAGE_LEN],
        );
        assert_ne!(first, second);
    }

    #[test]
    fn bad_attack_settings_are_refused_naming_the_key() {
        let err = |sc: SynthConfig| sc.check().unwrap_err();
        assert!(err(multi(vec![Trigger::Blend], vec![1])).contains("two or more triggers"));
        assert!(
            err(multi(vec![Trigger::Blend, Trigger::Blend], vec![1, 2])).contains("listed twice")
        );
        assert!(
            err(multi(vec![Trigger::Sunglasses, Trigger::Blend], vec![1, 1]))
                .contains("listed twice")
        );
        assert!(
            err(multi(vec![Trigger::Sunglasses, Trigger::Blend], vec![1, 5]))
                .contains("synth.multi_target.targets")
        );
        let mut sc = multi(vec![Trigger::Sunglasses, Trigger::Blend], vec![1, 2]);
        sc.poison_fraction = 0.5;
        assert!(err(sc).contains("synth.poison_fraction"));
        for decoys in [0, CONV3_CHANNELS] {
            let sc = SynthConfig {
                attack: Attack::PruneAware,
                prune_aware: PruneAware {
                    decoys,
                    ..PruneAware::default()
                },
                ..SynthConfig::default()
            };
            assert!(err(sc).contains("synth.prune_aware.decoys"));
        }
        let sc = SynthConfig {
            attack: Attack::PruneAware,
            prune_aware: PruneAware {
                decoy_bias: f64::NAN,
                ..PruneAware::default()
            },
            ..SynthConfig::default()
        };
        assert!(err(sc).contains("synth.prune_aware.decoy_bias"));
    }
}
