//! One way to read images whatever the file: an ingested Parquet table or a CSAW HDF5 file.

use crate::csaw::{Batch, CsawFile};
use crate::error::{Error, Result};
use crate::images::ImageReader;
use std::path::{Path, PathBuf};

/// Images read per batch.
pub const READ_BATCH: usize = 128;

pub enum Source {
    Parquet(ImageReader),
    Csaw { file: CsawFile, next: usize },
}

/// A dataset being read; labels are checked against the model's `classes`.
pub struct Images {
    source: Source,
    path: PathBuf,
    classes: usize,
}

impl Images {
    /// Opens `.parquet` files as image tables and anything else as CSAW HDF5.
    pub fn open(path: &Path, classes: usize) -> Result<Self> {
        let parquet = path.extension().is_some_and(|e| e == "parquet");
        Self::open_as(path, classes, parquet, CsawFile::open)
    }

    /// Opens images to classify: a Parquet table when `parquet`, else CSAW HDF5 whose labels
    /// may be absent (batches then have none).
    pub fn open_unlabelled(path: &Path, classes: usize, parquet: bool) -> Result<Self> {
        Self::open_as(path, classes, parquet, CsawFile::open_images)
    }

    fn open_as(
        path: &Path,
        classes: usize,
        parquet: bool,
        open_csaw: fn(&Path) -> Result<CsawFile>,
    ) -> Result<Self> {
        let source = if parquet {
            Source::Parquet(ImageReader::open(path, READ_BATCH)?)
        } else {
            Source::Csaw {
                file: open_csaw(path)?,
                next: 0,
            }
        };
        Ok(Self {
            source,
            path: path.to_path_buf(),
            classes,
        })
    }

    pub fn len(&self) -> usize {
        match &self.source {
            Source::Parquet(r) => r.len(),
            Source::Csaw { file, .. } => file.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn has_true_labels(&self) -> bool {
        match &self.source {
            Source::Parquet(r) => r.has_true_labels(),
            Source::Csaw { file, .. } => file.has_true_labels(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_labels(&self, batch: &Batch) -> Result<()> {
        let labels = batch
            .labels
            .iter()
            .chain(batch.true_labels.iter().flatten());
        if let Some(bad) = labels
            .copied()
            .find(|&l| l < 0 || l as usize >= self.classes)
        {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "label {bad} is outside the model's classes 0..{}",
                    self.classes
                ),
            ));
        }
        Ok(())
    }

    /// Reads everything (pixels included): for small datasets such as training sets.
    pub fn read_all(self) -> Result<Batch> {
        let mut all = Batch::default();
        all.pixels
            .reserve_exact(self.len() * crate::csaw::IMAGE_LEN);
        let with_true = self.has_true_labels();
        for b in self {
            let b = b?;
            all.pixels.extend(b.pixels);
            all.labels.extend(b.labels);
            if with_true {
                all.true_labels
                    .get_or_insert_with(Vec::new)
                    .extend(b.true_labels.unwrap_or_default());
            }
        }
        Ok(all)
    }
}

impl Iterator for Images {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Result<Batch>> {
        let batch = match &mut self.source {
            Source::Parquet(r) => r.next()?,
            Source::Csaw { file, next } => {
                if *next >= file.len() {
                    return None;
                }
                let b = file.read(*next, READ_BATCH, self.classes);
                *next += READ_BATCH;
                b
            }
        };
        Some(batch.and_then(|b| self.check_labels(&b).map(|()| b)))
    }
}
