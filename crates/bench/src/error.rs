//! The benchmark's errors: a file it generates or reads, or a stage that did not run to the
//! end.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    File(#[from] formats::Error),
    #[error("starting {command}: {source}")]
    Start {
        command: String,
        source: std::io::Error,
    },
    #[error("stage failed: {command}")]
    Failed { command: String },
}
