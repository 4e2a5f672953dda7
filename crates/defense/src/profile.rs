//! Ranking conv_3 channels: by their mean activation on clean validation data, as the
//! reference does, or by RNP's channel masks ([`model::rnp`]), learned from the same data.

use crate::config::{ProfileConfig, Statistic};
use crate::features::{extract, ChannelStats};
use crate::fingerprint::MODEL_KEY;
use crate::{Error, Result};
use formats::paths::{Split, WorkPaths};
use formats::source::Images;
use formats::table::{Column, Table};
use formats::ModelFile;
use model::geometry::CONV3_CHANNELS;
use model::progress::Progress;
use model::rnp;
use model::train::Examples;
use model::{DeepIdWeights, Network};
use serde::Serialize;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub pool_3_mean: Vec<f64>,
    pub conv_3_mean: Vec<f64>,
    pub active_fraction: Vec<f64>,
    pub statistic: Statistic,
    /// RNP's mask per channel, in [0, 1]: present exactly when the statistic is RNP.
    pub rnp_mask: Option<Vec<f64>>,
    /// Channels in pruning order: ascending statistic, ties by pool_3 mean, then by channel
    /// index.
    pub order: Vec<usize>,
    pub model_fingerprint: String,
}

/// The column RNP's masks are written to.
const RNP_MASK: &str = "rnp_mask";

impl Profile {
    /// `rnp_mask`: RNP's masks, which statistic rnp ranks by (and only it has).
    pub fn new(
        stats: &ChannelStats,
        statistic: Statistic,
        rnp_mask: Option<Vec<f64>>,
        model_fingerprint: String,
    ) -> Self {
        let mut profile = Self {
            active_fraction: stats.active_fraction(),
            pool_3_mean: stats.pool_3_mean(),
            conv_3_mean: stats.conv_3_mean(),
            statistic,
            rnp_mask,
            order: Vec::new(),
            model_fingerprint,
        };
        profile.order = profile
            .ranking()
            .expect("RNP's masks come with statistic rnp alone");
        profile
    }

    /// The pruning order the statistic gives, or what stands in its way.
    fn ranking(&self) -> std::result::Result<Vec<usize>, String> {
        let key = match (self.statistic, &self.rnp_mask) {
            (Statistic::Pool3Mean, None) => &self.pool_3_mean,
            (Statistic::Conv3Mean, None) => &self.conv_3_mean,
            (Statistic::Rnp, Some(mask)) => mask,
            (Statistic::Rnp, None) => {
                return Err(format!("statistic rnp needs an `{RNP_MASK}` column"))
            }
            (s, Some(_)) => {
                return Err(format!(
                    "has an `{RNP_MASK}` column, which statistic {} does not use",
                    statistic_name(s)
                ))
            }
        };
        let mean = &self.pool_3_mean;
        let mut order: Vec<usize> = (0..key.len()).collect();
        order.sort_by(|&a, &b| {
            key[a]
                .total_cmp(&key[b])
                .then(mean[a].total_cmp(&mean[b]))
                .then(a.cmp(&b))
        });
        Ok(order)
    }

