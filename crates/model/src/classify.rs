//! Classifying images with a network: the trunk to pool_3 ([`crate::trunk`]), then the head
//! ([`crate::head`]), both views of the network's parameters.

use crate::geometry::{IMAGE_LEN, POOL3_LEN};
use crate::head::Head;
use crate::network::Network;
use crate::trunk::Trunk;

impl Network {
    /// Predicted classes of CSAW (C, H, W) images.
    pub fn predict(&self, pixels: &[f32]) -> Vec<u32> {
        Head::new(self).classify(&self.pool_3(pixels))
    }

    /// Logits (one row of `classes` per image) of CSAW (C, H, W) images.
    pub fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        Head::new(self).logits(&self.pool_3(pixels))
    }

    /// pool_3 activations (NHWC, [`POOL3_LEN`] per image) of CSAW (C, H, W) images.
    pub fn pool_3(&self, pixels: &[f32]) -> Vec<f32> {
        let mut pool_3 = vec![0.0; pixels.len() / IMAGE_LEN * POOL3_LEN];
        Trunk::new(self).pool_3(pixels, &mut pool_3, false);
        pool_3
    }
}
