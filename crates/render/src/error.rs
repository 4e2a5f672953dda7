//! The report's errors: a table or image file that is wrong or cannot be written, an
//! evaluate or scan table refused on reading, or no font for the plots' text.

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    File(#[from] formats::Error),
    #[error("{0}")]
    Table(#[from] defense::Error),
    /// No usable TrueType font: the message says where one was looked for.
    #[error("{0}")]
    Font(String),
}
