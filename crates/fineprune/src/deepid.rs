//! The DeepID network in candle, computed in NHWC so that every convolution is one matrix
//! product over a patch matrix ([`crate::ops::Im2Col`]) with Keras's HWIO kernel as the
//! right-hand side. Training runs this graph for its gradients; the stages that only read a
//! network run the same arithmetic on plain buffers ([`crate::trunk`], [`crate::head`]).

use crate::csaw::IMAGE_LEN;
use crate::ops::{Im2Col, MaxPool2};
use crate::weights::{weight_shape, DeepIdWeights, Layer, Param, LAYERS};
use candle_core::{Device, Result, Tensor, Var};

/// Patch size of conv_1..conv_4.
const KERNELS: [usize; 4] = [4, 3, 3, 2];

/// One layer as a matrix product: `x @ matrix + bias`.
#[derive(Clone)]
pub struct Dense {
    /// (inputs, outputs); inputs in NHWC patch or flatten order.
    pub matrix: Tensor,
    pub bias: Tensor,
}

impl Dense {
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul(&self.matrix)?.broadcast_add(&self.bias)
    }
}

/// DeepID, ready to run.
#[derive(Clone)]
pub struct DeepId {
    /// conv_1..conv_4, fc_1, fc_2, output, as in [`LAYERS`].
    pub layers: Vec<Dense>,
    pub input_scale: f64,
}

/// Activations a stage may need from one forward pass.
pub struct Forward {
    /// (N, 10, 8, 60), after ReLU.
    pub conv_3: Tensor,
    /// (N, 5, 4, 60).
    pub pool_3: Tensor,
}

impl DeepId {
    /// Converts PyTorch-layout weights into matrix-product form.
    pub fn new(weights: &DeepIdWeights, device: &Device) -> Result<Self> {
        let layers = LAYERS
            .iter()
            .zip(&weights.layers)
            .map(|(name, l)| {
                let (rows, cols, data) = to_matrix(name, &l.weight);
                Ok(Dense {
                    matrix: Tensor::from_vec(data, (rows, cols), device)?,
                    bias: Tensor::from_slice(&l.bias.data, l.bias.data.len(), device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            input_scale: weights.provenance.input_scale,
        })
    }

    /// The trainable parameters as candle variables, with a network that computes with them.
    pub fn to_vars(&self) -> Result<(Self, Vec<Var>)> {
        let mut vars = Vec::new();
        let layers = self
            .layers
            .iter()
            .map(|d| {
                let m = Var::from_tensor(&d.matrix)?;
                let b = Var::from_tensor(&d.bias)?;
                let dense = Dense {
                    matrix: m.as_tensor().clone(),
                    bias: b.as_tensor().clone(),
                };
                vars.push(m);
                vars.push(b);
                Ok(dense)
            })
            .collect::<Result<_>>()?;
        Ok((
            Self {
                layers,
                input_scale: self.input_scale,
            },
            vars,
        ))
    }

    /// Back to PyTorch-layout weights, keeping `template`'s provenance.
    pub fn to_weights(&self, template: &DeepIdWeights) -> Result<DeepIdWeights> {
        let classes = self.classes();
        let layers = LAYERS
            .iter()
            .zip(&self.layers)
            .map(|(name, d)| {
                let m = d.matrix.flatten_all()?.to_vec1::<f32>()?;
                Ok(Layer {
                    weight: from_matrix(name, &weight_shape(name, classes), &m),
                    bias: Param::new(vec![d.bias.dims1()?], d.bias.to_vec1::<f32>()?),
                })
            })
            .collect::<Result<_>>()?;
        Ok(DeepIdWeights {
            layers,
            provenance: template.provenance.clone(),
        })
    }

    pub fn classes(&self) -> usize {
        self.layers[6].bias.dims()[0]
    }

    fn conv(&self, layer: usize, x: &Tensor) -> Result<Tensor> {
        let (n, h, w, _) = x.dims4()?;
        let k = KERNELS[layer];
        let out = self.layers[layer]
            .forward(&x.apply_op1(Im2Col { k })?)?
            .relu()?;
        out.reshape((n, h + 1 - k, w + 1 - k, ()))
    }

    fn pool(&self, x: &Tensor) -> Result<Tensor> {
        x.apply_op1(MaxPool2)
    }

    /// Images (N, 55, 47, 3), already scaled, to conv_3 and pool_3 activations.
    pub fn features(&self, x: &Tensor) -> Result<Forward> {
        let x = self.pool(&self.conv(0, x)?)?;
        let x = self.pool(&self.conv(1, &x)?)?;
        let conv_3 = self.conv(2, &x)?;
        let pool_3 = self.pool(&conv_3)?;
        Ok(Forward { conv_3, pool_3 })
    }

    /// pool_3 (N, 5, 4, 60) to logits (N, classes).
    pub fn head(&self, pool_3: &Tensor) -> Result<Tensor> {
        let n = pool_3.dims4()?.0;
        let branch_a = self.layers[4].forward(&pool_3.reshape((n, ()))?)?;
        let conv_4 = self.conv(3, pool_3)?.reshape((n, ()))?;
        let branch_b = self.layers[5].forward(&conv_4)?;
        self.layers[6].forward(&(branch_a + branch_b)?.relu()?)
    }

    /// Images to logits.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.head(&self.features(x)?.pool_3)
    }
}

/// CSAW (C, H, W) pixel batches to the network's scaled NHWC input tensor.
pub fn input_tensor(pixels: &[f32], scale: f64, device: &Device) -> Result<Tensor> {
    let [c, h, w] = crate::weights::INPUT_SHAPE;
    let n = pixels.len() / IMAGE_LEN;
    let s = scale as f32;
    let mut out = vec![0f32; pixels.len()];
    for (dst, src) in out.chunks_mut(IMAGE_LEN).zip(pixels.chunks(IMAGE_LEN)) {
        for ch in 0..c {
            for p in 0..h * w {
                dst[p * c + ch] = src[ch * h * w + p] * s;
            }
        }
    }
    Tensor::from_vec(out, (n, h, w, c), device)
}

/// PyTorch weight to the (inputs, outputs) matrix: conv (O,I,KH,KW) -> rows (ky, kx, i);
/// dense (O, in) -> rows in NHWC flatten order.
pub(crate) fn to_matrix(name: &str, w: &Param) -> (usize, usize, Vec<f32>) {
    let index = matrix_index(name, &w.shape);
    let (rows, cols) = matrix_dims(&w.shape);
    let mut m = vec![0f32; w.data.len()];
    for (t, v) in w.data.iter().enumerate() {
        m[index(t)] = *v;
    }
    (rows, cols, m)
}

pub(crate) fn from_matrix(name: &str, shape: &[usize], m: &[f32]) -> Param {
    let index = matrix_index(name, shape);
    Param::new(shape.to_vec(), (0..m.len()).map(|t| m[index(t)]).collect())
}

fn matrix_dims(shape: &[usize]) -> (usize, usize) {
    (shape[1..].iter().product(), shape[0])
}

/// The matrix position of each PyTorch flat index: this is exactly Keras's kernel layout.
fn matrix_index(name: &str, shape: &[usize]) -> impl Fn(usize) -> usize {
    crate::keras::keras_index(name, shape)
}

/// Loads a safetensors model file and prepares it to run.
pub fn load(path: &std::path::Path) -> crate::Result<(DeepIdWeights, DeepId)> {
    let weights = DeepIdWeights::load(path)?;
    let net = DeepId::new(&weights, &Device::Cpu)?;
    Ok((weights, net))
}
