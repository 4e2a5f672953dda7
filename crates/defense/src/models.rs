//! Reading the networks the stages derive from B (pruned B', fine-pruned, fine-tuned), checked
//! against what they must be: the same architecture and input scale as B, made from B itself,
//! with exactly the expected conv_3 channels pruned and those channels zero.

use crate::config::FinetuneConfig;
use crate::sweep::PruneSweep;
use crate::{Error, Result};
use formats::{paths, ModelFile};
use model::train::Checkpoint;
use model::weights::Pruned;
use model::{DeepIdWeights, LayerName};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// `finetune`'s record of what it trained (`models.json`, the file make tracks): the settings,
/// the data, and per network its files and how training went.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub settings: FinetuneConfig,
    pub train_images: usize,
    pub holdout_images: usize,
    pub models: Vec<ManifestEntry>,
}

/// One trained network: the thresholds whose pruned network it started from (none: B
/// itself), and its files, named within the manifest's folder.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub thresholds_percent: Vec<f64>,
    pub channels_pruned: usize,
    pub models: Vec<String>,
    pub checkpoints: Vec<Checkpoint>,
}

impl Manifest {
    /// Pretty JSON, keys in alphabetical order at every level.
    pub fn write(&self, path: &Path) -> Result<()> {
        let value = serde_json::to_value(self).expect("a manifest serialises");
        let text = serde_json::to_string_pretty(&value).expect("JSON");
        Ok(formats::atomic::write_bytes(path, text.as_bytes())?)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = formats::files::read_text(path)?;
        serde_json::from_str(&text).map_err(|e| {
            Error::invalid(
                path,
                format!("not finetune's list of networks: {e}; re-run finetune"),
            )
        })
    }
}

/// Loads a network derived from `backdoored` with `channels` pruned (none: fine-tuned only).
pub fn load_derived(
    path: &Path,
    backdoored: &DeepIdWeights,
    channels: &[usize],
    remedy: &str,
) -> Result<DeepIdWeights> {
    let w = DeepIdWeights::load(path)?;
    let bad = |what: String| Error::invalid(path, format!("{what}; {remedy}"));
    let Some(pruned) = &w.provenance.pruned else {
        return Err(bad(
            "has no pruning record (metadata pruned_channels): it was not made by this pipeline"
                .into(),
        ));
    };
    if let Some(why) = other_parent(pruned, backdoored) {
        return Err(bad(why));
    }
    if pruned.channels != channels {
        return Err(bad(format!(
            "has channels {:?} pruned, the pruning sweep says {:?}",
            pruned.channels, channels
        )));
    }
    if let Some(why) = incompatible(&w, backdoored) {
        return Err(bad(why));
    }
    if let Some(c) = w.live_channel(channels) {
        return Err(bad(format!(
            "records channel {c} as pruned, but its weights are not zero"
        )));
    }
    Ok(w)
}

/// Loads the pruned network B' of `channels`: [`load_derived`]'s checks, and every weight
/// exactly `backdoored`'s with those channels zeroed (a network from elsewhere, carrying B's
/// record and zeros where the channels were, is refused).
pub fn load_pruned(
    path: &Path,
    backdoored: &DeepIdWeights,
    channels: &[usize],
    remedy: &str,
) -> Result<DeepIdWeights> {
    let w = load_derived(path, backdoored, channels, remedy)?;
    let mut expected = backdoored.clone();
    expected.prune_conv3(channels);
    match LayerName::ALL
        .into_iter()
        .find(|&l| w.layers.get(l) != expected.layers.get(l))
    {
        Some(layer) => Err(Error::invalid(
            path,
            format!(
                "its {} weights are not the backdoored model's with the sweep's channels pruned; {remedy}",
                layer.as_str()
            ),
        )),
        None => Ok(w),
    }
}

/// Why a network recording `pruned` was not made from `backdoored`, if it was not.
pub(crate) fn other_parent(pruned: &Pruned, backdoored: &DeepIdWeights) -> Option<String> {
    (pruned.backdoored != backdoored.fingerprint()).then(|| {
        format!(
            "was derived from another network (fingerprint {:?}, the backdoored model's is {})",
            pruned.backdoored,
            backdoored.fingerprint()
        )
    })
}

/// Why `w` cannot stand beside `backdoored` (other classes or input scale), if it cannot.
pub(crate) fn incompatible(w: &DeepIdWeights, backdoored: &DeepIdWeights) -> Option<String> {
    if w.classes() != backdoored.classes() {
        return Some(format!(
            "has {} classes, the backdoored model {}",
            w.classes(),
            backdoored.classes()
        ));
    }
    (w.provenance.input_scale != backdoored.provenance.input_scale).then(|| {
        format!(
            "expects input scale {}, the backdoored model {}",
            w.provenance.input_scale, backdoored.provenance.input_scale
        )
    })
}

/// A fine-tuned network: unpruned (`threshold` None) or fine-pruned.
pub struct Tuned {
    pub threshold: Option<f64>,
    pub channels_pruned: usize,
    pub weights: DeepIdWeights,
}

/// The networks `finetune` lists in its `models.json`, each checked against the sweep; none
/// when `finetune` has not run.
pub fn finetuned(dir: &Path, prune: &PruneSweep, b: &DeepIdWeights) -> Result<Vec<Tuned>> {
    let manifest = dir.join(paths::FINETUNE_MODELS);
    let listed = match std::fs::metadata(&manifest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(
                "{}: not there, so no fine-tuned networks are scored",
                manifest.display()
            );
            return Ok(Vec::new());
        }
        _ => Manifest::read(&manifest)?,
    };
    let names = listed
        .models
        .iter()
        .flat_map(|m| &m.models)
        .map(String::as_str);
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(name);
        let (threshold, k) = if name == paths::FINETUNED_UNPRUNED {
            (None, 0)
        } else {
            let hit = prune.hits.iter().find(|h| {
                h.channels_pruned.is_some()
                    && paths::finetuned_model_file(h.threshold_percent) == name
            });
            match hit {
                Some(h) => (Some(h.threshold_percent), h.channels_pruned.unwrap_or_default()),
                None => {
                    return Err(Error::invalid(
                        &manifest,
                        format!("lists {name}, which no threshold of the pruning sweep makes; re-run finetune"),
                    ))
                }
            }
        };
        if !path.exists() {
            return Err(Error::invalid(
                &manifest,
                format!("lists {name}, which is missing; re-run finetune"),
            ));
        }
        let w = load_derived(&path, b, &prune.order[..k], "re-run finetune")?;
        out.push(Tuned {
            threshold,
            channels_pruned: k,
            weights: w,
        });
    }
    // The unpruned network first, then the thresholds in sweep order.
    out.sort_by_key(|t| {
        t.threshold.map(|th| {
            1 + prune
                .hits
                .iter()
                .position(|h| h.threshold_percent == th)
                .unwrap_or(0)
        })
    });
    Ok(out)
}