    /// `rank[c]`: position of channel c in the pruning order.
    pub fn ranks(&self) -> Vec<usize> {
        let mut rank = vec![0; self.order.len()];
        for (r, &c) in self.order.iter().enumerate() {
            rank[c] = r;
        }
        rank
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let n = self.order.len();
        let mut table = Table::new()
            .with("channel", Column::ints(0..n as i32))
            .with("pool_3_mean", Column::floats(self.pool_3_mean.clone()))
            .with("conv_3_mean", Column::floats(self.conv_3_mean.clone()))
            .with(
                "active_fraction",
                Column::floats(self.active_fraction.clone()),
            );
        if let Some(mask) = &self.rnp_mask {
            table = table.with(RNP_MASK, Column::floats(mask.clone()));
        }
        let ranks = Column::ints(self.ranks().into_iter().map(|r| r as i32));
        Ok(table
            .with("rank", ranks)
            .meta("statistic", statistic_name(self.statistic))
            .meta(MODEL_KEY, &self.model_fingerprint)
            .write(path)?)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let t = Table::read(path)?;
        let floats = |name| -> Result<Vec<f64>> {
            t.floats(name)?
                .into_iter()
                .map(|v| v.ok_or_else(|| Error::invalid(path, format!("`{name}` has nulls"))))
                .collect()
        };
        let ranks = t.ints("rank")?;
        if ranks.len() != CONV3_CHANNELS {
            return Err(Error::invalid(
                path,
                format!(
                    "has {} channels; DeepID's conv_3 has {CONV3_CHANNELS}",
                    ranks.len()
                ),
            ));
        }
        if t.ints("channel")? != (0..CONV3_CHANNELS as i32).collect::<Vec<_>>() {
            return Err(Error::invalid(path, "`channel` is not 0, 1, ... in order"));
        }
        let mut order = vec![usize::MAX; ranks.len()];
        for (c, &r) in ranks.iter().enumerate() {
            match order.get_mut(r as usize) {
                Some(slot) if *slot == usize::MAX => *slot = c,
                _ => {
                    return Err(Error::invalid(
                        path,
                        "`rank` is not a permutation of the channels",
                    ))
                }
            }
        }
        let statistic = match t.meta_value("statistic")? {
            "pool_3_mean" => Statistic::Pool3Mean,
            "conv_3_mean" => Statistic::Conv3Mean,
            "rnp" => Statistic::Rnp,
            other => {
                return Err(Error::invalid(
                    path,
                    format!("metadata statistic {other:?} is not pool_3_mean, conv_3_mean or rnp"),
                ))
            }
        };
        let has_mask = t.columns.iter().any(|(n, _)| n == RNP_MASK);
        let rnp_mask = has_mask.then(|| floats(RNP_MASK)).transpose()?;
        if let Some(bad) = rnp_mask
            .iter()
            .flatten()
            .find(|m| !(0.0..=1.0).contains(*m))
        {
            return Err(Error::invalid(
                path,
                format!("`{RNP_MASK}` holds {bad}; RNP's masks lie in [0, 1]"),
            ));
        }
        let profile = Self {
            pool_3_mean: floats("pool_3_mean")?,
            conv_3_mean: floats("conv_3_mean")?,
            active_fraction: floats("active_fraction")?,
            statistic,
            rnp_mask,
            order,
            model_fingerprint: t.meta_value(MODEL_KEY)?.to_string(),
        };
        let want = profile.ranking().map_err(|m| Error::invalid(path, m))?;
        if want != profile.order {
            return Err(Error::invalid(
                path,
                format!(
                    "`rank` does not follow {} (ascending, ties by pool_3 mean, then by channel)",
                    statistic_name(statistic)
                ),
            ));
        }
        Ok(profile)
    }
}

pub fn statistic_name(s: Statistic) -> &'static str {
    match s {
        Statistic::Pool3Mean => "pool_3_mean",
        Statistic::Conv3Mean => "conv_3_mean",
        Statistic::Rnp => "rnp",
    }
}

/// What the profile stage reads and writes.
pub struct ProfileFiles {
    /// The backdoored network B.
    pub model: PathBuf,
    /// Clean validation images, Parquet or CSAW HDF5.
    pub valid: PathBuf,
    /// The channel table.
    pub output: PathBuf,
    /// The validation pool_3 activations, for `prune`.
    pub features_output: PathBuf,
}

