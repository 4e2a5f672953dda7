//! Reading the networks the stages derive from B (pruned B', fine-pruned, fine-tuned), checked
//! against what they must be: the same architecture and input scale as B, made from B itself,
//! with exactly the expected conv_3 channels pruned and those channels zero.

use crate::sweep::PruneSweep;
use formats::{paths, Error, ModelFile, Result};
use model::weights::Pruned;
use model::{DeepIdWeights, LayerName};
use std::path::Path;

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
    let text = match std::fs::metadata(&manifest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::info!(
                "{}: not there, so no fine-tuned networks are scored",
                manifest.display()
            );
            return Ok(Vec::new());
        }
        _ => formats::files::read_text(&manifest)?,
    };
    let listed: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| Error::invalid(&manifest, format!("not JSON: {e}")))?;
    let names: Vec<&str> = listed["models"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["models"].as_array().into_iter().flatten())
        .filter_map(|n| n.as_str())
        .collect();
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
