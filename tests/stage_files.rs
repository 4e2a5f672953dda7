//! Stage files are read, not trusted: every way the profile, the prune sweep or a pruned
//! network can be wrong is one clear error naming the file, exit 1, and no output.

use defense::features::Features;
use fineprune_tests::{
    edit_table, files_below, missing_fixtures, run, run_ok, stderr, sweep_config,
};
use formats::table::{Column, Table};
use formats::ModelFile;
use model::DeepIdWeights;

const TINY_FINETUNE: &str = "[finetune]\nsteps = 2\nbatch_size = 8\nunpruned = false\n";

/// A named way to break a file's contents.
type Case<'a, T> = (&'a str, &'a dyn Fn(&mut T));

/// A work folder with ingest, profile and prune done on the reference fixtures.
fn pruned_work() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), TINY_FINETUNE);
    let c = config.to_str().unwrap().to_string();
    for stage in ["ingest", "profile", "prune"] {
        run_ok(stage, &["--config", &c]);
    }
    (dir, c)
}

/// Runs `stage`, which must fail with exit 1 naming `file` and saying `needle`.
fn refuses(stage: &str, c: &str, file: &str, needle: &str) {
    let o = run(stage, &["--config", c]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{stage}: {err}");
    assert!(err.contains(file) && err.contains(needle), "{stage}: {err}");
    assert_eq!(err.lines().count(), 1, "{stage}: {err}");
}

fn column<'a>(t: &'a mut Table, name: &str) -> &'a mut Column {
    &mut t.columns.iter_mut().find(|(n, _)| n == name).unwrap().1
}

#[test]
fn profile_is_checked() {
    if missing_fixtures() {
        return;
    }
    let (dir, c) = pruned_work();
    let path = dir.path().join("work/profile/activations.parquet");
    let good = std::fs::read(&path).unwrap();
    let cases: [Case<Table>; 4] = [
        ("has 10 channels", &|t| {
            for (_, col) in &mut t.columns {
                match col {
                    Column::Int(v) => v.truncate(10),
                    Column::Int64(v) => v.truncate(10),
                    Column::Float(v) => v.truncate(10),
                    Column::Text(v) => v.truncate(10),
                }
            }
        }),
        ("not a permutation", &|t| {
            if let Column::Int(v) = column(t, "rank") {
                v[3] = v[4];
            }
        }),
        ("`channel`", &|t| {
            if let Column::Int(v) = column(t, "channel") {
                v[0] = Some(999);
            }
        }),
        ("statistic", &|t| {
            t.metadata.insert("statistic".into(), "median".into());
        }),
    ];
    for (needle, edit) in cases {
        std::fs::write(&path, &good).unwrap();
        edit_table(&path, edit);
        refuses("prune", &c, "activations.parquet", needle);
    }
}

#[test]
fn validation_activations_are_checked() {
    if missing_fixtures() {
        return;
    }
    let (dir, c) = pruned_work();
    let path = dir.path().join("work/profile/valid_pool_3.safetensors");
    let fingerprint = DeepIdWeights::load(&dir.path().join("work/ingest/model.safetensors"))
        .unwrap()
        .fingerprint();
    let good = Features::load(&path, &fingerprint, 1283).unwrap();
    let cases: [Case<Features>; 4] = [
        ("not one of the model's 1283 classes", &|f| {
            f.labels[9] = 1283
        }),
        ("not negative", &|f| f.pool_3[100] = -1.0),
        ("not negative", &|f| f.pool_3[7] = f32::NAN),
        ("different profile runs", &|f| {
            f.pool_3.truncate(f.pool_3.len() - 2 * 4 * 5 * 60)
        }),
    ];
    for (needle, edit) in cases {
        let mut f = good.clone();
        edit(&mut f);
        if f.pool_3.len() < good.pool_3.len() {
            f.labels.truncate(f.labels.len() - 2);
        }
        f.save(&path, &fingerprint).unwrap();
        refuses("prune", &c, "valid_pool_3.safetensors", needle);
    }
    good.save(&path, "0123456789abcdef").unwrap();
    refuses("prune", &c, "valid_pool_3.safetensors", "re-run");
}

#[test]
fn prune_sweep_is_checked() {
    if missing_fixtures() {
        return;
    }
    let (dir, c) = pruned_work();
    let path = dir.path().join("work/prune/sweep.parquet");
    let good = std::fs::read(&path).unwrap();
    let cases: [Case<Table>; 3] = [
        ("not a permutation", &|t| {
            if let Column::Int(v) = column(t, "pruned_channel") {
                v[5] = Some(999);
            }
        }),
        ("disagrees with `valid_accuracy`", &|t| {
            if let Column::Float(v) = column(t, "valid_accuracy") {
                for a in v.iter_mut().skip(1) {
                    *a = Some(0.0);
                }
            }
        }),
        ("`thresholds`", &|t| {
            t.metadata
                .insert("thresholds".into(), "[{\"threshold\": 2}]".into());
        }),
    ];
    for (needle, edit) in cases {
        std::fs::write(&path, &good).unwrap();
        edit_table(&path, edit);
        for stage in ["finetune", "evaluate"] {
            refuses(stage, &c, "sweep.parquet", needle);
        }
    }
    assert!(!dir.path().join("work/finetune/models.json").exists());
    assert!(!dir.path().join("work/evaluate/summary.parquet").exists());
}

