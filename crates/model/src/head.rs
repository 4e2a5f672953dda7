//! The network from pool_3 to the class, arranged for pruning. Pruning conv_3 channel c
//! zeroes channel c of pool_3, and conv_4's and fc_1's pre-activations are linear in pool_3,
//! so a pruned image's pre-activations are the old ones minus channel c's share, which
//! touches at most four of conv_4's twelve positions. Each image keeps its activations and
//! logits from step to step and carries only what changed upward: the conv_4 units whose
//! ReLU output moved (a few percent of them) into fc_2, the hidden units that moved (about
//! a fifth) into the logits. An image on which channel c is zero everywhere keeps its
//! prediction without any work. Images go through the whole sweep in small blocks, so a
//! block's activations and the weights stay in its core's cache.

use crate::geometry::LayerName;
use crate::geometry::{
    CONV3_CHANNELS as C, CONV4_LEN, CONV_4, CONV_4_HW, FEATURES, POOL3_LEN, POOL3_POSITIONS,
    POOL_3_HW,
};
use crate::linalg::{add_rows, argmax, axpy, im2col, matmul};
use crate::network::Network;
use rayon::prelude::*;

/// pool_3's width, and conv_4's output grid and channels.
const POOL_W: usize = POOL_3_HW.1;
const CONV4_H: usize = CONV_4_HW.0;
const CONV4_W: usize = CONV_4_HW.1;
const CONV4_OUT: usize = CONV_4.outputs;
const CONV4_K: usize = CONV_4.kernel;
/// Images per block.
const BLOCK: usize = 32;

/// The layers above pool_3, ready for inference: a view of the network's parameters.
pub struct Head<'a> {
    /// (2 * 2 * 60, 80), rows in (ky, kx, channel) order.
    conv_4: &'a [f32],
    conv_4_bias: &'a [f32],
    /// (1200, 160), rows in pool_3's NHWC order.
    fc_1: &'a [f32],
    fc_1_bias: &'a [f32],
    /// (960, 160), rows in conv_4's NHWC order.
    fc_2: &'a [f32],
    fc_2_bias: &'a [f32],
    /// (160, classes).
    output: &'a [f32],
    output_bias: &'a [f32],
    classes: usize,
}

/// The activations of a block of images above pool_3.
#[derive(Default)]
struct Block {
    /// conv_4 before and after ReLU (n x 960).
    conv_4_pre: Vec<f32>,
    conv_4: Vec<f32>,
    /// fc_1 with its bias (n x 160).
    fc_1: Vec<f32>,
    /// conv_4 @ fc_2, without the bias (n x 160).
    fc_2: Vec<f32>,
    /// relu(fc_1 + fc_2 + fc_2 bias) (n x 160).
    hidden: Vec<f32>,
    /// With the output bias (n x classes).
    logits: Vec<f32>,
    patches: Vec<f32>,
    /// Scaled rows of a weight matrix to add (scale, row).
    rows: Vec<(f32, usize)>,
}

impl<'a> Head<'a> {
    pub fn new(net: &'a Network) -> Self {
        use LayerName::*;
        Self {
            conv_4: net.matrix(Conv4),
            conv_4_bias: net.bias(Conv4),
            fc_1: net.matrix(Fc1),
            fc_1_bias: net.bias(Fc1),
            fc_2: net.matrix(Fc2),
            fc_2_bias: net.bias(Fc2),
            output: net.matrix(Output),
            output_bias: net.bias(Output),
            classes: net.classes(),
        }
    }

    /// Predicted classes of pool_3 rows.
    pub fn classify(&self, pool_3: &[f32]) -> Vec<u32> {
        pool_3
            .par_chunks(BLOCK * POOL3_LEN)
            .map_init(Block::default, |block, pool_3| {
                self.start(pool_3, block);
                block
                    .logits
                    .chunks(self.classes)
                    .map(argmax)
                    .collect::<Vec<_>>()
            })
            .flatten_iter()
            .collect()
    }

