//! Trigger inversion in the manner of Neural Cleanse (Wang et al., IEEE S&P 2019): for a
//! target label, the smallest mask and pattern that send clean images there. An image `x`
//! (CHW pixels in 0..255) becomes `(1 - m) * x + m * p`, the mask `m` (one value per pixel
//! position, shared by the three channels) and the pattern `p` (one per pixel value) held in
//! (0, 1) and (0, 255) by sigmoids of free parameters. Adam minimises the cross-entropy
//! towards the label plus `cost` times the mask's L1 norm; `cost` starts at `init_cost` once
//! the trigger first works, is multiplied by `cost_multiplier` after `patience` steps in a row
//! on which it works and divided by it (to the power 1.5) after as many on which it does not,
//! and the smallest working mask is kept. A backdoor's target needs a far smaller mask than any
//! other label.
//!
//! Which labels to invert first, when there are many, comes from [`stimulate`]. The gradients
//! come from [`Net::input_gradient`]; every sum runs in image order, so equal
//! inputs and seed give equal bytes.

use crate::backprop::Task;
use crate::error::{Error, Result};
use crate::geometry::{CONV3_CHANNELS, POOL3_LEN};
use crate::geometry::{IMAGE_LEN, INPUT_SHAPE};
use crate::head::Head;
use crate::layout::to_nhwc;
use crate::metrics::percent;
use crate::network::Network;
use crate::train::Examples;
use crate::trunk::Trunk;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::statistics::{Data, Median, Statistics};

/// How many working triggers an inversion keeps, each at most [`SPACING`] times the size of
/// the one before.
pub const KEPT: usize = 8;
const SPACING: f64 = 0.95;

/// Pixel positions of an image (the mask's length).
pub const POSITIONS: usize = INPUT_SHAPE[1] * INPUT_SHAPE[2];

/// How one inversion runs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub steps: usize,
    pub batch_size: usize,
    /// Adam's rate on the free parameters of mask and pattern.
    pub learning_rate: f64,
    /// The L1 weight set once the trigger first works.
    pub init_cost: f64,
    pub cost_multiplier: f64,
    pub patience: usize,
    /// A trigger "works" on a batch when at least this share (percent) goes to the label.
    pub success: f64,
    pub seed: u64,
}

/// A mask and a pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    /// Per pixel position, in (0, 1).
    pub mask: Vec<f32>,
    /// Per pixel value (CHW), in (0, 255).
    pub pattern: Vec<f32>,
}

impl Trigger {
    /// Writes `image` (CHW) with the trigger stamped on into `out`.
    pub fn apply(&self, image: &[f32], out: &mut [f32]) {
        for (c, (dst, src)) in out
            .chunks_mut(POSITIONS)
            .zip(image.chunks(POSITIONS))
            .enumerate()
        {
            let pattern = &self.pattern[c * POSITIONS..][..POSITIONS];
            for (((d, &x), &m), &p) in dst.iter_mut().zip(src).zip(&self.mask).zip(pattern) {
                *d = (1.0 - m) * x + m * p;
            }
        }
    }

    /// The mask's L1 norm: how many pixel positions it covers.
    pub fn l1(&self) -> f64 {
        self.mask.iter().map(|&m| m as f64).sum()
    }
}

