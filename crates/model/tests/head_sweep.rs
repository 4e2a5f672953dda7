//! The incremental pruning sweep against recomputing the pruned network from scratch.

use candle_core::{Device, Tensor};
use model::geometry::POOL3_LEN;
use model::graph::DeepId;
use model::head::Head;
use model::{train, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const CLASSES: usize = 97;
const IMAGES: usize = 75; // not a multiple of the block size

/// ReLU-like pool_3 rows: channel 3 never active, the others zero half of the time.
fn pool_3(rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..IMAGES * POOL3_LEN)
        .map(|i| {
            let dormant = i % 60 == 3;
            if dormant || rng.random_bool(0.5) {
                0.0
            } else {
                rng.random_range(0.0..4.0)
            }
        })
        .collect()
}

#[test]
fn every_step_matches_the_pruned_network_recomputed() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let weights = train::init_weights(CLASSES, 3, 1.0);
    let net = DeepId::new(&weights, &Device::Cpu).unwrap();
    let network = Network::new(&weights);
    let head = Head::new(&network);
    let mut pool = pool_3(&mut rng);
    let order: Vec<usize> = (0..60).rev().step_by(7).chain([3]).collect();
    let steps = head.sweep(&pool, &order, &|_| {});
    assert_eq!(steps.len(), order.len() + 1);
    for (s, predicted) in steps.iter().enumerate() {
        if s > 0 {
            for row in pool.chunks_mut(POOL3_LEN) {
                for p in 0..20 {
                    row[p * 60 + order[s - 1]] = 0.0;
                }
            }
        }
        // The candle graph computes the pruned network the plain way.
        let x = Tensor::from_slice(&pool, (IMAGES, 5, 4, 60), &Device::Cpu).unwrap();
        let want = net
            .head(&x)
            .unwrap()
            .argmax(1)
            .unwrap()
            .to_vec1::<u32>()
            .unwrap();
        assert_eq!(predicted, &want, "step {s}");
        assert_eq!(predicted, &head.classify(&pool), "step {s}");
    }
    // Predictions do change along the way, so the comparison means something.
    assert_ne!(steps[0], steps[order.len()]);
}
