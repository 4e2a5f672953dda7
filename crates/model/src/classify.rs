//! Classifying images with a network: the trunk to pool_3 ([`crate::trunk`]), then the head
//! ([`crate::head`]), both views of the network's parameters.

use crate::geometry::{IMAGE_LEN, POOL3_LEN};
use crate::head::Head;
use crate::network::Network;
use crate::trunk::{Trunk, Trunks};

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

/// B's logits and B''s classes for the same CSAW (C, H, W) images, the layers the two share
/// computed once ([`Trunks`]): what the repaired ensemble G(B, B') needs. The same bytes as
/// [`Network::logits`] and [`Network::predict`] apart.
pub fn pair(b: &Network, b_prime: &Network, pixels: &[f32]) -> (Vec<f32>, Vec<u32>) {
    let n = pixels.len() / IMAGE_LEN;
    let mut both = vec![0.0; n * 2 * POOL3_LEN];
    Trunks::new(vec![Trunk::new(b), Trunk::new(b_prime)]).pool_3(pixels, &mut both, false);
    let (mut pool_b, mut pool_prime) = (
        Vec::with_capacity(n * POOL3_LEN),
        Vec::with_capacity(n * POOL3_LEN),
    );
    for image in both.chunks(2 * POOL3_LEN) {
        pool_b.extend_from_slice(&image[..POOL3_LEN]);
        pool_prime.extend_from_slice(&image[POOL3_LEN..]);
    }
    (
        Head::new(b).logits(&pool_b),
        Head::new(b_prime).classify(&pool_prime),
    )
}
