//! Training the benchmark's BadNet, the pruning-aware attack's three phases included, and
//! where each trigger lives among conv_3's channels.

use crate::attacks::Attack;
use crate::{Benchmark, Error, Result, SynthConfig};
use formats::csaw::{Batch, IMAGE_LEN};
use model::geometry::{CONV3_CHANNELS, POOL3_LEN, POOL3_POSITIONS};
use model::progress::Progress;
use model::train::{self, Checkpoint, Examples, Fitted, Recipe, Subset};
use model::trunk::Trunk;
use model::{DeepIdWeights, Network};
use serde::Serialize;

/// The trained BadNet and how training went.
pub struct BadNet {
    pub weights: DeepIdWeights,
    /// The (last) training run's checkpoints.
    pub history: Vec<Checkpoint>,
    pub decoys: Option<Decoys>,
}

/// What the pruning-aware attacker did to conv_3.
#[derive(Debug, Clone, Serialize)]
pub struct Decoys {
    /// The channels pruned before the backdoor was trained, least active first.
    pub channels: Vec<usize>,
    /// Their bias drop (the largest pool_3 activation on clean training images, times
    /// `decoy_bias`).
    pub bias_drop: Vec<f32>,
    /// Checkpoints of the clean network's training.
    pub clean_training: Vec<Checkpoint>,
}

/// Per-channel pool_3 activity of a network over some images.
struct Activity {
    mean: Vec<f64>,
    max: Vec<f32>,
}

/// Mean (over images and positions) and largest pool_3 activation of each conv_3 channel, in
/// a fixed summation order.
fn activity(weights: &DeepIdWeights, pixels: &[f32]) -> Activity {
    let network = Network::new(weights);
    let trunk = Trunk::new(&network);
    let (mut sum, mut max) = (vec![0f64; CONV3_CHANNELS], vec![0f32; CONV3_CHANNELS]);
    let mut buf = Vec::new();
    let images = pixels.len() / IMAGE_LEN;
    for chunk in pixels.chunks(1024 * IMAGE_LEN) {
        buf.resize(chunk.len() / IMAGE_LEN * POOL3_LEN, 0.0);
        trunk.pool_3(chunk, &mut buf, false);
        for row in buf.chunks(CONV3_CHANNELS) {
            for (c, &v) in row.iter().enumerate() {
                sum[c] += v as f64;
                max[c] = max[c].max(v);
            }
        }
    }
    let n = (images * POOL3_POSITIONS).max(1) as f64;
    Activity {
        mean: sum.into_iter().map(|s| s / n).collect(),
        max,
    }
}

/// Channels in ascending order of `key`, ties by index: the order a defender ranking by clean
/// activation prunes them in.
fn ascending(key: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..key.len()).collect();
    order.sort_by(|&a, &b| key[a].total_cmp(&key[b]).then(a.cmp(&b)));
    order
}

/// Trains the BadNet `sc` describes on `bench`: Adam at a constant rate for `epochs` over the
/// poisoned training set; for the pruning-aware attack, first `epochs` on the clean training
/// set, then `epochs` on the poisoned set with the decoys pruned, then the decoys reinstated
/// with their biases lowered.
pub fn train_badnet(
    bench: &Benchmark,
    sc: &SynthConfig,
    input_scale: f64,
    progress: &dyn Progress,
) -> Result<BadNet> {
    let steps = sc.epochs * bench.train.len().div_ceil(sc.batch_size);
    let phases = if sc.attack == Attack::PruneAware {
        2
    } else {
        1
    };
    progress.start(
        "train",
        (phases * steps * sc.batch_size.min(bench.train.len())) as u64,
    );
    let fit = |start: &DeepIdWeights, data: &Examples, seed: u64, frozen: &[usize]| {
        let mut log = |c: &Checkpoint| {
            let line = format!(
                "step {}/{steps}: loss {:.4}, training accuracy {:.2}%",
                c.step, c.loss, c.train_accuracy
            );
            progress.status(&line);
            tracing::info!("{line}");
        };
        let recipe = Recipe::plain(steps, sc.batch_size, sc.learning_rate, seed);
        train::fit(
            start,
            &Subset::all(data),
            None,
            &recipe,
            frozen,
            None,
            &mut log,
            &|n| progress.advance(n as u64),
        )
        .map_err(|e| match e {
            model::Error::Diverged { .. } => Error::Diverged {
                setting: format!("synth.learning_rate (now {})", sc.learning_rate),
                source: e,
            },
            e => e.into(),
        })
    };
    let init = train::init_weights(sc.identities, sc.seed, input_scale);
    let out = if sc.attack != Attack::PruneAware {
        let Fitted {
            weights, history, ..
        } = fit(&init, &bench.train, sc.seed, &[])?;
        BadNet {
            weights,
            history,
            decoys: None,
        }
    } else {
        let pa = &sc.prune_aware;
        let clean = fit(&init, &bench.clean_train, sc.seed, &[])?;
        let channels: Vec<usize> =
            ascending(&activity(&clean.weights, &bench.clean_train.pixels).mean)[..pa.decoys]
                .to_vec();
        let backdoored = fit(&clean.weights, &bench.train, sc.seed + 1, &channels)?;
        // Reinstated as trained on clean data, over the backdoored network's lower layers;
        // each bias then drops by the channel's largest clean activation there.
        let mut weights = backdoored.weights;
        reinstate(&mut weights, &clean.weights, &channels);
        let peak = activity(&weights, &bench.clean_train.pixels).max;
        let bias_drop: Vec<f32> = channels
            .iter()
            .map(|&c| (peak[c] as f64 * pa.decoy_bias) as f32)
            .collect();
        for (&c, drop) in channels.iter().zip(&bias_drop) {
            weights.layers.conv_3.bias.data[c] -= drop;
        }
        BadNet {
            weights,
            history: backdoored.history,
            decoys: Some(Decoys {
                channels,
                bias_drop,
                clean_training: clean.history,
            }),
        }
    };
    progress.finish();
    Ok(out)
}

