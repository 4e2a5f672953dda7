//! CSAW-HackML HDF5 datasets: `data` float32 (N, 3, 55, 47) pixels in 0..255 and `label` of
//! any numeric type, optionally `true_label` (the identity behind a triggered image). Read in
//! batches of images so memory does not grow with the file; any chunking or filter the HDF5
//! library knows (deflate, shuffle, LZF) is handled by it, and one it lacks is named on opening.

use crate::error::{Error, Result, WithPath};
use crate::h5;
use hdf5::types::TypeDescriptor;
use model::geometry::INPUT_SHAPE;
use std::path::{Path, PathBuf};

pub use model::geometry::IMAGE_LEN;

/// An open CSAW dataset file whose shapes have been checked.
pub struct CsawFile {
    path: PathBuf,
    data: hdf5::Dataset,
    /// Absent only in files opened with [`CsawFile::open_images`].
    label: Option<hdf5::Dataset>,
    true_label: Option<hdf5::Dataset>,
    len: usize,
}

/// A run of consecutive images, pixels in (C, H, W) order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Batch {
    pub pixels: Vec<f32>,
    /// One per image, or empty for a file without labels.
    pub labels: Vec<i32>,
    pub true_labels: Option<Vec<i32>>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.pixels.len() / IMAGE_LEN
    }

    pub fn is_empty(&self) -> bool {
        self.pixels.is_empty()
    }
}

impl CsawFile {
    /// Opens a labelled dataset.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with(path, true)
    }

    /// Opens images to classify: `label` may be absent.
    pub fn open_images(path: &Path) -> Result<Self> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, labelled: bool) -> Result<Self> {
        h5::check_signature(path)?;
        let file = hdf5::File::open(path).at(path)?;
        let dataset = |name: &str| {
            file.dataset(name)
                .map_err(|_| Error::invalid(path, format!("no `{name}` dataset")))
        };
        let data = dataset("data")?;
        let label = match dataset("label") {
            Err(_) if !labelled => None,
            label => Some(label?),
        };
        let shape = data.shape();
        check_image_shape(path, &shape)?;
        check_numeric(path, "data", &data, "pixels must be numbers")?;
        let len = shape[0];
        let check_labels = |name: &str, ds: &hdf5::Dataset| -> Result<()> {
            check_numeric(path, name, ds, "labels must be integer class numbers")?;
            let ls = ds.shape();
            let n = match ls.as_slice() {
                [n] | [n, 1] => *n,
                _ => {
                    return Err(Error::invalid(
                        path,
                        format!("`{name}` has shape {ls:?}, expected ({len},)"),
                    ))
                }
            };
            if n != len {
                return Err(Error::invalid(
                    path,
                    format!("`{name}` has {n} entries but `data` has {len} images"),
                ));
            }
            Ok(())
        };
        if let Some(l) = &label {
            check_labels("label", l)?;
        }
        let true_label = file.dataset("true_label").ok();
        if let Some(t) = &true_label {
            check_labels("true_label", t)?;
        }
        if len == 0 {
            return Err(Error::invalid(path, "the dataset is empty (0 images)"));
        }
        check_stored(path, "data", &data, len)?;
        h5::check_filters(path, "data", &data)?;
        for (name, ds) in [("label", &label), ("true_label", &true_label)] {
            if let Some(ds) = ds {
                check_stored(path, name, ds, len)?;
                h5::check_filters(path, name, ds)?;
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            data,
            label,
            true_label,
            len,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn has_true_labels(&self) -> bool {
        self.true_label.is_some()
    }

    /// Reads images `start..start + n`, checking that pixels are finite and labels are integers
    /// in `0..classes`.
    pub fn read(&self, start: usize, n: usize, classes: usize) -> Result<Batch> {
        let end = (start + n).min(self.len);
        let path = &self.path;
        let pixels = self
            .data
            .read_slice::<f32, _, ndarray::Ix4>(ndarray::s![start..end, .., .., ..])
            .at(path)?
            .into_raw_vec_and_offset()
            .0;
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid(
                path,
                format!(
                    "image {} has a non-finite pixel ({})",
                    start + i / IMAGE_LEN,
                    pixels[i]
                ),
            ));
        }
        let read_labels = |name: &str, ds: &hdf5::Dataset| -> Result<Vec<i32>> {
            // Labels come as (N,) or as a column (N, 1).
            let values = if ds.ndim() == 2 {
                ds.read_slice::<f64, _, ndarray::IxDyn>(ndarray::s![start..end, ..])
                    .at(path)?
                    .into_raw_vec_and_offset()
                    .0
            } else {
                ds.read_slice_1d::<f64, _>(ndarray::s![start..end])
                    .at(path)?
                    .to_vec()
            };
            values
                .iter()
                .enumerate()
                .map(|(i, &v)| label_value(path, name, start + i, v, classes))
                .collect()
        };
        let labels = match &self.label {
            Some(l) => read_labels("label", l)?,
            None => Vec::new(),
        };
        let true_labels = self
            .true_label
            .as_ref()
            .map(|t| read_labels("true_label", t))
            .transpose()?;
        Ok(Batch {
            pixels,
            labels,
            true_labels,
        })
    }
}

