//! The whole pipeline on the reference fine-pruning run: pruning order, validation accuracy
//! per step, thresholds and `performance.csv` must match what the Keras script computed.

use fineprune_tests::{fixtures, missing_fixtures, run_ok, sweep_config};
use std::collections::BTreeMap;

fn read_csv(path: &std::path::Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn pipeline_reproduces_the_reference_sweep() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), "");
    let c = config.to_str().unwrap();
    for stage in ["ingest", "profile", "prune", "evaluate", "report"] {
        run_ok(stage, &["--config", c]);
    }
    let sweep_dir = fixtures().join("deepid/sweep");
    let reports = dir.path().join("reports");

    // Pruning order and validation accuracy per step.
    let reference = read_csv(&sweep_dir.join("valid_sweep.csv"));
    let ours = read_csv(&reports.join("sweep.csv"));
    assert_eq!(ours.len(), 61);
    let means: Vec<Option<f64>> = reference.iter().map(|r| r[2].parse().ok()).collect();
    for (step, (r, o)) in reference.iter().zip(&ours).enumerate() {
        let valid: f64 = o[3].parse().unwrap();
        let want: f64 = r[3].parse().unwrap();
        assert!(
            (valid - want).abs() <= 0.5,
            "step {step}: valid accuracy {valid} vs {want}"
        );
        if step > 0 && r[1] != o[1] {
            // Only channels with equal means may come in another order.
            let ours_mean = reference
                .iter()
                .position(|x| x[1] == o[1])
                .and_then(|i| means[i]);
            assert_eq!(
                ours_mean, means[step],
                "step {step}: pruned {} but the reference pruned {}",
                o[1], r[1]
            );
        }
    }
    // Ties are broken by channel index: the 37 dormant channels come in ascending order.
    let dormant: Vec<i32> = ours[1..38].iter().map(|r| r[1].parse().unwrap()).collect();
    assert!(dormant.windows(2).all(|w| w[0] < w[1]), "{dormant:?}");

    // Thresholds reached.
    let thresholds: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(sweep_dir.join("thresholds.json")).unwrap())
            .unwrap();
    let summary = read_csv(&reports.join("summary.csv"));
    let reached: BTreeMap<String, String> = summary
        .iter()
        .filter(|r| r[0] == "pruned")
        .map(|r| (r[1].parse::<f64>().unwrap().to_string(), r[2].clone()))
        .collect();
    for (t, k) in thresholds["channels_pruned_at_threshold"]
        .as_object()
        .unwrap()
    {
        assert_eq!(reached.get(t), Some(&k.to_string()), "threshold {t}");
    }

    // G's test accuracy and ASR per step, within half a point of the reference.
    let perf = read_csv(&reports.join("performance.csv"));
    let want = read_csv(&sweep_dir.join("performance.csv"));
    assert_eq!(perf.len(), want.len());
    for (p, w) in perf.iter().zip(&want) {
        assert_eq!(p[0], w[0]);
        for col in 1..3 {
            let (a, b): (f64, f64) = (
                p[col].trim().parse().unwrap(),
                w[col].trim().parse().unwrap(),
            );
            assert!((a - b).abs() <= 0.5, "step {}: {a} vs {b}", p[0]);
        }
    }
    // And the file's format is the reference's: header, Python float repr, CRLF lines.
    let text = std::fs::read_to_string(reports.join("performance.csv")).unwrap();
    assert!(text.starts_with("Neurons Pruned,Accuracy,ASR\r\n0.0,100.0,1.3333333333333335\r\n"));
}

#[test]
fn pruned_models_equal_the_sweep_they_came_from() {
    if missing_fixtures() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), "[prune]\nthresholds = [4]\n");
    let c = config.to_str().unwrap();
    for stage in ["ingest", "profile", "prune"] {
        run_ok(stage, &["--config", c]);
    }
    let work = dir.path().join("work");
    let pruned = <model::DeepIdWeights as formats::ModelFile>::load(
        &work.join("prune/bd_net_prime_4_percent_threshold.safetensors"),
    )
    .unwrap();
    let channels = pruned.pruned_channels();
    assert_eq!(channels.len(), 45);
    let conv3 = &pruned.layers.conv_3;
    for &c in channels {
        assert_eq!(conv3.bias.data[c], 0.0);
        assert!(conv3.weight.data[c * 360..(c + 1) * 360]
            .iter()
            .all(|v| *v == 0.0));
    }
    // Scoring the saved B' image by image agrees with the sweep's validation accuracy (93%).
    let out = work.join("preds.parquet");
    run_ok(
        "predict",
        &[
            "--model",
            work.join("ingest/model.safetensors").to_str().unwrap(),
            "--pruned",
            work.join("prune/bd_net_prime_4_percent_threshold.safetensors")
                .to_str()
                .unwrap(),
            "--output",
            out.to_str().unwrap(),
            fixtures().join("deepid/sweep/valid.h5").to_str().unwrap(),
        ],
    );
    let t = formats::table::Table::read(&out).unwrap();
    let (labels, b_prime) = (t.ints("label").unwrap(), t.ints("pruned_class").unwrap());
    let hits = labels.iter().zip(&b_prime).filter(|(l, p)| l == p).count();
    assert!(
        (hits as i64 - 279).abs() <= 1,
        "{hits} of 300 (reference: 93.0%)"
    );
}