    /// Logits (one row of `classes` per image) of pool_3 rows.
    pub fn logits(&self, pool_3: &[f32]) -> Vec<f32> {
        pool_3
            .par_chunks(BLOCK * POOL3_LEN)
            .map_init(Block::default, |block, pool_3| {
                self.start(pool_3, block);
                block.logits.clone()
            })
            .flatten_iter()
            .collect()
    }

    /// Predictions of the pruned network after 0, 1, ..., `order.len()` channels are removed
    /// (step 0 is the unpruned network), one vector per step; `on_images` hears of each
    /// block of images done.
    pub fn sweep(
        &self,
        pool_3: &[f32],
        order: &[usize],
        on_images: &(dyn Fn(usize) + Sync),
    ) -> Vec<Vec<u32>> {
        let blocks: Vec<Vec<u32>> = pool_3
            .par_chunks(BLOCK * POOL3_LEN)
            .map_init(Block::default, |block, pool_3| {
                let n = pool_3.len() / POOL3_LEN;
                let steps = pulp::Arch::new().dispatch(SweepBlock {
                    head: self,
                    pool_3,
                    order,
                    block,
                });
                on_images(n);
                steps
            })
            .collect();
        let n = pool_3.len() / POOL3_LEN;
        (0..=order.len())
            .map(|s| {
                let mut step = Vec::with_capacity(n);
                for (b, steps) in blocks.iter().enumerate() {
                    let size = BLOCK.min(n - b * BLOCK);
                    step.extend_from_slice(&steps[s * size..][..size]);
                }
                step
            })
            .collect()
    }

    /// One block's predictions, step-major.
    #[inline(always)]
    fn sweep_block(&self, pool_3: &[f32], order: &[usize], block: &mut Block) -> Vec<u32> {
        let n = pool_3.len() / POOL3_LEN;
        self.start(pool_3, block);
        let mut steps: Vec<u32> = block.logits.chunks(self.classes).map(argmax).collect();
        for (s, &channel) in order.iter().enumerate() {
            for (i, image) in pool_3.chunks(POOL3_LEN).enumerate() {
                let prediction = if self.prune(image, channel, i, block) {
                    argmax(&block.logits[i * self.classes..][..self.classes])
                } else {
                    steps[s * n + i]
                };
                steps.push(prediction);
            }
        }
        steps
    }

    /// The activations of unpruned images.
    fn start(&self, pool_3: &[f32], b: &mut Block) {
        let n = pool_3.len() / POOL3_LEN;
        let positions = CONV4_H * CONV4_W;
        im2col(CONV4_K, C, pool_3, (n, POOL_3_HW.0, POOL_W), &mut b.patches);
        b.conv_4_pre.resize(n * CONV4_LEN, 0.0);
        matmul(
            n * positions,
            CONV4_K * CONV4_K * C,
            CONV4_OUT,
            &b.patches,
            self.conv_4,
            &mut b.conv_4_pre,
        );
        add_bias(&mut b.conv_4_pre, self.conv_4_bias);
        b.conv_4.clear();
        b.conv_4.extend(b.conv_4_pre.iter().map(|v| v.max(0.0)));
        b.fc_1.resize(n * FEATURES, 0.0);
        matmul(n, POOL3_LEN, FEATURES, pool_3, self.fc_1, &mut b.fc_1);
        add_bias(&mut b.fc_1, self.fc_1_bias);
        b.fc_2.resize(n * FEATURES, 0.0);
        matmul(n, CONV4_LEN, FEATURES, &b.conv_4, self.fc_2, &mut b.fc_2);
        b.hidden.resize(n * FEATURES, 0.0);
        for ((h, z), f) in b
            .hidden
            .chunks_mut(FEATURES)
            .zip(b.fc_2.chunks(FEATURES))
            .zip(b.fc_1.chunks(FEATURES))
        {
            for k in 0..FEATURES {
                h[k] = hidden_unit(z[k], self.fc_2_bias[k], f[k]);
            }
        }
        b.logits.resize(n * self.classes, 0.0);
        matmul(
            n,
            FEATURES,
            self.classes,
            &b.hidden,
            self.output,
            &mut b.logits,
        );
        add_bias(&mut b.logits, self.output_bias);
    }

