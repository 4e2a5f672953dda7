//! Mini-batch training of DeepID in candle (forward and backward on the CPU), shared by the
//! synthetic BadNet (`synth`) and fine-tuning (`finetune`).
//!
//! Training always sees pixels / 255: a network meant for input scale `s` is trained in the
//! equivalent parametrisation whose conv_1 kernel is multiplied by 255 s, and mapped back
//! afterwards, so step sizes behave the same whatever scale the model uses.

use crate::config::Optimizer;
use crate::csaw::IMAGE_LEN;
use crate::deepid::{input_tensor, DeepId};
use crate::error::Result;
use crate::features::POOL3_LEN;
use crate::head::Head;
use crate::trunk::Trunk;
use crate::weights::{
    weight_shape, DeepIdWeights, Layer, Param, Provenance, CONV3_CHANNELS, LAYERS,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer as _, ParamsAdamW, SGD};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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

    /// Splits off a held-out share, chosen at random with `seed`; both sides borrow the images.
    pub fn split(&self, share: f64, seed: u64) -> (Subset<'_>, Subset<'_>) {
        let mut idx: Vec<usize> = (0..self.len()).collect();
        idx.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let held = ((self.len() as f64 * share).round() as usize).clamp(1, self.len() - 1);
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
    fn gather(&self, at: &[usize]) -> (Vec<f32>, Vec<u32>) {
        let ids = at.iter().map(|&k| self.ids[k]);
        (
            ids.clone()
                .flat_map(|i| self.data.image(i).iter().copied())
                .collect(),
            ids.map(|i| self.data.labels[i]).collect(),
        )
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub epochs: usize,
    pub batch_size: usize,
    pub learning_rate: f64,
    pub optimizer: Optimizer,
    pub seed: u64,
    /// Epochs without improvement on the held-out data before stopping.
    pub patience: usize,
}

/// What one epoch did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Epoch {
    pub epoch: usize,
    pub loss: f64,
    pub train_accuracy: f64,
    pub holdout_accuracy: Option<f64>,
}

/// Glorot-uniform kernels and zero biases (Keras's defaults) for `classes` classes.
pub fn init_weights(classes: usize, seed: u64, input_scale: f64) -> DeepIdWeights {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let layers = LAYERS
        .iter()
        .map(|name| {
            let shape = weight_shape(name, classes);
            let receptive: usize = shape[2..].iter().product();
            let (fan_in, fan_out) = (shape[1] * receptive, shape[0] * receptive);
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let n = shape.iter().product();
            let data = (0..n).map(|_| rng.random_range(-limit..limit)).collect();
            Layer {
                bias: Param::new(vec![shape[0]], vec![0.0; shape[0]]),
                weight: Param::new(shape, data),
            }
        })
        .collect();
    let mut w = DeepIdWeights {
        layers,
        provenance: Provenance {
            source: "fineprune synth".into(),
            source_sha256: String::new(),
            input_scale,
            extra: Default::default(),
        },
    };
    // Initialised for pixels / 255, then expressed at the model's own scale.
    rescale_conv1(&mut w, TRAIN_SCALE / input_scale);
    w
}

fn rescale_conv1(w: &mut DeepIdWeights, factor: f64) {
    for v in &mut w.layer_mut("conv_1").weight.data {
        *v = (*v as f64 * factor) as f32;
    }
}

