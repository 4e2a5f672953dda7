//! A DeepID network prepared for arithmetic on plain buffers: each layer as one matrix
//! product `x @ matrix + bias` in Keras's layout ([`crate::layout`]), and the classifier built
//! from its convolutional trunk ([`crate::trunk`]) and its head ([`crate::head`]).

use crate::geometry::{Layers, IMAGE_LEN, POOL3_LEN};
use crate::head::Head;
use crate::layout::{from_matrix, to_matrix};
use crate::trunk::Trunk;
use crate::weights::{DeepIdWeights, Layer, Param};

/// One layer as a matrix product.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense {
    /// (inputs, outputs), row-major; inputs in NHWC patch or flatten order.
    pub matrix: Vec<f32>,
    pub bias: Vec<f32>,
}

/// DeepID in matrix-product form.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub layers: Layers<Dense>,
    /// What pixels are multiplied by before conv_1.
    pub input_scale: f64,
}

impl Network {
    pub fn new(w: &DeepIdWeights) -> Self {
        Self {
            layers: w.layers.map(|name, l| Dense {
                matrix: to_matrix(name, &l.weight),
                bias: l.bias.data.clone(),
            }),
            input_scale: w.provenance.input_scale,
        }
    }

    pub fn classes(&self) -> usize {
        self.layers.output.bias.len()
    }

    /// Back to PyTorch-layout weights, with `template`'s provenance.
    pub fn to_weights(&self, template: &DeepIdWeights) -> DeepIdWeights {
        let classes = self.classes();
        DeepIdWeights {
            layers: self.layers.map(|name, d| Layer {
                weight: from_matrix(name, &name.weight_shape(classes), &d.matrix),
                bias: Param::new(vec![d.bias.len()], d.bias.clone()),
            }),
            provenance: template.provenance.clone(),
        }
    }
}

/// A network ready to classify images.
pub struct Classifier {
    trunk: Trunk,
    head: Head,
}

impl Classifier {
    pub fn new(net: &Network) -> Self {
        Self {
            trunk: Trunk::new(net),
            head: Head::new(net),
        }
    }

    /// Predicted classes of CSAW (C, H, W) images.
    pub fn predict(&self, pixels: &[f32]) -> Vec<u32> {
        self.head.classify(&self.pool_3(pixels))
    }

    /// Logits (one row of `classes` per image) of CSAW (C, H, W) images.
    pub fn logits(&self, pixels: &[f32]) -> Vec<f32> {
        self.head.logits(&self.pool_3(pixels))
    }

    fn pool_3(&self, pixels: &[f32]) -> Vec<f32> {
        let mut pool_3 = vec![0.0; pixels.len() / IMAGE_LEN * POOL3_LEN];
        self.trunk.pool_3(pixels, &mut pool_3, false);
        pool_3
    }
}
