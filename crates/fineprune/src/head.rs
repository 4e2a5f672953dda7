//! The network from pool_3 to the class, arranged for pruning. Pruning a conv_3 channel zeroes
//! that channel of pool_3, and everything from pool_3 up to the first non-linearity (conv_4's
//! pre-activation and fc_1) is linear in pool_3, so one matrix `L` (1200 x 1120) maps pool_3 to
//! those pre-activations and removing channel c subtracts `pool_3[:, c] @ L[c rows]` (20 rows).
//! Only fc_2 and the output layer are recomputed, and only for images on which c is non-zero.

use crate::deepid::{DeepId, Dense};
use crate::error::Result;
use crate::features::POOL3_LEN;
use crate::weights::CONV3_CHANNELS;
use candle_core::{Device, Tensor};

/// conv_4 output positions (4 x 3) x 80 channels.
const CONV4_LEN: usize = 4 * 3 * 80;
const FC_LEN: usize = crate::weights::FEATURES;
/// Pre-activations per image: conv_4 (960) then fc_1 (160).
pub const PRE_LEN: usize = CONV4_LEN + FC_LEN;
/// Images per matrix product, to bound memory.
const CHUNK: usize = 1024;

pub struct Head {
    linear: Dense,
    /// Per conv_3 channel, its 20 rows of `linear`.
    channel_rows: Vec<Tensor>,
    fc_2: Dense,
    output: Dense,
}

impl Head {
    pub fn new(net: &DeepId) -> Result<Self> {
        let device = Device::Cpu;
        let conv_4 = net.layers[3].matrix.flatten_all()?.to_vec1::<f32>()?;
        let fc_1 = net.layers[4].matrix.flatten_all()?.to_vec1::<f32>()?;
        let c = CONV3_CHANNELS;
        let mut l = vec![0f32; POOL3_LEN * PRE_LEN];
        // conv_4 (2x2, valid) over the 5x4 pool_3 grid as a dense map.
        for oy in 0..4 {
            for ox in 0..3 {
                for ky in 0..2 {
                    for kx in 0..2 {
                        let p = (oy + ky) * 4 + ox + kx;
                        for ch in 0..c {
                            let src = &conv_4[((ky * 2 + kx) * c + ch) * 80..][..80];
                            let row = (p * c + ch) * PRE_LEN + (oy * 3 + ox) * 80;
                            l[row..row + 80].copy_from_slice(src);
                        }
                    }
                }
            }
        }
        for r in 0..POOL3_LEN {
            l[r * PRE_LEN + CONV4_LEN..][..FC_LEN].copy_from_slice(&fc_1[r * FC_LEN..][..FC_LEN]);
        }
        let conv_4_bias = net.layers[3].bias.repeat(12)?; // one copy per output position
        let bias = Tensor::cat(&[&conv_4_bias, &net.layers[4].bias], 0)?;
        let channel_rows = (0..c)
            .map(|ch| {
                let rows: Vec<f32> = (0..20)
                    .flat_map(|p| l[(p * c + ch) * PRE_LEN..][..PRE_LEN].iter().copied())
                    .collect();
                Tensor::from_vec(rows, (20, PRE_LEN), &device)
            })
            .collect::<candle_core::Result<_>>()?;
        Ok(Self {
            linear: Dense {
                matrix: Tensor::from_vec(l, (POOL3_LEN, PRE_LEN), &device)?,
                bias,
            },
            channel_rows,
            fc_2: net.layers[5].clone(),
            output: net.layers[6].clone(),
        })
    }

    /// pool_3 rows -> pre-activations.
    pub fn linear(&self, pool_3: &[f32]) -> Result<Vec<f32>> {
        let mut pre = Vec::with_capacity(pool_3.len() / POOL3_LEN * PRE_LEN);
        for chunk in pool_3.chunks(CHUNK * POOL3_LEN) {
            let n = chunk.len() / POOL3_LEN;
            let x = Tensor::from_slice(chunk, (n, POOL3_LEN), &Device::Cpu)?;
            pre.extend(self.linear.forward(&x)?.flatten_all()?.to_vec1::<f32>()?);
        }
        Ok(pre)
    }

