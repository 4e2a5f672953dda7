//! The files fineprune reads and writes: CSAW HDF5 datasets ([`csaw`], [`h5`]), Keras
//! HDF5 weights ([`keras`]), ONNX graphs for serving ([`onnx`]), Parquet image tables ([`images`], [`source`]) and result tables
//! ([`table`]), safetensors models ([`weights`]), `pipeline.toml` ([`config`]), and output
//! that appears whole or not at all ([`atomic`]). Every error names the file it is about.

pub mod atomic;
pub mod checksum;
pub mod config;
pub mod csaw;
pub mod error;
pub mod files;
pub mod h5;
pub mod images;
pub mod keras;
pub mod onnx;
pub mod paths;
pub mod photos;
pub mod source;
pub mod table;
pub mod weights;
pub mod written;

pub use error::{Error, Result};
pub use weights::ModelFile;
