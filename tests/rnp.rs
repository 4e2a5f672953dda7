//! `[profile] statistic = "rnp"` end to end on a tiny synthetic BadNet: the profile records
//! RNP's masks and reads back as written, prune follows it, a tampered one is refused naming
//! the file, two runs give the same bytes, and bad settings are configuration errors that
//! name their key.

use defense::config::Statistic;
use defense::profile::Profile;
use fineprune_tests::{edit_table, run, run_ok, stderr, write_config};
use formats::table::{Column, Table};
use std::path::Path;

const TINY: &str = "[synth]\nidentities = 6\ntrain_per_identity = 12\nvalid_per_identity = 3\ntest_per_identity = 3\nepochs = 1\nbatch_size = 16\n";
const RNP: &str = "[profile]\nstatistic = \"rnp\"\nunlearn_max_steps = 40\nmask_epochs = 3\n";

/// A configuration in `dir` over data of its own, with `extra` tables.
fn config(dir: &Path, extra: &str) -> String {
    let d = |f: &str| dir.join(f);
    let c = write_config(
        dir,
        &d("data/valid.h5"),
        &d("data/test.h5"),
        &d("data/bd_test.h5"),
        &d("models/bd_net.h5"),
        extra,
    );
    c.to_str().unwrap().to_string()
}

/// A change to a profile table.
type Edit<'a> = dyn Fn(&mut Table) + 'a;

/// Runs prune, which must fail with exit 1 naming the profile and saying `needle`.
fn prune_refuses(c: &str, needle: &str) {
    let o = run("prune", &["--config", c]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("activations.parquet") && err.contains(needle),
        "{needle:?} not in: {err}"
    );
}

#[test]
fn rnp_profile_round_trips_is_deterministic_and_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let c = config(dir.path(), &format!("{TINY}{RNP}"));
    for stage in ["synth", "ingest", "profile", "prune"] {
        run_ok(stage, &["--config", &c]);
    }
    let path = dir.path().join("work/profile/activations.parquet");
    let good = std::fs::read(&path).unwrap();
    let profile = Profile::read(&path).unwrap();
    assert_eq!(profile.statistic, Statistic::Rnp);
    let masks = profile.rnp_mask.clone().unwrap();
    assert!(masks.iter().all(|m| (0.0..=1.0).contains(m)), "{masks:?}");
    assert!(profile.order.windows(2).all(|w| masks[w[0]] <= masks[w[1]]));

    // What is read writes back to the same bytes; a second run writes them again.
    let copy = dir.path().join("copy.parquet");
    profile.write(&copy).unwrap();
    assert!(
        std::fs::read(&copy).unwrap() == good,
        "round trip changed the file"
    );
    let again = dir.path().join("again.parquet");
    let features = dir.path().join("again.safetensors");
    run_ok(
        "profile",
        &[
            "--config",
            &c,
            "--output",
            again.to_str().unwrap(),
            "--features-output",
            features.to_str().unwrap(),
        ],
    );
    assert!(
        std::fs::read(&again).unwrap() == good,
        "profile is not deterministic"
    );

    let (first, last) = (profile.order[0], profile.order[59]);
    let cases: [(&str, &Edit<'_>); 4] = [
        ("[0, 1]", &|t| set_mask(t, first, 1.5)),
        ("does not follow rnp", &|t| {
            set_mask(t, first, 1.0);
            set_mask(t, last, 0.0);
        }),
        ("needs an `rnp_mask` column", &|t| {
            t.columns.retain(|(n, _)| n != "rnp_mask")
        }),
        ("which statistic pool_3_mean does not use", &|t| {
            t.metadata.insert("statistic".into(), "pool_3_mean".into());
        }),
    ];
    for (needle, edit) in cases {
        edit_table(&path, edit);
        prune_refuses(&c, needle);
        std::fs::write(&path, &good).unwrap();
    }
}

fn set_mask(t: &mut Table, channel: usize, value: f64) {
    let (_, column) = t.columns.iter_mut().find(|(n, _)| n == "rnp_mask").unwrap();
    if let Column::Float(v) = column {
        v[channel] = Some(value);
    }
}

#[test]
fn rnp_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    for (setting, needle) in [
        ("unlearn_from = \"fc_1\"", "profile.unlearn_from"),
        (
            "unlearn_learning_rate = 0.0",
            "profile.unlearn_learning_rate",
        ),
        ("mask_learning_rate = -0.2", "profile.mask_learning_rate"),
        ("unlearn_accuracy = 0.0", "profile.unlearn_accuracy"),
        ("unlearn_accuracy = 120.0", "profile.unlearn_accuracy"),
        ("unlearn_weight_decay = nan", "profile.unlearn_weight_decay"),
        ("momentum = 1.0", "profile.momentum"),
        ("mask_l1 = -0.1", "profile.mask_l1"),
        ("mask_epochs = 0", "profile.mask_epochs"),
        ("unlearn_max_steps = 0", "profile.unlearn_max_steps"),
        ("batch_size = 0", "profile.batch_size"),
        ("statistic = \"rnpp\"", "rnp"),
        ("mask_lr = 0.2", "unknown field `mask_lr`"),
    ] {
        let c = config(
            dir.path(),
            &format!("[profile]\nstatistic = \"rnp\"\n{setting}\n")
                .replace("statistic = \"rnp\"\nstatistic", "statistic"),
        );
        let o = run("profile", &["--config", &c]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{setting}: {err}");
        assert!(
            err.contains("pipeline.toml") && err.contains(needle),
            "{setting}: {needle:?} not in {err}"
        );
    }
}
