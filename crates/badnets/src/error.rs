//! The synthetic benchmark's errors: an output it must not replace or cannot write, or a
//! BadNet whose training diverged.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    File(#[from] formats::Error),
    #[error("{0}")]
    Model(#[from] model::Error),
    /// Training stopped on a non-finite value; `setting` is what the user can lower.
    #[error("{source}: lower {setting}")]
    Diverged {
        setting: String,
        source: model::Error,
    },
}
