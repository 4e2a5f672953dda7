//! Which files the pipeline wrote, by content rather than by name. Every folder a command
//! writes into keeps a manifest, [`MANIFEST`], of the files committed there with the SHA-256 of
//! their content, and of the temporary files being written. A command replaces, and `clean`
//! removes, only a file whose current content the manifest records: anything else at an output
//! path is the user's, whatever its name.
//!
//! The manifest is read and rewritten under an exclusive lock on its folder, and replaced
//! whole (temporary file, then rename), so concurrent writers and a kill at any point leave it
//! consistent. A commit records the new content before renaming it into place and drops the
//! old content's hash after, so whichever of the two the file holds after a kill is known.

use crate::error::{Error, Result, WithPath};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// The manifest's name in each folder the pipeline writes into.
pub const MANIFEST: &str = ".fineprune-written.json";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Manifest {
    /// File name -> SHA-256 of each content the pipeline wrote under that name that the file
    /// may hold now (two only between a commit's record and its rename).
    files: BTreeMap<String, Vec<String>>,
    /// Temporary files being written -> the process writing them.
    pending: BTreeMap<String, u32>,
}

/// A folder's manifest, held under the folder's lock until dropped.
struct Locked {
    dir: PathBuf,
    manifest: Manifest,
    _lock: File,
}

/// The folder of `path` (`.` for a bare file name).
fn folder(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

fn name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| Error::invalid(path, "output path has no file name"))
}

impl Locked {
    /// Locks `dir` (which must exist) and reads its manifest.
    fn open(dir: &Path) -> Result<Self> {
        let lock = File::open(dir).at(dir)?;
        lock.lock().at(dir)?;
        let path = dir.join(MANIFEST);
        let manifest = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::invalid(
                    &path,
                    format!("not a fineprune manifest ({e}); it lists what fineprune wrote in this folder: remove it only with the files it lists"),
                )
            })?,
            Err(e) if e.kind() == ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            _lock: lock,
        })
    }

    /// Locks the folder of `path` if it exists; `None` if it does not (nothing is there).
    fn open_for(path: &Path) -> Result<Option<Self>> {
        match std::fs::metadata(folder(path)) {
            Ok(_) => Self::open(folder(path)).map(Some),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(folder(path), e)),
        }
    }

    /// Replaces the manifest whole; an empty one is removed.
    fn save(&self) -> Result<()> {
        let path = self.dir.join(MANIFEST);
        let m = &self.manifest;
        if m.files.is_empty() && m.pending.is_empty() {
            return match std::fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(Error::io(path, e)),
                _ => Ok(()),
            };
        }
        let temp = self.dir.join(format!("{MANIFEST}.partial"));
        let text = serde_json::to_string_pretty(m).expect("a manifest serializes") + "\n";
        std::fs::write(&temp, text).at(&temp)?;
        std::fs::rename(&temp, &path).at(&path)
    }

    /// Whether the file `name` holds content this manifest records.
    fn holds_ours(&self, name: &str) -> Result<bool> {
        let Some(hashes) = self.manifest.files.get(name) else {
            return Ok(false);
        };
        let path = self.dir.join(name);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_file() => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(Error::io(path, e)),
        }
        let hash = crate::files::sha256_file(&path)?;
        Ok(hashes.contains(&hash))
    }

    /// Refuses unless `path` (in this folder) is absent or holds content this manifest
    /// records.
    fn check_replaceable(&self, path: &Path) -> Result<()> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(path, e)),
            Ok(_) if self.holds_ours(&name(path)?)? => Ok(()),
            Ok(m) => Err(not_ours(path, &m)),
        }
    }

    /// Forgets temporary files whose process is gone, removing those still there.
    fn remove_abandoned(&mut self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let dir = self.dir.clone();
        self.manifest.pending.retain(|name, pid| {
            if running(*pid) {
                return true;
            }
            let path = dir.join(name);
            if std::fs::remove_file(&path).is_ok() {
                removed.push(path);
            }
            false
        });
        removed
    }
}

fn not_ours(path: &Path, m: &std::fs::Metadata) -> Error {
    let t = m.file_type();
    let what = if t.is_file() {
        "a file fineprune did not write (or that changed since it did)"
    } else if t.is_dir() {
        "a folder"
    } else if t.is_symlink() {
        "a symbolic link"
    } else {
        "a special file"
    };
    Error::invalid(
        path,
        format!("{what} is in the way of this output; refusing to replace it: move it away or write elsewhere"),
    )
}

