//! Mini-batch training of DeepID on plain buffers ([`crate::backprop`]), shared by the
//! synthetic BadNet (`synth`) and fine-tuning (`finetune`).
//!
//! Training always sees pixels / 255: a network meant for input scale `s` is trained in the
//! equivalent parametrisation whose conv_1 kernel is multiplied by 255 s, and mapped back
//! afterwards, so step sizes behave the same whatever scale the model uses.

use crate::backprop::TrainFrom;
use crate::error::{Error, Result};
use crate::flops;
use crate::geometry::{LayerName, Layers, IMAGE_LEN};
use crate::head::Head;
use crate::layout::to_nhwc;
use crate::metrics::percent;
use crate::network::Network;
use crate::weights::{DeepIdWeights, Layer, Param, Provenance};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

const TRAIN_SCALE: f64 = 1.0 / 255.0;

/// Labelled images in memory, pixels (C, H, W) in 0..255.
#[derive(Debug, Clone, Default)]
pub struct Examples {
    pub pixels: Vec<f32>,
    pub labels: Vec<u32>,
}

impl Examples {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image(&self, i: usize) -> &[f32] {
        &self.pixels[i * IMAGE_LEN..][..IMAGE_LEN]
    }

    /// Splits off a held-out share (none for 0, else at least one image and not all), chosen at
    /// random with `seed`; both sides borrow the images.
    pub fn split(&self, share: f64, seed: u64) -> (Subset<'_>, Subset<'_>) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let held = match share {
            0.0 => 0,
            _ => ((self.len() as f64 * share).round() as usize).clamp(1, self.len() - 1),
        };
        let pick = |ids: &[usize]| {
            let mut ids = ids.to_vec();
            ids.sort_unstable();
            Subset { data: self, ids }
        };
        (pick(&idx[held..]), pick(&idx[..held]))
    }
}

/// Some of a set of examples, by index (no pixels copied).
#[derive(Debug, Clone)]
pub struct Subset<'a> {
    pub data: &'a Examples,
    pub ids: Vec<usize>,
}