impl ProfileFiles {
    /// The files make gives the stage in the work folder `work`.
    pub fn in_work(work: &WorkPaths) -> Self {
        Self {
            model: work.model(),
            valid: work.dataset(Split::Valid),
            output: work.activations(),
            features_output: work.valid_pool_3(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ProfileSummary {
    pub images: usize,
    pub statistic: &'static str,
    pub order: Vec<usize>,
    pub dormant_channels: usize,
    /// How RNP went, for statistic rnp.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rnp: Option<rnp::Outcome>,
    /// Floating-point operations of the trunk pass ([`model::flops`]); not counted for RNP,
    /// whose mask learning makes passes of its own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub work_flops: Option<f64>,
    pub outputs: [PathBuf; 2],
}

/// The profile stage: one pass of the validation set through B's trunk (and, for RNP, the
/// masks learned on it), then the channel table and the pool_3 activations.
pub fn run(
    files: &ProfileFiles,
    config: &ProfileConfig,
    progress: &dyn Progress,
) -> Result<ProfileSummary> {
    formats::written::check_paths(
        &[
            ("the network", &files.model),
            ("the validation images", &files.valid),
        ],
        &[
            ("the channel table", &files.output),
            ("the pool_3 activations", &files.features_output),
        ],
    )?;
    let weights = DeepIdWeights::load(&files.model)?;
    let images = Images::open(&files.valid, weights.classes())?;
    progress.start("profile", images.len() as u64);
    let features = extract(&Network::new(&weights), images, &|n| {
        progress.advance(n as u64)
    })?;
    progress.finish();
    let rnp = match config.statistic {
        Statistic::Rnp => Some(rnp_masks(&files.valid, &weights, config, progress)?),
        Statistic::Pool3Mean | Statistic::Conv3Mean => None,
    };
    let fingerprint = weights.fingerprint();
    let masks = rnp
        .as_ref()
        .map(|o| o.masks.iter().map(|&m| m as f64).collect());
    let profile = Profile::new(
        &features.stats,
        config.statistic,
        masks,
        fingerprint.clone(),
    );
    features.save(&files.features_output, &fingerprint)?;
    profile.write(&files.output)?;
    Ok(ProfileSummary {
        images: features.len(),
        statistic: statistic_name(profile.statistic),
        dormant_channels: profile.pool_3_mean.iter().filter(|m| **m == 0.0).count(),
        order: profile.order,
        work_flops: rnp.is_none().then(|| {
            features.len() as f64 * model::flops::forward(model::flops::trunk(), weights.classes())
        }),
        rnp,
        outputs: [files.output.clone(), files.features_output.clone()],
    })
}

/// RNP on the clean validation images, read whole this time: both of its phases pass over
/// them many times.
fn rnp_masks(
    valid: &Path,
    weights: &DeepIdWeights,
    config: &ProfileConfig,
    progress: &dyn Progress,
) -> Result<rnp::Outcome> {
    let all = Images::open(valid, weights.classes())?.read_all()?;
    if all.is_empty() {
        return Err(Error::invalid(
            valid,
            "holds no images; RNP learns its masks from clean validation images",
        ));
    }
    let data = Examples {
        labels: all.labels.iter().map(|&l| l as u32).collect(),
        pixels: all.pixels,
    };
    let outcome = rnp::masks(weights, data, &config.rnp(), progress).map_err(|e| {
        let setting = match e {
            model::Error::Diverged {
                what: "channel masks",
                ..
            } => "profile.mask_learning_rate",
            _ => "profile.unlearn_learning_rate",
        };
        Error::diverged(e, "RNP", setting)
    })?;
    if !outcome.unlearned {
        tracing::warn!(
            "RNP: clean accuracy still {:.1}% after profile.unlearn_max_steps = {} unlearning steps (the target was below {}%); the masks come from a network that still knows the clean task",
            outcome.unlearned_accuracy,
            config.unlearn_max_steps,
            config.unlearn_accuracy
        );
    }
    Ok(outcome)
}

impl std::fmt::Display for ProfileSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let first = &self.order[..self.order.len().min(8)];
        if let Some(r) = &self.rnp {
            let masks: Vec<String> = first
                .iter()
                .map(|&c| format!("{c}: {:.3}", r.masks[c]))
                .collect();
            writeln!(
                f,
                "RNP: {} unlearning steps to {:.1}% batch accuracy{}; masked unlearned network {:.1}%; lowest masks {}",
                r.unlearn_steps,
                r.unlearned_accuracy,
                if r.unlearned { "" } else { " (step cap reached)" },
                r.recovered_accuracy,
                masks.join(", ")
            )?;
        }
        write!(
            f,
            "{} images -> {}: {} of {} channels never active; pruning order {first:?}... ({})",
            self.images,
            self.outputs[0].display(),
            self.dormant_channels,
            self.order.len(),
            self.statistic,
        )
    }
}