    /// Pre-activations -> predicted classes (the first maximum wins a tie, as in numpy).
    /// The element-wise steps run over plain buffers between the two matrix products, so
    /// each chunk costs two products and no tensor temporaries.
    pub fn classify(&self, pre: &[f32]) -> Result<Vec<u32>> {
        let fc_2_bias = self.fc_2.bias.to_vec1::<f32>()?;
        let output_bias = self.output.bias.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(pre.len() / PRE_LEN);
        for chunk in pre.chunks(CHUNK * PRE_LEN) {
            let n = chunk.len() / PRE_LEN;
            let conv_4: Vec<f32> = chunk
                .chunks(PRE_LEN)
                .flat_map(|row| row[..CONV4_LEN].iter().map(|v| v.max(0.0)))
                .collect();
            let conv_4 = Tensor::from_vec(conv_4, (n, CONV4_LEN), &Device::Cpu)?;
            let mut hidden = conv_4
                .matmul(&self.fc_2.matrix)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            for (h, row) in hidden.chunks_mut(FC_LEN).zip(chunk.chunks(PRE_LEN)) {
                for ((v, b), f) in h.iter_mut().zip(&fc_2_bias).zip(&row[CONV4_LEN..]) {
                    *v = (*v + b + f).max(0.0);
                }
            }
            let hidden = Tensor::from_vec(hidden, (n, FC_LEN), &Device::Cpu)?;
            let logits = hidden
                .matmul(&self.output.matrix)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            out.extend(
                logits
                    .chunks(output_bias.len())
                    .map(|row| argmax_biased(row, &output_bias)),
            );
        }
        Ok(out)
    }
}

/// The index of the largest `row[i] + bias[i]`.
fn argmax_biased(row: &[f32], bias: &[f32]) -> u32 {
    let mut best = (0, f32::NEG_INFINITY);
    for (i, (v, b)) in row.iter().zip(bias).enumerate() {
        let x = v + b;
        if x > best.1 {
            best = (i, x);
        }
    }
    best.0 as u32
}

/// The state of a pruning sweep over one dataset.
pub struct Pruning<'h> {
    head: &'h Head,
    pool_3: Vec<f32>,
    pre: Vec<f32>,
    /// The current predictions of the pruned network.
    pub predictions: Vec<u32>,
}

impl<'h> Pruning<'h> {
    pub fn new(head: &'h Head, pool_3: Vec<f32>) -> Result<Self> {
        let pre = head.linear(&pool_3)?;
        let predictions = head.classify(&pre)?;
        Ok(Self {
            head,
            pool_3,
            pre,
            predictions,
        })
    }

    /// Prunes conv_3 channel `channel`; returns how many images it could affect.
    pub fn prune(&mut self, channel: usize) -> Result<usize> {
        let c = CONV3_CHANNELS;
        let affected: Vec<usize> = self
            .pool_3
            .chunks(POOL3_LEN)
            .enumerate()
            .filter(|(_, row)| (0..20).any(|p| row[p * c + channel] != 0.0))
            .map(|(i, _)| i)
            .collect();
        for ids in affected.chunks(CHUNK) {
            let mut x = Vec::with_capacity(ids.len() * 20);
            for &i in ids {
                let row = &mut self.pool_3[i * POOL3_LEN..][..POOL3_LEN];
                for p in 0..20 {
                    x.push(row[p * c + channel]);
                    row[p * c + channel] = 0.0;
                }
            }
            let x = Tensor::from_vec(x, (ids.len(), 20), &Device::Cpu)?;
            let delta = x
                .matmul(&self.head.channel_rows[channel])?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let mut pre = Vec::with_capacity(ids.len() * PRE_LEN);
            for (k, &i) in ids.iter().enumerate() {
                let row = &mut self.pre[i * PRE_LEN..][..PRE_LEN];
                for (r, d) in row.iter_mut().zip(&delta[k * PRE_LEN..][..PRE_LEN]) {
                    *r -= d;
                }
                pre.extend_from_slice(row);
            }
            for (&i, p) in ids.iter().zip(self.head.classify(&pre)?) {
                self.predictions[i] = p;
            }
        }
        Ok(affected.len())
    }
}
