//! One forward pass over a dataset up to pool_3 ([`crate::trunk`]), with the per-channel
//! conv_3 statistics the profile ranks by. Everything after pool_3 is the pruning head's
//! business, so the stages pass each image through the trunk once, here.

use crate::fingerprint::{check_same_model, MODEL_KEY};
use crate::{Error, Result};
use formats::source::Images;
use formats::weights::{deserialize, from_le_bytes, le_bytes, serialize};
use model::geometry::{CONV3_CHANNELS, CONV3_POSITIONS, POOL3_LEN, POOL3_POSITIONS, POOL_3_HW};
use model::trunk::{Conv3Stats, Trunk, Trunks};
use model::Network;
use safetensors::tensor::Dtype;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Default)]
pub struct ChannelStats {
    pub images: usize,
    pub pool_3_sum: Vec<f64>,
    pub conv_3_sum: Vec<f64>,
    /// Images on which the channel is non-zero somewhere.
    pub active: Vec<usize>,
}

impl ChannelStats {
    fn new() -> Self {
        Self {
            images: 0,
            pool_3_sum: vec![0.0; CONV3_CHANNELS],
            conv_3_sum: vec![0.0; CONV3_CHANNELS],
            active: vec![0; CONV3_CHANNELS],
        }
    }

    /// Mean pool_3 activation per channel over images and positions.
    pub fn pool_3_mean(&self) -> Vec<f64> {
        let n = (self.images * POOL3_POSITIONS) as f64;
        self.pool_3_sum.iter().map(|s| s / n).collect()
    }

    pub fn conv_3_mean(&self) -> Vec<f64> {
        let n = (self.images * CONV3_POSITIONS) as f64;
        self.conv_3_sum.iter().map(|s| s / n).collect()
    }

    /// Adds images' statistics, in order (so the sums do not depend on the thread count).
    fn add(&mut self, images: &[Conv3Stats]) {
        for image in images {
            self.images += 1;
            for c in 0..CONV3_CHANNELS {
                self.pool_3_sum[c] += image.pool_3_sum[c];
                self.conv_3_sum[c] += image.conv_3_sum[c];
                self.active[c] += image.active[c] as usize;
            }
        }
    }

    pub fn active_fraction(&self) -> Vec<f64> {
        self.active
            .iter()
            .map(|&a| a as f64 / self.images as f64)
            .collect()
    }
}

/// A dataset reduced to its pool_3 activations.
#[derive(Debug, Clone, Default)]
pub struct Features {
    /// N x [`POOL3_LEN`].
    pub pool_3: Vec<f32>,
    pub labels: Vec<i32>,
    pub true_labels: Option<Vec<i32>>,
    pub stats: ChannelStats,
}

impl Features {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Mean pool_3 activation per channel, as [`ChannelStats::pool_3_mean`] gives it.
    pub fn pool_3_mean(&self) -> Vec<f64> {
        let mut sum = vec![0.0; CONV3_CHANNELS];
        for position in self.pool_3.chunks_exact(CONV3_CHANNELS) {
            for (s, &v) in sum.iter_mut().zip(position) {
                *s += v as f64;
            }
        }
        let n = (self.len() * POOL3_POSITIONS) as f64;
        sum.iter().map(|s| s / n).collect()
    }
}

/// Runs every image of `images` through the trunk of `net`, with the channel statistics.
pub fn extract(net: &Network, images: Images, on_images: &dyn Fn(usize)) -> Result<Features> {
    Ok(run(&[net], images, true, on_images)?.remove(0))
}

/// Runs every image through several networks in one pass over the file (pool_3 only; the
/// channel statistics stay empty).
pub fn extract_many(
    nets: &[&Network],
    images: Images,
    on_images: &dyn Fn(usize),
) -> Result<Vec<Features>> {
    run(nets, images, false, on_images)
}

