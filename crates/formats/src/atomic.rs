//! Outputs appear whole or not at all: every file is written under a temporary name in its
//! destination folder and renamed over the real name only once it is complete, so a stage that
//! fails or is killed half-way never leaves a file that `make` would take as up to date.

use crate::error::{Error, Result, WithPath};
use crate::written;
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
    /// A file at `target` that the pipeline did not write is refused here, before any work
    /// (see [`crate::written`]), unless [`written::permit_replacing`] named it.
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
        if !written::is_permitted(&target) {
            written::check_replaceable(&target)?;
        }
        // Same folder (so the rename is atomic) and same extension (some writers infer the format).
        let temp = target.with_file_name(format!(".tmp-{}-{name}", std::process::id()));
        written::begin(&temp)?;
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
        written::commit(
            &self.temp,
            &self.target,
            written::is_permitted(&self.target),
        )?;
        self.committed = true;
        live().retain(|p| *p != self.temp);
        Ok(())
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if !self.committed {
            written::abandon(&self.temp);
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
