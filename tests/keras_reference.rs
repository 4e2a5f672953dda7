//! The candle port of DeepID against what Keras computes for the same weights and inputs.

use candle_core::Device;
use fineprune_tests::{fixtures, missing_fixtures, read_f32, relative_error};
use formats::keras;
use model::geometry::POOL3_LEN;
use model::graph::{input_tensor, DeepId};
use model::trunk::Trunk;
use model::Network;

fn check_against_keras(weights_file: &str) {
    let dir = fixtures().join("deepid");
    let weights = keras::import(&dir.join(weights_file), 1.0).unwrap();
    assert_eq!(weights.classes(), 1283);
    let reference = dir.join("reference.h5");
    let (shape, data) = read_f32(&reference, "data");
    assert_eq!(shape, [64, 3, 55, 47]);
    let net = DeepId::new(&weights, &Device::Cpu).unwrap();
    let x = input_tensor(&data, 1.0, &Device::Cpu).unwrap();
    let fwd = net.features(&x).unwrap();
    let logits = net.head(&fwd.pool_3).unwrap();
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (name, got) in [
        ("conv_3", flat(&fwd.conv_3)),
        ("pool_3", flat(&fwd.pool_3)),
        ("logits", flat(&logits)),
    ] {
        let (_, want) = read_f32(&reference, name);
        let err = relative_error(&got, &want);
        assert!(err < 1e-5, "{weights_file}: {name} relative error {err}");
    }
    let want_labels = hdf5::File::open(&reference)
        .unwrap()
        .dataset("label")
        .unwrap()
        .read_raw::<f64>()
        .unwrap();
    let got_labels = logits.argmax(1).unwrap().to_vec1::<u32>().unwrap();
    for (i, (g, w)) in got_labels.iter().zip(&want_labels).enumerate() {
        assert_eq!(*g as f64, *w, "{weights_file}: input {i}");
    }

    // The inference path the stages use: trunk to pool_3, then the pruning head.
    let mut pool_3 = vec![0f32; 64 * POOL3_LEN];
    let plain = Network::new(&weights);
    let stats = Trunk::new(&plain).pool_3(&data, &mut pool_3, true);
    let (_, want_pool_3) = read_f32(&reference, "pool_3");
    let err = relative_error(&pool_3, &want_pool_3);
    assert!(
        err < 1e-5,
        "{weights_file}: trunk pool_3 relative error {err}"
    );
    let (_, want_conv_3) = read_f32(&reference, "conv_3");
    for (image, s) in want_conv_3.chunks(80 * 60).zip(&stats) {
        for c in 0..60 {
            let column = image.iter().skip(c).step_by(60);
            let sum: f64 = column.clone().map(|v| *v as f64).sum();
            assert!(
                (s.conv_3_sum[c] - sum).abs() <= 1e-4 * sum.max(1.0),
                "{weights_file}: conv_3 sum"
            );
            assert_eq!(
                s.active[c],
                column.clone().any(|v| *v != 0.0),
                "{weights_file}: active"
            );
        }
    }
    let predicted = plain.predict(&data);
    for (i, (g, w)) in predicted.iter().zip(&want_labels).enumerate() {
        assert_eq!(
            *g as f64, *w,
            "{weights_file}: head prediction for input {i}"
        );
    }
}

#[test]
fn keras2_weights_only_file_matches_keras() {
    if missing_fixtures() {
        return;
    }
    check_against_keras("bd_weights.h5");
}

#[test]
fn keras3_full_model_file_matches_keras() {
    if missing_fixtures() {
        return;
    }
    check_against_keras("bd_net_keras3.h5");
}

#[test]
fn both_layouts_import_to_identical_weights() {
    if missing_fixtures() {
        return;
    }
    let dir = fixtures().join("deepid");
    let a = keras::import(&dir.join("bd_weights.h5"), 1.0).unwrap();
    let b = keras::import(&dir.join("bd_net_keras3.h5"), 1.0).unwrap();
    assert_eq!(a.layers, b.layers);
}

#[test]
fn csaw2020_networks_import() {
    if missing_fixtures() {
        return;
    }
    let dir = fixtures().join("csaw2020");
    for name in [
        "sunglasses",
        "anonymous_1",
        "anonymous_2",
        "multi_trigger_multi_target",
    ] {
        let w = keras::import(&dir.join(format!("{name}_bd_weights.h5")), 1.0 / 255.0).unwrap();
        assert_eq!(w.classes(), 1283, "{name}");
        assert_eq!(w.provenance.input_scale, 1.0 / 255.0);
    }
}
