//! The plain-buffer training engine against candle's automatic differentiation of the same
//! network, and the guarantees of fine-tuning: pruned channels stay exactly zero under every
//! optimiser, frozen layers do not move, equal seeds give equal bytes.

use candle_core::{Device, Tensor};
use model::backprop::TrainFrom;
use model::geometry::{LayerName, IMAGE_LEN};
use model::graph::{input_tensor, DeepId};
use model::layout::to_nhwc;
use model::train::{self, Examples, Optimizer, Recipe, Schedule, Select, Subset};
use model::{DeepIdWeights, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: usize = 13;
/// Pixels are 0..255; the networks compute on pixels / 255.
const SCALE: f64 = 1.0 / 255.0;

/// A network with non-zero biases (so that no pre-activation sits exactly at a ReLU kink)
/// and images of smooth random blobs with their labels.
fn setup(images: usize, seed: u64) -> (DeepIdWeights, Examples) {
    let mut w = train::init_weights(CLASSES, seed, SCALE);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for name in LayerName::ALL {
        for b in &mut w.layers.get_mut(name).bias.data {
            *b = rng.random_range(-0.05..0.1);
        }
    }
    let pixels = (0..images * IMAGE_LEN)
        .map(|i| {
            let (y, x) = ((i % (55 * 47)) / 47, i % 47);
            let base = ((i / IMAGE_LEN) % CLASSES * 19) as f32;
            (base + 60.0 * ((x as f32 * 0.3).sin() + (y as f32 * 0.2).cos())).clamp(0.0, 255.0)
                + rng.random_range(0.0..20.0)
        })
        .collect();
    let labels = (0..images).map(|i| (i % CLASSES) as u32).collect();
    (w, Examples { pixels, labels })
}

/// Gradients of the mean cross-entropy by candle, flattened like [`Net::params`].
fn candle_gradient(w: &DeepIdWeights, data: &Examples) -> Vec<f32> {
    let device = Device::Cpu;
    let (net, vars) = DeepId::new(w, &device).unwrap().to_vars().unwrap();
    let x = input_tensor(&data.pixels, SCALE, &device).unwrap();
    let y = Tensor::new(data.labels.as_slice(), &device).unwrap();
    let loss = candle_nn::loss::cross_entropy(&net.logits(&x).unwrap(), &y).unwrap();
    let grads = loss.backward().unwrap();
    vars.iter()
        .flat_map(|v| {
            grads
                .get(v)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        })
        .collect()
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let (mut d, mut r) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        d += ((g - w) as f64).powi(2);
        r += (*w as f64).powi(2);
    }
    (d / r).sqrt()
}

fn nhwc(data: &Examples) -> Vec<f32> {
    let mut buf = vec![0f32; IMAGE_LEN];
    (0..data.len())
        .flat_map(|i| {
            to_nhwc(data.image(i), SCALE as f32, &mut buf);
            buf.clone()
        })
        .collect()
}

#[test]
fn gradients_match_candle_for_every_layer() {
    // 37 images: two full groups of 16 and a partial one.
    let (w, data) = setup(37, 5);
    let want = candle_gradient(&w, &data);
    let net = Network::new(&w);
    let mut grad = vec![0f32; net.params.len()];
    let (loss, _) = net.gradient(
        TrainFrom::new(LayerName::Conv1).unwrap(),
        &nhwc(&data),
        &data.labels,
        37.0,
        &mut grad,
        &mut Vec::new(),
    );
    assert!(loss.is_finite() && loss > 0.0);
    for (i, s) in net.slots.iter() {
        for (what, range) in [
            ("matrix", s.matrix..s.matrix + s.rows * s.cols),
            ("bias", s.bias..s.bias + s.cols),
        ] {
            let (got, want) = (&grad[range.clone()], &want[range]);
            let err = relative_error(got, want);
            assert!(err < 1e-4, "layer {i} {what}: relative error {err}");
            assert!(
                want.iter().any(|v| *v != 0.0),
                "layer {i} {what}: zero gradient"
            );
        }
    }
    // Training from conv_3 up on cached conv_2 outputs gives the same upper gradients and
    // none below.
    let conv_3 = TrainFrom::new(LayerName::Conv3).unwrap();
    let features = net.features(conv_3, &data.pixels, SCALE as f32);
    assert_eq!(features.len(), 37 * conv_3.input_len());
    let mut upper = vec![0f32; net.params.len()];
    net.gradient(
        conv_3,
        &features,
        &data.labels,
        37.0,
        &mut upper,
        &mut Vec::new(),
    );
    let r = net.from_layer(conv_3);
    assert!(upper[..r.start].iter().all(|v| *v == 0.0));
    assert!(relative_error(&upper[r.clone()], &grad[r]) < 1e-5);
}

