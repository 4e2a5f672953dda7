//! Which model a derived file was computed from: every file a stage derives from B records
//! B's fingerprint ([`model::DeepIdWeights::fingerprint`]) under [`MODEL_KEY`], and a later
//! stage refuses a file whose fingerprint is not the model's it runs with.

use crate::{Error, Result};
use std::path::Path;

/// Metadata key tying derived files to the exact model parameters they came from.
pub const MODEL_KEY: &str = "model_fingerprint";

/// Refuses `path`, which records `recorded`, when the model now is `model`.
pub fn check_same_model(path: &Path, recorded: &str, model: &str) -> Result<()> {
    if recorded != model {
        return Err(Error::invalid(
            path,
            format!(
                "was computed with a different model (fingerprint {recorded}, the model now is {model}); re-run the stage that makes it"
            ),
        ));
    }
    Ok(())
}
