//! The DeepID face network: its geometry ([`geometry`]), weights and provenance ([`weights`]),
//! the two memory layouts ([`layout`]), the parameters every computation reads ([`network`]),
//! inference on plain buffers ([`trunk`], [`head`], [`classify`]), training ([`backprop`],
//! [`train`]), RNP's channel masks ([`rnp`]), trigger inversion ([`cleanse`]) and, with the
//! `oracle` feature (tests only), the candle graph (`graph`, `ops`) that checks the
//! hand-written engine.

pub mod backprop;
pub mod classify;
pub mod cleanse;
pub mod error;
pub mod flops;
pub mod geometry;
#[cfg(feature = "oracle")]
pub mod graph;
pub mod head;
pub mod layout;
pub mod linalg;
pub mod metrics;
pub mod network;
#[cfg(feature = "oracle")]
pub mod ops;
pub mod progress;
pub mod rnp;
pub mod train;
pub mod trunk;
pub mod weights;

pub use error::{Error, Result};
pub use geometry::{LayerName, Layers};
pub use network::Network;
pub use weights::{DeepIdWeights, Provenance};