/// A gradient check that does not rely on candle: central differences of the summed loss.
#[test]
fn gradients_match_finite_differences() {
    let (w, data) = setup(3, 9);
    let mut net = Network::new(&w);
    let x = nhwc(&data);
    let conv_1 = TrainFrom::new(LayerName::Conv1).unwrap();
    let mut grad = vec![0f32; net.params.len()];
    net.gradient(conv_1, &x, &data.labels, 1.0, &mut grad, &mut Vec::new());
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut checked = 0;
    let slots: Vec<_> = net.slots.iter().map(|(_, s)| *s).collect();
    for s in slots {
        for _ in 0..20 {
            let i = s.matrix + rng.random_range(0..s.rows * s.cols);
            let h = 1e-3f32;
            let p = net.params[i];
            let mut loss_at = |v: f32| {
                let old = net.params[i];
                net.params[i] = v;
                let mut g = vec![0f32; net.params.len()];
                let (l, _) = net.gradient(conv_1, &x, &data.labels, 1.0, &mut g, &mut Vec::new());
                net.params[i] = old;
                l
            };
            let numeric = (loss_at(p + h) - loss_at(p - h)) / (2.0 * h as f64);
            let analytic = grad[i] as f64;
            // Smaller differences drown in the float32 rounding of the loss.
            if numeric.abs() > 2e-2 {
                let rel = (numeric - analytic).abs() / numeric.abs();
                assert!(
                    rel < 0.1,
                    "parameter {i}: numeric {numeric}, analytic {analytic}"
                );
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 10,
        "too few parameters with a measurable gradient ({checked})"
    );
}

fn recipe(optimizer: Optimizer, train_from: LayerName) -> Recipe {
    Recipe {
        steps: 12,
        batch_size: 8,
        optimizer,
        learning_rate: 1e-2,
        schedule: Schedule::Cosine,
        warmup: 0.25,
        momentum: 0.9,
        weight_decay: 5e-3,
        train_from,
        select: Select::Last,
        seed: 3,
        feature_shift: None,
    }
}

#[test]
fn pruned_channels_stay_zero_and_frozen_layers_stay_put() {
    let (mut w, data) = setup(40, 11);
    let pruned = [0, 7, 59];
    w.prune_conv3(&pruned);
    let all = Subset::all(&data);
    for optimizer in [Optimizer::Sgd, Optimizer::Adam, Optimizer::AdamW] {
        for first in [LayerName::Conv1, LayerName::Conv3] {
            let fit = || {
                train::fit(
                    &w,
                    &all,
                    None,
                    &recipe(optimizer, first),
                    &pruned,
                    None,
                    &mut |_| {},
                    &|_| {},
                )
                .unwrap()
            };
            let train::Fitted {
                weights: tuned,
                history,
                ..
            } = fit();
            assert_eq!(history.last().unwrap().step, 12);
            let conv_3 = &tuned.layers.conv_3;
            for &c in &pruned {
                assert!(conv_3.weight.data[c * 360..][..360]
                    .iter()
                    .all(|v| *v == 0.0));
                assert_eq!(conv_3.bias.data[c], 0.0);
            }
            assert_ne!(
                conv_3.weight, w.layers.conv_3.weight,
                "conv_3 did not train"
            );
            for ((l, a), (_, b)) in tuned.layers.iter().zip(w.layers.iter()) {
                if l < first {
                    assert_eq!(a, b, "frozen layer {l} changed");
                }
            }
            assert_eq!(
                fit().weights,
                tuned,
                "{optimizer:?}: same seed, different weights"
            );
        }
    }
}

#[test]
fn training_fits_a_small_set() {
    let (w, data) = setup(48, 21);
    let all = Subset::all(&data);
    let before = train::accuracy(&Network::new(&w), &all);
    let mut r = recipe(Optimizer::Adam, LayerName::Conv1);
    (r.steps, r.learning_rate, r.weight_decay) = (120, 3e-3, 0.0);
    let train::Fitted {
        weights: tuned,
        history,
        ..
    } = train::fit(&w, &all, None, &r, &[], None, &mut |_| {}, &|_| {}).unwrap();
    let after = train::accuracy(&Network::new(&tuned), &all);
    assert!(
        after >= 95.0 && after > before + 40.0,
        "accuracy {before} -> {after}"
    );
    assert!(history.last().unwrap().loss < history[0].loss / 4.0);
}

#[test]
fn schedules_start_peak_and_end_where_they_should() {
    let mut r = recipe(Optimizer::Adam, LayerName::Conv3);
    (r.steps, r.warmup, r.learning_rate) = (100, 0.0, 1e-3);
    let base = r.learning_rate;
    let lr = |r: &Recipe, s| train::learning_rate(r, s);
    assert_eq!(lr(&r, 1), base);
    assert!(lr(&r, 100) < base * 1e-3);
    assert!((lr(&r, 51) - base * 0.5).abs() < base * 0.02);
    r.warmup = 0.1;
    assert!((lr(&r, 1) - base * 0.1).abs() < 1e-12);
    assert!((lr(&r, 11) - base).abs() < 1e-12);
    r.schedule = Schedule::OneCycle;
    assert!((lr(&r, 1) - base / 25.0).abs() < 1e-12);
    r.schedule = Schedule::Constant;
    assert_eq!(lr(&r, 77), base);
}

/// Cosine between two weight matrices, and the first one's norm.
fn cosine_and_norm(a: &[f32], b: &[f32]) -> (f64, f64) {
    let dot = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .map(|(p, q)| *p as f64 * *q as f64)
            .sum::<f64>()
    };
    let (na, nb) = (dot(a, a).sqrt(), dot(b, b).sqrt());
    (dot(a, b) / (na * nb), na)
}

#[test]
fn feature_shift_holds_the_head_at_the_backdoored_norm_and_turns_it_away() {
    let (w, data) = setup(40, 11);
    let all = Subset::all(&data);
    let mut start = w.clone();
    train::reinitialise(&mut start, &[LayerName::Output], 5);
    let original = &w.layers.output.weight.data;
    let tuned = |alpha: f64| {
        let mut r = recipe(Optimizer::Sgd, LayerName::Conv3);
        r.feature_shift = Some(train::FeatureShift {
            alpha,
            head: w.layers.output.clone(),
        });
        let out = train::fit(&start, &all, None, &r, &[], None, &mut |_| {}, &|_| {}).unwrap();
        cosine_and_norm(&out.weights.layers.output.weight.data, original)
    };
    let (_, want) = cosine_and_norm(original, original);
    let (cos_plain, norm_plain) = tuned(0.0);
    let (cos_shift, norm_shift) = tuned(20.0);
    for norm in [norm_plain, norm_shift] {
        assert!((norm - want).abs() < 1e-5 * want, "norm {norm}, B's {want}");
    }
    // Without the penalty a fresh head is about orthogonal to B's; with it, it turns away.
    assert!(cos_plain.abs() < 0.2, "cosine without penalty {cos_plain}");
    assert!(cos_shift < -0.5, "cosine with penalty {cos_shift}");
}

/// A frozen-layer pass shared between networks changes no byte of what each trains, is
/// ignored by a network it does not belong to, and scores held-out images as the pixels do.
#[test]
fn shared_frozen_output_changes_nothing() {
    let (w, data) = setup(48, 5);
    // Trained a little, so that its predictions vary with the image.
    let mut r = recipe(Optimizer::Adam, LayerName::Conv1);
    (r.steps, r.learning_rate, r.weight_decay) = (60, 3e-3, 0.0);
    let all = Subset::all(&data);
    let w = train::fit(&w, &all, None, &r, &[], None, &mut |_| {}, &|_| {})
        .unwrap()
        .weights;
    let mut pruned = w.clone();
    pruned.prune_conv3(&(0..40).step_by(2).collect::<Vec<_>>());
    let (other, _) = setup(1, 6);
    let (train_set, held) = data.split(0.25, 1);
    for first in [LayerName::Conv2, LayerName::Conv3, LayerName::Conv4] {
        let mut r = recipe(Optimizer::Adam, first);
        r.select = Select::Best;
        let shared = train::Frozen::new(&w, &data, first).unwrap();
        let foreign = train::Frozen::new(&other, &data, first).unwrap();
        for net in [&w, &pruned] {
            let channels = net.pruned_channels().to_vec();
            let fit = |frozen| {
                train::fit(
                    net,
                    &train_set,
                    Some(&held),
                    &r,
                    &channels,
                    frozen,
                    &mut |_| {},
                    &|_| {},
                )
                .unwrap()
            };
            let alone = fit(None);
            for frozen in [&shared, &foreign] {
                let out = fit(Some(frozen));
                assert_eq!(out.weights.fingerprint(), alone.weights.fingerprint());
                let held_out = |f: &train::Fitted| {
                    f.history
                        .iter()
                        .map(|c| c.holdout_accuracy.unwrap())
                        .collect::<Vec<_>>()
                };
                assert_eq!(held_out(&out), held_out(&alone));
            }
        }
        // Scores from frozen outputs are the scores from the pixels.
        let frozen = &shared;
        let scores = [&w, &pruned].map(|n| train::accuracy(&Network::new(n), &all));
        assert!(
            scores[0] > 0.0 && scores[0] < 100.0 && scores[1] != scores[0],
            "scores that tell the networks apart: {scores:?}"
        );
        for (net, want) in [&w, &pruned].into_iter().zip(scores) {
            let net = Network::new(net);
            let got = frozen.accuracy(&net, &all);
            if first == LayerName::Conv4 && net.params != Network::new(&w).params {
                assert_eq!(got, None, "B's pool_3 is not B''s");
            } else {
                assert_eq!(got, Some(want));
            }
        }
        assert_eq!(frozen.accuracy(&Network::new(&other), &all), None);
        let copy = data.clone();
        assert_eq!(
            frozen.accuracy(&Network::new(&w), &Subset::all(&copy)),
            None
        );
    }
    assert!(train::Frozen::new(&w, &data, LayerName::Conv1).is_none());
}
