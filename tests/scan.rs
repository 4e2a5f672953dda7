//! The scan stage end to end on a tiny synthetic run: its files read back as written, twice
//! the same bytes, the report carries them, and bad settings are one clear error.

use fineprune_tests::{files_below, run, run_ok, stderr, write_config};
use std::path::Path;

const TINY: &str = "[synth]\nidentities = 6\ntrain_per_identity = 12\nvalid_per_identity = 4\ntest_per_identity = 3\nepochs = 1\nbatch_size = 16\n[prune]\nthresholds = [4]\n[finetune]\nsteps = 2\nbatch_size = 8\n";
/// Few enough full inversions (2 + 2 of 6 labels) that the labels are screened first.
const SCAN: &str = "[scan]\ncandidates = 2\nreference = 2\nsteps = 8\nbatch_size = 8\n";

fn scanned_run(dir: &Path) -> String {
    let d = dir;
    let config = write_config(
        d,
        &d.join("data/valid.h5"),
        &d.join("data/test.h5"),
        &d.join("data/bd_test.h5"),
        &d.join("models/bd_net.h5"),
        &format!("{TINY}{SCAN}"),
    );
    let c = config.to_str().unwrap().to_string();
    for stage in ["synth", "ingest", "profile", "prune", "finetune", "scan"] {
        run_ok(stage, &["--config", &c]);
    }
    c
}

#[test]
fn scan_files_are_deterministic_and_reach_the_report() {
    let runs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let configs: Vec<String> = runs.iter().map(|d| scanned_run(d.path())).collect();
    let scan = |d: &tempfile::TempDir| d.path().join("work/scan");
    let names = files_below(&scan(&runs[0]));
    assert_eq!(names, files_below(&scan(&runs[1])));
    for f in &names {
        assert!(
            std::fs::read(scan(&runs[0]).join(f)).unwrap()
                == std::fs::read(scan(&runs[1]).join(f)).unwrap(),
            "{} differs between runs",
            f.display()
        );
    }
    let summary = scan(&runs[0]).join("summary.parquet");
    let rows = defense::scan::read_summary(&summary).unwrap();
    // B, the fine-pruned network of the one threshold and the fine-tuned one.
    assert_eq!(
        rows.iter().map(|r| r.network.as_str()).collect::<Vec<_>>(),
        ["backdoored", "fine_tuned", "fine_pruned_4"]
    );
    for r in &rows {
        assert_eq!(r.labels_inverted, 4);
        // An estimate exactly when B is flagged.
        assert_eq!(r.estimated_attack_success.is_some(), rows[0].flagged);
        assert!(r
            .estimated_attack_success
            .is_none_or(|e| (0.0..=100.0).contains(&e)));
        assert_eq!(r.flagged, r.anomaly_index > 2.0);
        let t = defense::scan::read_trigger(&summary, &r.network).unwrap();
        assert!((r.mask_l1 - t.l1()).abs() < 1e-6 * r.mask_l1.max(1.0));
        assert!(t.mask.iter().all(|m| (0.0..=1.0).contains(m)));
    }
    let table = formats::table::Table::read(&scan(&runs[0]).join("backdoored.parquet")).unwrap();
    assert_eq!(table.rows(), 6, "one row per label");
    // The screen's shares: one per label, percentages.
    let stimulated = table.columns.iter().find(|(n, _)| n == "stimulated");
    assert!(
        matches!(stimulated, Some((_, formats::table::Column::Float(v)))
            if v.iter().all(|s| s.is_some_and(|s| (0.0..=100.0).contains(&s)))),
        "{stimulated:?}"
    );

    let c = &configs[0];
    run_ok("evaluate", &["--config", c]);
    run_ok("report", &["--config", c]);
    let reports = runs[0].path().join("reports");
    let csv = std::fs::read_to_string(reports.join("scan.csv")).unwrap();
    assert!(csv.starts_with("network,threshold_percent,top_label,anomaly_index,mask_l1,flagged,estimated_attack_success,labels_inverted,measured_attack_success"), "{csv}");
    assert_eq!(csv.lines().count(), 4);
    assert!(reports.join("scan_backdoored.png").exists());
    let summary_csv = std::fs::read_to_string(reports.join("summary.csv")).unwrap();
    assert!(summary_csv
        .lines()
        .next()
        .unwrap()
        .ends_with(",estimated_attack_success"));
}

#[test]
fn bad_scan_settings_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    for (setting, needle) in [
        ("steps = 0", "scan.steps"),
        ("candidates = 0", "scan.candidates"),
        ("reference = 1", "scan.reference"),
        ("screen_images = 0", "scan.screen_images"),
        ("init_cost = -1.0", "scan.init_cost"),
        ("cost_multiplier = 1.0", "scan.cost_multiplier"),
        ("holdout = 0.0", "scan.holdout"),
        ("learning_rate = 0.0", "scan.learning_rate"),
        ("success = 150.0", "scan.success"),
    ] {
        let config = write_config(
            d,
            &d.join("data/valid.h5"),
            &d.join("data/test.h5"),
            &d.join("data/bd_test.h5"),
            &d.join("models/bd_net.h5"),
            &format!("[scan]\n{setting}\n"),
        );
        let o = run("scan", &["--config", config.to_str().unwrap()]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{setting}: {err}");
        assert!(
            err.contains(needle) && err.contains("pipeline.toml"),
            "{err}"
        );
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    }
}
