//! Trigger inversion: the input gradient against candle's automatic differentiation, the
//! trigger's gradient against finite differences, a planted trigger found, the anomaly index,
//! and equal bytes for equal seeds.

use candle_core::{Device, Var};
use model::cleanse::{
    self, anomaly_index, deviations, trigger_gradient, Settings, Trigger, POSITIONS,
};
use model::geometry::{LayerName, IMAGE_LEN};
use model::graph::{input_tensor, DeepId};
use model::layout::to_nhwc;
use model::train::{self, Examples};
use model::{DeepIdWeights, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: usize = 7;
const SCALE: f64 = 1.0 / 255.0;

fn setup(images: usize, seed: u64) -> (DeepIdWeights, Examples) {
    let mut w = train::init_weights(CLASSES, seed, SCALE);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for name in LayerName::ALL {
        for b in &mut w.layers.get_mut(name).bias.data {
            *b = rng.random_range(-0.05..0.1);
        }
    }
    let pixels = (0..images * IMAGE_LEN)
        .map(|_| rng.random_range(0.0f32..255.0))
        .collect();
    let labels = (0..images).map(|i| (i % CLASSES) as u32).collect();
    (w, Examples { pixels, labels })
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let (mut d, mut r) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        d += ((g - w) as f64).powi(2);
        r += (*w as f64).powi(2);
    }
    (d / r).sqrt()
}

#[test]
fn input_gradient_matches_candle() {
    // 21 images: a full group and a partial one.
    let (w, data) = setup(21, 3);
    let net = Network::new(&w);
    let mut inputs = vec![0f32; data.pixels.len()];
    for (dst, src) in inputs
        .chunks_mut(IMAGE_LEN)
        .zip(data.pixels.chunks(IMAGE_LEN))
    {
        to_nhwc(src, SCALE as f32, dst);
    }
    let mut got = vec![0f32; inputs.len()];
    let (loss, _) = net.input_gradient(&inputs, &data.labels, 21.0, &mut got, &mut Vec::new());

    let device = Device::Cpu;
    let x = Var::from_tensor(&input_tensor(&data.pixels, SCALE, &device).unwrap()).unwrap();
    let y = candle_core::Tensor::new(data.labels.as_slice(), &device).unwrap();
    let deepid = DeepId::new(&w, &device).unwrap();
    let want_loss =
        candle_nn::loss::cross_entropy(&deepid.logits(x.as_tensor()).unwrap(), &y).unwrap();
    let grads = want_loss.backward().unwrap();
    let want: Vec<f32> = grads
        .get(&x)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want_loss = want_loss.to_scalar::<f32>().unwrap() as f64;
    assert!((loss / 21.0 - want_loss).abs() < 1e-4 * want_loss);
    let err = relative_error(&got, &want);
    assert!(err < 1e-4, "input gradient: relative error {err}");
}

#[test]
fn trigger_gradient_matches_finite_differences() {
    let (w, data) = setup(5, 5);
    let net = Network::new(&w);
    let mut rng = ChaCha8Rng::seed_from_u64(6);
    // Free parameters well inside the sigmoids' range.
    let free: Vec<f32> = (0..POSITIONS + IMAGE_LEN)
        .map(|_| rng.random_range(-1.5f32..1.5))
        .collect();
    let trigger_of = |free: &[f32]| {
        let s = |v: f32| 1.0 / (1.0 + (-v).exp());
        Trigger {
            mask: free[..POSITIONS].iter().map(|&v| s(v)).collect(),
            pattern: free[POSITIONS..].iter().map(|&v| 255.0 * s(v)).collect(),
        }
    };
    for target in [2u32, 5] {
        let labels = vec![target; 5];
        let loss = |free: &[f32]| {
            let mut g = vec![0f32; free.len()];
            trigger_gradient(
                &net,
                SCALE as f32,
                &trigger_of(free),
                (&data.pixels, &labels),
                1.0,
                &mut g,
                &mut Vec::new(),
            )
            .0
        };
        let mut grad = vec![0f32; free.len()];
        trigger_gradient(
            &net,
            SCALE as f32,
            &trigger_of(&free),
            (&data.pixels, &labels),
            1.0,
            &mut grad,
            &mut Vec::new(),
        );
        // Directional derivatives over the mask's positions, over the pattern's values and
        // over both, along random amounts in the analytic gradient's signs (single parameters,
        // or random signs that cancel, move the loss by less than its float32 rounding).
        let parts = [0..POSITIONS, POSITIONS..free.len(), 0..free.len()];
        for part in parts.iter().cycle().take(9) {
            let mut d = vec![0f32; free.len()];
            for v in &mut d[part.clone()] {
                *v = rng.random_range(0.0f32..1.0);
            }
            for (v, g) in d.iter_mut().zip(&grad) {
                *v *= g.signum();
            }
            let h = 1e-2f32;
            let along = |sign: f32| -> Vec<f32> {
                free.iter().zip(&d).map(|(x, d)| x + sign * h * d).collect()
            };
            let numeric = (loss(&along(1.0)) - loss(&along(-1.0))) / (2.0 * h as f64);
            let analytic: f64 = grad.iter().zip(&d).map(|(g, d)| (g * d) as f64).sum();
            let rel = (numeric - analytic).abs() / numeric.abs();
            assert!(
                numeric.abs() > 1e-2 && rel < 0.02,
                "label {target}, {part:?}: numeric {numeric}, analytic {analytic}"
            );
        }
    }
}

