//! What every HDF5 file fineprune reads or writes goes through: the signature check before the
//! library opens a file, the compression filters this build decodes, and groups written the way
//! h5py writes them, without modification times, so equal content gives equal bytes.

use crate::error::{Error, Result, WithPath};
use hdf5::types::FixedAscii;
use std::path::Path;

/// Root attribute marking files written by the `synth` stage.
pub const GENERATOR_ATTR: &str = "generator";
pub const GENERATOR: &str = "fineprune synth";

pub fn group(parent: &hdf5::Group, name: &str) -> hdf5::Result<hdf5::Group> {
    parent
        .create_group_builder()
        .obj_track_times(false)
        .create(name)
}

pub fn ascii(s: &str) -> FixedAscii<64> {
    FixedAscii::<64>::from_ascii(s).expect("short ASCII text")
}

/// Whether `path` is an HDF5 file written by `synth`.
pub fn is_generated(path: &Path) -> bool {
    if check_signature(path).is_err() {
        return false;
    }
    let Ok(file) = hdf5::File::open(path) else {
        return false;
    };
    file.attr(GENERATOR_ATTR)
        .and_then(|a| a.read_scalar::<FixedAscii<64>>())
        .is_ok_and(|s| s.as_str() == GENERATOR)
}

/// Gives "not an HDF5 file" a clear message instead of the library's error stack; the one
/// check every HDF5 input goes through before the library opens it, so it also refuses what is
/// not a regular file.
pub fn check_signature(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    const MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
    let len = crate::files::regular(path)?.len();
    let mut f = std::fs::File::open(path).at(path)?;
    // The superblock sits at 0, 512, 1024, 2048, ... (a user block may precede it).
    let mut offset = 0u64;
    while offset + 8 <= len {
        let mut buf = [0u8; 8];
        f.seek(SeekFrom::Start(offset)).at(path)?;
        f.read_exact(&mut buf).at(path)?;
        if &buf == MAGIC {
            return Ok(());
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Err(Error::invalid(path, "not an HDF5 file (no HDF5 signature)"))
}

/// HDF5 filters by registered id: HDF5's own, those the hdf5 crate can build in, then common
/// plugins; to name a missing filter and list the available ones.
const FILTERS: [(i32, &str); 14] = [
    (1, "deflate"),
    (2, "shuffle"),
    (3, "fletcher32"),
    (4, "szip"),
    (5, "nbit"),
    (6, "scaleoffset"),
    (32000, "lzf"),
    (32001, "blosc"),
    (32013, "zfp"),
    (307, "bzip2"),
    (32004, "lz4"),
    (32008, "bitshuffle"),
    (32015, "zstd"),
    (32026, "blosc2"),
];

/// Refuses a dataset compressed with a filter this build cannot decode: reading it would fail
/// only at its first chunk, with the library's message about plugin folders.
pub fn check_filters(path: &Path, name: &str, ds: &hdf5::Dataset) -> Result<()> {
    use hdf5::filters::Filter;
    let decodes = |id: i32| Filter::get_info(id).decode_enabled;
    let Some(missing) = ds.filters().iter().map(Filter::id).find(|&id| !decodes(id)) else {
        return Ok(());
    };
    let known = FILTERS.iter().find(|(id, _)| *id == missing);
    let available: Vec<&str> = FILTERS
        .iter()
        .filter(|(id, _)| decodes(*id))
        .map(|(_, n)| *n)
        .collect();
    Err(Error::invalid(
        path,
        format!(
            "dataset `{name}` is compressed with HDF5 filter {missing}{}, which this build \
             cannot read (available: {}); rewrite it with deflate or lzf",
            known.map_or(String::new(), |(_, n)| format!(" ({n})")),
            available.join(", ")
        ),
    ))
}
