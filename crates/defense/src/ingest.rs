//! The ingest stage: CSAW HDF5 datasets -> Parquet image tables, streamed in batches, and
//! Keras HDF5 weights -> a safetensors model.

use crate::config::FinetuneConfig;
use crate::{Error, Result};
use formats::atomic::AtomicFile;
use formats::config::Config;
use formats::csaw::CsawFile;
use formats::images::{self, ImageWriter, PixelType, Pixels};
use formats::paths::{self, Split, Stage, WorkPaths};
use formats::ModelFile;
use model::progress::Progress;
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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

/// Converts one opened CSAW file; labels must be below `classes`. The output is returned
/// uncommitted, so a stage converting several files can publish all of them or none. Pixels are stored as UInt8 unless some pixel is not an integer in 0..255, in which
/// case the file is written again as Float32 so nothing is lost.
pub fn ingest_dataset(
    src: &CsawFile,
    output: &Path,
    classes: usize,
    on_batch: &dyn Fn(usize),
) -> Result<(DatasetSummary, AtomicFile)> {
    let start = Instant::now();
    let input = src.path();
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
            if scan.min < 0.0 || scan.max > 255.0 {
                return Err(Error::invalid(
                    input,
                    format!(
                        "pixel values in images {start}..{} reach {}..{}; images are RGB in 0..255 (the network's own scaling is [model] input_scale)",
                        start + n,
                        scan.min,
                        scan.max
                    ),
                ));
            }
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

/// What the ingest stage reads and writes.
pub struct IngestFiles {
    /// Validation, clean test and triggered test data, CSAW HDF5.
    pub datasets: [(Split, PathBuf); 3],
    /// The Keras weights of B.
    pub weights: PathBuf,
    pub input_scale: f64,
    /// The fewest validation images the configured defense can use (fine-tuning holds some
    /// out), checked before anything is written.
    pub min_valid_images: usize,
    pub output_dir: PathBuf,
}

impl IngestFiles {
    /// The files make gives the stage for the run `config` (its inputs, its work folder).
    pub fn in_work(config: &Config, work: &WorkPaths) -> Result<Self> {
        let data = &config.data;
        Ok(Self {
            datasets: [
                (Split::Valid, data.valid.clone()),
                (Split::Test, data.test.clone()),
                (Split::PoisonedTest, data.poisoned_test.clone()),
            ],
            weights: config.model.weights.clone(),
            input_scale: config.model.input_scale,
            min_valid_images: config.table::<FinetuneConfig>()?.min_valid_images(),
            output_dir: work.stage(Stage::Ingest),
        })
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub input: PathBuf,
    pub output: PathBuf,
    pub classes: usize,
    pub input_scale: f64,
    pub source_sha256: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngestSummary {
    pub datasets: Vec<DatasetSummary>,
    pub model: ModelSummary,
}

/// The ingest stage: the three datasets to `{split}.parquet` (converted in parallel, all
/// published or none), then the weights to `model.safetensors`, the stage's last output, so
/// an interrupted run never looks complete to make.
pub fn run(files: &IngestFiles, progress: &dyn Progress) -> Result<IngestSummary> {
    let tables = files
        .datasets
        .each_ref()
        .map(|(split, _)| files.output_dir.join(paths::dataset_file(*split)));
    let model_out = files.output_dir.join(paths::INGEST_MODEL);
    let [valid, test, poisoned] = &files.datasets;
    formats::written::check_paths(
        &[
            ("the validation images", &valid.1),
            ("the test images", &test.1),
            ("the triggered test images", &poisoned.1),
            ("the Keras weights", &files.weights),
        ],
        &[
            ("an image table", &tables[0]),
            ("an image table", &tables[1]),
            ("an image table", &tables[2]),
            ("the network", &model_out),
        ],
    )?;
    let weights = formats::keras::import(&files.weights, files.input_scale)?;
    let classes = weights.classes();
    let sources = files
        .datasets
        .iter()
        .map(|(split, input)| Ok((*split, CsawFile::open(input)?)))
        .collect::<Result<Vec<_>>>()?;
    for (split, src) in &sources {
        if *split == Split::Valid && src.len() < files.min_valid_images {
            return Err(Error::invalid(
                src.path(),
                format!(
                    "{} validation image(s); fine-tuning with the configured hold-out needs at \
                     least {}",
                    src.len(),
                    files.min_valid_images
                ),
            ));
        }
    }
    progress.start("ingest", 0);
    let (datasets, outputs): (Vec<_>, Vec<_>) = std::thread::scope(|scope| {
        let jobs: Vec<_> = sources
            .iter()
            .zip(&tables)
            .map(|((_, src), output)| {
                scope.spawn(move || {
                    ingest_dataset(src, output, classes, &|n| progress.advance(n as u64))
                })
            })
            .collect();
        jobs.into_iter()
            .map(|j| j.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect::<Result<Vec<_>>>()
    })?
    .into_iter()
    .unzip();
    progress.finish();
    formats::atomic::commit_all(outputs)?;
    weights.save(&model_out)?;
    Ok(IngestSummary {
        datasets,
        model: ModelSummary {
            input: files.weights.clone(),
            output: model_out,
            classes,
            input_scale: weights.provenance.input_scale,
            source_sha256: weights.provenance.source_sha256.clone(),
        },
    })
}

impl std::fmt::Display for IngestSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for d in &self.datasets {
            writeln!(f, "{}", d.line())?;
        }
        let m = &self.model;
        write!(
            f,
            "{} -> {}: DeepID, {} classes, input scale {}, sha256 {}",
            m.input.display(),
            m.output.display(),
            m.classes,
            m.input_scale,
            &m.source_sha256[..12]
        )
    }
}