/// What one inversion found.
#[derive(Debug, Clone)]
pub struct Inverted {
    pub trigger: Trigger,
    /// Whether any step's batch reached the success share (else `trigger` is the last one).
    pub works: bool,
    /// Up to [`KEPT`] working triggers that were each the smallest so far, at least 5% apart
    /// in mask L1, largest first, `trigger` last: the smallest worked on one batch, perhaps by
    /// luck, and a caller that needs a trigger that works on more images picks among these.
    pub kept: Vec<Trigger>,
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// The free parameters: mask logits (one per position), then pattern logits (one per value).
struct Free(Vec<f32>);

impl Free {
    fn trigger(&self) -> Trigger {
        let (m, p) = self.0.split_at(POSITIONS);
        Trigger {
            mask: m.iter().map(|&v| sigmoid(v)).collect(),
            pattern: p.iter().map(|&v| 255.0 * sigmoid(v)).collect(),
        }
    }
}

/// The loss of `images` (CHW, `labels` the wanted classes) under `trigger`, summed over
/// the images, its gradient with respect to the free parameters (`d(sum of losses) /
/// divisor`) in `grad`, and how many images went to their label. The L1 term is not in it.
pub fn trigger_gradient(
    net: &Network,
    scale: f32,
    trigger: &Trigger,
    (images, labels): (&[f32], &[u32]),
    divisor: f32,
    grad: &mut [f32],
    tasks: &mut Vec<Task>,
) -> (f64, usize) {
    let n = labels.len();
    let mut stamped = vec![0f32; IMAGE_LEN];
    let mut inputs = vec![0f32; n * IMAGE_LEN];
    for (image, input) in images.chunks(IMAGE_LEN).zip(inputs.chunks_mut(IMAGE_LEN)) {
        trigger.apply(image, &mut stamped);
        to_nhwc(&stamped, scale, input);
    }
    let mut d_inputs = vec![0f32; n * IMAGE_LEN];
    let out = net.input_gradient(&inputs, labels, divisor, &mut d_inputs, tasks);
    let channels = INPUT_SHAPE[0];
    grad.fill(0.0);
    let (d_mask, d_pattern) = grad.split_at_mut(POSITIONS);
    for (image, d_input) in images.chunks(IMAGE_LEN).zip(d_inputs.chunks(IMAGE_LEN)) {
        for c in 0..channels {
            let x = &image[c * POSITIONS..][..POSITIONS];
            let p = &trigger.pattern[c * POSITIONS..][..POSITIONS];
            let d_p = &mut d_pattern[c * POSITIONS..][..POSITIONS];
            for q in 0..POSITIONS {
                // d(loss)/d(stamped pixel): the NHWC input's gradient times the scale.
                let d = d_input[q * channels + c] * scale;
                d_mask[q] += d * (p[q] - x[q]);
                d_p[q] += d * trigger.mask[q];
            }
        }
    }
    // Through the sigmoids.
    for (g, &m) in d_mask.iter_mut().zip(&trigger.mask) {
        *g *= m * (1.0 - m);
    }
    for (g, &p) in d_pattern.iter_mut().zip(&trigger.pattern) {
        let s = p / 255.0;
        *g *= 255.0 * s * (1.0 - s);
    }
    out
}

/// Adam with Neural Cleanse's moments (0.5, 0.9).
struct Adam {
    m: Vec<f32>,
    v: Vec<f32>,
    t: i32,
}

impl Adam {
    fn step(&mut self, x: &mut [f32], g: &[f32], rate: f32) {
        const B1: f32 = 0.5;
        const B2: f32 = 0.9;
        self.t += 1;
        let (c1, c2) = (1.0 - B1.powi(self.t), 1.0 - B2.powi(self.t));
        for (((x, &g), m), v) in x.iter_mut().zip(g).zip(&mut self.m).zip(&mut self.v) {
            *m = B1 * *m + (1.0 - B1) * g;
            *v = B2 * *v + (1.0 - B2) * g * g;
            *x -= rate * (*m / c1) / ((*v / c2).sqrt() + 1e-8);
        }
    }
}

/// Inverts a trigger towards `target` on the clean `images` of other labels.
pub fn invert(
    net: &Network,
    scale: f32,
    images: &Examples,
    target: u32,
    s: &Settings,
) -> Result<Inverted> {
    let mut order: Vec<usize> = (0..images.len())
        .filter(|&i| images.labels[i] != target)
        .collect();
    if order.is_empty() || s.batch_size == 0 || s.steps == 0 {
        return Err(Error::Recipe(
            "trigger inversion needs clean images of other labels, a batch and a step".into(),
        ));
    }
    let mut free = Free(vec![0f32; POSITIONS + IMAGE_LEN]);
    let mut adam = Adam {
        m: vec![0.0; free.0.len()],
        v: vec![0.0; free.0.len()],
        t: 0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(s.seed ^ u64::from(target));
    let mut next = order.len();
    let batch = s.batch_size.min(order.len());
    let (mut grad, mut tasks) = (vec![0f32; free.0.len()], Vec::new());
    let labels = vec![target; batch];
    let mut pixels = vec![0f32; batch * IMAGE_LEN];
    let (mut cost, mut above, mut below) = (0f64, 0usize, 0usize);
    let mut best: Option<f64> = None;
    let mut kept: Vec<Trigger> = Vec::with_capacity(KEPT);
    for _ in 0..s.steps {
        if next + batch > order.len() {
            order.shuffle(&mut rng);
            next = 0;
        }
        for (dst, &i) in pixels.chunks_mut(IMAGE_LEN).zip(&order[next..next + batch]) {
            dst.copy_from_slice(&images.pixels[i * IMAGE_LEN..][..IMAGE_LEN]);
        }
        next += batch;
        let trigger = free.trigger();
        let (loss, hits) = trigger_gradient(
            net,
            scale,
            &trigger,
            (&pixels, &labels),
            batch as f32,
            &mut grad,
            &mut tasks,
        );
        if !loss.is_finite() {
            return Err(Error::Diverged {
                step: adam.t as usize + 1,
                what: "trigger's loss",
                learning_rate: s.learning_rate,
            });
        }
        let works = percent(hits, batch) >= s.success;
        if works {
            let l1 = trigger.l1();
            if best.is_none_or(|b| l1 < b) {
                best = Some(l1);
                // The smallest replaces the last kept while it is within SPACING of the one
                // before, so the kept triggers span a range of sizes.
                let n = kept.len();
                if n >= 2 && l1 >= SPACING * kept[n - 2].l1() {
                    kept[n - 1] = trigger.clone();
                } else {
                    if n == KEPT {
                        kept.remove(0);
                    }
                    kept.push(trigger.clone());
                }
            }
        }
        // The cost schedule.
        if cost == 0.0 && works {
            cost = s.init_cost;
        } else if cost > 0.0 {
            (above, below) = if works {
                (above + 1, 0)
            } else {
                (0, below + 1)
            };
            if above >= s.patience {
                cost *= s.cost_multiplier;
                above = 0;
            } else if below >= s.patience {
                cost /= s.cost_multiplier.powf(1.5);
                below = 0;
            }
        }
        // The L1 term's gradient, through the mask's sigmoid.
        for (g, &m) in grad[..POSITIONS].iter_mut().zip(&trigger.mask) {
            *g += cost as f32 * m * (1.0 - m);
        }
        adam.step(&mut free.0, &grad, s.learning_rate as f32);
    }
    Ok(match kept.last() {
        Some(trigger) => Inverted {
            trigger: trigger.clone(),
            works: true,
            kept,
        },
        None => Inverted {
            trigger: free.trigger(),
            works: false,
            kept,
        },
    })
}

/// The share (percent) of `images` (with their `labels`) of labels other than `target` that
/// `network` sends to `target` once stamped with `trigger`.
pub fn success(
    network: &Network,
    trigger: &Trigger,
    (images, labels): (&[f32], &[u32]),
    target: u32,
) -> f64 {
    const CHUNK: usize = 1024;
    let (mut hits, mut seen) = (0, 0);
    let others: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] != target).collect();
    let mut stamped = vec![0f32; CHUNK * IMAGE_LEN];
    for chunk in others.chunks(CHUNK) {
        let out = &mut stamped[..chunk.len() * IMAGE_LEN];
        for (dst, &i) in out.chunks_mut(IMAGE_LEN).zip(chunk) {
            trigger.apply(&images[i * IMAGE_LEN..][..IMAGE_LEN], dst);
        }
        let pred = network.predict(out);
        hits += pred.iter().filter(|&&p| p == target).count();
        seen += pred.len();
    }
    percent(hits, seen)
}

