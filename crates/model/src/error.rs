//! The model's errors: a network that does not have DeepID's shape, settings that cannot be
//! carried out, training that diverged.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file was read but its content is not a DeepID network.
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    /// Training settings that cannot be carried out.
    #[error("{0}")]
    Recipe(String),
    /// Training stopped because the loss or a weight stopped being finite.
    #[error("training diverged at step {step}: the {what} is no longer finite at learning rate {learning_rate}; no network was kept")]
    Diverged {
        step: usize,
        what: &'static str,
        learning_rate: f64,
    },
}

impl Error {
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }
}
