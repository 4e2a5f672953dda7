//! Outputs appear whole or not at all: every file is written under a temporary name in its
//! destination folder and renamed over the real name only once it is complete, so a stage that
//! fails or is killed half-way never leaves a file that `make` would take as up to date.

use crate::error::{Error, Result, WithPath};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// A file being written; dropped without [`AtomicFile::commit`], it vanishes.
pub struct AtomicFile {
    target: PathBuf,
    temp: PathBuf,
    committed: bool,
}

impl AtomicFile {
    /// Creates the destination folder if needed and reserves a temporary name beside `target`.
    pub fn new(target: impl Into<PathBuf>) -> Result<Self> {
        let target = target.into();
        if let Some(dir) = target.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let name = target
            .file_name()
            .ok_or_else(|| Error::invalid(&target, "output path has no file name"))?
            .to_string_lossy()
            .into_owned();
        remove_abandoned(&target, &name);
        // Same folder (so the rename is atomic) and same extension (some writers infer the format).
        let temp = target.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
        live().push(temp.clone());
        Ok(Self {
            target,
            temp,
            committed: false,
        })
    }

    /// The temporary path to write to (for libraries that open files themselves, e.g. HDF5).
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Opens the temporary file for buffered writing.
    pub fn create(&self) -> Result<BufWriter<File>> {
        Ok(BufWriter::new(File::create(&self.temp).at(&self.temp)?))
    }

    /// Renames the finished temporary file over the target.
    pub fn commit(mut self) -> Result<()> {
        std::fs::rename(&self.temp, &self.target).at(&self.target)?;
        self.committed = true;
        live().retain(|p| *p != self.temp);
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
            live().retain(|p| *p != self.temp);
        }
    }
}

/// The temporary files being written now, for [`remove_unfinished`].
fn live() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes every temporary file still being written: for a process stopped by a signal
/// (Ctrl-C, a timeout), which exits without running destructors.
pub fn remove_unfinished() {
    for p in live().drain(..) {
        let _ = std::fs::remove_file(p);
    }
}

/// Removes the temporary files of `target` left by processes that no longer run (killed, or
/// stopped by Ctrl-C): they would otherwise pile up, each as large as the output.
fn remove_abandoned(target: &Path, name: &str) {
    let dir = target.parent().filter(|d| !d.as_os_str().is_empty());
    let Ok(entries) = std::fs::read_dir(dir.unwrap_or(Path::new("."))) else {
        return;
    };
    for e in entries.flatten() {
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(".tmp-"))
            .and_then(|f| f.strip_suffix(name))
            .and_then(|f| f.strip_suffix('-'))
            .and_then(|pid| pid.parse::<i32>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only asks whether the process exists.
        let gone = unsafe { libc::kill(pid, 0) } == -1
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && std::fs::remove_file(e.path()).is_ok() {
            tracing::info!("removed {}, left by an interrupted run", e.path().display());
        }
    }
}

/// Writes `bytes` to `target` atomically.
pub fn write_bytes(target: &Path, bytes: &[u8]) -> Result<()> {
    let file = AtomicFile::new(target)?;
    let mut w = file.create()?;
    w.write_all(bytes).at(file.temp_path())?;
    w.flush().at(file.temp_path())?;
    drop(w);
    file.commit()
}

/// Commits several finished files in order; put the file that marks the stage as done last.
pub fn commit_all(files: impl IntoIterator<Item = AtomicFile>) -> Result<()> {
    files.into_iter().try_for_each(AtomicFile::commit)
}
