//! The library's error type: every variant names the file (or config key) it is about, so a
//! stage can print one line that tells the user what to fix.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable HDF5 file or object: {source}", path.display())]
    Hdf5 { path: PathBuf, source: hdf5::Error },
    #[error("{}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        source: parquet::errors::ParquetError,
    },
    #[error("{}: {source}", path.display())]
    Arrow {
        path: PathBuf,
        source: arrow::error::ArrowError,
    },
    #[error("{}: not a valid safetensors file: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        source: safetensors::SafeTensorError,
    },
    /// The file was read but its content is wrong (shape, layout, values).
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error(transparent)]
    Model(#[from] model::Error),
}

impl Error {
    pub fn invalid(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Invalid {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub fn hdf5(path: impl Into<PathBuf>, source: hdf5::Error) -> Self {
        Error::Hdf5 {
            path: path.into(),
            source,
        }
    }

    pub fn parquet(path: impl Into<PathBuf>, source: parquet::errors::ParquetError) -> Self {
        Error::Parquet {
            path: path.into(),
            source,
        }
    }

    pub fn arrow(path: impl Into<PathBuf>, source: arrow::error::ArrowError) -> Self {
        Error::Arrow {
            path: path.into(),
            source,
        }
    }
}

/// Attaches a file path to the errors of one crate, for `?` chains.
pub trait WithPath<T> {
    fn at(self, path: &std::path::Path) -> Result<T>;
}

impl<T> WithPath<T> for std::result::Result<T, hdf5::Error> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::hdf5(path, e))
    }
}

impl<T> WithPath<T> for std::result::Result<T, std::io::Error> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}

impl<T> WithPath<T> for std::result::Result<T, parquet::errors::ParquetError> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::parquet(path, e))
    }
}

impl<T> WithPath<T> for std::result::Result<T, arrow::error::ArrowError> {
    fn at(self, path: &std::path::Path) -> Result<T> {
        self.map_err(|e| Error::arrow(path, e))
    }
}
