//! One forward pass over a dataset up to pool_3 ([`crate::trunk`]), with the per-channel
//! conv_3 statistics the profile ranks by. Everything after pool_3 is the pruning head's
//! business, so the stages pass each image through the trunk once, here.

use crate::deepid::DeepId;
use crate::error::{Error, Result};
use crate::profile::MODEL_KEY;
use crate::source::Images;
use crate::trunk::{Conv3Stats, Trunk};
use crate::weights::CONV3_CHANNELS;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::HashMap;
use std::path::Path;

/// pool_3 values per image: 5 x 4 positions x 60 channels, NHWC order.
pub const POOL3_LEN: usize = 5 * 4 * CONV3_CHANNELS;

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
        let n = (self.images * 20) as f64;
        self.pool_3_sum.iter().map(|s| s / n).collect()
    }

    pub fn conv_3_mean(&self) -> Vec<f64> {
        let n = (self.images * 80) as f64;
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
}

/// Runs every image of `images` through the trunk of `net`, with the channel statistics.
pub fn extract(net: &DeepId, images: Images, on_images: &dyn Fn(usize)) -> Result<Features> {
    Ok(run(&[net], images, true, on_images)?.remove(0))
}

/// Runs every image through several networks in one pass over the file (pool_3 only; the
/// channel statistics stay empty).
pub fn extract_many(
    nets: &[&DeepId],
    images: Images,
    on_images: &dyn Fn(usize),
) -> Result<Vec<Features>> {
    run(nets, images, false, on_images)
}

fn run(
    nets: &[&DeepId],
    mut images: Images,
    with_stats: bool,
    on_images: &dyn Fn(usize),
) -> Result<Vec<Features>> {
    let trunks = nets
        .iter()
        .map(|net| Trunk::new(net))
        .collect::<Result<Vec<_>>>()?;
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
            for (trunk, f) in trunks.iter().zip(out.iter_mut()) {
                let at = f.pool_3.len();
                f.pool_3.resize(at + batch.len() * POOL3_LEN, 0.0);
                let stats = trunk.pool_3(&batch.pixels, &mut f.pool_3[at..], with_stats);
                f.stats.add(&stats);
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
        let f32s = le_bytes(&self.pool_3);
        let labels = le_bytes(&self.labels);
        let true_labels = self.true_labels.as_deref().map(le_bytes);
        let st = |source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        };
        let mut views = vec![
            (
                "pool_3",
                TensorView::new(Dtype::F32, vec![n, 5, 4, CONV3_CHANNELS], f32s).map_err(st)?,
            ),
            (
                "label",
                TensorView::new(Dtype::I32, vec![n], labels).map_err(st)?,
            ),
        ];
        if let Some(t) = &true_labels {
            views.push((
                "true_label",
                TensorView::new(Dtype::I32, vec![n], t).map_err(st)?,
            ));
        }
        let meta = HashMap::from([(MODEL_KEY.to_string(), model_fingerprint.to_string())]);
        let mut bytes = safetensors::serialize(views, Some(meta)).map_err(st)?;
        crate::weights::canonicalize_header(&mut bytes);
        crate::atomic::write_bytes(path, &bytes)
    }

    /// Loads what [`Features::save`] wrote, failing if it came from another model.
    pub fn load(path: &Path, model_fingerprint: &str) -> Result<Self> {
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st = |source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        };
        let (_, header) = SafeTensors::read_metadata(&buf).map_err(st)?;
        let recorded = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(MODEL_KEY).cloned())
            .unwrap_or_default();
        crate::profile::check_same_model(path, &recorded, model_fingerprint)?;
        let tensors = SafeTensors::deserialize(&buf).map_err(st)?;
        let pool = tensors.tensor("pool_3").map_err(st)?;
        if pool.dtype() != Dtype::F32 || pool.shape()[1..] != [5, 4, CONV3_CHANNELS] {
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
        Ok(Self {
            pool_3: from_le_bytes(pool.data()),
            labels,
            true_labels: ints("true_label")?,
            stats: ChannelStats::default(),
        })
    }
}

// safetensors stores little-endian values: on such machines the bytes are the values' own.
#[cfg(target_endian = "little")]
fn le_bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

#[cfg(target_endian = "little")]
fn from_le_bytes<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(b)
}
