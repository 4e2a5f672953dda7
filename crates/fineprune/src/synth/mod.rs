//! The built-in backdoored face benchmark: procedurally drawn identities, a BadNets attack
//! ([`attacks::Attack`]) on a share of the training set, and the CSAW-layout files a user would
//! bring (valid, test, triggered test and validation data, Keras weights).

pub mod attacks;
pub mod faces;

use crate::config::{Config, SynthConfig};
use crate::csaw::{Batch, IMAGE_LEN};
use crate::train::Examples;
use attacks::Attack;
use faces::{Identity, Pose};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// Triggered validation data lives beside the clean validation file.
pub fn poisoned_valid_path(cfg: &Config) -> PathBuf {
    cfg.data.valid.with_file_name("bd_valid.h5")
}

/// Whether a file was written by `synth` (and may therefore be regenerated).
pub fn is_synthetic(path: &Path) -> bool {
    crate::h5write::is_generated(path)
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
