//! The scan in the report: `scan.csv` (per network: the most anomalous label, its anomaly
//! index and whether it is flagged, the estimated residual attack success beside the measured
//! one where triggered test images exist) and `scan_<network>.png` (that label's inverted
//! trigger: the mask, then the masked pattern).

use crate::Result;
use defense::results::{Kind, Summary, SummaryRow};
use defense::scan::{read_trigger, ScanRow};
use formats::atomic::AtomicFile;
use formats::table::{Column, Floats, Table};
use std::path::{Path, PathBuf};

/// Whether the evaluate summary's `row` is the network `scanned` (same kind and threshold).
fn same_network(row: &SummaryRow, scanned: &ScanRow) -> bool {
    let kind = match scanned.network.as_str() {
        "backdoored" => Kind::Backdoored,
        "fine_tuned" => Kind::FineTuned,
        _ => Kind::FinePruned,
    };
    row.network == kind && row.threshold_percent == scanned.threshold_percent
}

/// The measured attack success of a scanned network, where evaluate scored it.
fn measured(summary: &Summary, scanned: &ScanRow) -> Option<f64> {
    summary
        .rows
        .iter()
        .find(|r| same_network(r, scanned))
        .map(|r| r.scores.attack_success_rate)
}

/// `summary.csv`: the evaluate summary, and the estimated residual attack success of each row
/// the scan covers (null elsewhere, or without a scan).
pub fn summary_table(summary: &Summary, rows: &[ScanRow]) -> Table {
    summary.to_table().with(
        "estimated_attack_success",
        Column::Float(estimates(summary, rows)),
    )
}

/// Per summary row, the scan's estimated residual attack success of that network, if any.
pub fn estimates(summary: &Summary, rows: &[ScanRow]) -> Vec<Option<f64>> {
    summary
        .rows
        .iter()
        .map(|s| {
            rows.iter()
                .find(|r| same_network(s, r))
                .and_then(|r| r.estimated_attack_success)
        })
        .collect()
}

/// Writes `scan.csv` and the trigger images into `out_dir`; returns the files.
pub fn write(
    scan: &Path,
    rows: &[ScanRow],
    summary: &Summary,
    out_dir: &Path,
) -> Result<Vec<PathBuf>> {
    let csv = out_dir.join("scan.csv");
    defense::scan::summary_table(rows)
        .with(
            "measured_attack_success",
            Column::Float(rows.iter().map(|r| measured(summary, r)).collect()),
        )
        .write_csv(&csv, Floats::Fixed(2))?;
    let mut files = vec![csv];
    for r in rows {
        let png = out_dir.join(format!("scan_{}.png", r.network));
        trigger_png(&read_trigger(scan, &r.network)?, &png)?;
        files.push(png);
    }
    Ok(files)
}

/// The mask (grey) and the masked pattern side by side, each pixel 4 x 4.
fn trigger_png(t: &model::cleanse::Trigger, path: &Path) -> Result<()> {
    const ZOOM: u32 = 4;
    const GAP: u32 = 8;
    let [_, h, w] = model::geometry::INPUT_SHAPE;
    let (h, w) = (h as u32, w as u32);
    let positions = (h * w) as usize;
    let mut img =
        image::RgbImage::from_pixel(2 * w * ZOOM + GAP, h * ZOOM, image::Rgb([255, 255, 255]));
    for y in 0..h * ZOOM {
        for x in 0..w * ZOOM {
            let q = ((y / ZOOM) * w + x / ZOOM) as usize;
            let m = t.mask[q];
            let grey = (255.0 * m).round() as u8;
            img.put_pixel(x, y, image::Rgb([grey; 3]));
            let c = |ch: usize| {
                (m * t.pattern[ch * positions + q])
                    .round()
                    .clamp(0.0, 255.0) as u8
            };
            img.put_pixel(w * ZOOM + GAP + x, y, image::Rgb([c(0), c(1), c(2)]));
        }
    }
    let out = AtomicFile::new(path)?;
    img.save_with_format(out.temp_path(), image::ImageFormat::Png)
        .map_err(|e| formats::Error::invalid(path, e.to_string()))?;
    Ok(out.commit()?)
}
