//! The defense's errors: a file that is missing, unreadable or wrong (from [`formats`]), a
//! network the model refuses, or training that diverged, with the setting that controls it.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Not transparent, so callers find the file's error (a configuration error among them)
    /// in the error's chain.
    #[error("{0}")]
    File(#[from] formats::Error),
    #[error("{0}")]
    Model(#[from] model::Error),
    /// Training stopped on a non-finite value; `setting` is what the user can lower.
    #[error("{stage}: {source}: lower {setting}")]
    Diverged {
        stage: String,
        setting: String,
        source: model::Error,
    },
    /// The thread decoding images ahead of the network stopped without an answer.
    #[error("the image decoder failed")]
    Decoder,
}

impl Error {
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        formats::Error::invalid(path, message).into()
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        formats::Error::io(path, source).into()
    }

    pub fn config(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        formats::Error::Config {
            path: path.into(),
            message: message.into(),
        }
        .into()
    }

    /// `error` as [`Error::Diverged`] when training diverged, naming the setting to lower.
    pub fn diverged(error: model::Error, stage: &str, setting: impl Into<String>) -> Self {
        match error {
            model::Error::Diverged { .. } => Error::Diverged {
                stage: stage.into(),
                setting: setting.into(),
                source: error,
            },
            other => other.into(),
        }
    }
}
