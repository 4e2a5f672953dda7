//! Commands used the way a careless or hostile user would: outputs on top of inputs or of the
//! user's own files, `clean` among user files named like the pipeline's, settings outside their
//! ranges, training that diverges. Each must end with one line naming the file or setting, the
//! documented exit code, and every other file byte-identical.

use fineprune_tests::{files_below, run, run_ok, stderr, write_config};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

const TINY: &str = "[synth]\nidentities = 6\ntrain_per_identity = 12\nvalid_per_identity = 4\ntest_per_identity = 3\nepochs = 1\nbatch_size = 16\n[prune]\nthresholds = [2, 4]\n[finetune]\nsteps = 2\nbatch_size = 8\n";

const STAGES: [&str; 6] = [
    "ingest", "profile", "prune", "finetune", "evaluate", "report",
];

/// One finished tiny run (synthetic data), made once; each test works on its own copy.
fn finished_run() -> &'static Path {
    static RUN: OnceLock<tempfile::TempDir> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let config = tiny_config(dir.path(), "");
        let c = config.to_str().unwrap();
        run_ok("synth", &["--config", c]);
        for stage in STAGES {
            run_ok(stage, &["--config", c]);
        }
        dir
    })
    .path()
}

fn tiny_config(d: &Path, extra: &str) -> PathBuf {
    write_config(
        d,
        &d.join("data/valid.h5"),
        &d.join("data/test.h5"),
        &d.join("data/bd_test.h5"),
        &d.join("models/bd_net.h5"),
        &format!("{TINY}{extra}"),
    )
}

/// A copy of the finished run, with `extra` appended to its configuration.
fn copy_of_run(extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("cp")
        .args(["-a", "--"])
        .arg(finished_run().join("."))
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    tiny_config(dir.path(), extra);
    dir
}