impl<'a> Subset<'a> {
    pub fn all(data: &'a Examples) -> Self {
        Self {
            data,
            ids: (0..data.len()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Pixels and labels of the examples at positions `at` of this subset.
    pub fn gather(&self, at: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let ids = at.iter().map(|&k| self.ids[k]);
        (
            ids.clone()
                .flat_map(|i| self.data.image(i).iter().copied())
                .collect(),
            ids.map(|i| self.data.labels[i]).collect(),
        )
    }
}

/// The frozen layers' output (the input of the first trained convolution) for every image of
/// a set, computed once and reused by every network that agrees with the one it came from
/// below that convolution, bit for bit: B and its pruned networks B' share conv_1 and conv_2,
/// so fine-tuning them all from conv_3 needs one pass over those layers.
pub struct Frozen<'a> {
    data: &'a Examples,
    first: TrainFrom,
    scale: f32,
    /// The parameters below `first`, as bits.
    below: Vec<u32>,
    /// `first.input_len()` values per image of `data`.
    values: Vec<f32>,
}

impl<'a> Frozen<'a> {
    /// The frozen output of `weights` (at its own input scale) for all of `data`, or `None`
    /// when `first` trains every layer or is not a convolution.
    pub fn new(weights: &DeepIdWeights, data: &'a Examples, first: LayerName) -> Option<Self> {
        let first = TrainFrom::new(first).filter(|f| f.layer() != LayerName::Conv1)?;
        Some(Self::of(
            &Network::new(weights),
            first,
            data,
            weights.provenance.input_scale as f32,
        ))
    }

    /// The frozen output of `net` for all of `data`, 1,024 images at a time.
    fn of(net: &Network, first: TrainFrom, data: &'a Examples, scale: f32) -> Self {
        let mut values = Vec::with_capacity(data.len() * first.input_len());
        for pixels in data.pixels.chunks(1024 * IMAGE_LEN) {
            values.extend(net.features(first, pixels, scale));
        }
        Self {
            data,
            first,
            scale,
            below: Self::bits_below(net, first),
            values,
        }
    }

    fn bits_below(net: &Network, first: TrainFrom) -> Vec<u32> {
        net.params[..net.from_layer(first).start]
            .iter()
            .map(|v| v.to_bits())
            .collect()
    }

    /// Whether these are `net`'s frozen outputs for `data`.
    fn serves(&self, net: &Network, first: TrainFrom, scale: f32, data: &Examples) -> bool {
        std::ptr::eq(self.data, data)
            && self.first == first
            && self.scale.to_bits() == scale.to_bits()
            && self.below == Self::bits_below(net, first)
    }

    /// Floating-point operations of the pass that made these outputs ([`crate::flops`]).
    pub fn work_flops(&self, classes: usize) -> f64 {
        self.data.len() as f64 * flops::forward(flops::below(self.first.layer()), classes)
    }

    fn image(&self, i: usize) -> &[f32] {
        let len = self.first.input_len();
        &self.values[i * len..][..len]
    }

    /// Accuracy in percent of `net` on `subset` from the frozen outputs (the same predictions
    /// as [`accuracy`] from the pixels), or `None` if these are not `net`'s outputs for the
    /// subset's images.
    pub fn accuracy(&self, net: &Network, subset: &Subset) -> Option<f64> {
        if !self.serves(net, self.first, net.input_scale as f32, subset.data) {
            return None;
        }
        let mut hits = 0;
        for ids in subset.ids.chunks(1024) {
            let x: Vec<f32> = ids.iter().flat_map(|&i| self.image(i)).copied().collect();
            let pool_3 = net.advance(self.first, TrainFrom::HEAD, &x);
            let pred = Head::new(net).classify(&pool_3);
            hits += pred
                .iter()
                .zip(ids)
                .filter(|(p, &i)| **p == subset.data.labels[i])
                .count();
        }
        Some(percent(hits, subset.len()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Optimizer {
    Adam,
    #[serde(rename = "adamw")]
    AdamW,
    Sgd,
}

/// How the learning rate moves over the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// Cosine decay to zero after a linear warm-up.
    Cosine,
    /// Linear rise to the rate, then cosine decay far below it.
    OneCycle,
}

/// Which network a run keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Select {
    /// The network after the last step.
    Last,
    /// The checkpoint with the best held-out accuracy.
    Best,
}

/// What to train and how: everything about fine-tuning except the data. The `[finetune]`
/// table holds one (its keys are these fields); the defaults are that table's.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Recipe {
    /// Optimiser steps: the training length, whatever the size of the data.
    pub steps: usize,
    pub batch_size: usize,
    pub optimizer: Optimizer,
    pub learning_rate: f64,
    pub schedule: Schedule,
    /// Share of the steps spent warming up.
    pub warmup: f64,
    /// SGD only.
    pub momentum: f64,
    pub weight_decay: f64,
    /// The lowest layer trained, a convolution; the layers below it stay as they are.
    pub train_from: LayerName,
    pub select: Select,
    pub seed: u64,
    /// Set from the backdoored network's head by the caller, never read from a file.
    #[serde(skip)]
    pub feature_shift: Option<FeatureShift>,
}

impl Default for Recipe {
    /// 600 steps of Adam at 1e-3 on a cosine schedule from conv_3 up: the recipe that removes
    /// the synthetic benchmark's backdoors (README, "Fine-tuning: the recipe and why").
    fn default() -> Self {
        Self {
            steps: 600,
            batch_size: 64,
            optimizer: Optimizer::Adam,
            learning_rate: 1e-3,
            schedule: Schedule::Cosine,
            warmup: 0.0,
            momentum: 0.9,
            weight_decay: 0.0,
            train_from: LayerName::Conv3,
            select: Select::Last,
            seed: 11,
            feature_shift: None,
        }
    }
}

/// Feature-shift tuning (Min et al., NeurIPS 2023): the freshly drawn output layer is pushed
/// away from the backdoored network's own, by a penalty `alpha * <W, W_B>` on the loss, and
/// held at `W_B`'s norm (rescaled at the start and after every step), so that the features
/// under it must shift rather than feed the old head's backdoor mapping.
#[derive(Debug, Clone)]
pub struct FeatureShift {
    pub alpha: f64,
    /// The backdoored network's output layer, `W_B`.
    pub head: Layer,
}

impl Recipe {
    /// `steps` of Adam at a constant rate over all layers (how `synth` trains its BadNet).
    pub fn plain(steps: usize, batch_size: usize, learning_rate: f64, seed: u64) -> Self {
        Self {
            steps,
            batch_size,
            optimizer: Optimizer::Adam,
            learning_rate,
            schedule: Schedule::Constant,
            warmup: 0.0,
            momentum: 0.0,
            weight_decay: 0.0,
            train_from: LayerName::Conv1,
            select: Select::Last,
            seed,
            feature_shift: None,
        }
    }
}

/// What [`fit`] made.
pub struct Fitted {
    pub weights: DeepIdWeights,
    pub history: Vec<Checkpoint>,
    /// Floating-point operations of the run ([`crate::flops`]): the steps, the held-out
    /// scoring, and the frozen layers' pass when no shared one served.
    pub work_flops: f64,
}

/// How training stood at one checkpoint (ten per run, evenly spaced).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Checkpoint {
    pub step: usize,
    pub learning_rate: f64,
    /// Mean loss and training accuracy over the steps since the previous checkpoint.
    pub loss: f64,
    pub train_accuracy: f64,
    pub holdout_accuracy: Option<f64>,
}

/// Glorot uniform (Keras's default), the same draws whatever the layer's neighbours.
fn glorot(name: LayerName, classes: usize, rng: &mut ChaCha8Rng) -> Layer {
    let shape = name.weight_shape(classes);
    let receptive: usize = shape[2..].iter().product();
    let (fan_in, fan_out) = (shape[1] * receptive, shape[0] * receptive);
    let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
    let n = shape.iter().product();
    let data = (0..n).map(|_| rng.random_range(-limit..limit)).collect();
    Layer {
        bias: Param::new(vec![shape[0]], vec![0.0; shape[0]]),
        weight: Param::new(shape, data),
    }
}

/// Glorot-uniform kernels and zero biases (Keras's defaults) for `classes` classes.
pub fn init_weights(classes: usize, seed: u64, input_scale: f64) -> DeepIdWeights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layers = Layers::from_fn(|name| glorot(name, classes, &mut rng));
    let mut w = DeepIdWeights {
        layers,
        provenance: Provenance::new("fineprune synth".into(), String::new(), input_scale),
    };
    // Initialised for pixels / 255, then expressed at the model's own scale.
    rescale_conv1(&mut w, TRAIN_SCALE / input_scale);
    w
}

/// Scale of the re-initialised output layer's Glorot draws. A full-scale random softmax layer
/// over DeepID's hidden activations starts above the chance loss, and with 1,283 classes of 8
/// clean images each 600 steps do not recover (82-92% held-out accuracy at the CSAW sizes); at
/// 0.3 they reach 98.8-99.4%, at 0 (every class alike) 99.2-99.7%. The largest scale that
/// costs no clean accuracy keeps what a random head is for: the features must move to fit it,
/// away from the backdoored head's mapping.
pub const HEAD_SCALE: f32 = 0.3;

/// Draws `layers` afresh from `seed`: Glorot uniform kernels (the output layer's scaled by
/// [`HEAD_SCALE`]) and zero biases. conv_1 is drawn for pixels / 255 and expressed at the
/// model's scale.
pub fn reinitialise(w: &mut DeepIdWeights, layers: &[LayerName], seed: u64) {
    let classes = w.classes();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for &name in layers {
        *w.layers.get_mut(name) = glorot(name, classes, &mut rng);
        if name == LayerName::Output {
            w.layers
                .output
                .weight
                .data
                .iter_mut()
                .for_each(|v| *v *= HEAD_SCALE);
        }
        if name == LayerName::Conv1 {
            let factor = TRAIN_SCALE / w.provenance.input_scale;
            rescale_conv1(w, factor);
        }
    }
}

fn rescale_conv1(w: &mut DeepIdWeights, factor: f64) {
    for v in &mut w.layers.conv_1.weight.data {
        *v = (*v as f64 * factor) as f32;
    }
}

/// Trains `weights` on `train` for `recipe.steps` mini-batch steps, keeping conv_3's
/// `frozen_channels` exactly zero (pruned channels stay pruned) and the layers below
/// `recipe.first_layer` unchanged. `holdout`, if any, is scored at each checkpoint;
/// `on_checkpoint` hears of each and `on_images` of every batch done. `shared` holds the
/// frozen layers' output for the training data when another network computed it; it is used
/// only if it is this network's (else the pass is made here).
#[allow(clippy::too_many_arguments)]
pub fn fit(
    weights: &DeepIdWeights,
    train: &Subset,
    holdout: Option<&Subset>,
    recipe: &Recipe,
    frozen_channels: &[usize],
    shared: Option<&Frozen>,
    on_checkpoint: &mut dyn FnMut(&Checkpoint),
    on_images: &dyn Fn(usize),
) -> Result<Fitted> {
    let first = TrainFrom::new(recipe.train_from).ok_or_else(|| {
        Error::Recipe(format!(
            "training starts at a convolution, not at {}",
            recipe.train_from
        ))
    })?;
    // With conv_1 trained, steps see pixels / 255 whatever the model's scale, so that step
    // sizes mean the same for every model; frozen, conv_1 is left bit for bit as it is.
    let (scale, factor) = match first.layer() {
        LayerName::Conv1 => (TRAIN_SCALE, weights.provenance.input_scale / TRAIN_SCALE),
        _ => (weights.provenance.input_scale, 1.0),
    };
    let mut start = weights.clone();
    if factor != 1.0 {
        rescale_conv1(&mut start, factor);
    }
    start.prune_conv3(frozen_channels);
    let mut net = Network::new(&start);
    let trainable = net.from_layer(first);
    let masked: Vec<usize> = frozen_channels
        .iter()
        .flat_map(|&c| net.conv3_channel(c))
        .filter(|i| trainable.contains(i))
        .map(|i| i - trainable.start)
        .collect();

    // The frozen layers' output, computed once for the whole data set (training and held-out
    // images) unless another network's serves.
    let classes = net.classes();
    let mut work_flops = 0.0;
    let own;
    let frozen = match shared {
        Some(f) if f.serves(&net, first, scale as f32, train.data) => Some(f),
        _ if first.layer() == LayerName::Conv1 => None,
        _ => {
            own = Frozen::of(&net, first, train.data, scale as f32);
            work_flops += own.work_flops(classes);
            Some(&own)
        }
    };
    let len = first.input_len();
    let inputs = |ids: &[usize]| -> (Vec<f32>, Vec<u32>) {
        let ids = ids.iter().map(|&k| train.ids[k]);
        let labels = ids.clone().map(|i| train.data.labels[i]).collect();
        let x = match frozen {
            Some(f) => ids.flat_map(|i| f.image(i)).copied().collect(),
            None => {
                let mut x = Vec::with_capacity(ids.len() * len);
                let mut buf = vec![0f32; IMAGE_LEN];
                for i in ids {
                    to_nhwc(train.data.image(i), scale as f32, &mut buf);
                    x.extend_from_slice(&buf);
                }
                x
            }
        };
        (x, labels)
    };
    // Held-out images from the frozen output when it covers them; the score and its FLOPs.
    let score = |net: &Network, h: &Subset| match frozen.and_then(|f| f.accuracy(net, h)) {
        Some(a) => (
            a,
            h.len() as f64 * flops::forward(flops::from(first.layer()), classes),
        ),
        None => (
            accuracy(net, h),
            h.len() as f64 * flops::forward(LayerName::ALL, classes),
        ),
    };

    // Feature shift: W_B in the flat layout, and its norm.
    let shift = recipe.feature_shift.as_ref().map(|fs| {
        let mut anchor = start.clone();
        anchor.layers.output = fs.head.clone();
        let w_b = Network::new(&anchor).matrix(LayerName::Output).to_vec();
        let norm = norm(&w_b);
        hold_norm(net.layer_mut(LayerName::Output).0, norm);
        (fs.alpha as f32, w_b, norm)
    });
    let head = net.slots.output.matrix - trainable.start..net.slots.output.bias - trainable.start;

    let mut optimiser = Optimiser::new(recipe, trainable.len());
    let mut rng = ChaCha8Rng::seed_from_u64(recipe.seed);
    let batch = recipe.batch_size.min(train.len());
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut next = order.len();
    let mut grad = vec![0f32; net.params.len()];
    let mut tasks = Vec::new();
    let every = recipe.steps.div_ceil(10);
    let (mut loss_sum, mut hits, mut seen) = (0f64, 0usize, 0usize);
    let mut history = Vec::new();
    let mut best: Option<(f64, Vec<f32>)> = None;
    let finish = |net: &Network| -> DeepIdWeights {
        let mut out = net.to_weights(&start);
        if factor != 1.0 {
            rescale_conv1(&mut out, 1.0 / factor);
        }
        out.provenance = weights.provenance.clone();
        out.prune_conv3(frozen_channels);
        out
    };
    for step in 1..=recipe.steps {
        if next + batch > order.len() {
            order.shuffle(&mut rng);
            next = 0;
        }
        let (x, labels) = inputs(&order[next..next + batch]);
        next += batch;
        grad[trainable.clone()].fill(0.0);
        let (loss, h) = net.gradient(first, &x, &labels, batch as f32, &mut grad, &mut tasks);
        let rate = learning_rate(recipe, step);
        let diverged = |what| Error::Diverged {
            step,
            what,
            learning_rate: rate,
        };
        if !loss.is_finite() {
            return Err(diverged("loss"));
        }
        let g = &mut grad[trainable.clone()];
        for &i in &masked {
            g[i] = 0.0;
        }
        if let Some((alpha, w_b, _)) = &shift {
            for (g, w) in g[head.clone()].iter_mut().zip(w_b) {
                *g += alpha * w;
            }
        }
        optimiser.step(&mut net.params[trainable.clone()], g, rate as f32);
        for &i in &masked {
            net.params[trainable.start + i] = 0.0;
        }
        if let Some((_, _, norm)) = shift {
            hold_norm(&mut net.params[trainable.clone()][head.clone()], norm);
        }
        (loss_sum, hits, seen) = (loss_sum + loss, hits + h, seen + batch);
        on_images(batch);
        if step % every == 0 || step == recipe.steps {
            if net.params[trainable.clone()].iter().any(|v| !v.is_finite()) {
                return Err(diverged("network's weights"));
            }
            let tuned = finish(&net);
            let holdout_accuracy = holdout.map(|h| {
                let (accuracy, cost) = score(&Network::new(&tuned), h);
                work_flops += cost;
                accuracy
            });
            let c = Checkpoint {
                step,
                learning_rate: rate,
                loss: loss_sum / seen as f64,
                train_accuracy: percent(hits, seen),
                holdout_accuracy,
            };
            (loss_sum, hits, seen) = (0.0, 0, 0);
            if let (Select::Best, Some(acc)) = (recipe.select, holdout_accuracy) {
                if best.as_ref().is_none_or(|(b, _)| acc >= *b) {
                    best = Some((acc, net.params.clone()));
                }
            }
            on_checkpoint(&c);
            history.push(c);
        }
    }
    if let Some((_, params)) = best {
        net.params = params;
    }
    Ok(Fitted {
        weights: finish(&net),
        history,
        work_flops: work_flops
            + (recipe.steps * batch) as f64 * flops::training(first.layer(), classes),
    })
}

/// The Euclidean norm, summed in order in f64.
fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

/// Rescales `w` to norm `target` (feature shift's projection).
fn hold_norm(w: &mut [f32], target: f64) {
    let now = norm(w);
    if now > 0.0 {
        let k = (target / now) as f32;
        w.iter_mut().for_each(|x| *x *= k);
    }
}

/// The learning rate of step `step` (1-based) of `recipe.steps`.
pub fn learning_rate(recipe: &Recipe, step: usize) -> f64 {
    let (base, total) = (recipe.learning_rate, recipe.steps as f64);
    let t = (step - 1) as f64;
    let cosine = |from: f64, to: f64, start: f64| {
        let span = (total - start).max(1.0);
        let done = ((t - start) / span).clamp(0.0, 1.0);
        to + (from - to) * 0.5 * (1.0 + (std::f64::consts::PI * done).cos())
    };
    match recipe.schedule {
        Schedule::Constant => base,
        Schedule::Cosine => {
            let warm = (recipe.warmup * total).round();
            if t < warm {
                base * (t + 1.0) / warm
            } else {
                cosine(base, 0.0, warm)
            }
        }
        Schedule::OneCycle => {
            let share = if recipe.warmup > 0.0 {
                recipe.warmup
            } else {
                0.3
            };
            let warm = (share * total).round();
            if t < warm {
                base / 25.0 + (base - base / 25.0) * t / warm
            } else {
                cosine(base, base / 25.0 / 1e4, warm)
            }
        }
    }
}

/// The optimisers, over a flat parameter vector.
struct Optimiser {
    kind: Optimizer,
    momentum: f32,
    weight_decay: f32,
    /// SGD's velocity, or Adam's first moment.
    m: Vec<f32>,
    /// Adam's second moment.
    v: Vec<f32>,
    t: i32,
}

impl Optimiser {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPSILON: f32 = 1e-8;