#[test]
fn finetune_refuses_a_pruned_network_the_sweep_did_not_make() {
    if missing_fixtures() {
        return;
    }
    let (dir, c) = pruned_work();
    let path = dir
        .path()
        .join("work/prune/bd_net_prime_4_percent_threshold.safetensors");
    let good = DeepIdWeights::load(&path).unwrap();
    let name = "bd_net_prime_4_percent_threshold.safetensors";
    let cases: [Case<DeepIdWeights>; 4] = [
        ("the pruning sweep says", &|w| {
            w.provenance.pruned.as_mut().unwrap().channels.pop();
        }),
        ("derived from another network", &|w| {
            w.provenance.pruned.as_mut().unwrap().backdoored = "0123456789abcdef".into();
        }),
        ("not zero", &|w| {
            let c = w.pruned_channels()[0];
            w.layers.conv_3.bias.data[c] = 0.5;
        }),
        ("no pruning record", &|w| {
            w.provenance.pruned = None;
        }),
    ];
    for (needle, edit) in cases {
        let mut w = good.clone();
        edit(&mut w);
        w.save(&path).unwrap();
        refuses("finetune", &c, name, needle);
    }
    // Unreadable metadata is an error, not a network with every channel free.
    good.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let key = b"\"pruned_channels\":\"[";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len() - 1;
    let mut broken = bytes.clone();
    broken[at] = b'{';
    std::fs::write(&path, broken).unwrap();
    refuses("finetune", &c, name, "pruned_channels");
}

#[test]
fn evaluate_tables_are_checked() {
    if missing_fixtures() {
        return;
    }
    let (dir, c) = pruned_work();
    run_ok("evaluate", &["--config", &c]);
    let eval = dir.path().join("work/evaluate");
    let (sweep, summary, targets) = (
        eval.join("sweep.parquet"),
        eval.join("summary.parquet"),
        eval.join("targets.parquet"),
    );
    let good: Vec<_> = [&sweep, &summary, &targets]
        .map(|f| (f, std::fs::read(f).unwrap()))
        .into();
    let sweep_cases: [Case<Table>; 4] = [
        ("permutation", &|t| {
            if let Column::Int(v) = column(t, "pruned_channel") {
                v[7] = Some(999);
            }
        }),
        ("`channels_pruned`", &|t| {
            if let Column::Int(v) = column(t, "channels_pruned") {
                v[2] = Some(3);
            }
        }),
        ("not a percentage", &|t| {
            if let Column::Float(v) = column(t, "repaired_attack_success_rate") {
                v[4] = Some(180.0);
            }
        }),
        ("null", &|t| {
            if let Column::Float(v) = column(t, "pruned_clean_accuracy") {
                v[1] = None;
            }
        }),
    ];
    let summary_cases: [Case<Table>; 4] = [
        ("not one of", &|t| {
            if let Column::Text(v) = column(t, "network") {
                v[1] = Some("pruned_twice".into());
            }
        }),
        ("threshold", &|t| {
            if let Column::Float(v) = column(t, "threshold_percent") {
                v[1] = None;
            }
        }),
        ("different evaluate runs", &|t| {
            if let Column::Float(v) = column(t, "attack_success_rate") {
                v[1] = Some(v[1].unwrap() / 2.0 + 1.0);
            }
        }),
        ("re-run evaluate", &|t| {
            if let Column::Int(v) = column(t, "channels_pruned") {
                v[1] = Some(61);
            }
        }),
    ];
    // The reference's triggered images all have one target: one row per summary row.
    let targets_cases: [Case<Table>; 5] = [
        ("averages", &|t| {
            if let Column::Float(v) = column(t, "attack_success_rate") {
                v[1] = Some(v[1].unwrap() / 2.0 + 1.0);
            }
        }),
        ("`images` is 0", &|t| {
            if let Column::Int64(v) = column(t, "images") {
                v[2] = Some(0);
            }
        }),
        ("the same triggered images", &|t| {
            if let Column::Int(v) = column(t, "target") {
                v[3] = Some(v[3].unwrap() + 1);
            }
        }),
        ("the summary's row 1", &|t| {
            if let Column::Text(v) = column(t, "network") {
                v[1] = Some("fine_tuned".into());
            }
            if let Column::Float(v) = column(t, "threshold_percent") {
                v[1] = None;
            }
        }),
        ("has 6 networks, the summary 7", &|t| {
            for (_, col) in &mut t.columns {
                match col {
                    Column::Int(v) => v.truncate(6),
                    Column::Int64(v) => v.truncate(6),
                    Column::Float(v) => v.truncate(6),
                    Column::Text(v) => v.truncate(6),
                }
            }
        }),
    ];
    for (file, cases) in [
        (&sweep, &sweep_cases[..]),
        (&summary, &summary_cases[..]),
        (&targets, &targets_cases[..]),
    ] {
        let name = file.file_name().unwrap().to_str().unwrap();
        for (needle, edit) in cases {
            for (f, bytes) in &good {
                std::fs::write(f, bytes).unwrap();
            }
            edit_table(file, edit);
            refuses("report", &c, name, needle);
        }
    }
    assert!(files_below(&dir.path().join("reports")).is_empty());
    // Untouched, the tables report: targets.csv holds the summary's attack success.
    for (f, bytes) in &good {
        std::fs::write(f, bytes).unwrap();
    }
    run_ok("report", &["--config", &c]);
    let csv = std::fs::read_to_string(dir.path().join("reports/targets.csv")).unwrap();
    let summary_csv = std::fs::read_to_string(dir.path().join("reports/summary.csv")).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines[0],
        "network,threshold_percent,target,images,attack_success_rate"
    );
    assert_eq!(lines.len(), summary_csv.lines().count());
    for (t, s) in lines.iter().zip(summary_csv.lines()).skip(1) {
        let (t, s): (Vec<_>, Vec<_>) = (t.split(',').collect(), s.split(',').collect());
        assert_eq!((t[0], t[1], t[4]), (s[0], s[1], s[5]), "{t:?} vs {s:?}");
    }
}