#[test]
fn a_trigger_is_found_deterministically_and_the_anomaly_index_marks_the_outlier() {
    let (w, data) = setup(24, 7);
    let net = Network::new(&w);
    let s = Settings {
        steps: 30,
        batch_size: 8,
        learning_rate: 0.1,
        init_cost: 1e-3,
        cost_multiplier: 1.5,
        patience: 5,
        success: 90.0,
        seed: 1,
    };
    let runs: Vec<_> = (0..2)
        .map(|_| cleanse::invert(&net, SCALE as f32, &data, 3, &s).unwrap())
        .collect();
    assert_eq!(runs[0].trigger, runs[1].trigger);
    assert_eq!(runs[0].kept, runs[1].kept);
    assert!(runs[0].trigger.mask.iter().all(|m| (0.0..=1.0).contains(m)));
    let network = Network::new(&w);
    let before = cleanse::success(
        &network,
        &Trigger {
            mask: vec![0.0; POSITIONS],
            pattern: vec![0.0; IMAGE_LEN],
        },
        (&data.pixels, &data.labels),
        3,
    );
    let after = cleanse::success(&network, &runs[0].trigger, (&data.pixels, &data.labels), 3);
    assert!(
        after > before,
        "the trigger does not help: {before} -> {after}"
    );

    // Baseline logs 1..6: median 3.5, sample standard deviation sqrt(17.5 / 5).
    let baseline: Vec<f64> = (1..=6).map(|v| (v as f64).exp()).collect();
    let sd = (17.5f64 / 5.0).sqrt();
    let z = deviations(&[(-10f64).exp(), 3.5f64.exp(), 6f64.exp()], &baseline);
    for (got, want) in z.iter().zip([13.5 / sd, 0.0, -2.5 / sd]) {
        assert!((got - want).abs() < 1e-9, "{z:?}");
    }
    // No spread, or fewer than two baseline values: no deviation.
    assert_eq!(deviations(&[1.0], &[5.0, 5.0]), [0.0]);
    assert_eq!(deviations(&[1.0], &[5.0]), [0.0]);
    // Šidák: 3 deviations as the largest of one label is 3; of 100, p = 1 - (1 - 0.00135)^100
    // = 0.1264, the one-label deviation 1.143; as likely as not: 0.
    assert!((anomaly_index(3.0, 1) - 3.0).abs() < 1e-9);
    assert!(
        (anomaly_index(3.0, 100) - 1.1428).abs() < 1e-3,
        "{}",
        anomaly_index(3.0, 100)
    );
    assert_eq!(anomaly_index(1.0, 100), 0.0);
    assert!(anomaly_index(40.0, 1283) > 39.0 && anomaly_index(40.0, 1283).is_finite());
    let bad = Settings { steps: 0, ..s };
    assert!(cleanse::invert(&net, SCALE as f32, &data, 3, &bad).is_err());
}

#[test]
fn stimulation_finds_the_label_a_channel_is_wired_to() {
    use model::geometry::{CONV3_CHANNELS, FEATURES, POOL3_LEN};
    let (w, data) = setup(40, 9);
    let images = (data.pixels.as_slice(), data.labels.as_slice());
    let mut network = Network::new(&w);
    // Raised channels barely move the hidden units of the network as drawn.
    for layer in [LayerName::Fc1, LayerName::Fc2] {
        network
            .layer_mut(layer)
            .0
            .iter_mut()
            .for_each(|v| *v *= 1e-3);
    }
    let before = cleanse::stimulate(&network, images);
    assert_eq!(before.len(), CLASSES);
    assert!(
        before.iter().all(|s| (0.0..=100.0).contains(s)),
        "{before:?}"
    );
    // A backdoor by hand: pool_3 channel 9, at every position, drives hidden unit 0, which
    // drives label 4 alone.
    let (channel, target) = (9, 4);
    for position in 0..POOL3_LEN / CONV3_CHANNELS {
        network.layer_mut(LayerName::Fc1).0[(position * CONV3_CHANNELS + channel) * FEATURES] = 1.0;
    }
    for class in 0..CLASSES {
        network.layer_mut(LayerName::Output).0[class] = if class == target { 10.0 } else { 0.0 };
    }
    let after = cleanse::stimulate(&network, images);
    assert!(before[target] < 100.0, "{before:?}");
    assert_eq!(after[target], 100.0, "{after:?}");
}
