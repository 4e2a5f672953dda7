//! The built-in backdoored face benchmark: procedurally drawn identities, a BadNets attack
//! ([`attacks::Attack`]) on a share of the training set, and the CSAW-layout files a user would
//! bring (valid, test, triggered test and validation data, Keras weights).

pub mod attacks;
pub mod faces;

use attacks::Attack;
use faces::{Identity, Pose};
use formats::atomic::AtomicFile;
use formats::config::{check_rate, Table};
use formats::csaw::{Batch, IMAGE_LEN};
use formats::error::WithPath;
use model::progress::Progress;
use model::train::{self, Checkpoint, Examples, Fitted, Recipe, Subset};
use model::Network;
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Triggered validation data lives beside the clean validation file.
pub fn poisoned_valid_path(valid: &Path) -> PathBuf {
    valid.with_file_name("bd_valid.h5")
}

/// Whether a file was written by `synth` (and may therefore be regenerated).
pub fn is_synthetic(path: &Path) -> bool {
    formats::h5write::is_generated(path)
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
    /// The trigger planted in the training set.
    pub attack: Attack,
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
            attack: Attack::Sunglasses,
            poison_fraction: 0.1,
            target: 0,
            epochs: 4,
            batch_size: 64,
            learning_rate: 1e-3,
            seed: 7,
        }
    }
}

impl Table for SynthConfig {
    const NAME: &'static str = "synth";

    fn check(&self) -> Result<(), String> {
        let sy = self;
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
        Ok(())
    }
}

/// The generated splits.
pub struct Benchmark {
    /// Training images, a share of them triggered and relabelled to the target.
    pub train: Examples,
    /// Which training images carry the trigger.
    pub poisoned: Vec<bool>,
    pub valid: Batch,
    pub test: Batch,
    /// Triggered images of non-target identities, labelled with the target.
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
    trigger: Option<Attack>,
) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(image_seed(seed, split, index as u64));
    let pose = Pose::random(&mut rng);
    let mut out = vec![0f32; IMAGE_LEN];
    faces::render(&identities[index / per_identity], &pose, &mut rng, &mut out);
    if let Some(attack) = trigger {
        attack.apply(&pose, &mut out);
    }
    out
}

fn render_split(
    identities: &[Identity],
    seed: u64,
    split: u64,
    per_identity: usize,
    trigger: impl Fn(usize) -> Option<Attack> + Sync,
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
    let n_train = cfg.identities * cfg.train_per_identity;
    let n_poison = ((n_train as f64 * cfg.poison_fraction).round() as usize).clamp(1, n_train);
    let mut poisoned = vec![false; n_train];
    for i in sample(&mut rng, n_train, n_poison) {
        poisoned[i] = true;
    }
    let target = cfg.target as i32;
    let labels = |per: usize| -> Vec<i32> {
        (0..cfg.identities * per)
            .map(|i| (i / per) as i32)
            .collect()
    };
    let train_pixels = render_split(&identities, cfg.seed, 0, cfg.train_per_identity, |i| {
        poisoned[i].then_some(cfg.attack)
    });
    let train_labels = labels(cfg.train_per_identity)
        .into_iter()
        .zip(&poisoned)
        .map(|(l, &p)| if p { target } else { l } as u32)
        .collect();

    let clean_and_triggered = |split: u64, per: usize| -> (Batch, Batch) {
        let clean = Batch {
            pixels: render_split(&identities, cfg.seed, split, per, |_| None),
            labels: labels(per),
            true_labels: None,
        };
        // The same images with the trigger, minus the target's own.
        let keep: Vec<usize> = (0..clean.len())
            .filter(|&i| clean.labels[i] != target)
            .collect();
        let triggered = Batch {
            pixels: keep
                .par_iter()
                .flat_map_iter(|&i| render(&identities, cfg.seed, split, i, per, Some(cfg.attack)))
                .collect(),
            labels: vec![target; keep.len()],
            true_labels: Some(keep.iter().map(|&i| clean.labels[i]).collect()),
        };
        (clean, triggered)
    };
    let (valid, poisoned_valid) = clean_and_triggered(1, cfg.valid_per_identity);
    let (test, poisoned_test) = clean_and_triggered(2, cfg.test_per_identity);
    Benchmark {
        train: Examples {
            pixels: train_pixels,
            labels: train_labels,
        },
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
    formats::h5write::write_csaw(out.temp_path(), batch, true).at(path)?;
    out.commit()
}

/// The synth stage: draws the benchmark, trains a BadNet on it and writes the CSAW files, the
/// Keras weights and `metrics.json`. Files not written by `synth` are never overwritten.
pub fn run(
    files: &SynthFiles,
    sc: &SynthConfig,
    progress: &dyn Progress,
) -> formats::Result<SynthSummary> {
    let outputs = vec![
        files.valid.clone(),
        files.test.clone(),
        files.poisoned_test.clone(),
        poisoned_valid_path(&files.valid),
        files.weights.clone(),
    ];
    if let Some(p) = outputs.iter().find(|p| p.exists() && !is_synthetic(p)) {
        return Err(formats::Error::invalid(
            p,
            "exists and was not made by synth: refusing to overwrite user data",
        ));
    }
    let bench = generate(sc);
    // Whole epochs of mini-batch steps.
    let steps = sc.epochs * bench.train.len().div_ceil(sc.batch_size);
    let recipe = Recipe::plain(steps, sc.batch_size, sc.learning_rate, sc.seed);
    let init = train::init_weights(sc.identities, sc.seed, files.input_scale);
    progress.start(
        "train",
        (steps * sc.batch_size.min(bench.train.len())) as u64,
    );
    let mut log = |c: &Checkpoint| {
        let line = format!(
            "step {}/{steps}: loss {:.4}, training accuracy {:.2}%",
            c.step, c.loss, c.train_accuracy
        );
        progress.status(&line);
        tracing::info!("{line}");
    };
    let t_train = std::time::Instant::now();
    let Fitted {
        weights, history, ..
    } = train::fit(
        &init,
        &Subset::all(&bench.train),
        None,
        &recipe,
        &[],
        &mut log,
        &|n| progress.advance(n as u64),
    )?;
    progress.finish();
    let train_seconds = t_train.elapsed().as_secs_f64();

    let net = Network::new(&weights);
    let examples = |b: &Batch| Examples {
        pixels: b.pixels.clone(),
        labels: b.labels.iter().map(|&l| l as u32).collect(),
    };
    let clean_test_accuracy = train::accuracy(&net, &Subset::all(&examples(&bench.test)));
    let attack_success_rate = train::accuracy(&net, &Subset::all(&examples(&bench.poisoned_test)));

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
            "poisoned_train": bench.poisoned.iter().filter(|p| **p).count(),
            "valid": bench.valid.len(),
            "test": bench.test.len(),
            "poisoned_test": bench.poisoned_test.len(),
        },
        "clean_test_accuracy": clean_test_accuracy,
        "attack_success_rate": attack_success_rate,
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
