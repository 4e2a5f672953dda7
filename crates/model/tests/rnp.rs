//! RNP's channel masks: the gradient with respect to pool_3 and to the masks against candle's
//! automatic differentiation and finite differences; unlearning and mask learning give the
//! same bytes for the same seed.

use candle_core::{Device, Tensor, Var};
use model::geometry::{LayerName, CONV3_CHANNELS, IMAGE_LEN, POOL3_LEN, POOL_3_HW};
use model::graph::DeepId;
use model::progress::Quiet;
use model::rnp::{self, mask_gradient, Settings};
use model::train::{self, Examples, Recipe, Subset};
use model::{DeepIdWeights, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: usize = 11;

/// A random network with non-zero biases, and pool_3 activations as a ReLU leaves them
/// (about a third exactly zero) with their labels.
fn head_setup(images: usize, seed: u64) -> (DeepIdWeights, Vec<f32>, Vec<u32>) {
    let mut w = train::init_weights(CLASSES, seed, 1.0 / 255.0);
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 1);
    for name in LayerName::ALL {
        for b in &mut w.layers.get_mut(name).bias.data {
            *b = rng.random_range(-0.05..0.1);
        }
    }
    let pool_3 = (0..images * POOL3_LEN)
        .map(|_| rng.random_range(-1.0f32..2.0).max(0.0))
        .collect();
    let labels = (0..images).map(|i| (i % CLASSES) as u32).collect();
    (w, pool_3, labels)
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
fn pool_3_and_mask_gradients_match_candle() {
    // 37 images: two full groups and a partial one.
    let (w, pool_3, labels) = head_setup(37, 3);
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let masks: Vec<f32> = (0..CONV3_CHANNELS)
        .map(|_| rng.random_range(0.2..1.0))
        .collect();
    let net = Network::new(&w);
    let mut d_pool_3 = vec![0f32; pool_3.len()];
    let (loss, _) = net.pool_3_gradient(&pool_3, &labels, 37.0, &mut d_pool_3, &mut Vec::new());
    let (masked_loss, _, d_masks) =
        mask_gradient(&net, &pool_3, &labels, &masks, 37.0, &mut Vec::new());
    assert!(loss.is_finite() && masked_loss.is_finite() && loss != masked_loss);

    let device = Device::Cpu;
    let deepid = DeepId::new(&w, &device).unwrap();
    let (ph, pw) = POOL_3_HW;
    let y = Tensor::new(labels.as_slice(), &device).unwrap();
    let x = Var::from_tensor(
        &Tensor::from_slice(&pool_3, (37, ph, pw, CONV3_CHANNELS), &device).unwrap(),
    )
    .unwrap();
    let m =
        Var::from_tensor(&Tensor::from_slice(&masks, CONV3_CHANNELS, &device).unwrap()).unwrap();
    let gradient_of = |input: &Tensor, wrt: &Var| -> (f32, Vec<f32>) {
        let loss = candle_nn::loss::cross_entropy(&deepid.head(input).unwrap(), &y).unwrap();
        let grads = loss.backward().unwrap();
        let g = grads.get(wrt).unwrap().flatten_all().unwrap();
        (loss.to_scalar().unwrap(), g.to_vec1().unwrap())
    };
    let (want_loss, want) = gradient_of(x.as_tensor(), &x);
    assert!((loss / 37.0 - want_loss as f64).abs() < 1e-4 * want_loss as f64);
    let err = relative_error(&d_pool_3, &want);
    assert!(err < 1e-4, "pool_3: relative error {err}");

    let masked = x.as_tensor().broadcast_mul(m.as_tensor()).unwrap();
    let (want_loss, want) = gradient_of(&masked, &m);
    assert!((masked_loss / 37.0 - want_loss as f64).abs() < 1e-4 * want_loss as f64);
    let got: Vec<f32> = d_masks.iter().map(|&g| g as f32).collect();
    let err = relative_error(&got, &want);
    assert!(err < 1e-4, "masks: relative error {err}");
}

/// Central differences of the summed loss in each mask, without candle.
#[test]
fn mask_gradient_matches_finite_differences() {
    let (w, pool_3, labels) = head_setup(5, 7);
    let net = Network::new(&w);
    let masks = vec![0.7f32; CONV3_CHANNELS];
    let loss_at =
        |masks: &[f32]| mask_gradient(&net, &pool_3, &labels, masks, 1.0, &mut Vec::new());
    let (_, _, grad) = loss_at(&masks);
    let h = 1e-3f32;
    let mut checked = 0;
    for c in 0..CONV3_CHANNELS {
        let mut at = masks.clone();
        at[c] += h;
        let up = loss_at(&at).0;
        at[c] -= 2.0 * h;
        let down = loss_at(&at).0;
        let numeric = (up - down) / (2.0 * h as f64);
        // Smaller differences drown in the float32 rounding of the loss.
        if numeric.abs() > 2e-2 {
            let rel = (numeric - grad[c]).abs() / numeric.abs();
            assert!(
                rel < 0.05,
                "mask {c}: numeric {numeric}, analytic {}",
                grad[c]
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "too few masks with a measurable gradient ({checked})"
    );
}

/// Images of smooth random blobs, one pattern per class, and a network trained to fit them.
fn trained(images: usize, seed: u64) -> (DeepIdWeights, Examples) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let pixels = (0..images * IMAGE_LEN)
        .map(|i| {
            let (y, x) = ((i % (55 * 47)) / 47, i % 47);
            let class = ((i / IMAGE_LEN) % CLASSES) as f32;
            let wave = (x as f32 * 0.1 * (class + 1.0)).sin() + (y as f32 * 0.07 * class).cos();
            (120.0 + 60.0 * wave + rng.random_range(0.0..20.0)).clamp(0.0, 255.0)
        })
        .collect();
    let labels = (0..images).map(|i| (i % CLASSES) as u32).collect();
    let data = Examples { pixels, labels };
    let w = train::init_weights(CLASSES, seed, 1.0);
    let fitted = train::fit(
        &w,
        &Subset::all(&data),
        None,
        &Recipe::plain(150, 16, 3e-3, seed),
        &[],
        None,
        &mut |_| {},
        &|_| {},
    )
    .unwrap();
    (fitted.weights, data)
}

#[test]
fn unlearning_and_masks_are_deterministic() {
    let (w, data) = trained(44, 5);
    let accuracy = train::accuracy(&Network::new(&w), &Subset::all(&data));
    assert!(
        accuracy > 80.0,
        "the network did not learn the set: {accuracy}%"
    );
    for unlearn_from in [LayerName::Conv3, LayerName::Conv1] {
        let settings = Settings {
            unlearn_from,
            // The set is small and fitted tightly: RNP's 0.01 would need far more steps.
            unlearn_learning_rate: 0.1,
            unlearn_weight_decay: 5e-4,
            unlearn_accuracy: 20.0,
            unlearn_max_steps: 400,
            mask_learning_rate: 0.05,
            mask_epochs: 4,
            mask_l1: 1e-3,
            momentum: 0.9,
            batch_size: 16,
            seed: 9,
        };
        let run = || rnp::masks(&w, data.clone(), &settings, &Quiet).unwrap();
        let first = run();
        assert!(
            first.unlearned && first.unlearn_steps > 0 && first.unlearned_accuracy < 20.0,
            "{unlearn_from}: {first:?}"
        );
        assert!(first.masks.iter().all(|m| (0.0..=1.0).contains(m)));
        assert!(first.masks.iter().any(|m| *m < 1.0), "{first:?}");
        let again = run();
        assert_eq!(first.unlearn_steps, again.unlearn_steps);
        let bits = |o: &rnp::Outcome| o.masks.iter().map(|m| m.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&first),
            bits(&again),
            "{unlearn_from}: same seed, other masks"
        );
        assert_eq!(first.recovered_accuracy, again.recovered_accuracy);
    }
}