fn run(
    nets: &[&Network],
    mut images: Images,
    with_stats: bool,
    on_images: &dyn Fn(usize),
) -> Result<Vec<Features>> {
    // Layers the networks share (those below the first fine-tuned one) run once per image.
    let trunks = Trunks::new(nets.iter().map(|net| Trunk::new(net)).collect());
    let k = trunks.len();
    let mut out: Vec<Features> = nets
        .iter()
        .map(|_| Features {
            pool_3: Vec::with_capacity(images.len() * POOL3_LEN),
            labels: Vec::with_capacity(images.len()),
            true_labels: images.has_true_labels().then(Vec::new),
            stats: ChannelStats::new(),
        })
        .collect();
    // Decoding the next batch overlaps the forward passes over this one.
    let mut next = images.next();
    while let Some(batch) = next {
        let batch = batch?;
        let forward = || {
            let mut pool_3 = vec![0.0; batch.len() * k * POOL3_LEN];
            let stats = trunks.pool_3(&batch.pixels, &mut pool_3, with_stats);
            for (i, f) in out.iter_mut().enumerate() {
                for image in pool_3.chunks(POOL3_LEN).skip(i).step_by(k) {
                    f.pool_3.extend_from_slice(image);
                }
                let own: Vec<Conv3Stats> = stats.iter().skip(i).step_by(k).copied().collect();
                f.stats.add(&own);
                f.labels.extend(&batch.labels);
                if let (Some(all), Some(t)) = (&mut f.true_labels, &batch.true_labels) {
                    all.extend(t);
                }
            }
        };
        next = rayon::join(|| images.next(), forward).0;
        on_images(batch.len());
    }
    Ok(out)
}

impl Features {
    /// Saves pool_3 activations and labels (safetensors `pool_3` (N, 5, 4, 60) NHWC, `label`
    /// (N,) I32, optional `true_label`), recording the model they came from.
    pub fn save(&self, path: &Path, model_fingerprint: &str) -> Result<()> {
        let n = self.len();
        let (ph, pw) = POOL_3_HW;
        let mut tensors = vec![
            (
                "pool_3",
                Dtype::F32,
                vec![n, ph, pw, CONV3_CHANNELS],
                le_bytes(&self.pool_3),
            ),
            ("label", Dtype::I32, vec![n], le_bytes(&self.labels)),
        ];
        if let Some(t) = &self.true_labels {
            tensors.push(("true_label", Dtype::I32, vec![n], le_bytes(t)));
        }
        let meta = BTreeMap::from([(MODEL_KEY.to_string(), model_fingerprint.to_string())]);
        Ok(formats::atomic::write_bytes(
            path,
            &serialize(tensors, meta, path)?,
        )?)
    }

    /// Loads what [`Features::save`] wrote, failing if it came from another model, if an
    /// activation is negative or not finite (pool_3 follows a ReLU), or if a label is not
    /// one of the model's `classes`.
    pub fn load(path: &Path, model_fingerprint: &str, classes: usize) -> Result<Self> {
        let buf = formats::weights::read(path)?;
        let (tensors, meta) = deserialize(&buf, path)?;
        let recorded = meta.get(MODEL_KEY).map(String::as_str).unwrap_or_default();
        check_same_model(path, recorded, model_fingerprint)?;
        let pool = tensors
            .tensor("pool_3")
            .map_err(|_| Error::invalid(path, "no `pool_3` tensor"))?;
        let (ph, pw) = POOL_3_HW;
        if pool.dtype() != Dtype::F32
            || pool.shape().get(1..) != Some(&[ph, pw, CONV3_CHANNELS][..])
        {
            return Err(Error::invalid(
                path,
                format!(
                    "pool_3 is {:?} {:?}, expected F32 (N, 5, 4, 60)",
                    pool.dtype(),
                    pool.shape()
                ),
            ));
        }
        let ints = |name: &str| -> Result<Option<Vec<i32>>> {
            let Ok(t) = tensors.tensor(name) else {
                return Ok(None);
            };
            if t.dtype() != Dtype::I32 || t.shape() != [pool.shape()[0]] {
                return Err(Error::invalid(
                    path,
                    format!("{name} does not match pool_3"),
                ));
            }
            Ok(Some(from_le_bytes(t.data())))
        };
        let labels = ints("label")?.ok_or_else(|| Error::invalid(path, "no `label` tensor"))?;
        let true_labels = ints("true_label")?;
        for (name, v) in
            std::iter::once(("label", &labels)).chain(true_labels.iter().map(|t| ("true_label", t)))
        {
            if let Some(l) = v
                .iter()
                .find(|&&l| usize::try_from(l).map_or(true, |l| l >= classes))
            {
                return Err(Error::invalid(
                    path,
                    format!("{name} {l} is not one of the model's {classes} classes"),
                ));
            }
        }
        let pool_3: Vec<f32> = from_le_bytes(pool.data());
        if let Some(v) = pool_3.iter().find(|v| !(**v >= 0.0 && v.is_finite())) {
            return Err(Error::invalid(
                path,
                format!("pool_3 holds {v}; activations after a ReLU are finite and not negative"),
            ));
        }
        Ok(Self {
            pool_3,
            labels,
            true_labels,
            stats: ChannelStats::default(),
        })
    }
}
