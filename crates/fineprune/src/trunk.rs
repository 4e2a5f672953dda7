//! Inference from pixels to pool_3 on plain buffers, for every stage that only reads a
//! network. Each core takes an image through all three convolutions, so its patch matrices
//! and activations stay in the core's cache, and multiplies single-threaded; rayon spreads
//! the images over the cores. This avoids what the candle graph in [`crate::deepid`]
//! pays per layer (fresh zeroed outputs, a thread hand-off per product, separate passes for
//! bias, ReLU and pooling), which training needs for its gradients. Both are checked against
//! Keras (`tests/keras_reference.rs`).

use crate::csaw::IMAGE_LEN;
use crate::deepid::DeepId;
use crate::error::Result;
use crate::features::POOL3_LEN;
use crate::linalg::{im2col, matmul};
use crate::weights::{CONV3_CHANNELS, INPUT_SHAPE};
use rayon::prelude::*;

/// Images per task. One measured fastest: conv_1's patch matrix (440 KB) and everything
/// after it then stay in a core's L2 cache, and the products are still large enough.
const GROUP: usize = 1;

/// One convolution (valid, stride 1) as a matrix product, followed by ReLU and 2x2 pooling.
struct Conv {
    k: usize,
    /// (k * k * inputs, outputs), rows in (ky, kx, input) order.
    matrix: Vec<f32>,
    bias: Vec<f32>,
}

impl Conv {
    fn outputs(&self) -> usize {
        self.bias.len()
    }
}

/// conv_3 statistics of one image, which `profile` ranks channels by.
#[derive(Debug, Clone, Copy)]
pub struct Conv3Stats {
    /// Sum over the 20 pool_3 positions.
    pub pool_3_sum: [f64; CONV3_CHANNELS],
    /// Sum over the 80 conv_3 positions (after ReLU).
    pub conv_3_sum: [f64; CONV3_CHANNELS],
    /// Whether the channel is non-zero anywhere in conv_3.
    pub active: [bool; CONV3_CHANNELS],
}

/// The convolutional trunk of a DeepId, ready for inference.
pub struct Trunk {
    convs: [Conv; 3],
    scale: f32,
}

/// Per-task buffers, reused from group to group (one per layer, so none is regrown).
#[derive(Default)]
struct Scratch {
    input: Vec<f32>,
    patches: [Vec<f32>; 3],
    product: [Vec<f32>; 3],
    pooled: [Vec<f32>; 3],
}

impl Trunk {
    pub fn new(net: &DeepId) -> Result<Self> {
        let conv = |i: usize, k: usize| -> Result<Conv> {
            Ok(Conv {
                k,
                matrix: net.layers[i].matrix.flatten_all()?.to_vec1()?,
                bias: net.layers[i].bias.to_vec1()?,
            })
        };
        Ok(Self {
            convs: [conv(0, 4)?, conv(1, 3)?, conv(2, 3)?],
            scale: net.input_scale as f32,
        })
    }

    /// Writes the pool_3 activations (NHWC, [`POOL3_LEN`] per image) of CSAW (C, H, W)
    /// images into `pool_3`; returns each image's conv_3 statistics if `with_stats`.
    pub fn pool_3(&self, pixels: &[f32], pool_3: &mut [f32], with_stats: bool) -> Vec<Conv3Stats> {
        assert_eq!(pixels.len() / IMAGE_LEN * POOL3_LEN, pool_3.len());
        let stats: Vec<Vec<Conv3Stats>> = pool_3
            .par_chunks_mut(GROUP * POOL3_LEN)
            .zip(pixels.par_chunks(GROUP * IMAGE_LEN))
            .map_init(Scratch::default, |s, (out, images)| {
                pulp::Arch::new().dispatch(Group {
                    trunk: self,
                    images,
                    out,
                    with_stats,
                    s,
                })
            })
            .collect();
        stats.into_iter().flatten().collect()
    }

