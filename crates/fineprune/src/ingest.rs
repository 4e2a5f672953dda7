//! CSAW HDF5 datasets -> Parquet image tables, streamed in batches.

use crate::atomic::AtomicFile;
use crate::csaw::CsawFile;
use crate::error::Result;
use crate::images::{self, ImageWriter, PixelType, Pixels};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Instant;

/// Images per read: 8 MB of float32, so memory stays flat whatever the file size.
pub const BATCH: usize = 256;

#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    pub input: String,
    pub output: String,
    pub rows: usize,
    pub classes_seen: usize,
    pub pixel_min: f32,
    pub pixel_max: f32,
    pub pixel_type: &'static str,
    pub has_true_labels: bool,
    pub bytes_in: u64,
    pub seconds: f64,
}

impl DatasetSummary {
    pub fn line(&self) -> String {
        format!(
            "{} -> {}: {} rows, {} classes seen, pixels {}..{} ({}), {:.2} s",
            self.input,
            self.output,
            self.rows,
            self.classes_seen,
            self.pixel_min,
            self.pixel_max,
            self.pixel_type,
            self.seconds
        )
    }
}

/// Converts one CSAW file; labels must be below `classes`. The output is returned
/// uncommitted, so a stage converting several files can publish all of them or none. Pixels are stored as UInt8 unless some pixel is not an integer in 0..255, in which
/// case the file is written again as Float32 so nothing is lost.
pub fn ingest_dataset(
    input: &Path,
    output: &Path,
    classes: usize,
    on_batch: &dyn Fn(usize),
) -> Result<(DatasetSummary, AtomicFile)> {
    let start = Instant::now();
    let src = CsawFile::open(input)?;
    let out = AtomicFile::new(output)?;
    let source = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut pixel = PixelType::UInt8;
    let (min, max, seen) = loop {
        let mut writer = ImageWriter::create(&out, pixel, src.has_true_labels(), &source)?;
        let (mut min, mut max) = (f32::INFINITY, f32::NEG_INFINITY);
        let mut seen = BTreeSet::new();
        let mut restart = false;
        for start in (0..src.len()).step_by(BATCH) {
            let batch = src.read(start, BATCH, classes)?;
            let n = batch.len();
            let scan = images::scan(&batch.pixels);
            min = min.min(scan.min);
            max = max.max(scan.max);
            let pixels = match (pixel, scan.bytes) {
                (PixelType::UInt8, Some(bytes)) => Pixels::UInt8(bytes),
                (PixelType::UInt8, None) => {
                    pixel = PixelType::Float32;
                    restart = true;
                    break;
                }
                (PixelType::Float32, _) => Pixels::Float32(batch.pixels),
            };
            seen.extend(batch.labels.iter().copied());
            writer.write(pixels, batch.labels, batch.true_labels)?;
            on_batch(n);
        }
        if !restart {
            writer.finish()?;
            break (min, max, seen);
        }
    };
    let summary = DatasetSummary {
        input: input.display().to_string(),
        output: output.display().to_string(),
        rows: src.len(),
        classes_seen: seen.len(),
        pixel_min: min,
        pixel_max: max,
        pixel_type: match pixel {
            PixelType::UInt8 => "uint8",
            PixelType::Float32 => "float32",
        },
        has_true_labels: src.has_true_labels(),
        bytes_in: std::fs::metadata(input).map(|m| m.len()).unwrap_or(0),
        seconds: start.elapsed().as_secs_f64(),
    };
    Ok((summary, out))
}
