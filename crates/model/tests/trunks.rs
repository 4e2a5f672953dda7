//! Several networks' trunks run together share the layers they have in common, and give each
//! network the bytes its trunk alone gives.

use model::geometry::{LayerName, IMAGE_LEN, POOL3_LEN};
use model::trunk::{Trunk, Trunks};
use model::{train, Network};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const IMAGES: usize = 5;

fn nudged(net: &Network, layer: LayerName) -> Network {
    let mut net = net.clone();
    net.layer_mut(layer).1[0] += 0.25;
    net
}

#[test]
fn shared_layers_give_each_network_its_own_bytes() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let pixels: Vec<f32> = (0..IMAGES * IMAGE_LEN)
        .map(|_| rng.random_range(0.0..255.0))
        .collect();
    let b = Network::new(&train::init_weights(11, 4, 1.0 / 255.0));
    let mut other_scale = b.clone();
    other_scale.input_scale = 1.0;
    // B; two that share conv_1 and conv_2 with B (a fine-tuned conv_3, B again), one that
    // shares conv_1 only, one that shares nothing, and one with B's weights at another scale.
    let nets = [
        b.clone(),
        nudged(&b, LayerName::Conv3),
        nudged(&b, LayerName::Conv2),
        nudged(&b, LayerName::Conv1),
        b.clone(),
        other_scale,
    ];
    let trunks = Trunks::new(nets.iter().map(Trunk::new).collect());
    let mut together = vec![f32::NAN; IMAGES * nets.len() * POOL3_LEN];
    let stats = trunks.pool_3(&pixels, &mut together, true);
    assert_eq!(stats.len(), IMAGES * nets.len());
    for (i, net) in nets.iter().enumerate() {
        let mut alone = vec![f32::NAN; IMAGES * POOL3_LEN];
        let own = Trunk::new(net).pool_3(&pixels, &mut alone, true);
        let mine: Vec<u32> = together
            .chunks(POOL3_LEN)
            .skip(i)
            .step_by(nets.len())
            .flatten()
            .map(|v| v.to_bits())
            .collect();
        assert_eq!(
            mine,
            alone.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            "network {i}"
        );
        for (m, s) in own.iter().enumerate() {
            let t = &stats[m * nets.len() + i];
            assert_eq!(s.pool_3_sum, t.pool_3_sum, "network {i}, image {m}");
            assert_eq!(s.conv_3_sum, t.conv_3_sum, "network {i}, image {m}");
            assert_eq!(s.active, t.active, "network {i}, image {m}");
        }
    }
    // The networks differ where their weights do: nudging conv_1 changes pool_3.
    let first = |i: usize| together[i * POOL3_LEN..][..POOL3_LEN].to_vec();
    assert_ne!(first(0), first(3));
    assert_eq!(first(0), first(4));
}

/// The work counted is the layers each network computes itself.
#[test]
fn shared_layers_are_counted_once() {
    use model::flops::{forward, trunk};
    let b = Network::new(&train::init_weights(11, 4, 1.0 / 255.0));
    let conv = |l| forward([l], 0);
    let (c1, c2, c3) = (
        conv(LayerName::Conv1),
        conv(LayerName::Conv2),
        conv(LayerName::Conv3),
    );
    let count =
        |nets: &[Network]| Trunks::new(nets.iter().map(Trunk::new).collect()).flops_per_image();
    assert_eq!(count(std::slice::from_ref(&b)), forward(trunk(), 0));
    let tuned = nudged(&b, LayerName::Conv3);
    assert_eq!(count(&[b.clone(), tuned.clone()]), c1 + c2 + 2.0 * c3);
    let conv_2 = nudged(&b, LayerName::Conv2);
    assert_eq!(
        count(&[b.clone(), tuned, conv_2, nudged(&b, LayerName::Conv1)]),
        c1 + c2 + c3 + c3 + (c2 + c3) + (c1 + c2 + c3)
    );
}