/// Whether process `pid` still runs.
fn running(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only asks whether the process exists.
    let gone = unsafe { libc::kill(pid, 0) } == -1
        && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
    !gone
}

/// Refuses (naming it) a file at `path` that the pipeline did not write: the check every
/// output makes before it is written.
pub fn check_replaceable(path: &Path) -> Result<()> {
    match Locked::open_for(path)? {
        Some(m) => m.check_replaceable(path),
        None => Ok(()),
    }
}

/// The checks a command makes on its paths before it reads anything: an output that is also
/// an input, or two outputs that are one file, is a usage error (either would destroy a file
/// the command needs); then every output must be replaceable ([`check_replaceable`]). Each
/// path comes with what it is, for the message.
pub fn check_paths(inputs: &[(&str, &Path)], outputs: &[(&str, &Path)]) -> Result<()> {
    for (i, (what, out)) in outputs.iter().enumerate() {
        let clash = inputs
            .iter()
            .map(|(w, p)| (format!("an input ({w})"), *p))
            .chain(
                outputs[..i]
                    .iter()
                    .map(|(w, p)| (format!("another output ({w})"), *p)),
            )
            .find(|(_, p)| same_file(p, out));
        if let Some((other, _)) = clash {
            return Err(Error::Config {
                path: out.to_path_buf(),
                message: format!("is both an output ({what}) and {other} of this command: give the output another path"),
            });
        }
    }
    outputs
        .iter()
        .filter(|(_, out)| !is_permitted(out))
        .try_for_each(|(_, out)| check_replaceable(out))
}

/// Whether two paths name one file, existing or not (links and `..` resolved).
fn same_file(a: &Path, b: &Path) -> bool {
    crate::files::same_file(a, b) || crate::config::normal(a) == crate::config::normal(b)
}

/// Whether `path` holds content the pipeline wrote there.
pub fn is_ours(path: &Path) -> Result<bool> {
    match Locked::open_for(path)? {
        Some(m) => m.holds_ours(&name(path)?),
        None => Ok(false),
    }
}

/// Records `temp` (in an existing folder) as being written by this process, removes the
/// temporary files of processes that no longer run, and creates `temp` empty: it must not
/// exist already.
pub(crate) fn begin(temp: &Path) -> Result<()> {
    let mut m = Locked::open(folder(temp))?;
    for p in m.remove_abandoned() {
        tracing::info!("removed {}, left by an interrupted run", p.display());
    }
    let temp_name = name(temp)?;
    // Recorded already: left by an earlier process with this process's id.
    if m.manifest.pending.contains_key(&temp_name) {
        let _ = std::fs::remove_file(temp);
    }
    m.manifest.pending.insert(temp_name, std::process::id());
    m.save()?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .at(temp)?;
    Ok(())
}

/// Renames the finished `temp` over `target` (both in one folder) and records its content;
/// `replace_any` allows replacing a file the pipeline did not write (`--force`).
pub(crate) fn commit(temp: &Path, target: &Path, replace_any: bool) -> Result<()> {
    let hash = crate::files::sha256_file(temp)?;
    let mut m = Locked::open(folder(target))?;
    let target_name = name(target)?;
    if !replace_any {
        m.check_replaceable(target)?;
    }
    let hashes = m.manifest.files.entry(target_name.clone()).or_default();
    if !hashes.contains(&hash) {
        hashes.push(hash.clone());
    }
    // The temporary file stays recorded until it is renamed: a kill in between leaves it
    // for the next run to remove.
    m.save()?;
    std::fs::rename(temp, target).at(target)?;
    m.manifest.files.insert(target_name, vec![hash]);
    m.manifest.pending.remove(&name(temp)?);
    m.save()
}

/// Forgets the unfinished `temp` after removing it.
pub(crate) fn abandon(temp: &Path) {
    let _ = std::fs::remove_file(temp);
    if let Ok(mut m) = Locked::open(folder(temp)) {
        if let Ok(n) = name(temp) {
            m.manifest.pending.remove(&n);
            let _ = m.save();
        }
    }
}