/// The stimulation levels of [`stimulate`], times a channel's largest clean activation.
pub const LEVELS: [f32; 5] = [1.0, 2.0, 4.0, 8.0, 16.0];

/// Which labels a backdoor may send images to, from the network's insides (artificial brain
/// stimulation, after ABS, Liu et al., CCS 2019): each pool_3 channel in turn is set, at every
/// position of every image, to [`LEVELS`] times its largest activation on `images` (a channel
/// silent on them, as a backdoor's often is, to the layer's largest), and the head classifies
/// the result. A backdoor lives in a few channels that, raised, send every image to its target
/// whatever the image, and already at low levels, where a natural label needs the highest.
/// Per label: over the channels, the largest mean over the levels of the percent of the images
/// of other labels the raised channel sent there. Costs one trunk pass and `channels x levels`
/// head passes.
pub fn stimulate(network: &Network, (images, labels): (&[f32], &[u32])) -> Vec<f64> {
    let n = labels.len();
    let mut pool_3 = vec![0f32; n * POOL3_LEN];
    Trunk::new(network).pool_3(images, &mut pool_3, false);
    let mut largest = vec![0f32; CONV3_CHANNELS];
    for row in pool_3.chunks(CONV3_CHANNELS) {
        for (m, &v) in largest.iter_mut().zip(row) {
            *m = m.max(v);
        }
    }
    let layer = largest.iter().copied().fold(0f32, f32::max);
    let head = Head::new(network);
    let classes = network.classes();
    let mut own = vec![0usize; classes];
    for &y in labels {
        own[y as usize] += 1;
    }
    // Per channel and label: the mean share over the levels.
    let per_channel: Vec<Vec<f64>> = (0..CONV3_CHANNELS)
        .into_par_iter()
        .map(|c| {
            let base = if largest[c] > 0.0 { largest[c] } else { layer };
            let mut mean = vec![0f64; classes];
            for level in LEVELS {
                let mut raised = pool_3.clone();
                for row in raised.chunks_mut(CONV3_CHANNELS) {
                    row[c] = level * base;
                }
                let mut sent = vec![0usize; classes];
                for (&p, &y) in head.classify(&raised).iter().zip(labels) {
                    if p != y {
                        sent[p as usize] += 1;
                    }
                }
                // Percent of the images not of that label.
                for ((m, &k), &own) in mean.iter_mut().zip(&sent).zip(&own) {
                    if k > 0 {
                        *m += percent(k, n - own) / LEVELS.len() as f64;
                    }
                }
            }
            mean
        })
        .collect();
    (0..classes)
        .map(|l| per_channel.iter().map(|m| m[l]).fold(0.0, f64::max))
        .collect()
}

