//! Helpers for the end-to-end tests: the fixtures, the stage binaries, scratch configs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `$FINEPRUNE_FIXTURES`, else `../shared/fixtures` beside the workspace.
fn fixtures_dir() -> PathBuf {
    std::env::var_os("FINEPRUNE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures"))
}

/// The reference fixtures; a test calls [`missing_fixtures`] first.
pub fn fixtures() -> PathBuf {
    let dir = fixtures_dir();
    assert!(
        dir.join("deepid/bd_weights.h5").exists(),
        "reference fixtures not found at {} (set FINEPRUNE_FIXTURES)",
        dir.display()
    );
    dir
}

/// True, after one line on the terminal saying so, when the reference fixtures are not
/// there: a test that needs them then returns at once, so a fresh clone's `make test` runs
/// everything else. The line goes to stderr directly, past the test harness's capture.
pub fn missing_fixtures() -> bool {
    let dir = fixtures_dir();
    if dir.join("deepid/bd_weights.h5").exists() {
        return false;
    }
    let test = std::thread::current()
        .name()
        .unwrap_or("a test")
        .to_string();
    let line = format!(
        "skipped {test}: reference fixtures not found at {} (set FINEPRUNE_FIXTURES=<folder> to run it)\n",
        dir.display()
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr(), line.as_bytes());
    true
}

/// Reads a whole float dataset of an HDF5 file.
pub fn read_f32(file: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let f = hdf5::File::open(file).unwrap();
    let ds = f.dataset(name).unwrap();
    (ds.shape(), ds.read_raw::<f32>().unwrap())
}

/// Norm of the difference over norm of the reference.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut d, mut r) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        d += ((g - w) as f64).powi(2);
        r += (*w as f64).powi(2);
    }
    (d / r).sqrt()
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

/// [`run`], failing the test if the stage has not ended after `limit` (it is then killed), so
/// a stage that would block for ever fails instead of hanging the tests.
pub fn run_within(stage: &str, args: &[&str], limit: std::time::Duration) -> Output {
    let child = Command::new(bin(stage))
        .args(args)
        .env("RUST_LOG", "warn")
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("stage starts");
    let pid = child.id().to_string();
    let (send, receive) = std::sync::mpsc::channel();
    std::thread::spawn(move || send.send(child.wait_with_output()));
    match receive.recv_timeout(limit) {
        Ok(output) => output.expect("stage output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &pid]).status();
            panic!("{stage} {args:?} still running after {limit:?}");
        }
    }
}

/// Tampers with a stage's table as a user could: the result is not the pipeline's.
pub fn edit_table(path: &Path, edit: impl FnOnce(&mut formats::table::Table)) {
    let mut t = formats::table::Table::read(path).unwrap();
    edit(&mut t);
    let elsewhere = tempfile::tempdir().unwrap();
    let edited = elsewhere.path().join("edited.parquet");
    t.write(&edited).unwrap();
    std::fs::copy(&edited, path).unwrap();
}
