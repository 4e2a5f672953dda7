//! Same inputs and settings give byte-identical outputs; fine-tuning keeps pruned channels at
//! exactly zero.

use fineprune_tests::{files_below, missing_fixtures, run_ok, sweep_config, write_config};
use std::path::Path;

fn assert_same_tree(a: &Path, b: &Path) {
    let (fa, fb) = (files_below(a), files_below(b));
    assert!(!fa.is_empty());
    assert_eq!(fa, fb);
    for f in &fa {
        let (x, y) = (
            std::fs::read(a.join(f)).unwrap(),
            std::fs::read(b.join(f)).unwrap(),
        );
        assert!(x == y, "{} differs between runs", f.display());
    }
}

#[test]
fn the_sweep_pipeline_is_deterministic() {
    if missing_fixtures() {
        return;
    }
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let config = sweep_config(
                dir.path(),
                "[finetune]\nsteps = 6\nweight_decay = 0.01\n[prune]\nthresholds = [4]\n",
            );
            for stage in [
                "ingest", "profile", "prune", "finetune", "evaluate", "report",
            ] {
                run_ok(stage, &["--config", config.to_str().unwrap()]);
            }
            dir
        })
        .collect();
    assert_same_tree(&runs[0].path().join("work"), &runs[1].path().join("work"));
    assert_same_tree(
        &runs[0].path().join("reports"),
        &runs[1].path().join("reports"),
    );

    // The fine-pruned network keeps its pruned channels at exactly zero.
    let tuned = <model::DeepIdWeights as formats::ModelFile>::load(
        &runs[0]
            .path()
            .join("work/finetune/bd_net_fineprune_4_percent_threshold.safetensors"),
    )
    .unwrap();
    let pruned = tuned.pruned_channels();
    assert_eq!(pruned.len(), 45);
    let conv3 = &tuned.layers.conv_3;
    for &c in pruned {
        assert_eq!(conv3.bias.data[c], 0.0);
        assert!(conv3.weight.data[c * 360..(c + 1) * 360]
            .iter()
            .all(|v| *v == 0.0));
    }
    // ... while the kept ones did train.
    let original = <model::DeepIdWeights as formats::ModelFile>::load(
        &runs[0]
            .path()
            .join("work/prune/bd_net_prime_4_percent_threshold.safetensors"),
    )
    .unwrap();
    assert_ne!(original.layers.conv_3.weight, conv3.weight);
    assert!(tuned
        .provenance
        .finetuned
        .as_ref()
        .unwrap()
        .settings
        .contains("\"steps\":6"));
}

const TINY_SYNTH: &str = "[synth]\nidentities = 6\ntrain_per_identity = 12\nvalid_per_identity = 3\ntest_per_identity = 3\nepochs = 1\nbatch_size = 16\n";

#[test]
fn synth_is_deterministic_and_refuses_user_files() {
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let dir = tempfile::tempdir().unwrap();
            let d = dir.path();
            let config = write_config(
                d,
                &d.join("data/valid.h5"),
                &d.join("data/test.h5"),
                &d.join("data/bd_test.h5"),
                &d.join("models/bd_net.h5"),
                TINY_SYNTH,
            );
            run_ok("synth", &["--config", config.to_str().unwrap()]);
            dir
        })
        .collect();
    for sub in ["data", "models", "work"] {
        assert_same_tree(&runs[0].path().join(sub), &runs[1].path().join(sub));
    }
    let d = runs[0].path();
    let names: Vec<_> = files_below(&d.join("data"))
        .into_iter()
        .filter(|f| f != Path::new(formats::written::MANIFEST))
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
    // The files are what a user would bring: ingest reads them.
    run_ok(
        "ingest",
        &["--config", d.join("pipeline.toml").to_str().unwrap()],
    );
    let test = formats::csaw::CsawFile::open(&d.join("data/bd_test.h5")).unwrap();
    assert_eq!(
        test.len(),
        5 * 3,
        "triggered images of the 5 non-target identities"
    );
    assert!(test.has_true_labels());
    let w = formats::keras::import(&d.join("models/bd_net.h5"), 1.0).unwrap();
    assert_eq!(w.classes(), 6);

    // A file synth did not write is never overwritten.
    std::fs::write(d.join("data/test.h5"), b"user data").unwrap();
    let o = fineprune_tests::run(
        "synth",
        &["--config", d.join("pipeline.toml").to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(fineprune_tests::stderr(&o).contains("refusing to overwrite"));
    assert_eq!(std::fs::read(d.join("data/test.h5")).unwrap(), b"user data");
}