    /// Removes `channel` from image `i` of the block (whose pool_3 is `image`); returns
    /// whether anything changed.
    #[inline(always)]
    fn prune(&self, image: &[f32], channel: usize, i: usize, b: &mut Block) -> bool {
        let x: [f32; POOL3_POSITIONS] = std::array::from_fn(|p| image[p * C + channel]);
        if x.iter().all(|v| *v == 0.0) {
            return false;
        }
        let pre = &mut b.conv_4_pre[i * CONV4_LEN..][..CONV4_LEN];
        let mut touched = [false; CONV4_H * CONV4_W];
        b.rows.clear();
        for (p, &v) in x.iter().enumerate().filter(|(_, v)| **v != 0.0) {
            let (py, px) = (p / POOL_W, p % POOL_W);
            // The conv_4 outputs whose window covers position p.
            for (ky, kx) in (0..CONV4_K).flat_map(|ky| (0..CONV4_K).map(move |kx| (ky, kx))) {
                let (Some(oy), Some(ox)) = (py.checked_sub(ky), px.checked_sub(kx)) else {
                    continue;
                };
                if oy < CONV4_H && ox < CONV4_W {
                    let q = oy * CONV4_W + ox;
                    touched[q] = true;
                    let w = &self.conv_4[((ky * CONV4_K + kx) * C + channel) * CONV4_OUT..];
                    axpy(&mut pre[q * CONV4_OUT..][..CONV4_OUT], -v, &w[..CONV4_OUT]);
                }
            }
            b.rows.push((-v, p * C + channel));
        }
        let fc_1 = &mut b.fc_1[i * FEATURES..][..FEATURES];
        add_rows(fc_1, &b.rows, self.fc_1);

        let conv_4 = &mut b.conv_4[i * CONV4_LEN..][..CONV4_LEN];
        b.rows.clear();
        for q in (0..touched.len()).filter(|&q| touched[q]) {
            for j in q * CONV4_OUT..(q + 1) * CONV4_OUT {
                let new = pre[j].max(0.0);
                if new != conv_4[j] {
                    b.rows.push((new - conv_4[j], j));
                    conv_4[j] = new;
                }
            }
        }
        let fc_2 = &mut b.fc_2[i * FEATURES..][..FEATURES];
        add_rows(fc_2, &b.rows, self.fc_2);

        let hidden = &mut b.hidden[i * FEATURES..][..FEATURES];
        b.rows.clear();
        for k in 0..FEATURES {
            let new = hidden_unit(fc_2[k], self.fc_2_bias[k], fc_1[k]);
            if new != hidden[k] {
                b.rows.push((new - hidden[k], k));
                hidden[k] = new;
            }
        }
        add_rows(
            &mut b.logits[i * self.classes..][..self.classes],
            &b.rows,
            self.output,
        );
        true
    }
}

/// [`Head::sweep_block`] compiled for the best vector instructions the CPU has (pulp
/// inlines it into functions built for each instruction set and picks one at run time).
struct SweepBlock<'a> {
    head: &'a Head<'a>,
    pool_3: &'a [f32],
    order: &'a [usize],
    block: &'a mut Block,
}

impl pulp::WithSimd for SweepBlock<'_> {
    type Output = Vec<u32>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<u32> {
        self.head.sweep_block(self.pool_3, self.order, self.block)
    }
}

#[inline(always)]
fn hidden_unit(fc_2: f32, fc_2_bias: f32, fc_1: f32) -> f32 {
    (fc_2 + fc_2_bias + fc_1).max(0.0)
}

fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}