/// Copies conv_3 channels' kernels and biases from `from` into `to`.
fn reinstate(to: &mut DeepIdWeights, from: &DeepIdWeights, channels: &[usize]) {
    let per = to.layers.conv_3.weight.data.len() / CONV3_CHANNELS;
    for &c in channels {
        let at = c * per..(c + 1) * per;
        to.layers.conv_3.weight.data[at.clone()]
            .copy_from_slice(&from.layers.conv_3.weight.data[at]);
        to.layers.conv_3.bias.data[c] = from.layers.conv_3.bias.data[c];
    }
}

/// One conv_3 channel a trigger raises.
#[derive(Debug, Clone, Serialize)]
pub struct TriggerChannel {
    pub channel: usize,
    /// Position in the order a defender ranking by mean clean pool_3 activation prunes in
    /// (0 = pruned first).
    pub clean_rank: usize,
    pub clean_mean: f64,
    pub triggered_mean: f64,
}

/// Where one backdoor lives in B: the channels its trigger raises most.
#[derive(Debug, Clone, Serialize)]
pub struct BackdoorReport {
    pub trigger: crate::attacks::Trigger,
    pub target: usize,
    pub attack_success_rate: f64,
    /// The five channels whose mean pool_3 activation rises most under the trigger.
    pub trigger_channels: Vec<TriggerChannel>,
}

/// Each backdoor's attack success on `poisoned` (the images labelled with its target) and the
/// channels its trigger raises against the clean images `clean`.
pub fn backdoor_reports(
    weights: &DeepIdWeights,
    sc: &SynthConfig,
    clean: &Batch,
    poisoned: &Batch,
) -> Vec<BackdoorReport> {
    let net = Network::new(weights);
    let base = activity(weights, &clean.pixels);
    let rank = {
        let mut rank = vec![0; CONV3_CHANNELS];
        for (r, c) in ascending(&base.mean).into_iter().enumerate() {
            rank[c] = r;
        }
        rank
    };
    sc.backdoors()
        .into_iter()
        .map(|(trigger, target)| {
            let ids: Vec<usize> = (0..poisoned.len())
                .filter(|&i| poisoned.labels[i] == target as i32)
                .collect();
            let mine = Examples {
                pixels: ids
                    .iter()
                    .flat_map(|&i| &poisoned.pixels[i * IMAGE_LEN..][..IMAGE_LEN])
                    .copied()
                    .collect(),
                labels: vec![target as u32; ids.len()],
            };
            let triggered = activity(weights, &mine.pixels);
            let rise: Vec<f64> = (0..CONV3_CHANNELS)
                .map(|c| base.mean[c] - triggered.mean[c])
                .collect();
            let trigger_channels = ascending(&rise)[..5]
                .iter()
                .map(|&c| TriggerChannel {
                    channel: c,
                    clean_rank: rank[c],
                    clean_mean: base.mean[c],
                    triggered_mean: triggered.mean[c],
                })
                .collect();
            BackdoorReport {
                trigger,
                target,
                attack_success_rate: train::accuracy(&net, &Subset::all(&mine)),
                trigger_channels,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attacks::{PruneAware, Trigger};
    use crate::generate;
    use model::progress::Quiet;

    fn tiny(attack: Attack) -> SynthConfig {
        SynthConfig {
            identities: 4,
            train_per_identity: 6,
            valid_per_identity: 2,
            test_per_identity: 2,
            attack,
            epochs: 1,
            batch_size: 8,
            ..SynthConfig::default()
        }
    }

    #[test]
    fn prune_aware_decoys_are_dormant_on_clean_training_images() {
        let mut sc = tiny(Attack::PruneAware);
        sc.prune_aware = PruneAware {
            trigger: Trigger::Checkerboard,
            decoys: 12,
            decoy_bias: 1.0,
        };
        let bench = generate(&sc);
        let net = train_badnet(&bench, &sc, 1.0 / 255.0, &Quiet).unwrap();
        let decoys = net.decoys.expect("decoys");
        assert_eq!(decoys.channels.len(), 12);
        let clean = activity(&net.weights, &bench.clean_train.pixels);
        for &c in &decoys.channels {
            assert_eq!(clean.max[c], 0.0, "decoy {c} fires on clean data");
        }
        // Reinstated, not pruned: a defender sees live channels that never fire.
        assert!(net.weights.live_channel(&decoys.channels).is_some());
    }
}
