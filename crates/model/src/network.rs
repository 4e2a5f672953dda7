//! DeepID's parameters in the one form every computation reads: a flat vector holding each
//! layer's (inputs, outputs) matrix in Keras's layout ([`crate::layout`]), then its bias. An
//! optimiser is one loop over the vector ([`crate::train`]); inference ([`crate::trunk`],
//! [`crate::head`]) and the gradients ([`crate::backprop`]) read the layers as slices of it.
//! [`DeepIdWeights`] holds the same parameters in the file contract's (PyTorch) layout, with
//! their provenance.

use crate::geometry::{LayerName, Layers};
use crate::layout::{from_matrix, to_matrix};
use crate::weights::{DeepIdWeights, Layer, Param};

/// Where one layer sits in the flat parameter vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    pub matrix: usize,
    pub rows: usize,
    pub cols: usize,
    pub bias: usize,
}

impl Slot {
    pub fn matrix<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.matrix..][..self.rows * self.cols]
    }

    pub fn bias<'a>(&self, p: &'a [f32]) -> &'a [f32] {
        &p[self.bias..][..self.cols]
    }

    /// The matrix and bias of a buffer laid out like the parameters, both mutable.
    pub fn split_mut<'a>(&self, p: &'a mut [f32]) -> (&'a mut [f32], &'a mut [f32]) {
        p[self.matrix..self.bias + self.cols].split_at_mut(self.rows * self.cols)
    }
}

/// DeepID's parameters as one flat vector, with where each layer sits in it.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    pub params: Vec<f32>,
    pub slots: Layers<Slot>,
    /// What pixels are multiplied by before conv_1.
    pub input_scale: f64,
}

impl Network {
    pub fn new(w: &DeepIdWeights) -> Self {
        let mut params = Vec::new();
        let slots = w.layers.map(|name, l| {
            let matrix = params.len();
            params.extend(to_matrix(name, &l.weight));
            let bias = params.len();
            params.extend_from_slice(&l.bias.data);
            let cols = l.bias.data.len();
            Slot {
                matrix,
                rows: (bias - matrix) / cols,
                cols,
                bias,
            }
        });
        Self {
            params,
            slots,
            input_scale: w.provenance.input_scale,
        }
    }

    pub fn classes(&self) -> usize {
        self.slots.output.cols
    }

    /// Layer `name`'s (inputs, outputs) matrix, row-major, inputs in NHWC patch or flatten
    /// order.
    pub fn matrix(&self, name: LayerName) -> &[f32] {
        self.slots.get(name).matrix(&self.params)
    }

    pub fn bias(&self, name: LayerName) -> &[f32] {
        self.slots.get(name).bias(&self.params)
    }

    /// Layer `name`'s matrix and bias, to edit in place.
    pub fn layer_mut(&mut self, name: LayerName) -> (&mut [f32], &mut [f32]) {
        self.slots.get(name).split_mut(&mut self.params)
    }

    /// Positions in the flat vector of conv_3 output channel `c` (kernel column and bias).
    pub fn conv3_channel(&self, c: usize) -> impl Iterator<Item = usize> {
        let s = self.slots.conv_3;
        (0..s.rows)
            .map(move |r| s.matrix + r * s.cols + c)
            .chain(std::iter::once(s.bias + c))
    }

    /// Back to PyTorch-layout weights, with `template`'s provenance.
    pub fn to_weights(&self, template: &DeepIdWeights) -> DeepIdWeights {
        let classes = self.classes();
        DeepIdWeights {
            layers: self.slots.map(|name, s| Layer {
                weight: from_matrix(name, &name.weight_shape(classes), s.matrix(&self.params)),
                bias: Param::new(vec![s.cols], s.bias(&self.params).to_vec()),
            }),
            provenance: template.provenance.clone(),
        }
    }
}
