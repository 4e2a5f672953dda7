//! Inference from pixels to pool_3 on plain buffers, for every stage that only reads a
//! network. Each core takes an image through all three convolutions, so its patch matrices
//! and activations stay in the core's cache, and multiplies single-threaded; rayon spreads
//! the images over the cores. This avoids what the candle graph (`graph`, the tests' oracle)
//! pays per layer (fresh zeroed outputs, a thread hand-off per product, separate passes for
//! bias, ReLU and pooling), which training needs for its gradients. Both are checked against
//! Keras (`tests/keras_reference.rs`).

use crate::geometry::LayerName;
use crate::geometry::{
    Conv as Geometry, CONV3_CHANNELS, CONV_1, CONV_2, CONV_3, IMAGE_LEN, INPUT_HW, POOL3_LEN,
};
use crate::layout::to_nhwc;
use crate::linalg::{im2col, matmul};
use crate::network::Network;
use rayon::prelude::*;

/// Images per task. One measured fastest: conv_1's patch matrix (440 KB) and everything
/// after it then stay in a core's L2 cache, and the products are still large enough.
const GROUP: usize = 1;

/// One convolution (valid, stride 1) as a matrix product, followed by ReLU and 2x2 pooling.
struct Conv<'a> {
    geometry: Geometry,
    /// (k * k * inputs, outputs), rows in (ky, kx, input) order.
    matrix: &'a [f32],
    bias: &'a [f32],
}

impl<'a> Conv<'a> {
    fn new(geometry: Geometry, net: &'a Network, name: LayerName) -> Self {
        Self {
            geometry,
            matrix: net.matrix(name),
            bias: net.bias(name),
        }
    }
}

/// conv_3 statistics of one image, which `profile` ranks channels by.
#[derive(Debug, Clone, Copy)]
pub struct Conv3Stats {
    /// Sum over the pool_3 positions.
    pub pool_3_sum: [f64; CONV3_CHANNELS],
    /// Sum over the conv_3 positions (after ReLU).
    pub conv_3_sum: [f64; CONV3_CHANNELS],
    /// Whether the channel is non-zero anywhere in conv_3.
    pub active: [bool; CONV3_CHANNELS],
}

/// The convolutional trunk of a network, ready for inference: a view of its parameters.
pub struct Trunk<'a> {
    conv_1: Conv<'a>,
    conv_2: Conv<'a>,
    conv_3: Conv<'a>,
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

impl<'a> Trunk<'a> {
    pub fn new(net: &'a Network) -> Self {
        Self {
            conv_1: Conv::new(CONV_1, net, LayerName::Conv1),
            conv_2: Conv::new(CONV_2, net, LayerName::Conv2),
            conv_3: Conv::new(CONV_3, net, LayerName::Conv3),
            scale: net.input_scale as f32,
        }
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
        let n = images.len() / IMAGE_LEN;
        // CSAW's (C, H, W) to (H, W, C), scaled, so that patch rows are runs of memory.
        s.input.resize(images.len(), 0.0);
        for (dst, src) in s.input.chunks_mut(IMAGE_LEN).zip(images.chunks(IMAGE_LEN)) {
            to_nhwc(src, self.scale, dst);
        }
        let Scratch {
            input,
            patches: [p1, p2, p3],
            product: [z1, z2, z3],
            pooled: [a1, a2, a3],
        } = s;
        let shape = (n, INPUT_HW.0, INPUT_HW.1, CONV_1.inputs);
        let shape = convolve(&self.conv_1, input, shape, a1, p1, z1);
        let shape = convolve(&self.conv_2, a1, shape, a2, p2, z2);
        convolve(&self.conv_3, a2, shape, a3, p3, z3);
        out.copy_from_slice(a3);
        if !with_stats {
            return Vec::new();
        }
        z3.chunks(z3.len() / n)
            .zip(out.chunks(POOL3_LEN))
            .map(|(raw, pooled)| conv3_stats(raw, self.conv_3.bias, pooled))
            .collect()
    }
}

/// Convolution `conv` over `n` NHWC images of (h, w, c), then bias, ReLU and 2x2 max-pooling
/// into `out`; returns the pooled shape. The raw products are left in `product`.
#[inline(always)]
fn convolve(
    conv: &Conv,
    x: &[f32],
    (n, h, w, c): (usize, usize, usize, usize),
    out: &mut Vec<f32>,
    patches: &mut Vec<f32>,
    product: &mut Vec<f32>,
) -> (usize, usize, usize, usize) {
    let Geometry {
        kernel, outputs, ..
    } = conv.geometry;
    let (oh, ow) = im2col(kernel, c, x, (n, h, w), patches);
    let rows = n * oh * ow;
    product.resize(rows * outputs, 0.0);
    matmul(
        rows,
        kernel * kernel * c,
        outputs,
        patches,
        conv.matrix,
        product,
    );
    let (ph, pw) = (oh / 2, ow / 2);
    out.resize(n * ph * pw * outputs, 0.0);
    for (raw, dst) in product
        .chunks(oh * ow * outputs)
        .zip(out.chunks_mut(ph * pw * outputs))
    {
        pool_bias_relu(raw, (oh, ow, outputs), conv.bias, dst);
    }
    (n, ph, pw, outputs)
}

/// [`Trunk::group`] compiled for the best vector instructions the CPU has.
struct Group<'a> {
    trunk: &'a Trunk<'a>,
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
pub fn pool_bias_relu(
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