fn label_value(path: &Path, name: &str, index: usize, v: f64, classes: usize) -> Result<i32> {
    if v.fract() != 0.0 || !v.is_finite() {
        return Err(Error::invalid(
            path,
            format!("`{name}` of image {index} is {v}, not an integer class"),
        ));
    }
    if v < 0.0 || v >= classes as f64 {
        return Err(Error::invalid(
            path,
            format!("`{name}` of image {index} is {v}, outside the model's classes 0..{classes}"),
        ));
    }
    Ok(v as i32)
}

/// Refuses a dataset of anything but numbers (strings, compounds, ...) by name, before a read
/// fails with the library's conversion error.
fn check_numeric(path: &Path, name: &str, ds: &hdf5::Dataset, rule: &str) -> Result<()> {
    match ds.dtype().at(path)?.to_descriptor().at(path)? {
        TypeDescriptor::Float(_) | TypeDescriptor::Integer(_) | TypeDescriptor::Unsigned(_) => {
            Ok(())
        }
        other => Err(Error::invalid(
            path,
            format!("`{name}` holds {other} values; {rule}"),
        )),
    }
}

/// Refuses a dataset whose storage was never (fully) written: HDF5 would read the missing part
/// as fill values, so a tiny file claiming millions of images would otherwise be converted at
/// full size. Chunked data must have every chunk stored (compressed chunks may be any size);
/// contiguous data must have all its bytes.
fn check_stored(path: &Path, name: &str, ds: &hdf5::Dataset, len: usize) -> Result<()> {
    use hdf5::dataset::Layout;
    let shape = ds.shape();
    let dcpl = ds.dcpl().at(path)?;
    let missing = match (dcpl.layout(), dcpl.chunk()) {
        (Layout::Chunked, Some(chunk)) => {
            let needed: usize = shape
                .iter()
                .zip(&chunk)
                .map(|(&n, &c)| n.div_ceil(c.max(1)))
                .product();
            let stored = ds.num_chunks().unwrap_or(0);
            (stored < needed).then(|| format!("{stored} of its {needed} chunks"))
        }
        // Data in external raw files or other datasets (virtual) is not in this file's storage.
        (Layout::Contiguous, _) if dcpl.external().is_empty() => {
            let element = ds.dtype().at(path)?.size() as u64;
            let needed = shape.iter().product::<usize>() as u64 * element;
            let stored = ds.storage_size();
            (stored < needed).then(|| format!("{stored} of its {needed} bytes"))
        }
        _ => None,
    };
    match missing {
        Some(what) => Err(Error::invalid(
            path,
            format!(
                "`{name}` claims {len} images but stores only {what} (the file was not fully \
                 written)"
            ),
        )),
        None => Ok(()),
    }
}

fn check_image_shape(path: &Path, shape: &[usize]) -> Result<()> {
    let [c, h, w] = INPUT_SHAPE;
    match *shape {
        [_, sc, sh, sw] if [sc, sh, sw] == INPUT_SHAPE => Ok(()),
        [n, sh, sw, sc] if [sc, sh, sw] == INPUT_SHAPE => Err(Error::invalid(
            path,
            format!(
                "`data` has shape ({n}, {sh}, {sw}, {sc}): channels last (N x H x W x C); \
                 the CSAW layout is N x {c} x {h} x {w} (channels first)"
            ),
        )),
        _ => Err(Error::invalid(
            path,
            format!(
                "`data` has shape {shape:?}; expected N x {c} x {h} x {w} (images, channels, \
                 height, width)"
            ),
        )),
    }
}

/// Writes a CSAW dataset file: `data` float32 (N, 3, 55, 47), `label` float64 and, when
/// present, `true_label` float64; tagged as generated by `synth`. `compress` stores the images
/// chunked and deflated (as h5py's `compression="gzip"` would).
pub fn write_csaw(path: &Path, batch: &Batch, compress: bool) -> hdf5::Result<()> {
    let n = batch.len();
    let [c, h, w] = INPUT_SHAPE;
    let file = hdf5::File::create(path)?;
    let data = ndarray::ArrayView4::from_shape((n, c, h, w), &batch.pixels)
        .map_err(|e| hdf5::Error::from(e.to_string()))?;
    let builder = file.new_dataset_builder().with_data(&data);
    if compress {
        builder
            .chunk((n.clamp(1, 256), c, h, w))
            .deflate(1)
            .create("data")?;
    } else {
        builder.create("data")?;
    }
    let as_f64 = |v: &[i32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    file.new_dataset_builder()
        .with_data(&as_f64(&batch.labels))
        .create("label")?;
    if let Some(t) = &batch.true_labels {
        file.new_dataset_builder()
            .with_data(&as_f64(t))
            .create("true_label")?;
    }
    file.new_attr::<hdf5::types::FixedAscii<64>>()
        .create(h5::GENERATOR_ATTR)?
        .write_scalar(&h5::ascii(h5::GENERATOR))?;
    file.close()
}
