//! The DeepID face network: its geometry ([`geometry`]), weights and provenance ([`weights`]),
//! the two memory layouts ([`layout`]), inference on plain buffers ([`network`], [`trunk`],
//! [`head`]), training ([`backprop`], [`train`]), RNP's channel masks ([`rnp`]) and the candle
//! graph ([`graph`]) that checks the hand-written gradients.

pub mod backprop;
pub mod cleanse;
pub mod error;
pub mod geometry;
pub mod graph;
pub mod head;
pub mod layout;
pub mod linalg;
pub mod metrics;
pub mod network;
pub mod ops;
pub mod progress;
pub mod rnp;
pub mod train;
pub mod trunk;
pub mod weights;

pub use error::{Error, Result};
pub use geometry::{LayerName, Layers};
pub use network::{Classifier, Network};
pub use weights::{DeepIdWeights, Provenance};
