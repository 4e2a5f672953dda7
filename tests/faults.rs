//! Damaged and foreign files: a Parquet file damaged anywhere in its data is one error naming
//! it, exit 1; Parquet image tables compressed as other tools write them (Snappy, gzip, zstd,
//! LZ4, none) read the same as ours.

use fineprune_tests::{missing_fixtures, run, run_ok, stderr, sweep_config};
use formats::table::Table;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, GzipLevel, ZstdLevel};
use parquet::file::properties::WriterProperties;
use std::path::Path;

/// Flips 64 bytes in the middle of a Parquet file's data, leaving its footer intact.
fn damage(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let n = bytes.len();
    let footer = u32::from_le_bytes(bytes[n - 8..n - 4].try_into().unwrap()) as usize;
    let mid = (n - 8 - footer) / 2;
    assert!(mid > 64);
    for b in &mut bytes[mid..mid + 64] {
        *b ^= 0x5a;
    }
    std::fs::write(path, bytes).unwrap();
}

/// A work folder with ingest and profile done on the reference fixtures, and its config.
fn profiled_work() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let config = sweep_config(dir.path(), "");
    let c = config.to_str().unwrap().to_string();
    for stage in ["ingest", "profile"] {
        run_ok(stage, &["--config", &c]);
    }
    (dir, c)
}

#[test]
fn damaged_parquet_is_refused() {
    if missing_fixtures() {
        return;
    }
    let (dir, config) = profiled_work();
    let c = config.as_str();
    let work = dir.path().join("work");
    for (file, stage) in [
        ("ingest/valid.parquet", "profile"),
        ("profile/activations.parquet", "prune"),
    ] {
        let path = work.join(file);
        let good = std::fs::read(&path).unwrap();
        damage(&path);
        let o = run(stage, &["--config", c]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{stage}: {err}");
        assert!(err.contains(file) && err.contains("damaged"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        std::fs::write(&path, good).unwrap();
    }
    assert!(!work.join("prune/sweep.parquet").exists());
}

/// Rewrites a Parquet file with another codec.
fn recompress(from: &Path, to: &Path, codec: Compression) {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(from).unwrap()).unwrap();
    let schema = builder.schema().clone();
    let reader = builder.build().unwrap();
    let props = WriterProperties::builder().set_compression(codec).build();
    let mut w =
        ArrowWriter::try_new(std::fs::File::create(to).unwrap(), schema, Some(props)).unwrap();
    for batch in reader {
        w.write(&batch.unwrap()).unwrap();
    }
    w.close().unwrap();
}

#[test]
fn parquet_of_every_common_codec_reads_alike() {
    if missing_fixtures() {
        return;
    }
    let (dir, config) = profiled_work();
    let c = config.as_str();
    let want = Table::read(&dir.path().join("work/profile/activations.parquet")).unwrap();
    let valid = dir.path().join("work/ingest/valid.parquet");
    for (name, codec) in [
        ("snappy", Compression::SNAPPY),
        ("gzip", Compression::GZIP(GzipLevel::default())),
        ("zstd", Compression::ZSTD(ZstdLevel::default())),
        ("lz4", Compression::LZ4_RAW),
        ("none", Compression::UNCOMPRESSED),
    ] {
        let input = dir.path().join(format!("valid_{name}.parquet"));
        recompress(&valid, &input, codec);
        let output = dir.path().join(format!("activations_{name}.parquet"));
        let features = dir.path().join(format!("pool_3_{name}.safetensors"));
        run_ok(
            "profile",
            &[
                "--config",
                c,
                "--input",
                input.to_str().unwrap(),
                "--output",
                output.to_str().unwrap(),
                "--features-output",
                features.to_str().unwrap(),
            ],
        );
        let got = Table::read(&output).unwrap();
        assert_eq!(got.columns, want.columns, "{name}");
    }
}