/// How many standard deviations each norm's logarithm lies *below* the median of the
/// `baseline` norms' logarithms (negative above it). Mask norms spread over orders of
/// magnitude, a backdoor's far below the rest, so they are compared on a log scale. The
/// baseline is a handful of labels drawn at random, none of them a suspect: its sample
/// standard deviation is a steadier scale than Neural Cleanse's median absolute deviation,
/// which on 14 labels can come out at a third of the spread and make a natural outlier look
/// like a backdoor. 0 for all when the baseline has no spread.
pub fn deviations(norms: &[f64], baseline: &[f64]) -> Vec<f64> {
    if baseline.len() < 2 {
        return vec![0.0; norms.len()];
    }
    let logs: Vec<f64> = baseline.iter().map(|v| v.ln()).collect();
    let sd = logs.iter().std_dev();
    let median = Data::new(logs).median();
    norms
        .iter()
        .map(|v| {
            if sd > 0.0 {
                (median - v.ln()) / sd
            } else {
                0.0
            }
        })
        .collect()
}

/// The anomaly index of a label `deviation` deviations below the median when it is the most
/// anomalous of `labels`: the deviation a single normal value reaches with the probability
/// that the largest of `labels` independent ones reaches `deviation` (Šidák). Neural
/// Cleanse's threshold of 2 then means the same with 10 classes or 1,283: among 100 clean
/// labels the largest deviation is about 2.5 by chance alone. 0 when that largest is as
/// likely as not.
pub fn anomaly_index(deviation: f64, labels: usize) -> f64 {
    let normal = Normal::standard();
    let one = normal.sf(deviation);
    let any = -(labels as f64 * (-one).ln_1p()).exp_m1();
    if any >= 0.5 {
        0.0
    } else if any > 0.0 {
        -normal.inverse_cdf(any)
    } else {
        // Beyond f64's tail: the same through the tail's leading term.
        (deviation * deviation - 2.0 * (labels as f64).ln()).sqrt()
    }
}
