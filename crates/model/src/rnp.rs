//! Reconstructive neuron pruning (Li et al., ICML 2023), ported to conv_3's channels: a
//! ranking from clean data alone that looks for the backdoor's channels instead of the
//! least active ones.
//!
//! 1. Unlearn: gradient *ascent* on the clean images' cross-entropy (SGD with momentum and
//!    weight decay) from `unlearn_from` up, until the accuracy on a batch falls below
//!    `unlearn_accuracy`. This wrecks the clean features and leaves the trigger's path,
//!    which the clean loss never exercises, much as it was.
//! 2. Recover: on the unlearned network, every weight fixed, learn one multiplicative mask
//!    per conv_3 channel (applied to pool_3, which is the same thing: ReLU and max-pooling
//!    commute with a non-negative factor), descending the clean cross-entropy from masks of
//!    1, clipped to [0, 1] after every step. Switching a channel off helps clean accuracy
//!    back only where the channel now pulls clean faces astray, towards the backdoor's
//!    target: the masks that stay low mark the backdoor's channels.
//!
//! Both phases run on [`Net`]'s gradients, over the cores in a fixed order, and every other
//! sum runs in image order, so equal inputs and seed give equal bytes.

use crate::backprop::{Task, TrainFrom};
use crate::error::{Error, Result};
use crate::geometry::{LayerName, CONV3_CHANNELS, POOL3_LEN};
use crate::metrics::percent;
use crate::network::Network;
use crate::progress::Progress;
use crate::train::Examples;
use crate::weights::DeepIdWeights;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// Unlearning that touches conv_1 sees pixels / 255, as training does ([`crate::train`]), so
/// that a rate means the same whatever the model's input scale.
const CONV1_SCALE: f64 = 1.0 / 255.0;

/// RNP's hyper-parameters (the paper's values in brackets).
#[derive(Debug, Clone)]
pub struct Settings {
    /// The lowest layer unlearned, a convolution; the layers below it stay as they are.
    pub unlearn_from: LayerName,
    /// [0.01]
    pub unlearn_learning_rate: f64,
    /// [5e-4]
    pub unlearn_weight_decay: f64,
    /// Unlearning stops at the first batch on which accuracy, in percent, is below this [20].
    pub unlearn_accuracy: f64,
    /// The most unlearning steps, if accuracy never falls that far.
    pub unlearn_max_steps: usize,
    /// [0.2 on a loss weighted by 0.2]
    pub mask_learning_rate: f64,
    /// Passes over the clean images while learning the masks [20].
    pub mask_epochs: usize,
    /// Weight of an L1 penalty on the masks, pushing unneeded channels to 0 [none].
    pub mask_l1: f64,
    /// SGD's momentum in both phases [0.9].
    pub momentum: f64,
    /// Images per step in both phases [128].
    pub batch_size: usize,
    pub seed: u64,
}

/// What RNP found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// One per conv_3 channel, in [0, 1]: low marks the backdoor's.
    pub masks: Vec<f32>,
    /// Unlearning steps taken.
    pub unlearn_steps: usize,
    /// Whether accuracy fell below `unlearn_accuracy` (else the step cap ended unlearning).
    pub unlearned: bool,
    /// Accuracy, in percent, on the batch that ended unlearning (measured before any step
    /// on it).
    pub unlearned_accuracy: f64,
    /// Accuracy of the masked unlearned network over the last mask epoch, measured as the
    /// masks trained.
    pub recovered_accuracy: f64,
}

/// Shuffled mini-batches, epoch after epoch; an epoch's last batch may be short.
struct Batches {
    order: Vec<usize>,
    next: usize,
    size: usize,
    rng: ChaCha8Rng,
}

