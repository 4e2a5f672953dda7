//! DeepID's gradients on plain buffers, for training at the speed of the inference trunk.
//!
//! The parameters live in one flat vector (each layer's (inputs, outputs) matrix, as in
//! [`crate::network`], then its bias), so an optimiser is one loop over it. A mini-batch is cut
//! into groups of [`GROUP`] images, one task each: the task takes its images one at a time
//! through the convolutions (patch matrix, single-threaded `gemm`, ReLU and pooling in one
//! pass, so everything stays in the core's cache), runs the layers above pool_3 and the
//! loss for the whole group at once, and goes back down the same way, adding into its own
//! gradient buffer. The groups' gradients are then summed in a fixed order, so the result
//! does not depend on the number of cores. Layers below `first` are frozen: a caller can
//! compute their output once ([`Network::features`]) and train from there.
//! [`Network::pool_3_gradient`] runs the head alone, every parameter fixed, and returns the
//! gradient with respect to its pool_3 inputs (what RNP's channel masks need, [`crate::rnp`]);
//! [`Network::input_gradient`] runs the whole network so, with respect to its NHWC inputs (what
//! trigger inversion needs, [`crate::cleanse`]).

use crate::geometry::{
    convolved, pooled, Conv, LayerName, Layers, CONV4_LEN, CONV_1, CONV_2, CONV_3, CONV_4,
    FEATURES, IMAGE_LEN, INPUT_HW, POOL3_LEN,
};
use crate::layout::to_nhwc;
use crate::linalg::{im2col, matmul, product};
use crate::network::{Network, Slot};
use rayon::prelude::*;

/// Images per task.
pub const GROUP: usize = 16;

/// The convolutions by depth: the training loops run over them, `first` counting from 0.
const CONVS: [Conv; 4] = [CONV_1, CONV_2, CONV_3, CONV_4];
const CONV_LAYERS: [LayerName; 4] = [
    LayerName::Conv1,
    LayerName::Conv2,
    LayerName::Conv3,
    LayerName::Conv4,
];

/// conv_4's depth: the convolution that reads pool_3 runs with the head, a whole group at
/// once; those below it run one image at a time.
const HEAD: usize = CONVS.len() - 1;
/// Where pool_3 sits among the pooled outputs `a` / `d_a` (the output of conv_3).
const POOL_3: usize = HEAD - 1;

/// The convolution training starts from; the layers below it are frozen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrainFrom(usize);

impl TrainFrom {
    /// conv_4, whose input is pool_3.
    pub const HEAD: Self = Self(HEAD);

    /// None unless `layer` is a convolution.
    pub fn new(layer: LayerName) -> Option<Self> {
        CONV_LAYERS.iter().position(|l| *l == layer).map(Self)
    }

    pub fn layer(self) -> LayerName {
        CONV_LAYERS[self.0]
    }

    /// Values per image at this convolution's input (NHWC).
    pub fn input_len(self) -> usize {
        input_len(self.0)
    }
}

/// Input grid (h, w) of the convolution at depth `l`; all but conv_4 are followed by pooling.
const fn grid(l: usize) -> (usize, usize) {
    let mut hw = INPUT_HW;
    let mut i = 0;
    while i < l {
        hw = pooled(convolved(hw, CONVS[i]));
        i += 1;
    }
    hw
}

/// Values per image at the input of the convolution at depth `l` (l = HEAD: pool_3).
const fn input_len(l: usize) -> usize {
    let (h, w) = grid(l);
    h * w * CONVS[l].inputs
}

/// Output grid of the convolution at depth `l`, before pooling.
const fn out_grid(l: usize) -> (usize, usize) {
    convolved(grid(l), CONVS[l])
}

impl Network {
    /// The slot of the convolution at depth `l`.
    fn conv(&self, l: usize) -> Slot {
        *self.slots.get(CONV_LAYERS[l])
    }

