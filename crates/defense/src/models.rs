//! Reading the networks the stages derive from B (pruned B', fine-pruned, fine-tuned), checked
//! against what they must be: the same architecture and input scale as B, made from B itself,
//! with exactly the expected conv_3 channels pruned and those channels zero.

use formats::{Error, ModelFile, Result};
use model::weights::Pruned;
use model::DeepIdWeights;
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
