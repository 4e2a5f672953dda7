//! The fine-pruning defense (Liu, Dolan-Gavitt, Garg, RAID 2018) against backdoored DeepID
//! networks: rank conv_3's channels by mean activation on clean data ([`profile`]), prune
//! them in that order while measuring accuracy ([`sweep`]), fine-tune the pruned networks
//! ([`config::FinetuneConfig`]), and score every network kind, including the repaired
//! ensemble G ([`evaluate`], [`metrics`]); [`predict`] deploys B and G on new images.
//! [`formats::paths`] is the file contract between the stages.

pub mod config;
mod error;
pub mod evaluate;
pub mod features;
pub mod finetune;
pub mod fingerprint;
pub mod ingest;
pub mod metrics;
pub mod models;
pub mod predict;
pub mod profile;
pub mod prune;
pub mod results;
pub mod scan;
pub mod sweep;

pub use error::{Error, Result};