    /// The range of the flat vector that holds the convolution `first` and everything
    /// above it.
    pub fn from_layer(&self, first: TrainFrom) -> std::ops::Range<usize> {
        self.conv(first.0).matrix..self.params.len()
    }

    /// Inputs of conv layer `first` (NHWC, [`input_len`] per image) for CSAW (C, H, W)
    /// images, multiplied by `scale`; the identity copy for `first` = 0.
    pub fn features(&self, first: TrainFrom, pixels: &[f32], scale: f32) -> Vec<f32> {
        self.forward(pixels, IMAGE_LEN, 0, first.0, |image, input| {
            to_nhwc(image, scale, input)
        })
    }

    /// Inputs of conv layer `to` for inputs of conv layer `from` (NHWC, per image
    /// `from.input_len()` in, `to.input_len()` out): the layers in between, on the network
    /// as it is now.
    pub fn advance(&self, from: TrainFrom, to: TrainFrom, inputs: &[f32]) -> Vec<f32> {
        self.forward(inputs, from.input_len(), from.0, to.0, |x, input| {
            input.copy_from_slice(x)
        })
    }

    /// Each image of `x` (`x_len` values), made the NHWC input of conv layer `from` by
    /// `load`, through the convolutions `from..to`, one image per task.
    fn forward(
        &self,
        x: &[f32],
        x_len: usize,
        from: usize,
        to: usize,
        load: impl Fn(&[f32], &mut [f32]) + Sync,
    ) -> Vec<f32> {
        let n = x.len() / x_len;
        let mut out = vec![0f32; n * input_len(to)];
        out.par_chunks_mut(input_len(to))
            .zip(x.par_chunks(x_len))
            .for_each_init(Task::default, |t, (dst, src)| {
                t.input.resize(input_len(from), 0.0);
                load(src, &mut t.input[..]);
                for l in from..to {
                    t.z[l].resize(z_len(l), 0.0);
                    t.a[l].resize(input_len(l + 1), 0.0);
                    let (below, above) = t.a.split_at_mut(l);
                    let x = if l == from { &t.input } else { &below[l - 1] };
                    conv_forward(self, l, x, 1, &mut t.patches, &mut t.z[l], &mut above[0]);
                }
                dst.copy_from_slice(if from == to { &t.input } else { &t.a[to - 1] });
            });
        out
    }

    /// Loss (summed over the images) and number of correct predictions of a mini-batch whose
    /// inputs of layer `first` are `inputs`; adds `d(sum of losses) / divisor` into `grad`.
    pub fn gradient(
        &self,
        first: TrainFrom,
        inputs: &[f32],
        labels: &[u32],
        divisor: f32,
        grad: &mut [f32],
        tasks: &mut Vec<Task>,
    ) -> (f64, usize) {
        let out = self.groups(first, Wrt::Params, inputs, labels, divisor, tasks);
        // The groups' sums, added in group order whatever the cores.
        const CHUNK: usize = 1 << 14;
        let range = self.from_layer(first);
        let tasks = &tasks[..labels.len().div_ceil(GROUP)];
        grad[range.clone()]
            .par_chunks_mut(CHUNK)
            .enumerate()
            .for_each(|(c, g)| {
                let at = range.start + c * CHUNK..range.start + c * CHUNK + g.len();
                for t in tasks {
                    for (g, v) in g.iter_mut().zip(&t.grad[at.clone()]) {
                        *g += v;
                    }
                }
            });
        out
    }

    /// Loss (summed over the images) and number of correct predictions of a mini-batch of
    /// pool_3 activations (NHWC, [`POOL3_LEN`] per image), with `d(sum of losses) / divisor`
    /// with respect to each activation written into `d_pool_3`; the parameters are fixed, so
    /// none of their gradients is computed.
    pub fn pool_3_gradient(
        &self,
        pool_3: &[f32],
        labels: &[u32],
        divisor: f32,
        d_pool_3: &mut [f32],
        tasks: &mut Vec<Task>,
    ) -> (f64, usize) {
        let out = self.groups(TrainFrom(HEAD), Wrt::Pool3, pool_3, labels, divisor, tasks);
        for (d, t) in d_pool_3.chunks_mut(GROUP * POOL3_LEN).zip(tasks.iter()) {
            d.copy_from_slice(&t.d_pool_3);
        }
        out
    }

