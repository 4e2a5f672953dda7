//! The pipeline driver's errors: the configuration or a stamp file, a finished run's tables,
//! the zoo report, or a stage run in process.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    File(#[from] formats::Error),
    #[error("{0}")]
    Table(#[from] defense::Error),
    #[error("{0}")]
    Report(#[from] render::Error),
    #[error("{0}")]
    Synth(#[from] badnets::Error),
}
