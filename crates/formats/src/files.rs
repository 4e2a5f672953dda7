//! Inputs that are files: regular files only, folder walks that visit each file once.

use crate::error::{Error, Result, WithPath};
use std::collections::HashSet;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The metadata of `path` (links followed) if it is a regular file. Anything else is refused
/// by name before it is opened: opening a FIFO waits for ever for a writer, and a device such
/// as `/dev/zero` never ends.
pub fn regular(path: &Path) -> Result<Metadata> {
    let meta = std::fs::metadata(path).at(path)?;
    check_regular(path, &meta)?;
    Ok(meta)
}

fn check_regular(path: &Path, meta: &Metadata) -> Result<()> {
    let t = meta.file_type();
    if t.is_file() {
        return Ok(());
    }
    let kind = if t.is_dir() {
        "a folder"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "of an unknown kind"
    };
    Err(Error::invalid(path, format!("not a regular file ({kind})")))
}

/// The text of `path`, which must be a regular file.
pub fn read_text(path: &Path) -> Result<String> {
    regular(path)?;
    std::fs::read_to_string(path).at(path)
}

/// Whether two paths (links followed) are one file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => identity(&a) == identity(&b),
        _ => false,
    }
}

fn identity(meta: &Metadata) -> (u64, u64) {
    (meta.dev(), meta.ino())
}

/// The files below `dir` whose names `wanted` accepts, depth first in name order. Links are
/// followed, but each file and each folder (by device and inode) is visited once, so a link
/// back up the tree neither loops nor repeats files. A wanted name that is not a regular file
/// (a FIFO, a device, a socket, a dangling link) is an error naming it, as it would be given
/// directly.
pub fn walk(dir: &Path, wanted: &dyn Fn(&Path) -> bool) -> Result<Vec<PathBuf>> {
    let mut seen = HashSet::from([identity(&std::fs::metadata(dir).at(dir)?)]);
    let mut found = Vec::new();
    walk_into(dir, wanted, &mut seen, &mut found)?;
    Ok(found)
}

fn walk_into(
    dir: &Path,
    wanted: &dyn Fn(&Path) -> bool,
    seen: &mut HashSet<(u64, u64)>,
    found: &mut Vec<PathBuf>,
) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .at(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .at(dir)?;
    entries.sort();
    for path in entries {
        let meta = match std::fs::metadata(&path) {
            Ok(meta) => meta,
            Err(e) if wanted(&path) => return Err(Error::io(&path, e)),
            // A dangling link under another name: nothing to read.
            Err(_) => continue,
        };
        if meta.is_dir() {
            if seen.insert(identity(&meta)) {
                walk_into(&path, wanted, seen, found)?;
            }
        } else if wanted(&path) {
            check_regular(&path, &meta)?;
            if seen.insert(identity(&meta)) {
                found.push(path);
            }
        }
    }
    Ok(())
}

/// SHA-256 of a regular file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    regular(path)?;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(model::weights::hex(&sha2::Digest::finalize(h)))
}