    /// Loss (summed over the images) and number of correct predictions of a mini-batch of
    /// conv_1 inputs (NHWC, pixels already scaled, [`IMAGE_LEN`] per image), with
    /// `d(sum of losses) / divisor` with respect to each input value written into `d_inputs`;
    /// the parameters are fixed, so none of their gradients is computed.
    pub fn input_gradient(
        &self,
        inputs: &[f32],
        labels: &[u32],
        divisor: f32,
        d_inputs: &mut [f32],
        tasks: &mut Vec<Task>,
    ) -> (f64, usize) {
        let out = self.groups(TrainFrom(0), Wrt::Input, inputs, labels, divisor, tasks);
        for (d, t) in d_inputs.chunks_mut(GROUP * IMAGE_LEN).zip(tasks.iter()) {
            d.copy_from_slice(&t.d_input[..d.len()]);
        }
        out
    }

    /// Runs a mini-batch, one task per group of [`GROUP`] images; loss and hits summed.
    fn groups(
        &self,
        first: TrainFrom,
        wrt: Wrt,
        inputs: &[f32],
        labels: &[u32],
        divisor: f32,
        tasks: &mut Vec<Task>,
    ) -> (f64, usize) {
        let n = labels.len();
        let groups = n.div_ceil(GROUP);
        if tasks.len() < groups {
            tasks.resize_with(groups, Task::default);
        }
        let len = first.input_len();
        let results: Vec<(f64, usize)> = tasks[..groups]
            .par_iter_mut()
            .enumerate()
            .map(|(g, t)| {
                let at = g * GROUP..(n.min((g + 1) * GROUP));
                if wrt == Wrt::Params {
                    t.grad.resize(self.params.len(), 0.0);
                    t.grad[self.from_layer(first)].fill(0.0);
                }
                pulp::Arch::new().dispatch(Step {
                    net: self,
                    first: first.0,
                    wrt,
                    inputs: &inputs[at.start * len..at.end * len],
                    labels: &labels[at],
                    divisor,
                    t,
                })
            })
            .collect();
        results
            .into_iter()
            .fold((0.0, 0), |(l, h), (dl, dh)| (l + dl, h + dh))
    }
}

/// What a pass differentiates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrt {
    /// The parameters from `first` up (training).
    Params,
    /// Its pool_3 inputs alone, the parameters fixed (`first` is conv_4).
    Pool3,
    /// Its conv_1 inputs, the parameters fixed (`first` is conv_1).
    Input,
}

/// One task's buffers, kept from step to step.
#[derive(Default, Clone)]
pub struct Task {
    input: Vec<f32>,
    /// Per conv layer: pre-activations (with bias) and pooled ReLU outputs, for the group.
    z: [Vec<f32>; CONVS.len()],
    a: [Vec<f32>; HEAD],
    patches: Vec<f32>,
    d_patches: Vec<f32>,
    d_z: Vec<f32>,
    /// Gradients with respect to the pooled outputs, per conv layer (one image).
    d_a: [Vec<f32>; HEAD],
    /// The group's pool_3 gradients and the head's activations.
    d_pool_3: Vec<f32>,
    /// The group's input gradients ([`Wrt::Input`]).
    d_input: Vec<f32>,
    hidden: Vec<f32>,
    sum: Vec<f32>,
    logits: Vec<f32>,
    d_hidden: Vec<f32>,
    d_conv_4: Vec<f32>,
    grad: Vec<f32>,
}

