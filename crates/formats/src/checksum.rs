//! Parquet files that carry a checksum of their data. The Parquet writer used here does not
//! write page checksums, so every file the pipeline writes records the CRC-32 and length of
//! everything before its footer in a footer key-value entry ([`KEY`]); reading verifies it, so
//! a damaged file is an error rather than data. Files written elsewhere are verified by their
//! page checksums, where they have them.

use crate::error::{Error, Result, WithPath};
use parquet::arrow::ArrowWriter;
use parquet::file::metadata::{KeyValue, ParquetMetaData};
use std::io::{Read, Write};
use std::path::Path;

/// The footer key of the data checksum: `<crc32 hex> <bytes>`.
pub const KEY: &str = "fineprune.crc32";

/// A sink that checksums what passes through it.
pub struct Summed<W> {
    inner: W,
    crc: crc32fast::Hasher,
    len: u64,
}

impl<W> Summed<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            crc: crc32fast::Hasher::new(),
            len: 0,
        }
    }
}

impl<W: Write> Write for Summed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Writes the last row group, records the checksum of all data written so far in the
/// footer, writes the footer and flushes. The schema's metadata also becomes footer key-value
/// entries, sorted by key: Arrow keeps it only inside its serialized schema, where Parquet
/// tools (`pyarrow.parquet.read_metadata`, polars, DuckDB) do not look.
pub fn finish<W: Write + Send>(
    mut writer: ArrowWriter<Summed<W>>,
    schema: &arrow::datatypes::Schema,
    path: &Path,
) -> Result<()> {
    let entries: std::collections::BTreeMap<_, _> = schema
        .metadata()
        .iter()
        .filter(|(k, _)| *k != KEY)
        .collect();
    for (key, value) in entries {
        writer.append_key_value_metadata(KeyValue::new(key.clone(), value.clone()));
    }
    writer.flush().at(path)?;
    writer.sync().at(path)?;
    let sink = writer.inner();
    let value = format!("{:08x} {}", sink.crc.clone().finalize(), sink.len);
    writer.append_key_value_metadata(KeyValue::new(KEY.to_string(), value));
    let mut sink = writer.into_inner().at(path)?;
    sink.flush().at(path)
}

/// Checks a file against the checksum in its footer, if it has one.
pub fn verify(path: &Path, metadata: &ParquetMetaData) -> Result<()> {
    let Some(value) = metadata
        .file_metadata()
        .key_value_metadata()
        .into_iter()
        .flatten()
        .find(|kv| kv.key == KEY)
        .and_then(|kv| kv.value.as_deref())
    else {
        return Ok(());
    };
    let parsed = value.split_once(' ').and_then(|(crc, len)| {
        Some((u32::from_str_radix(crc, 16).ok()?, len.parse::<u64>().ok()?))
    });
    let Some((want, len)) = parsed else {
        return Err(Error::invalid(
            path,
            format!("damaged: unreadable checksum {value:?}"),
        ));
    };
    let mut file = std::fs::File::open(path).at(path)?.take(len);
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    loop {
        let n = file.read(&mut buf).at(path)?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
        read += n as u64;
    }
    let got = crc.finalize();
    if read != len || got != want {
        return Err(Error::invalid(
            path,
            format!("damaged: its data does not match the checksum written with it (CRC-32 {got:08x} over {read} bytes, recorded {want:08x} over {len}); re-create the file"),
        ));
    }
    Ok(())
}
