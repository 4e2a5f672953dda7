//! Helpers for the end-to-end tests: the fixtures, the stage binaries, scratch configs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `$FINEPRUNE_FIXTURES`, else `../shared/fixtures` beside the workspace.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("FINEPRUNE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"));
    assert!(
        dir.join("deepid/bd_weights.h5").exists(),
        "reference fixtures not found at {} (set FINEPRUNE_FIXTURES)",
        dir.display()
    );
    dir
}

/// A stage binary built beside this test (same profile).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile folder");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built (make test builds the stage binaries first)",
        path.display()
    );
    path
}

/// Runs a stage with arguments; returns its output.
pub fn run(stage: &str, args: &[&str]) -> Output {
    Command::new(bin(stage))
        .args(args)
        .env("RUST_LOG", "warn")
        // Tests write HDF5 files on other threads while spawning stages; a child inherits those
        // open descriptors and with them HDF5's file locks, so locking is off for the children.
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .output()
        .expect("stage starts")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Runs a stage and fails the test if it does not succeed.
pub fn run_ok(stage: &str, args: &[&str]) -> Output {
    let o = run(stage, args);
    assert!(
        o.status.success(),
        "{stage} {args:?} failed: {}",
        stderr(&o)
    );
    o
}

/// Writes `pipeline.toml` in `dir` with the given data and weights.
pub fn write_config(
    dir: &Path,
    valid: &Path,
    test: &Path,
    poisoned: &Path,
    weights: &Path,
    extra: &str,
) -> PathBuf {
    let path = dir.join("pipeline.toml");
    let text = format!(
        "[data]\nvalid = {:?}\ntest = {:?}\npoisoned_test = {:?}\n[model]\nweights = {:?}\ninput_scale = 1.0\n[work]\ndir = \"work\"\nreports = \"reports\"\n{extra}",
        valid, test, poisoned, weights
    );
    std::fs::write(&path, text).expect("write config");
    path
}

/// The configuration of the reference sweep fixtures, in `dir`.
pub fn sweep_config(dir: &Path, extra: &str) -> PathBuf {
    let f = fixtures().join("deepid");
    let s = f.join("sweep");
    write_config(
        dir,
        &s.join("valid.h5"),
        &s.join("test.h5"),
        &s.join("bd_test.h5"),
        &f.join("bd_weights.h5"),
        extra,
    )
}

/// Every file below `dir`, relative, sorted.
pub fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).expect("below dir").to_path_buf());
            }
        }
    }
    out.sort();
    out
}
