//! fineprune: the fine-pruning defense (Liu, Dolan-Gavitt, Garg, RAID 2018) against
//! backdoored DeepID face networks. The stage binaries are thin CLIs over this crate.

pub mod atomic;
pub mod backprop;
pub mod config;
pub mod csaw;
pub mod error;
pub mod images;
pub mod keras;
pub mod linalg;
pub mod weights;

pub use error::{Error, Result};
pub mod cli;
pub mod deepid;
pub mod evaluate;
pub mod features;
pub mod h5write;
pub mod head;
pub mod ingest;
pub mod metrics;
pub mod ops;
pub mod paths;
pub mod profile;
pub mod progress;
pub mod report;
pub mod source;
pub mod sweep;
pub mod synth;
pub mod table;
pub mod train;
pub mod trunk;

/// The allocator every stage binary installs: the tensor code allocates and frees large
/// buffers at a high rate, which glibc's malloc answers with mmap/munmap pairs and page faults.
pub use mimalloc::MiMalloc;
