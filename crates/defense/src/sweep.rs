//! The pruning sweep: remove conv_3 channels one at a time in profile order, predicting every
//! image after each step, and find where validation accuracy first drops by each threshold.

use crate::fingerprint::MODEL_KEY;
use crate::{Error, Result};
use formats::table::{Column, Table};
use model::geometry::CONV3_CHANNELS;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Where a threshold was first reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdHit {
    pub threshold_percent: f64,
    /// Channels pruned at the first step whose validation accuracy is at least the threshold
    /// below the unpruned network's; `None` if no step gets there.
    pub channels_pruned: Option<usize>,
}

pub fn thresholds_reached(valid_accuracy: &[f64], thresholds: &[f64]) -> Vec<ThresholdHit> {
    let base = valid_accuracy[0];
    thresholds
        .iter()
        .map(|&t| ThresholdHit {
            threshold_percent: t,
            channels_pruned: valid_accuracy.iter().position(|&a| base - a >= t),
        })
        .collect()
}

/// What `prune` hands on: the order it pruned in, validation accuracy per step, thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneSweep {
    pub order: Vec<usize>,
    /// Index = channels pruned.
    pub valid_accuracy: Vec<f64>,
    pub hits: Vec<ThresholdHit>,
    pub model_fingerprint: String,
}

impl PruneSweep {
    pub fn write(&self, path: &Path) -> Result<()> {
        let steps = self.valid_accuracy.len();
        let pruned: Vec<Option<i32>> = std::iter::once(None)
            .chain(self.order.iter().map(|&c| Some(c as i32)))
            .collect();
        let thresholds = serde_json::to_string(&self.hits).expect("JSON");
        Ok(Table::new()
            .with("channels_pruned", Column::ints(0..steps as i32))
            .with("pruned_channel", Column::Int(pruned))
            .with(
                "valid_accuracy",
                Column::floats(self.valid_accuracy.clone()),
            )
            .meta("thresholds", thresholds)
            .meta(MODEL_KEY, &self.model_fingerprint)
            .write(path)?)
    }

    pub fn read(path: &Path) -> Result<Self> {
        let t = Table::read(path)?;
        let order = match t.columns.iter().find(|(n, _)| n == "pruned_channel") {
            Some((_, Column::Int(v))) => v
                .iter()
                .skip(1)
                .map(|c| c.map(|c| c as usize))
                .collect::<Option<Vec<_>>>(),
            _ => None,
        }
        .ok_or_else(|| {
            Error::invalid(path, "`pruned_channel` must be Int32, null only at step 0")
        })?;
        let valid_accuracy = t
            .floats("valid_accuracy")?
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| Error::invalid(path, "`valid_accuracy` has nulls"))?;
        let hits: Vec<ThresholdHit> = serde_json::from_str(t.meta_value("thresholds")?)
            .map_err(|e| Error::invalid(path, format!("metadata `thresholds`: {e}")))?;
        check_order(&order, path)?;
        if valid_accuracy.len() != order.len() + 1
            || valid_accuracy.iter().any(|a| !(0.0..=100.0).contains(a))
        {
            return Err(Error::invalid(
                path,
                "`valid_accuracy` needs one percentage per step (0 to 60 channels pruned)",
            ));
        }
        let thresholds: Vec<f64> = hits.iter().map(|h| h.threshold_percent).collect();
        if thresholds_reached(&valid_accuracy, &thresholds) != hits {
            return Err(Error::invalid(
                path,
                "metadata `thresholds` disagrees with `valid_accuracy` (where each drop is first reached)",
            ));
        }
        Ok(Self {
            order,
            valid_accuracy,
            hits,
            model_fingerprint: t.meta_value(MODEL_KEY)?.to_string(),
        })
    }
}

/// Fails unless `order` names every conv_3 channel exactly once.
pub fn check_order(order: &[usize], path: &Path) -> Result<()> {
    let mut seen = [false; CONV3_CHANNELS];
    for &c in order {
        match seen.get_mut(c) {
            Some(s) if !*s => *s = true,
            _ => {
                return Err(Error::invalid(
                    path,
                    format!(
                        "the pruning order is not a permutation of conv_3's {CONV3_CHANNELS} channels (channel {c})"
                    ),
                ))
            }
        }
    }
    if order.len() != CONV3_CHANNELS {
        return Err(Error::invalid(
            path,
            format!(
                "the pruning order has {} channels; conv_3 has {CONV3_CHANNELS}",
                order.len()
            ),
        ));
    }
    Ok(())
}
