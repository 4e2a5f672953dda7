//! DeepID as a candle graph, computed in NHWC so that every convolution is one matrix product
//! over a patch matrix ([`crate::ops::Im2Col`]) with Keras's HWIO kernel as the right-hand
//! side. candle differentiates it automatically, which makes it the reference the hand-written
//! gradients of [`crate::backprop`] are checked against; the stages run the same arithmetic on
//! plain buffers ([`crate::trunk`], [`crate::head`]).

use crate::geometry::LayerName;
use crate::geometry::{Conv, CONV_1, CONV_2, CONV_3, CONV_4, IMAGE_LEN, INPUT_HW, INPUT_SHAPE};
use crate::layout::to_nhwc;
use crate::network::Network;
use crate::ops::{Im2Col, MaxPool2};
use crate::weights::DeepIdWeights;
use candle_core::{Device, Result, Tensor, Var};

/// One layer as a matrix product: `x @ matrix + bias`.
#[derive(Clone)]
pub struct Linear {
    /// (inputs, outputs); inputs in NHWC patch or flatten order.
    pub matrix: Tensor,
    pub bias: Tensor,
}

impl Linear {
    fn new(net: &Network, name: LayerName, device: &Device) -> Result<Self> {
        let s = net.slots.get(name);
        Ok(Self {
            matrix: Tensor::from_slice(net.matrix(name), (s.rows, s.cols), device)?,
            bias: Tensor::from_slice(net.bias(name), s.cols, device)?,
        })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.matrix)?.broadcast_add(&self.bias)
    }

    /// A valid convolution of NHWC `x` with ReLU.
    fn conv(&self, conv: Conv, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, _) = x.dims4()?;
        let k = conv.kernel;
        let out = self.forward(&x.apply_op1(Im2Col { k })?)?.relu()?;
        out.reshape((n, h + 1 - k, w + 1 - k, ()))
    }

    /// The same layer computing with fresh candle variables, which it also returns.
    fn to_var(&self) -> Result<(Self, [Var; 2])> {
        let (m, b) = (
            Var::from_tensor(&self.matrix)?,
            Var::from_tensor(&self.bias)?,
        );
        let dense = Self {
            matrix: m.as_tensor().clone(),
            bias: b.as_tensor().clone(),
        };
        Ok((dense, [m, b]))
    }
}

/// DeepID, ready to run.
#[derive(Clone)]
pub struct DeepId {
    pub conv_1: Linear,
    pub conv_2: Linear,
    pub conv_3: Linear,
    pub conv_4: Linear,
    pub fc_1: Linear,
    pub fc_2: Linear,
    pub output: Linear,
    pub input_scale: f64,
}

/// Activations a caller may need from one forward pass.
pub struct Forward {
    /// (N, 10, 8, 60), after ReLU.
    pub conv_3: Tensor,
    /// (N, 5, 4, 60).
    pub pool_3: Tensor,
}

impl DeepId {
    pub fn new(weights: &DeepIdWeights, device: &Device) -> Result<Self> {
        let net = Network::new(weights);
        use LayerName::*;
        Ok(Self {
            conv_1: Linear::new(&net, Conv1, device)?,
            conv_2: Linear::new(&net, Conv2, device)?,
            conv_3: Linear::new(&net, Conv3, device)?,
            conv_4: Linear::new(&net, Conv4, device)?,
            fc_1: Linear::new(&net, Fc1, device)?,
            fc_2: Linear::new(&net, Fc2, device)?,
            output: Linear::new(&net, Output, device)?,
            input_scale: net.input_scale,
        })
    }

    /// The network computing with candle variables, and those variables in forward order
    /// (each layer's matrix, then its bias).
    pub fn to_vars(&self) -> Result<(Self, Vec<Var>)> {
        let mut vars = Vec::new();
        let mut var = |d: &Linear| -> Result<Linear> {
            let (dense, v) = d.to_var()?;
            vars.extend(v);
            Ok(dense)
        };
        let net = Self {
            conv_1: var(&self.conv_1)?,
            conv_2: var(&self.conv_2)?,
            conv_3: var(&self.conv_3)?,
            conv_4: var(&self.conv_4)?,
            fc_1: var(&self.fc_1)?,
            fc_2: var(&self.fc_2)?,
            output: var(&self.output)?,
            input_scale: self.input_scale,
        };
        Ok((net, vars))
    }

    /// Images (N, 55, 47, 3), already scaled, to conv_3 and pool_3 activations.
    pub fn features(&self, x: &Tensor) -> Result<Forward> {
        let x = self.conv_1.conv(CONV_1, x)?.apply_op1(MaxPool2)?;
        let x = self.conv_2.conv(CONV_2, &x)?.apply_op1(MaxPool2)?;
        let conv_3 = self.conv_3.conv(CONV_3, &x)?;
        let pool_3 = conv_3.apply_op1(MaxPool2)?;
        Ok(Forward { conv_3, pool_3 })
    }

    /// pool_3 (N, 5, 4, 60) to logits (N, classes).
    pub fn head(&self, pool_3: &Tensor) -> Result<Tensor> {
        let n = pool_3.dims4()?.0;
        let branch_a = self.fc_1.forward(&pool_3.reshape((n, ()))?)?;
        let conv_4 = self.conv_4.conv(CONV_4, pool_3)?.reshape((n, ()))?;
        let branch_b = self.fc_2.forward(&conv_4)?;
        self.output.forward(&(branch_a + branch_b)?.relu()?)
    }

    /// Images to logits.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head(&self.features(x)?.pool_3)
    }
}

/// CSAW (C, H, W) pixel batches to the network's scaled NHWC input tensor.
pub fn input_tensor(pixels: &[f32], scale: f64, device: &Device) -> Result<Tensor> {
    let n = pixels.len() / IMAGE_LEN;
    let mut out = vec![0f32; pixels.len()];
    for (dst, src) in out.chunks_mut(IMAGE_LEN).zip(pixels.chunks(IMAGE_LEN)) {
        to_nhwc(src, scale as f32, dst);
    }
    Tensor::from_vec(out, (n, INPUT_HW.0, INPUT_HW.1, INPUT_SHAPE[0]), device)
}