/// Every file below `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    files_below(dir)
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(dir.join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

/// Asserts a failure: exit `code`, one line on stderr holding every needle, no file changed.
fn assert_refused(
    dir: &Path,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    o: &Output,
    code: i32,
    needles: &[&str],
) {
    let err = stderr(o);
    assert_eq!(o.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    let after = snapshot(dir);
    let changed: Vec<_> = after
        .iter()
        .filter(|(f, b)| before.get(*f) != Some(b))
        .map(|(f, _)| f)
        .chain(before.keys().filter(|f| !after.contains_key(*f)))
        .collect();
    assert!(changed.is_empty(), "files changed: {changed:?}");
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn an_output_on_top_of_an_input_is_a_usage_error() {
    let dir = copy_of_run("");
    let d = dir.path();
    let before = snapshot(d);
    let model = d.join("work/ingest/model.safetensors");
    let table = d.join("work/ingest/test.parquet");
    let o = run(
        "predict",
        &["--model", s(&model), "--output", s(&table), s(&table)],
    );
    assert_refused(d, &before, &o, 2, &["test.parquet", "both an output"]);
    // The same file by another path.
    let other = d.join("work/prune/../ingest/./test.parquet");
    let o = run(
        "predict",
        &["--model", s(&model), "--output", s(&other), s(&table)],
    );
    assert_refused(d, &before, &o, 2, &["test.parquet", "both an output"]);
    let config = d.join("pipeline.toml");
    let valid = d.join("work/ingest/valid.parquet");
    let o = run(
        "profile",
        &[
            "--config",
            s(&config),
            "--input",
            s(&valid),
            "--output",
            s(&valid),
        ],
    );
    assert_refused(
        d,
        &before,
        &o,
        2,
        &["valid.parquet", "the validation images"],
    );
    let out = d.join("x.parquet");
    let o = run(
        "profile",
        &[
            "--config",
            s(&config),
            "--output",
            s(&out),
            "--features-output",
            s(&out),
        ],
    );
    assert_refused(d, &before, &o, 2, &["x.parquet", "another output"]);
    let o = run(
        "report",
        &[
            "--config",
            s(&config),
            "--output-dir",
            s(&d.join("work/evaluate")),
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(
        "evaluate",
        &[
            "--config",
            s(&config),
            "--test",
            s(&d.join("work/evaluate/summary.parquet")),
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn a_user_file_at_an_output_path_is_never_replaced() {
    let dir = copy_of_run("");
    let d = dir.path();
    let config = d.join("pipeline.toml");
    let c = s(&config);
    // Each stage's last output replaced by a user's file of the same name.
    for (stage, file) in [
        ("ingest", "work/ingest/model.safetensors"),
        ("profile", "work/profile/valid_pool_3.safetensors"),
        ("prune", "work/prune/bd_net_prime_4_percent_threshold.h5"),
        ("finetune", "work/finetune/models.json"),
        ("evaluate", "work/evaluate/summary.parquet"),
        ("report", "reports/plot.png"),
    ] {
        let ours = std::fs::read(d.join(file)).unwrap();
        std::fs::write(d.join(file), b"the user's own file").unwrap();
        let before = snapshot(d);
        let o = run(stage, &["--config", c]);
        assert_refused(d, &before, &o, 1, &[file, "did not write"]);
        std::fs::write(d.join(file), ours).unwrap();
    }
    // A pipeline file edited by the user is the user's now.
    let sweep = d.join("reports/sweep.csv");
    let mut text = std::fs::read(&sweep).unwrap();
    text.extend(b"# my note\n");
    std::fs::write(&sweep, text).unwrap();
    let before = snapshot(d);
    let o = run("report", &["--config", c]);
    assert_refused(d, &before, &o, 1, &["sweep.csv", "changed since"]);
}

#[test]
fn ingest_into_a_folder_of_user_files_changes_nothing() {
    let dir = copy_of_run("");
    let d = dir.path();
    let mine = d.join("mine");
    std::fs::create_dir(&mine).unwrap();
    for f in ["valid.parquet", "model.safetensors"] {
        std::fs::copy(d.join("work/ingest").join(f), mine.join(f)).unwrap();
    }
    let before = snapshot(d);
    let o = run(
        "ingest",
        &[
            "--config",
            s(&d.join("pipeline.toml")),
            "--output-dir",
            s(&mine),
        ],
    );
    assert_refused(d, &before, &o, 1, &["mine/", "did not write"]);
}

#[test]
fn predict_replaces_a_user_file_only_with_force() {
    let dir = copy_of_run("");
    let d = dir.path();
    let model = d.join("work/ingest/model.safetensors");
    let images = d.join("data/test.h5");
    let out = d.join("user.csv");
    std::fs::write(&out, b"user,data\n").unwrap();
    let before = snapshot(d);
    let o = run(
        "predict",
        &["--model", s(&model), "--output", s(&out), s(&images)],
    );
    assert_refused(d, &before, &o, 1, &["user.csv", "--force"]);
    run_ok(
        "predict",
        &[
            "--model",
            s(&model),
            "--output",
            s(&out),
            "--force",
            s(&images),
        ],
    );
    assert!(std::fs::read_to_string(&out).unwrap().starts_with("input,"));
    // Its own output it replaces without being asked.
    run_ok(
        "predict",
        &["--model", s(&model), "--output", s(&out), s(&images)],
    );
    // A link to a user's file, or a folder, in the way.
    let link = d.join("link.csv");
    std::os::unix::fs::symlink(d.join("pipeline.toml"), &link).unwrap();
    let folder = d.join("folder.csv");
    std::fs::create_dir(&folder).unwrap();
    let before = snapshot(d);
    let o = run(
        "predict",
        &["--model", s(&model), "--output", s(&link), s(&images)],
    );
    assert_refused(
        d,
        &before,
        &o,
        1,
        &["link.csv", "a symbolic link is in the way"],
    );
    let o = run(
        "predict",
        &["--model", s(&model), "--output", s(&folder), s(&images)],
    );
    assert_refused(d, &before, &o, 1, &["folder.csv", "a folder is in the way"]);
    assert!(!stderr(&o).contains("--force"));
    // A damaged manifest is named, and nothing is written beside it.
    std::fs::write(d.join(formats::written::MANIFEST), b"not JSON").unwrap();
    let before = snapshot(d);
    let o = run(
        "predict",
        &["--model", s(&model), "--output", s(&out), s(&images)],
    );
    assert_refused(
        d,
        &before,
        &o,
        1,
        &[formats::written::MANIFEST, "not a fineprune manifest"],
    );
}

#[test]
fn clean_removes_only_what_the_pipeline_wrote_whatever_the_names() {
    // User files where stages would write, in a folder the pipeline never ran in.
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = tiny_config(d, "");
    let user = [
        "work/prune/sweep.parquet",
        "work/ingest/valid.parquet",
        "reports/summary.csv",
        "reports/plot.png",
        "work/prune/bd_net_prime_2_percent_threshold.h5",
        "work/prune/.tmp-999999-sweep.parquet",
        "work/config/data.json",
    ];
    for f in user {
        std::fs::create_dir_all(d.join(f).parent().unwrap()).unwrap();
        std::fs::write(d.join(f), f.as_bytes()).unwrap();
    }
    let before = snapshot(d);
    run_ok("pipeline", &["clean", "--config", s(&config)]);
    assert_eq!(snapshot(d), before);

    // After a whole run: the user's files stay, the pipeline's go.
    let dir = copy_of_run("");
    let d = dir.path();
    std::fs::write(d.join("work/prune/notes.txt"), b"mine").unwrap();
    std::fs::write(d.join("reports/plot.png"), b"my own plot").unwrap();
    let data = snapshot(&d.join("data"));
    run_ok(
        "pipeline",
        &["clean", "--config", s(&d.join("pipeline.toml"))],
    );
    let left: Vec<PathBuf> = files_below(d)
        .into_iter()
        .filter(|f| {
            f.starts_with("work/prune") || f.starts_with("reports") || f.starts_with("work/ingest")
        })
        .collect();
    assert_eq!(
        left,
        [
            Path::new("reports/plot.png"),
            Path::new("work/prune/notes.txt")
        ]
    );
    assert_eq!(
        std::fs::read(d.join("reports/plot.png")).unwrap(),
        b"my own plot"
    );
    assert_eq!(snapshot(&d.join("data")), data);
}

#[test]
fn a_work_folder_on_the_command_line_is_checked_like_the_configuration() {
    let dir = copy_of_run("");
    let d = dir.path();
    let before = snapshot(d);
    let o = run(
        "profile",
        &[
            "--config",
            s(&d.join("pipeline.toml")),
            "--work-dir",
            s(&d.join("data")),
        ],
    );
    assert_refused(d, &before, &o, 2, &["work.dir", "data.valid"]);
}

#[test]
fn settings_outside_their_ranges_are_usage_errors() {
    let dir = copy_of_run("");
    let d = dir.path();
    let config = d.join("pipeline.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let ft = "[finetune]\n";
    for (stage, from, to, needle) in [
        (
            "finetune",
            ft,
            "[finetune]\nholdout = 0.999\n",
            "finetune.holdout",
        ),
        (
            "finetune",
            ft,
            "[finetune]\nlearning_rate = 1e30\n",
            "finetune.learning_rate",
        ),
        (
            "finetune",
            "steps = 2",
            "steps = 9223372036854775807",
            "finetune.steps",
        ),
        (
            "finetune",
            "batch_size = 8",
            "batch_size = 100000000",
            "finetune.batch_size",
        ),
        (
            "prune",
            "thresholds = [2, 4]",
            "thresholds = [1e-300]",
            "prune.thresholds",
        ),
        (
            "prune",
            "thresholds = [2, 4]",
            "thresholds = [0.30000000000000004]",
            "prune.thresholds",
        ),
        (
            "ingest",
            "input_scale = 1.0",
            "input_scale = 1e300",
            "model.input_scale",
        ),
        (
            "ingest",
            "input_scale = 1.0",
            "input_scale = 1e-320",
            "model.input_scale",
        ),
        (
            "profile",
            ft,
            "[profile]\nmask_epochs = 100000000\n[finetune]\n",
            "profile.mask_epochs",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        std::fs::write(&config, text.replacen(from, to, 1)).unwrap();
        let before = snapshot(d);
        let o = run(stage, &["--config", s(&config)]);
        assert_refused(d, &before, &o, 2, &["pipeline.toml", needle]);
    }
    std::fs::write(&config, &text).unwrap();
    let before = snapshot(d);
    let o = run("prune", &["--config", s(&config), "--thresholds", "1e-300"]);
    assert_refused(d, &before, &o, 2, &["--thresholds", "1e-300"]);
    let model = d.join("work/ingest/model.safetensors");
    for scale in ["nan", "inf", "1e40", "0", "-1"] {
        let o = run(
            "predict",
            &[
                "--model",
                s(&model),
                &format!("--input-scale={scale}"),
                s(&d.join("data/test.h5")),
            ],
        );
        assert_refused(d, &before, &o, 2, &["--input-scale"]);
    }
}

#[test]
fn a_pruned_network_that_is_not_b_pruned_is_not_fine_tuned() {
    use formats::ModelFile;
    let dir = copy_of_run("");
    let d = dir.path();
    // B's record and zeros where the channels were, but fc_1 scaled: another network.
    let pruned = d
        .join("work/prune")
        .join(formats::paths::pruned_model_file(2.0));
    let mut w = model::DeepIdWeights::load(&pruned).unwrap();
    assert!(w.provenance.pruned.is_some());
    w.layers
        .fc_1
        .weight
        .data
        .iter_mut()
        .for_each(|v| *v *= 1.01);
    w.save(&pruned).unwrap();
    let before = snapshot(d);
    let o = run("finetune", &["--config", s(&d.join("pipeline.toml"))]);
    assert_refused(d, &before, &o, 1, &[s(&pruned), "fc_1", "re-run prune"]);
}

#[test]
fn diverging_training_fails_and_writes_no_network() {
    let dir = copy_of_run("");
    let d = dir.path();
    let config = d.join("pipeline.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            "steps = 2\n",
            "optimizer = \"sgd\"\nlearning_rate = 10.0\nweight_decay = 0.5\nsteps = 100\n",
        ),
    )
    .unwrap();
    let before = snapshot(d);
    let o = run("finetune", &["--config", s(&config)]);
    assert_refused(d, &before, &o, 1, &["diverged", "finetune.learning_rate"]);
}

#[test]
fn a_full_standard_output_is_an_error_naming_it() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = copy_of_run("");
    let d = dir.path();
    let model = d.join("work/ingest/model.safetensors");
    let config = d.join("pipeline.toml");
    for (stage, args) in [
        (
            "predict",
            vec!["--model", s(&model), s(&d.join("data/test.h5"))],
        ),
        ("report", vec!["--config", s(&config)]),
        ("report", vec!["--config", s(&config), "--json"]),
    ] {
        let o = std::process::Command::new(fineprune_tests::bin(stage))
            .args(&args)
            .env("RUST_LOG", "warn")
            .stdout(std::fs::File::create("/dev/full").unwrap())
            .output()
            .unwrap();
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{stage}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains("standard output"), "{err}");
    }
}