/// Patches of `n` NHWC inputs of conv layer `l`; returns the output rows.
fn patches(l: usize, x: &[f32], n: usize, out: &mut Vec<f32>) -> usize {
    let (h, w) = grid(l);
    let (oh, ow) = im2col(CONVS[l].kernel, CONVS[l].inputs, x, (n, h, w), out);
    n * oh * ow
}

/// Adds patch-matrix gradients back onto the NHWC input of conv layer `l` (`n` images).
fn col2im(l: usize, d_patches: &[f32], n: usize, d_x: &mut [f32]) {
    let (h, w) = grid(l);
    let Conv {
        kernel: k,
        inputs: c,
        ..
    } = CONVS[l];
    let (oh, ow) = out_grid(l);
    for (img, src) in d_x
        .chunks_mut(h * w * c)
        .zip(d_patches.chunks(oh * ow * k * k * c))
        .take(n)
    {
        crate::linalg::col2im(k, (h, w, c), src, img);
    }
}

fn add_bias(rows: &mut [f32], bias: &[f32]) {
    for row in rows.chunks_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

fn add_column_sums(sums: &mut [f32], rows: &[f32]) {
    for row in rows.chunks(sums.len()) {
        for (s, v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

/// Pre-activation values per image of conv layer `l`.
const fn z_len(l: usize) -> usize {
    let (h, w) = out_grid(l);
    h * w * CONVS[l].outputs
}

/// conv layer `l` (below the head) of `n` images: pre-activations into `z`, ReLU and 2x2 max-pooling
/// into `a`.
#[inline(always)]
fn conv_forward(
    net: &Network,
    l: usize,
    x: &[f32],
    n: usize,
    patch_buf: &mut Vec<f32>,
    z: &mut [f32],
    a: &mut [f32],
) {
    let s = net.conv(l);
    let rows = patches(l, x, n, patch_buf);
    matmul(rows, s.rows, s.cols, patch_buf, s.matrix(&net.params), z);
    add_bias(&mut z[..rows * s.cols], s.bias(&net.params));
    let (oh, ow) = out_grid(l);
    let c = s.cols;
    // z holds the bias already.
    let zero = [0f32; 80];
    for (raw, dst) in z
        .chunks(oh * ow * c)
        .zip(a.chunks_mut(oh / 2 * (ow / 2) * c))
        .take(n)
    {
        crate::trunk::pool_bias_relu(raw, (oh, ow, c), &zero[..c], dst);
    }
}

/// Gradient of the pre-activations `z` of conv layer `l` (one image) from that of its pooled
/// ReLU output: each window's gradient goes to its first maximum, if that is positive.
#[inline(always)]
fn pool_backward(l: usize, z: &[f32], d_a: &[f32], d_z: &mut Vec<f32>) {
    let (oh, ow) = out_grid(l);
    let c = CONVS[l].outputs;
    let (ph, pw) = (oh / 2, ow / 2);
    d_z.clear();
    d_z.resize(oh * ow * c, 0.0);
    for y in 0..ph {
        for x in 0..pw {
            let g = &d_a[(y * pw + x) * c..][..c];
            let at = |dy: usize, dx: usize| ((2 * y + dy) * ow + 2 * x + dx) * c;
            let offsets = [at(0, 0), at(0, 1), at(1, 0), at(1, 1)];
            for i in 0..c {
                let mut best = offsets[0] + i;
                for &o in &offsets[1..] {
                    if z[o + i] > z[best] {
                        best = o + i;
                    }
                }
                if z[best] > 0.0 {
                    d_z[best] = g[i];
                }
            }
        }
    }
}

/// One task's share of a mini-batch, compiled for the best vector instructions the CPU has.
struct Step<'a> {
    net: &'a Network,
    first: usize,
    wrt: Wrt,
    inputs: &'a [f32],
    labels: &'a [u32],
    divisor: f32,
    t: &'a mut Task,
}

impl pulp::WithSimd for Step<'_> {
    type Output = (f64, usize);

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> (f64, usize) {
        self.run()
    }
}

impl Step<'_> {
    #[inline(always)]
    fn run(self) -> (f64, usize) {
        let Step {
            net,
            first,
            wrt,
            inputs,
            labels,
            divisor,
            t,
        } = self;
        let n = labels.len();
        let p = &net.params;
        let Layers {
            conv_4: s4,
            fc_1: s5,
            fc_2: s6,
            output: s7,
            ..
        } = net.slots;
        let classes = net.classes();

        // Down: the convolutions, one image at a time; pool_3 of the group ends up in a.
        let len = input_len(first);
        for l in first..HEAD {
            t.z[l].resize(n * z_len(l), 0.0);
            t.a[l].resize(n * input_len(l + 1), 0.0);
        }
        for i in 0..n {
            for l in first..HEAD {
                let (zl, al) = (z_len(l), input_len(l + 1));
                let (below, above) = t.a.split_at_mut(l);
                let x = if l == first {
                    &inputs[i * len..][..len]
                } else {
                    &below[l - 1][i * input_len(l)..][..input_len(l)]
                };
                let (z, a) = (&mut t.z[l][i * zl..][..zl], &mut above[0][i * al..][..al]);
                conv_forward(net, l, x, 1, &mut t.patches, z, a);
            }
        }
        let pool_3: &[f32] = if first == HEAD { inputs } else { &t.a[POOL_3] };

        // The head, for the whole group.
        let rows4 = patches(HEAD, pool_3, n, &mut t.patches);
        let z4 = &mut t.z[HEAD];
        z4.resize(n * CONV4_LEN, 0.0);
        matmul(rows4, s4.rows, s4.cols, &t.patches, s4.matrix(p), z4);
        add_bias(z4, s4.bias(p));
        let conv_4: Vec<f32> = z4.iter().map(|v| v.max(0.0)).collect();
        t.sum.resize(n * FEATURES, 0.0);
        matmul(n, s5.rows, FEATURES, pool_3, s5.matrix(p), &mut t.sum);
        product(
            n,
            s6.rows,
            FEATURES,
            (&conv_4, false),
            (s6.matrix(p), false),
            &mut t.sum,
            true,
        );
        for row in t.sum.chunks_mut(FEATURES) {
            for ((v, b5), b6) in row.iter_mut().zip(s5.bias(p)).zip(s6.bias(p)) {
                *v += b5 + b6;
            }
        }
        t.hidden.clear();
        t.hidden.extend(t.sum.iter().map(|v| v.max(0.0)));
        t.logits.resize(n * classes, 0.0);
        matmul(n, FEATURES, classes, &t.hidden, s7.matrix(p), &mut t.logits);
        add_bias(&mut t.logits, s7.bias(p));

        // Softmax cross-entropy; the logits become their gradient.
        let (mut loss, mut hits) = (0f64, 0usize);
        for (row, &y) in t.logits.chunks_mut(classes).zip(labels) {
            let y = y as usize;
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let own = (row[y] - max) as f64;
            hits += (crate::linalg::argmax(row) as usize == y) as usize;
            let mut total = 0f64;
            for v in row.iter_mut() {
                *v = (*v - max).exp();
                total += *v as f64;
            }
            loss += total.ln() - own;
            let scale = 1.0 / (total as f32 * divisor);
            for v in row.iter_mut() {
                *v *= scale;
            }
            row[y] -= 1.0 / divisor;
        }
        let d_logits = &t.logits;

        // Up again: the head, with its weights' gradients when training.
        let params = wrt == Wrt::Params;
        let g = &mut t.grad;
        if params {
            let (gm, gb) = s7.split_mut(g);
            product(
                FEATURES,
                n,
                classes,
                (&t.hidden, true),
                (d_logits, false),
                gm,
                true,
            );
            add_column_sums(gb, d_logits);
        }
        t.d_hidden.resize(n * FEATURES, 0.0);
        product(
            n,
            classes,
            FEATURES,
            (d_logits, false),
            (s7.matrix(p), true),
            &mut t.d_hidden,
            false,
        );
        for (d, s) in t.d_hidden.iter_mut().zip(&t.sum) {
            if *s <= 0.0 {
                *d = 0.0;
            }
        }
        let d_sum = &t.d_hidden;
        if params {
            for (slot, x, rows) in [(s5, pool_3, s5.rows), (s6, &conv_4[..], s6.rows)] {
                let (gm, gb) = slot.split_mut(g);
                product(rows, n, FEATURES, (x, true), (d_sum, false), gm, true);
                add_column_sums(gb, d_sum);
            }
        }
        t.d_conv_4.resize(n * CONV4_LEN, 0.0);
        product(
            n,
            FEATURES,
            s6.rows,
            (d_sum, false),
            (s6.matrix(p), true),
            &mut t.d_conv_4,
            false,
        );
        for (d, z) in t.d_conv_4.iter_mut().zip(t.z[HEAD].iter()) {
            if *z <= 0.0 {
                *d = 0.0;
            }
        }
        if params {
            let (gm, gb) = s4.split_mut(g);
            product(
                s4.rows,
                rows4,
                s4.cols,
                (&t.patches, true),
                (&t.d_conv_4, false),
                gm,
                true,
            );
            add_column_sums(gb, &t.d_conv_4);
            if first == HEAD {
                return (loss, hits);
            }
        }
        t.d_pool_3.resize(n * POOL3_LEN, 0.0);
        product(
            n,
            FEATURES,
            POOL3_LEN,
            (d_sum, false),
            (s5.matrix(p), true),
            &mut t.d_pool_3,
            false,
        );
        t.d_patches.resize(rows4 * s4.rows, 0.0);
        product(
            rows4,
            s4.cols,
            s4.rows,
            (&t.d_conv_4, false),
            (s4.matrix(p), true),
            &mut t.d_patches,
            false,
        );
        col2im(HEAD, &t.d_patches, n, &mut t.d_pool_3);
        if wrt == Wrt::Pool3 {
            return (loss, hits);
        }

        // The convolutions, one image at a time.
        if wrt == Wrt::Input {
            t.d_input.clear();
            t.d_input.resize(n * len, 0.0);
        }
        for i in 0..n {
            t.d_a[POOL_3].clear();
            t.d_a[POOL_3].extend_from_slice(&t.d_pool_3[i * POOL3_LEN..][..POOL3_LEN]);
            for l in (first..HEAD).rev() {
                let s = net.conv(l);
                let zl = z_len(l);
                pool_backward(l, &t.z[l][i * zl..][..zl], &t.d_a[l], &mut t.d_z);
                let x = if l == first {
                    &inputs[i * len..][..len]
                } else {
                    &t.a[l - 1][i * input_len(l)..][..input_len(l)]
                };
                let rows = patches(l, x, 1, &mut t.patches);
                if params {
                    let (gm, gb) = s.split_mut(g);
                    product(
                        s.rows,
                        rows,
                        s.cols,
                        (&t.patches, true),
                        (&t.d_z, false),
                        gm,
                        true,
                    );
                    add_column_sums(gb, &t.d_z);
                }
                if l > first || wrt == Wrt::Input {
                    t.d_patches.resize(rows * s.rows, 0.0);
                    product(
                        rows,
                        s.cols,
                        s.rows,
                        (&t.d_z, false),
                        (s.matrix(p), true),
                        &mut t.d_patches,
                        false,
                    );
                    let d_x = if l > first {
                        let d = &mut t.d_a[l - 1];
                        d.clear();
                        d.resize(input_len(l), 0.0);
                        &mut d[..]
                    } else {
                        &mut t.d_input[i * len..][..len]
                    };
                    col2im(l, &t.d_patches, 1, d_x);
                }
            }
        }
        (loss, hits)
    }
}