impl Batches {
    fn new(n: usize, size: usize, seed: u64) -> Self {
        Self {
            order: (0..n).collect(),
            next: n,
            size: size.min(n),
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    fn per_epoch(&self) -> usize {
        self.order.len().div_ceil(self.size)
    }

    /// The next batch begins a new epoch.
    fn restart(&mut self) {
        self.next = self.order.len();
    }

    fn next(&mut self) -> &[usize] {
        if self.next == self.order.len() {
            self.order.shuffle(&mut self.rng);
            self.next = 0;
        }
        let at = self.next..(self.next + self.size).min(self.order.len());
        self.next = at.end;
        &self.order[at]
    }
}

/// Rows `ids` of `rows` (`len` values each), and their labels.
fn gather(rows: &[f32], len: usize, labels: &[u32], ids: &[usize]) -> (Vec<f32>, Vec<u32>) {
    (
        ids.iter()
            .flat_map(|&i| &rows[i * len..][..len])
            .copied()
            .collect(),
        ids.iter().map(|&i| labels[i]).collect(),
    )
}

/// The head of `net` on pool_3 activations (NHWC, [`POOL3_LEN`] per image) with channel c
/// multiplied by `masks[c]`: the loss summed over the images, the number of correct
/// predictions, and `d(sum of losses) / divisor` with respect to each mask, which is the sum
/// over images and positions of the masked activation's gradient times the activation.
pub fn mask_gradient(
    net: &Network,
    pool_3: &[f32],
    labels: &[u32],
    masks: &[f32],
    divisor: f32,
    tasks: &mut Vec<Task>,
) -> (f64, usize, [f64; CONV3_CHANNELS]) {
    let mut x = pool_3.to_vec();
    for row in x.chunks_mut(CONV3_CHANNELS) {
        for (v, m) in row.iter_mut().zip(masks) {
            *v *= m;
        }
    }
    let mut d_x = vec![0f32; x.len()];
    let (loss, hits) = net.pool_3_gradient(&x, labels, divisor, &mut d_x, tasks);
    let mut g = [0f64; CONV3_CHANNELS];
    for (d, a) in d_x
        .chunks(CONV3_CHANNELS)
        .zip(pool_3.chunks(CONV3_CHANNELS))
    {
        for ((g, d), a) in g.iter_mut().zip(d).zip(a) {
            *g += (d * a) as f64;
        }
    }
    (loss, hits, g)
}

/// Learns RNP's conv_3 channel masks for `weights` on the clean images `data`.
pub fn masks(
    weights: &DeepIdWeights,
    data: Examples,
    s: &Settings,
    progress: &dyn Progress,
) -> Result<Outcome> {
    let first = TrainFrom::new(s.unlearn_from).ok_or_else(|| {
        Error::Recipe(format!(
            "unlearning starts at a convolution, not at {}",
            s.unlearn_from
        ))
    })?;
    if data.is_empty() || s.batch_size == 0 {
        return Err(Error::Recipe(
            "RNP needs at least one clean image and one per batch".into(),
        ));
    }
    let mut net = Network::new(weights);
    let scale = match first.layer() {
        LayerName::Conv1 => {
            let factor = weights.provenance.input_scale / CONV1_SCALE;
            for v in net.layer_mut(LayerName::Conv1).0 {
                *v = (*v as f64 * factor) as f32;
            }
            CONV1_SCALE
        }
        _ => weights.provenance.input_scale,
    };
    // The frozen layers' output, once; the pixels are not needed after it.
    let Examples { pixels, labels } = data;
    let inputs = net.features(first, &pixels, scale as f32);
    drop(pixels);
    let len = first.input_len();
    let mut batches = Batches::new(labels.len(), s.batch_size, s.seed);
    let mut tasks: Vec<Task> = Vec::new();

    // 1. Unlearn: SGD as PyTorch has it (weight decay in the gradient, then momentum),
    // climbing the loss instead of descending it.
    let range = net.from_layer(first);
    let mut grad = vec![0f32; net.params.len()];
    let mut velocity = vec![0f32; range.len()];
    let (rate, decay, momentum) = (
        s.unlearn_learning_rate as f32,
        s.unlearn_weight_decay as f32,
        s.momentum as f32,
    );
    let (mut unlearn_steps, mut unlearned, mut unlearned_accuracy) = (0, false, 100.0);
    progress.start("unlearn", s.unlearn_max_steps as u64);
    while unlearn_steps < s.unlearn_max_steps {
        let ids = batches.next();
        let (x, y) = gather(&inputs, len, &labels, ids);
        grad[range.clone()].fill(0.0);
        let (_, hits) = net.gradient(first, &x, &y, y.len() as f32, &mut grad, &mut tasks);
        unlearned_accuracy = percent(hits, y.len());
        if unlearned_accuracy < s.unlearn_accuracy {
            unlearned = true;
            break;
        }
        for ((p, g), v) in net.params[range.clone()]
            .iter_mut()
            .zip(&grad[range.clone()])
            .zip(&mut velocity)
        {
            *v = momentum * *v + (decay * *p - g);
            *p -= rate * *v;
        }
        unlearn_steps += 1;
        progress.advance(1);
        progress.status(&format!(
            "unlearning: step {unlearn_steps}, batch accuracy {unlearned_accuracy:.1}%"
        ));
    }
    progress.finish();
    if net.params[range].iter().any(|v| !v.is_finite()) {
        return Err(Error::Diverged {
            step: unlearn_steps,
            what: "unlearned network's weights",
            learning_rate: s.unlearn_learning_rate,
        });
    }

    // 2. Recover.
    let conv_4 = TrainFrom::new(LayerName::Conv4).expect("conv_4 is a convolution");
    let pool_3 = net.advance(first, conv_4, &inputs);
    drop(inputs);
    let mut masks = [1f32; CONV3_CHANNELS];
    let mut velocity = [0f32; CONV3_CHANNELS];
    let (rate, l1) = (s.mask_learning_rate as f32, s.mask_l1 as f32);
    batches.restart();
    let per_epoch = batches.per_epoch();
    let steps = s.mask_epochs * per_epoch;
    let (mut hits_last_epoch, mut seen_last_epoch) = (0, 0);
    progress.start("masks", steps as u64);
    for step in 0..steps {
        let ids = batches.next();
        let (x, y) = gather(&pool_3, POOL3_LEN, &labels, ids);
        let (_, hits, g) = mask_gradient(&net, &x, &y, &masks, y.len() as f32, &mut tasks);
        for ((m, v), g) in masks.iter_mut().zip(&mut velocity).zip(g) {
            // The L1 penalty's gradient is its weight: masks are never negative.
            *v = momentum * *v + (g as f32 + l1);
            *m = (*m - rate * *v).clamp(0.0, 1.0);
        }
        if step + per_epoch >= steps {
            (hits_last_epoch, seen_last_epoch) =
                (hits_last_epoch + hits, seen_last_epoch + y.len());
        }
        progress.advance(1);
    }
    progress.finish();
    if masks.iter().any(|m| !m.is_finite()) {
        return Err(Error::Diverged {
            step: steps,
            what: "channel masks",
            learning_rate: s.mask_learning_rate,
        });
    }
    Ok(Outcome {
        masks: masks.to_vec(),
        unlearn_steps,
        unlearned,
        unlearned_accuracy,
        recovered_accuracy: percent(hits_last_epoch, seen_last_epoch),
    })
}
