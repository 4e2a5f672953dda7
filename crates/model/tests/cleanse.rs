//! Trigger inversion: the input gradient against candle's automatic differentiation, the
//! trigger's gradient against finite differences, a planted trigger found, the anomaly index,
//! and equal bytes for equal seeds.

use candle_core::{Device, Var};
use model::backprop::Net;
use model::cleanse::{self, anomaly_indices, trigger_gradient, Settings, Trigger, POSITIONS};
use model::geometry::{LayerName, IMAGE_LEN};
use model::graph::{input_tensor, DeepId};
use model::layout::to_nhwc;
use model::train::{self, Examples};
use model::DeepIdWeights;
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
    let net = Net::new(&w);
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
    let net = Net::new(&w);
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
    let target = vec![2u32; 5];
    let loss = |free: &[f32]| {
        let mut g = vec![0f32; free.len()];
        trigger_gradient(
            &net,
            SCALE as f32,
            &trigger_of(free),
            (&data.pixels, &target),
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
        (&data.pixels, &target),
        1.0,
        &mut grad,
        &mut Vec::new(),
    );
    let mut checked = 0;
    for _ in 0..60 {
        let i = rng.random_range(0..free.len());
        let h = 1e-2f32;
        let (mut up, mut down) = (free.clone(), free.clone());
        up[i] += h;
        down[i] -= h;
        let numeric = (loss(&up) - loss(&down)) / (2.0 * h as f64);
        let analytic = grad[i] as f64;
        if numeric.abs() > 1e-3 {
            let rel = (numeric - analytic).abs() / numeric.abs();
            assert!(
                rel < 0.1,
                "parameter {i}: numeric {numeric}, analytic {analytic}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "too few measurable gradients ({checked})");
}

#[test]
fn a_trigger_is_found_deterministically_and_the_anomaly_index_marks_the_outlier() {
    let (w, data) = setup(24, 7);
    let net = Net::new(&w);
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
    assert_eq!(runs[0].mean_loss, runs[1].mean_loss);
    assert!(runs[0].trigger.mask.iter().all(|m| (0.0..=1.0).contains(m)));
    let network = model::Network::new(&w);
    let before = cleanse::success(
        &network,
        &Trigger {
            mask: vec![0.0; POSITIONS],
            pattern: vec![0.0; IMAGE_LEN],
        },
        &data.pixels,
        3,
    );
    let after = cleanse::success(&network, &runs[0].trigger, &data.pixels, 3);
    assert!(
        after > before,
        "the trigger does not help: {before} -> {after}"
    );

    let idx = anomaly_indices(&[100.0, 102.0, 98.0, 101.0, 99.0, 20.0]);
    assert!(
        idx[5] > 2.0 && idx[..5].iter().all(|a| a.abs() < 2.0),
        "{idx:?}"
    );
    let bad = Settings { steps: 0, ..s };
    assert!(cleanse::invert(&net, SCALE as f32, &data, 3, &bad).is_err());
}