/// Trains `weights` on `train`; with `holdout`, keeps the epoch that scores best on it and
/// stops after `patience` epochs without improvement. `frozen_channels` of conv_3 stay exactly
/// zero throughout (pruned channels remain pruned).
pub fn train(
    weights: &DeepIdWeights,
    train: &Subset,
    holdout: Option<&Subset>,
    settings: &Settings,
    frozen_channels: &[usize],
    on_epoch: &mut dyn FnMut(&Epoch),
    on_batch: &dyn Fn(usize),
) -> Result<(DeepIdWeights, Vec<Epoch>)> {
    let device = Device::Cpu;
    let scale = weights.provenance.input_scale;
    let mut start = weights.clone();
    rescale_conv1(&mut start, scale / TRAIN_SCALE);
    let mut base = DeepId::new(&start, &device)?;
    base.input_scale = TRAIN_SCALE;
    let (net, vars) = base.to_vars()?;
    let mask = conv3_mask(frozen_channels, &device)?;
    apply_mask(&vars, &mask)?;

    type Step = Box<dyn FnMut(&Tensor) -> candle_core::Result<()>>;
    let mut opt: Step = match settings.optimizer {
        Optimizer::Adam => {
            let mut adam = AdamW::new(
                vars.clone(),
                ParamsAdamW {
                    lr: settings.learning_rate,
                    weight_decay: 0.0,
                    ..Default::default()
                },
            )?;
            Box::new(move |loss| adam.backward_step(loss))
        }
        Optimizer::Sgd => {
            let mut sgd = SGD::new(vars.clone(), settings.learning_rate)?;
            Box::new(move |loss| sgd.backward_step(loss))
        }
    };

    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut history = Vec::new();
    let mut best: Option<(f64, DeepId)> = None;
    let mut since_best = 0;
    for epoch in 1..=settings.epochs {
        order.shuffle(&mut rng);
        let (mut loss_sum, mut hits) = (0f64, 0usize);
        for ids in order.chunks(settings.batch_size) {
            let (pixels, labels) = train.gather(ids);
            let x = input_tensor(&pixels, TRAIN_SCALE, &device)?;
            let y = Tensor::new(labels.as_slice(), &device)?;
            let logits = net.logits(&x)?;
            let loss = candle_nn::loss::cross_entropy(&logits, &y)?;
            opt(&loss)?;
            apply_mask(&vars, &mask)?;
            loss_sum += loss.to_scalar::<f32>()? as f64 * ids.len() as f64;
            let pred = logits.argmax(1)?.to_vec1::<u32>()?;
            hits += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
            on_batch(ids.len());
        }
        let holdout_accuracy = holdout.map(|h| accuracy(&net, h)).transpose()?;
        let e = Epoch {
            epoch,
            loss: loss_sum / train.len() as f64,
            train_accuracy: crate::metrics::percent(hits, train.len()),
            holdout_accuracy,
        };
        on_epoch(&e);
        history.push(e);
        if let Some(acc) = holdout_accuracy {
            if best.as_ref().is_none_or(|(b, _)| acc > *b) {
                best = Some((acc, snapshot(&net)?));
                since_best = 0;
            } else {
                since_best += 1;
                if since_best >= settings.patience {
                    break;
                }
            }
        }
    }
    let chosen = match best {
        Some((_, n)) => n,
        None => net,
    };
    let mut out = chosen.to_weights(weights)?;
    rescale_conv1(&mut out, TRAIN_SCALE / scale);
    out.prune_conv3(frozen_channels);
    Ok((out, history))
}

/// Accuracy in percent of a network (computing at its own input scale) on `data`.
pub fn accuracy(net: &DeepId, data: &Subset) -> Result<f64> {
    let mut hits = 0;
    let positions: Vec<usize> = (0..data.len()).collect();
    let predictor = Predictor::new(net)?;
    for at in positions.chunks(1024) {
        let (pixels, labels) = data.gather(at);
        let pred = predictor.predict(&pixels);
        hits += pred.iter().zip(&labels).filter(|(p, l)| p == l).count();
    }
    Ok(crate::metrics::percent(hits, data.len()))
}

/// Predicted classes for images (C, H, W) in 0..255.
pub fn predict(net: &DeepId, pixels: &[f32]) -> Result<Vec<u32>> {
    Ok(Predictor::new(net)?.predict(pixels))
}

/// A network prepared once for inference on plain buffers.
struct Predictor {
    trunk: Trunk,
    head: Head,
}

impl Predictor {
    fn new(net: &DeepId) -> Result<Self> {
        Ok(Self {
            trunk: Trunk::new(net)?,
            head: Head::new(net)?,
        })
    }

    fn predict(&self, pixels: &[f32]) -> Vec<u32> {
        let mut pool_3 = vec![0.0; pixels.len() / IMAGE_LEN * POOL3_LEN];
        self.trunk.pool_3(pixels, &mut pool_3, false);
        self.head.classify(&pool_3)
    }
}

/// A copy detached from the variables (later steps do not change it).
fn snapshot(net: &DeepId) -> Result<DeepId> {
    let mut copy = net.clone();
    for d in &mut copy.layers {
        d.matrix = d.matrix.copy()?.detach();
        d.bias = d.bias.copy()?.detach();
    }
    Ok(copy)
}

/// 1 for kept conv_3 channels, 0 for frozen ones.
fn conv3_mask(frozen: &[usize], device: &Device) -> Result<Tensor> {
    let keep: Vec<f32> = (0..CONV3_CHANNELS)
        .map(|c| if frozen.contains(&c) { 0.0 } else { 1.0 })
        .collect();
    Ok(Tensor::from_vec(keep, CONV3_CHANNELS, device)?.to_dtype(DType::F32)?)
}

/// conv_3 is vars[4] (matrix, columns = channels) and vars[5] (bias).
fn apply_mask(vars: &[Var], mask: &Tensor) -> Result<()> {
    let (m, b) = (&vars[4], &vars[5]);
    m.set(&m.as_tensor().broadcast_mul(mask)?)?;
    b.set(&b.as_tensor().mul(mask)?)?;
    Ok(())
}