    fn new(recipe: &Recipe, len: usize) -> Self {
        Self {
            kind: recipe.optimizer,
            momentum: recipe.momentum as f32,
            weight_decay: recipe.weight_decay as f32,
            m: vec![0.0; len],
            v: match recipe.optimizer {
                Optimizer::Sgd => Vec::new(),
                _ => vec![0.0; len],
            },
            t: 0,
        }
    }

    /// One update, element-wise, spread over the cores in fixed chunks.
    fn step(&mut self, params: &mut [f32], grad: &[f32], rate: f32) {
        const CHUNK: usize = 1 << 14;
        self.t += 1;
        let (wd, momentum) = (self.weight_decay, self.momentum);
        match self.kind {
            Optimizer::Sgd => params
                .par_chunks_mut(CHUNK)
                .zip(grad.par_chunks(CHUNK))
                .zip(self.m.par_chunks_mut(CHUNK))
                .for_each(|((p, g), m)| {
                    for ((p, g), m) in p.iter_mut().zip(g).zip(m) {
                        *m = momentum * *m + (g + wd * *p);
                        *p -= rate * *m;
                    }
                }),
            Optimizer::Adam | Optimizer::AdamW => {
                let (b1, b2) = (Self::BETA1, Self::BETA2);
                let c1 = 1.0 - b1.powi(self.t);
                let c2 = 1.0 - b2.powi(self.t);
                let decoupled = self.kind == Optimizer::AdamW;
                params
                    .par_chunks_mut(CHUNK)
                    .zip(grad.par_chunks(CHUNK))
                    .zip(self.m.par_chunks_mut(CHUNK))
                    .zip(self.v.par_chunks_mut(CHUNK))
                    .for_each(|(((p, g), m), v)| {
                        for (((p, g), m), v) in p.iter_mut().zip(g).zip(m).zip(v) {
                            let g = if decoupled { *g } else { g + wd * *p };
                            *m = b1 * *m + (1.0 - b1) * g;
                            *v = b2 * *v + (1.0 - b2) * g * g;
                            if decoupled {
                                *p -= rate * wd * *p;
                            }
                            *p -= rate * (*m / c1) / ((*v / c2).sqrt() + Self::EPSILON);
                        }
                    });
            }
        }
    }
}

/// Accuracy in percent of a network (computing at its own input scale) on `data`.
pub fn accuracy(net: &Network, data: &Subset) -> f64 {
    let mut hits = 0;
    let positions: Vec<usize> = (0..data.len()).collect();
    for at in positions.chunks(1024) {
        let (pixels, labels) = data.gather(at);
        let pred = net.predict(&pixels);
        hits += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
    }
    percent(hits, data.len())
}