    #[inline(always)]
    fn group(
        &self,
        images: &[f32],
        out: &mut [f32],
        with_stats: bool,
        s: &mut Scratch,
    ) -> Vec<Conv3Stats> {
        let [c, h, w] = INPUT_SHAPE;
        let n = images.len() / IMAGE_LEN;
        // CSAW's (C, H, W) to (H, W, C), scaled, so that patch rows are runs of memory.
        s.input.resize(images.len(), 0.0);
        for (dst, src) in s.input.chunks_mut(IMAGE_LEN).zip(images.chunks(IMAGE_LEN)) {
            for ch in 0..c {
                for (p, v) in src[ch * h * w..][..h * w].iter().enumerate() {
                    dst[p * c + ch] = v * self.scale;
                }
            }
        }
        let mut shape = (n, h, w, c);
        for layer in 0..3 {
            let (done, rest) = s.pooled.split_at_mut(layer);
            let input = if layer == 0 {
                &s.input
            } else {
                &done[layer - 1]
            };
            let (patches, product) = (&mut s.patches[layer], &mut s.product[layer]);
            shape = self.convolve(layer, input, shape, &mut rest[0], patches, product);
        }
        out.copy_from_slice(&s.pooled[2]);
        if !with_stats {
            return Vec::new();
        }
        let conv = &self.convs[2];
        let conv_3_len = s.product[2].len() / n;
        s.product[2]
            .chunks(conv_3_len)
            .zip(out.chunks(POOL3_LEN))
            .map(|(raw, pooled)| conv3_stats(raw, &conv.bias, pooled))
            .collect()
    }

    /// Convolution `layer` over `n` NHWC images of (h, w, c), then bias, ReLU and 2x2
    /// max-pooling into `out`; returns the pooled shape. The raw products are left in
    /// `product`.
    #[inline(always)]
    fn convolve(
        &self,
        layer: usize,
        x: &[f32],
        (n, h, w, c): (usize, usize, usize, usize),
        out: &mut Vec<f32>,
        patches: &mut Vec<f32>,
        product: &mut Vec<f32>,
    ) -> (usize, usize, usize, usize) {
        let conv = &self.convs[layer];
        // Patch sizes known at compile time make the row copies a few vector moves.
        let (oh, ow) = match (conv.k, c) {
            (4, 3) => im2col::<4, 3>(x, (n, h, w), patches),
            (3, 20) => im2col::<3, 20>(x, (n, h, w), patches),
            (3, 40) => im2col::<3, 40>(x, (n, h, w), patches),
            _ => unreachable!("DeepID's convolutions"),
        };
        let (rows, row) = (n * oh * ow, conv.k * conv.k * c);
        let m = conv.outputs();
        product.resize(rows * m, 0.0);
        matmul(rows, row, m, patches, &conv.matrix, product);
        let (ph, pw) = (oh / 2, ow / 2);
        out.resize(n * ph * pw * m, 0.0);
        for (raw, dst) in product.chunks(oh * ow * m).zip(out.chunks_mut(ph * pw * m)) {
            pool_bias_relu(raw, (oh, ow, m), &conv.bias, dst);
        }
        (n, ph, pw, m)
    }
}

/// [`Trunk::group`] compiled for the best vector instructions the CPU has.
struct Group<'a> {
    trunk: &'a Trunk,
    images: &'a [f32],
    out: &'a mut [f32],
    with_stats: bool,
    s: &'a mut Scratch,
}

impl pulp::WithSimd for Group<'_> {
    type Output = Vec<Conv3Stats>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<Conv3Stats> {
        self.trunk
            .group(self.images, self.out, self.with_stats, self.s)
    }
}

/// 2x2 max-pooling (an odd last row or column dropped, as in Keras) of raw products, then
/// bias and ReLU: adding a per-channel bias and rounding are monotonic, so this equals
/// pooling after the bias and ReLU, on a quarter of the values.
#[inline(always)]
pub(crate) fn pool_bias_relu(
    raw: &[f32],
    (h, w, c): (usize, usize, usize),
    bias: &[f32],
    out: &mut [f32],
) {
    let (oh, ow) = (h / 2, w / 2);
    for y in 0..oh {
        for x in 0..ow {
            let at = |dy: usize, dx: usize| &raw[((2 * y + dy) * w + 2 * x + dx) * c..][..c];
            let (a, b, p, q) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
            let d = &mut out[(y * ow + x) * c..][..c];
            for i in 0..c {
                d[i] = (a[i].max(b[i]).max(p[i].max(q[i])) + bias[i]).max(0.0);
            }
        }
    }
}

#[inline(always)]
fn conv3_stats(raw: &[f32], bias: &[f32], pooled: &[f32]) -> Conv3Stats {
    let mut s = Conv3Stats {
        pool_3_sum: [0.0; CONV3_CHANNELS],
        conv_3_sum: [0.0; CONV3_CHANNELS],
        active: [false; CONV3_CHANNELS],
    };
    for row in pooled.chunks(CONV3_CHANNELS) {
        for (sum, v) in s.pool_3_sum.iter_mut().zip(row) {
            *sum += *v as f64;
        }
    }
    for row in raw.chunks(CONV3_CHANNELS) {
        for (i, (v, b)) in row.iter().zip(bias).enumerate() {
            let v = (v + b).max(0.0);
            s.conv_3_sum[i] += v as f64;
            s.active[i] |= v != 0.0;
        }
    }
    s
}
