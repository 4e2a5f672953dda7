//! Inference from pixels to pool_3 on plain buffers, for every stage that only reads a
//! network. Each core takes an image through all three convolutions, so its patch matrices
//! and activations stay in the core's cache, and multiplies single-threaded; rayon spreads
//! the images over the cores. This avoids what the candle graph (`graph`, the tests' oracle)
//! pays per layer (fresh zeroed outputs, a thread hand-off per product, separate passes for
//! bias, ReLU and pooling), which training needs for its gradients. Both are checked against
//! Keras (`tests/keras_reference.rs`).

use crate::flops;
use crate::geometry::LayerName;
use crate::geometry::{
    Conv as Geometry, CONV3_CHANNELS, CONV_1, CONV_2, CONV_3, IMAGE_LEN, INPUT_HW, POOL3_LEN,
    POOL_1_HW, POOL_2_HW,
};
use crate::layout::to_nhwc;
use crate::linalg::{im2col, matmul};
use crate::network::Network;
use rayon::prelude::*;

/// Images per task. One measured fastest: conv_1's patch matrix (440 KB) and everything
/// after it then stay in a core's L2 cache, and the products are still large enough.
const GROUP: usize = 1;

/// One convolution (valid, stride 1) as a matrix product, followed by ReLU and 2x2 pooling.
#[derive(Clone, Copy)]
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

    /// The same weights, bit for bit (so the same outputs, bit for bit).
    fn same(&self, other: &Conv) -> bool {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        bits(self.matrix) == bits(other.matrix) && bits(self.bias) == bits(other.bias)
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
#[derive(Clone, Copy)]
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
        Trunks::new(vec![*self]).pool_3(pixels, pool_3, with_stats)
    }
}

/// Several networks' trunks over the same images, each layer computed once for the networks
/// whose input scale and weights up to it are equal (networks fine-tuned from conv_3 share
/// conv_1 and conv_2 with the network they came from), so scoring a network and its derived
/// ones costs little more than the first. Each network's activations are the bytes its
/// [`Trunk`] alone gives.
pub struct Trunks<'a> {
    trunks: Vec<Trunk<'a>>,
    /// Per network, the first network whose pool_1 and whose pool_2 it equals.
    same: Vec<[usize; 2]>,
}

impl<'a> Trunks<'a> {
    pub fn new(trunks: Vec<Trunk<'a>>) -> Self {
        let same = (0..trunks.len())
            .map(|i| {
                let t = &trunks[i];
                let same_pool_1 =
                    |u: &Trunk| u.scale.to_bits() == t.scale.to_bits() && u.conv_1.same(&t.conv_1);
                let pool_1 = (0..i).find(|&j| same_pool_1(&trunks[j])).unwrap_or(i);
                let pool_2 = (0..i)
                    .find(|&j| same_pool_1(&trunks[j]) && trunks[j].conv_2.same(&t.conv_2))
                    .unwrap_or(i);
                [pool_1, pool_2]
            })
            .collect();
        Self { trunks, same }
    }

    pub fn len(&self) -> usize {
        self.trunks.len()
    }

    /// Floating-point operations per image ([`crate::flops`]): every network's conv_3 and the
    /// conv_1 and conv_2 it does not share.
    pub fn flops_per_image(&self) -> f64 {
        let own = |(i, &[on_1, on_2]): (usize, &[usize; 2])| {
            let layers = [(on_1 == i, LayerName::Conv1), (on_2 == i, LayerName::Conv2)];
            let unshared = layers.into_iter().filter(|(own, _)| *own).map(|(_, l)| l);
            flops::forward(unshared.chain([LayerName::Conv3]), 0)
        };
        self.same.iter().enumerate().map(own).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.trunks.is_empty()
    }

    /// Writes every network's pool_3 activations of CSAW (C, H, W) images into `pool_3`,
    /// image by image: image m's for network i at `(m * len + i) * POOL3_LEN`. Returns the
    /// conv_3 statistics in the same order if `with_stats`.
    pub fn pool_3(&self, pixels: &[f32], pool_3: &mut [f32], with_stats: bool) -> Vec<Conv3Stats> {
        let k = self.trunks.len();
        assert_eq!(pixels.len() / IMAGE_LEN * k * POOL3_LEN, pool_3.len());
        let stats: Vec<Vec<Conv3Stats>> = pool_3
            .par_chunks_mut(GROUP * k * POOL3_LEN)
            .zip(pixels.par_chunks(GROUP * IMAGE_LEN))
            .map_init(Vec::new, |s, (out, images)| {
                pulp::Arch::new().dispatch(Group {
                    trunks: self,
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
        s: &mut Vec<Scratch>,
    ) -> Vec<Conv3Stats> {
        let (n, k) = (images.len() / IMAGE_LEN, self.trunks.len());
        s.resize_with(k, Scratch::default);
        let input_shape = (n, INPUT_HW.0, INPUT_HW.1, CONV_1.inputs);
        let pool_1_shape = (n, POOL_1_HW.0, POOL_1_HW.1, CONV_1.outputs);
        let pool_2_shape = (n, POOL_2_HW.0, POOL_2_HW.1, CONV_2.outputs);
        let mut stats = vec![None; if with_stats { n * k } else { 0 }];
        for (i, (t, &[on_1, on_2])) in self.trunks.iter().zip(&self.same).enumerate() {
            let (before, rest) = s.split_at_mut(i);
            let Scratch {
                input,
                patches: [p1, p2, p3],
                product: [z1, z2, z3],
                pooled: [a1, a2, a3],
            } = &mut rest[0];
            if on_1 == i {
                // CSAW's (C, H, W) to (H, W, C), scaled, so that patch rows are runs of memory.
                input.resize(images.len(), 0.0);
                for (dst, src) in input.chunks_mut(IMAGE_LEN).zip(images.chunks(IMAGE_LEN)) {
                    to_nhwc(src, t.scale, dst);
                }
                convolve(&t.conv_1, input, input_shape, a1, p1, z1);
            }
            if on_2 == i {
                let x1 = if on_1 == i {
                    &a1[..]
                } else {
                    &before[on_1].pooled[0]
                };
                convolve(&t.conv_2, x1, pool_1_shape, a2, p2, z2);
            }
            let x2 = if on_2 == i {
                &a2[..]
            } else {
                &before[on_2].pooled[1]
            };
            convolve(&t.conv_3, x2, pool_2_shape, a3, p3, z3);
            let raw = z3.chunks(z3.len() / n);
            for (m, (pooled, raw)) in a3.chunks(POOL3_LEN).zip(raw).enumerate() {
                out[(m * k + i) * POOL3_LEN..][..POOL3_LEN].copy_from_slice(pooled);
                if with_stats {
                    stats[m * k + i] = Some(conv3_stats(raw, t.conv_3.bias, pooled));
                }
            }
        }
        stats
            .into_iter()
            .map(|s| s.expect("every network"))
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

/// [`Trunks::group`] compiled for the best vector instructions the CPU has.
struct Group<'a> {
    trunks: &'a Trunks<'a>,
    images: &'a [f32],
    out: &'a mut [f32],
    with_stats: bool,
    s: &'a mut Vec<Scratch>,
}

impl pulp::WithSimd for Group<'_> {
    type Output = Vec<Conv3Stats>;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> Vec<Conv3Stats> {
        self.trunks
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