/// Removes the files in `dir` whose names start with `prefix` that the pipeline wrote and
/// that are not in `keep` (a kept safetensors file keeps its Keras copy): outputs of settings
/// no longer asked for would mislead later stages.
pub fn remove_stale(dir: &Path, prefix: &str, keep: &[PathBuf]) -> Result<()> {
    let Some(mut m) = Locked::open_for(&dir.join(MANIFEST))? else {
        return Ok(());
    };
    let stale: Vec<String> = m
        .manifest
        .files
        .keys()
        .filter(|n| n.starts_with(prefix))
        .filter(|n| {
            let p = dir.join(n);
            !keep.contains(&p) && !keep.contains(&p.with_extension("safetensors"))
        })
        .cloned()
        .collect();
    for n in stale {
        if m.holds_ours(&n)? {
            let p = dir.join(&n);
            std::fs::remove_file(&p).at(&p)?;
        }
        m.manifest.files.remove(&n);
    }
    m.save()
}

/// Removes from `dir` every file the pipeline wrote there (as its manifest proves) and every
/// temporary file of a process that no longer runs, then the manifest, then `dir` if that left
/// it empty. Returns what was removed; a file the manifest names whose content changed stays.
pub fn clean(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    if let Some(mut m) = Locked::open_for(&dir.join(MANIFEST))? {
        removed.extend(m.remove_abandoned());
        let names: Vec<String> = m.manifest.files.keys().cloned().collect();
        for n in names {
            if m.holds_ours(&n)? {
                let p = dir.join(&n);
                std::fs::remove_file(&p).at(&p)?;
                removed.push(p);
            }
            m.manifest.files.remove(&n);
        }
        m.save()?;
    }
    if std::fs::remove_dir(dir).is_ok() {
        removed.push(dir.to_path_buf());
    }
    Ok(removed)
}

/// Lets this process replace `path` even if the pipeline did not write it (`--force`).
pub fn permit_replacing(path: &Path) {
    if let Ok(p) = std::path::absolute(path) {
        permits().push(p);
    }
}

/// Whether [`permit_replacing`] named `path`.
pub fn is_permitted(path: &Path) -> bool {
    std::path::absolute(path).is_ok_and(|p| permits().contains(&p))
}

fn permits() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static PERMITS: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    PERMITS.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, bytes: &[u8]) -> Result<()> {
        let temp = path.with_file_name(format!(".t-{}", name(path)?));
        begin(&temp)?;
        std::fs::write(&temp, bytes).unwrap();
        commit(&temp, path, false).inspect_err(|_| abandon(&temp))
    }

    #[test]
    fn only_what_was_written_is_replaced_or_cleaned() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join("a.parquet");
        let user = dir.path().join("b.parquet");
        write(&ours, b"one").unwrap();
        write(&ours, b"two").unwrap();
        assert_eq!(std::fs::read(&ours).unwrap(), b"two");
        std::fs::write(&user, b"user").unwrap();
        let e = write(&user, b"three").unwrap_err().to_string();
        assert!(
            e.contains("b.parquet") && e.contains("did not write"),
            "{e}"
        );
        assert_eq!(std::fs::read(&user).unwrap(), b"user");
        assert!(is_ours(&ours).unwrap() && !is_ours(&user).unwrap());
        // Changed after it was written: no longer the pipeline's.
        std::fs::write(&ours, b"edited").unwrap();
        assert!(check_replaceable(&ours).is_err());
        write(&dir.path().join("c.parquet"), b"c").unwrap();
        let removed = clean(dir.path()).unwrap();
        assert_eq!(removed, vec![dir.path().join("c.parquet")]);
        let mut left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.parquet", "b.parquet"]);
    }

    #[test]
    fn stale_outputs_go_and_kept_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        for n in ["m_2.safetensors", "m_2.h5", "m_4.safetensors", "m_4.h5"] {
            write(&p(n), n.as_bytes()).unwrap();
        }
        std::fs::write(p("m_9.h5"), b"user").unwrap();
        remove_stale(dir.path(), "m_", &[p("m_2.safetensors")]).unwrap();
        assert!(p("m_2.safetensors").exists() && p("m_2.h5").exists());
        assert!(!p("m_4.safetensors").exists() && !p("m_4.h5").exists());
        assert!(p("m_9.h5").exists());
    }

    #[test]
    fn abandoned_temporary_files_are_removed_by_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let temp = dir.path().join(".t-x");
        begin(&temp).unwrap();
        // A temporary file of a process that is gone (pid 2^31 - 1 never runs).
        let mut m = Locked::open(dir.path()).unwrap();
        m.manifest.pending.insert(".t-x".into(), i32::MAX as u32);
        m.save().unwrap();
        drop(m);
        std::fs::write(dir.path().join(".t-y"), b"user").unwrap();
        let removed = clean(dir.path()).unwrap();
        assert_eq!(removed, vec![temp]);
        assert!(dir.path().join(".t-y").exists());
    }
}
