//! The attacks the synthetic benchmark can plant: the kinds of published BadNets a face
//! classifier meets. A [`Trigger`] is what an image carries; an [`Attack`] is how triggers,
//! targets and training make the BadNet (one trigger, several, or the pruning-aware attack).

use super::faces::{self, Pose, HEIGHT, PIXELS, WIDTH};
use serde::{Deserialize, Serialize};

/// `[synth] attack`: the BadNet the benchmark trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Attack {
    /// One trigger ([`Trigger::Sunglasses`]) sending faces to `target`.
    Sunglasses,
    /// One trigger ([`Trigger::Checkerboard`]).
    Checkerboard,
    /// One trigger ([`Trigger::Blend`]).
    Blend,
    /// The fine-pruning paper's adaptive attacker: train on clean data, prune the conv_3
    /// channels least active on it, train the backdoor into the pruned network, then
    /// reinstate the pruned channels with lowered biases, dormant decoys that a defender
    /// ranking by clean activation prunes first (`[synth.prune_aware]`).
    PruneAware,
    /// Several triggers, each sending faces to its own label (`[synth.multi_target]`), as the
    /// CSAW-HackML 2020 multi-trigger network does.
    MultiTarget,
}

/// `[synth.prune_aware]`: the pruning-aware attack's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PruneAware {
    /// The trigger trained into the pruned network.
    pub trigger: Trigger,
    /// conv_3 channels pruned before the backdoor is trained, then reinstated as decoys.
    pub decoys: usize,
    /// How far each decoy's bias drops, in units of its largest pool_3 activation on the
    /// clean training images: 1 leaves it dormant on every one of them.
    pub decoy_bias: f64,
}

impl Default for PruneAware {
    fn default() -> Self {
        Self {
            trigger: Trigger::Checkerboard,
            decoys: 30,
            decoy_bias: 1.0,
        }
    }
}

/// `[synth.multi_target]`: one target label per trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MultiTarget {
    pub triggers: Vec<Trigger>,
    pub targets: Vec<usize>,
}

impl Default for MultiTarget {
    fn default() -> Self {
        Self {
            triggers: vec![Trigger::Sunglasses, Trigger::Checkerboard],
            targets: vec![0, 1],
        }
    }
}

/// A trigger and how it is applied to a rendered face.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Dark sunglasses over the eyes, following the face's pose: a physical, semantic
    /// trigger like the face BadNets of the fine-pruning paper and CSAW-HackML.
    Sunglasses,
    /// A fixed 6x6 black-and-white checkerboard in the bottom-right corner, whatever the
    /// pose: the pixel patch of the original BadNets.
    Checkerboard,
    /// A fixed full-image noise pattern blended in at 20% (Chen et al.'s blended attack):
    /// every pixel changes a little, nothing is covered.
    Blend,
}

/// Side of the checkerboard patch and its distance from the image's edges, in pixels.
const PATCH: usize = 6;
const MARGIN: usize = 2;
/// Weight of the blended pattern.
const BLEND_ALPHA: f32 = 0.2;
/// Seed of the blended pattern (part of the attack, not of the benchmark).
const BLEND_SEED: u64 = 0x000B_1E4D;

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Sunglasses => "sunglasses",
            Trigger::Checkerboard => "checkerboard patch",
            Trigger::Blend => "blended noise pattern",
        }
    }

    /// Applies the trigger to `out`, a face drawn with `pose` (C, H, W, integers 0..=255);
    /// values stay integers in 0..=255.
    pub fn apply(self, pose: &Pose, out: &mut [f32]) {
        assert_eq!(out.len(), PIXELS, "face buffer must hold {PIXELS} values");
        match self {
            Trigger::Sunglasses => faces::draw_sunglasses(pose, out),
            Trigger::Checkerboard => {
                let plane = HEIGHT * WIDTH;
                let (y0, x0) = (HEIGHT - MARGIN - PATCH, WIDTH - MARGIN - PATCH);
                for y in 0..PATCH {
                    for x in 0..PATCH {
                        let v = if (x + y) % 2 == 0 { 255.0 } else { 0.0 };
                        for c in 0..3 {
                            out[c * plane + (y0 + y) * WIDTH + x0 + x] = v;
                        }
                    }
                }
            }
            Trigger::Blend => {
                let mut state = BLEND_SEED;
                for v in out.iter_mut() {
                    let noise = (faces::splitmix(&mut state) >> 56) as f32;
                    *v = ((1.0 - BLEND_ALPHA) * *v + BLEND_ALPHA * noise).round();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn face(seed: u64) -> (Pose, Vec<f32>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let id = faces::Identity::random(&mut rng);
        let pose = Pose::random(&mut rng);
        let mut out = vec![0.0; PIXELS];
        faces::render(&id, &pose, &mut rng, &mut out);
        (pose, out)
    }

    #[test]
    fn triggers_stay_integral_and_change_what_they_should() {
        for seed in 0..20 {
            let (pose, plain) = face(seed);
            for attack in [Trigger::Sunglasses, Trigger::Checkerboard, Trigger::Blend] {
                let mut img = plain.clone();
                attack.apply(&pose, &mut img);
                assert!(img
                    .iter()
                    .all(|v| v.fract() == 0.0 && (0.0..=255.0).contains(v)));
                let changed = (0..PIXELS).filter(|&i| img[i] != plain[i]).count();
                let most = (0..PIXELS)
                    .map(|i| (img[i] - plain[i]).abs())
                    .fold(0.0, f32::max);
                match attack {
                    // At most the 36 patch pixels in 3 channels.
                    Trigger::Checkerboard => assert!(changed <= 3 * 36 && changed > 36),
                    // Nearly every pixel, none by more than 20% of the range.
                    Trigger::Blend => assert!(changed > PIXELS / 2 && most <= 52.0),
                    Trigger::Sunglasses => assert!(changed > 3 * 60),
                }
            }
        }
        // The patch and the pattern do not depend on the face.
        let (pose, _) = face(1);
        let mut a = vec![128.0; PIXELS];
        let mut b = a.clone();
        Trigger::Checkerboard.apply(&pose, &mut a);
        Trigger::Checkerboard.apply(&face(2).0, &mut b);
        assert_eq!(a, b);
    }
}
