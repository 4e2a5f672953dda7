//! Image datasets as Parquet: column `image` (FixedSizeList of the pixels in C, H, W order,
//! UInt8 when every pixel is an integer in 0..255, else Float32), `label` (Int32) and, for
//! triggered data that keeps the identity behind each image, `true_label` (Int32). The image
//! shape is in the key-value metadata (`image_shape`).

use crate::checksum;
use crate::csaw::{Batch, IMAGE_LEN};
use crate::error::{Error, Result, WithPath};
use arrow::array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, Int32Array, RecordBatch, UInt8Array,
};
use arrow::datatypes::{DataType, Field, Schema};
use model::geometry::INPUT_SHAPE;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use parquet::arrow::ArrowWriter;
use parquet::basic::Encoding;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub const SHAPE_KEY: &str = "image_shape";

/// How pixels are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelType {
    UInt8,
    Float32,
}

impl PixelType {
    fn arrow(self) -> DataType {
        match self {
            PixelType::UInt8 => DataType::UInt8,
            PixelType::Float32 => DataType::Float32,
        }
    }
}

/// A batch's pixels, as stored.
pub enum Pixels {
    UInt8(Vec<u8>),
    Float32(Vec<f32>),
}

/// What one pass over a batch of pixels finds.
pub struct PixelScan {
    pub min: f32,
    pub max: f32,
    /// The pixels as bytes, if every one is an integer in 0..=255 (so UInt8 holds them
    /// exactly).
    pub bytes: Option<Vec<u8>>,
}

/// Range and byte form of pixels in one vectorised pass.
pub fn scan(pixels: &[f32]) -> PixelScan {
    pulp::Arch::new().dispatch(Scan(pixels))
}

struct Scan<'a>(&'a [f32]);

impl pulp::WithSimd for Scan<'_> {
    type Output = PixelScan;

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) -> PixelScan {
        const LANES: usize = 16;
        let pixels = self.0;
        let mut lo = [f32::INFINITY; LANES];
        let mut hi = [f32::NEG_INFINITY; LANES];
        let mut fits = true;
        let mut bytes = vec![0u8; pixels.len()];
        let mut chunks = pixels.chunks_exact(LANES);
        for (c, out) in (&mut chunks).zip(bytes.chunks_exact_mut(LANES)) {
            let mut all = true;
            for l in 0..LANES {
                let v = c[l];
                lo[l] = if v < lo[l] { v } else { lo[l] };
                hi[l] = if v > hi[l] { v } else { hi[l] };
                // The saturating cast round-trips exactly the integers in 0..=255.
                let b = v as u8;
                all &= b as f32 == v;
                out[l] = b;
            }
            fits &= all;
        }
        let tail_at = pixels.len() - chunks.remainder().len();
        for (v, out) in chunks.remainder().iter().zip(&mut bytes[tail_at..]) {
            lo[0] = lo[0].min(*v);
            hi[0] = hi[0].max(*v);
            *out = *v as u8;
            fits &= *out as f32 == *v;
        }
        PixelScan {
            min: lo.iter().copied().fold(f32::INFINITY, f32::min),
            max: hi.iter().copied().fold(f32::NEG_INFINITY, f32::max),
            bytes: fits.then_some(bytes),
        }
    }
}

fn schema(pixel: PixelType, true_labels: bool, source: &str) -> Arc<Schema> {
    let item = Arc::new(Field::new("item", pixel.arrow(), false));
    let mut fields = vec![
        Field::new(
            "image",
            DataType::FixedSizeList(item, IMAGE_LEN as i32),
            false,
        ),
        Field::new("label", DataType::Int32, false),
    ];
    if true_labels {
        fields.push(Field::new("true_label", DataType::Int32, false));
    }
    let meta = HashMap::from([
        (
            SHAPE_KEY.to_string(),
            serde_json::to_string(&INPUT_SHAPE).expect("shape"),
        ),
        ("image_layout".to_string(), "CHW".to_string()),
        ("source".to_string(), source.to_string()),
    ]);
    Arc::new(Schema::new_with_metadata(fields, meta))
}

/// Streams batches into a Parquet file at a temporary path.
pub struct ImageWriter {
    writer: ArrowWriter<checksum::Summed<std::io::BufWriter<File>>>,
    schema: Arc<Schema>,
    pixel: PixelType,
    path: PathBuf,
}

impl ImageWriter {
    pub fn create(
        out: &crate::atomic::AtomicFile,
        pixel: PixelType,
        true_labels: bool,
        source: &str,
    ) -> Result<Self> {
        let schema = schema(pixel, true_labels, source);
        let pixels = ColumnPath::from(vec!["image".into(), "list".into(), "item".into()]);
        let props = WriterProperties::builder()
            .set_column_statistics_enabled(pixels.clone(), EnabledStatistics::None)
            .set_max_row_group_row_count(Some(1024));
        let props = match pixel {
            // Byte pixels are delta-encoded and bit-packed: neighbouring pixels differ little,
            // so this is as small as a dictionary and much faster to write and read. (Parquet
            // delta-encodes integers only; float pixels keep the default dictionary.)
            PixelType::UInt8 => props
                .set_column_dictionary_enabled(pixels.clone(), false)
                .set_column_encoding(pixels, Encoding::DELTA_BINARY_PACKED),
            PixelType::Float32 => props,
        }
        .build();
        let path = out.temp_path().to_path_buf();
        let sink = checksum::Summed::new(out.create()?);
        let writer = ArrowWriter::try_new(sink, schema.clone(), Some(props)).at(&path)?;
        Ok(Self {
            writer,
            schema,
            pixel,
            path,
        })
    }

    /// Appends images; `pixels` must be of the type the writer was created for.
    pub fn write(
        &mut self,
        pixels: Pixels,
        labels: Vec<i32>,
        true_labels: Option<Vec<i32>>,
    ) -> Result<()> {
        let values: ArrayRef = match (self.pixel, pixels) {
            (PixelType::UInt8, Pixels::UInt8(v)) => Arc::new(UInt8Array::from(v)),
            (PixelType::Float32, Pixels::Float32(v)) => Arc::new(Float32Array::from(v)),
            _ => panic!("pixels of another type than the writer's"),
        };
        let item = Arc::new(Field::new("item", self.pixel.arrow(), false));
        let images =
            FixedSizeListArray::try_new(item, IMAGE_LEN as i32, values, None).at(&self.path)?;
        let mut columns: Vec<ArrayRef> = vec![Arc::new(images), Arc::new(Int32Array::from(labels))];
        if let Some(t) = true_labels {
            columns.push(Arc::new(Int32Array::from(t)));
        }
        let rb = RecordBatch::try_new(self.schema.clone(), columns).at(&self.path)?;
        self.writer.write(&rb).at(&self.path)
    }

    pub fn finish(self) -> Result<()> {
        checksum::finish(self.writer, &self.schema, &self.path)
    }
}

/// Reads an image table written by [`ImageWriter`] (or any table with the same columns).
pub struct ImageReader {
    reader: ParquetRecordBatchReader,
    path: PathBuf,
    len: usize,
    has_true_labels: bool,
}

impl ImageReader {
    pub fn open(path: &Path, batch_size: usize) -> Result<Self> {
        crate::files::regular(path)?;
        let file = File::open(path).at(path)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
        checksum::verify(path, builder.metadata())?;
        let schema = builder.schema().clone();
        if let Some(shape) = schema.metadata().get(SHAPE_KEY) {
            let want = serde_json::to_string(&INPUT_SHAPE).expect("shape");
            if shape.replace(' ', "") != want {
                return Err(Error::invalid(
                    path,
                    format!("images have shape {shape}, DeepID needs {want}"),
                ));
            }
        }
        match schema.field_with_name("image").map(|f| f.data_type()) {
            Ok(DataType::FixedSizeList(item, n))
                if *n as usize == IMAGE_LEN
                    && matches!(item.data_type(), DataType::UInt8 | DataType::Float32) => {}
            Ok(other) => {
                return Err(Error::invalid(
                    path,
                    format!(
                        "column `image` is {other}, expected a FixedSizeList of {IMAGE_LEN} UInt8 or Float32 pixels"
                    ),
                ))
            }
            Err(_) => return Err(Error::invalid(path, "no `image` column")),
        }
        for name in ["label", "true_label"] {
            match schema.field_with_name(name).map(|f| f.data_type()) {
                Ok(DataType::Int32) | Err(_) if name == "true_label" => {}
                Ok(DataType::Int32) => {}
                Ok(other) => {
                    return Err(Error::invalid(
                        path,
                        format!(
                            "column `{name}` holds {other} values; labels must be integer class \
                             numbers (Int32)"
                        ),
                    ))
                }
                Err(_) => return Err(Error::invalid(path, format!("no `{name}` column"))),
            }
        }
        let has_true_labels = schema.field_with_name("true_label").is_ok();
        let len = builder.metadata().file_metadata().num_rows() as usize;
        if len == 0 {
            return Err(Error::invalid(path, "the dataset is empty (0 images)"));
        }
        let reader = builder.with_batch_size(batch_size).build().at(path)?;
        Ok(Self {
            reader,
            path: path.to_path_buf(),
            len,
            has_true_labels,
        })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn has_true_labels(&self) -> bool {
        self.has_true_labels
    }

    fn convert(&self, rb: RecordBatch) -> Result<Batch> {
        let path = &self.path;
        let images = rb
            .column_by_name("image")
            .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
            .ok_or_else(|| Error::invalid(path, "column `image` is not a FixedSizeList"))?;
        if images.null_count() > 0 {
            return Err(Error::invalid(path, "column `image` has null images"));
        }
        let values = images.values();
        let values = values.slice(images.offset() * IMAGE_LEN, images.len() * IMAGE_LEN);
        let pixels: Vec<f32> = if let Some(v) = values.as_any().downcast_ref::<UInt8Array>() {
            v.values().iter().map(|&p| p as f32).collect()
        } else if let Some(v) = values.as_any().downcast_ref::<Float32Array>() {
            v.values().to_vec()
        } else {
            return Err(Error::invalid(path, "pixels are neither UInt8 nor Float32"));
        };
        if values.null_count() > 0 || pixels.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(
                path,
                "column `image` has missing or non-finite pixels",
            ));
        }
        let ints = |name: &str| -> Result<Option<Vec<i32>>> {
            let Some(col) = rb.column_by_name(name) else {
                return Ok(None);
            };
            let col = col
                .as_any()
                .downcast_ref::<Int32Array>()
                .ok_or_else(|| Error::invalid(path, format!("column `{name}` is not Int32")))?;
            if col.null_count() > 0 {
                return Err(Error::invalid(path, format!("column `{name}` has nulls")));
            }
            Ok(Some(col.values().to_vec()))
        };
        Ok(Batch {
            pixels,
            labels: ints("label")?.unwrap_or_default(),
            true_labels: ints("true_label")?,
        })
    }
}

impl Iterator for ImageReader {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        let rb = self.reader.next()?;
        Some(rb.at(&self.path).and_then(|rb| self.convert(rb)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_the_range_and_whether_bytes_hold_the_pixels() {
        // 40 values: two full vectors and a tail.
        let v: Vec<f32> = (0..40).map(|i| (i * 13 % 256) as f32).collect();
        let s = scan(&v);
        assert_eq!((s.min, s.max), (0.0, 251.0));
        let bytes: Vec<u8> = (0..40).map(|i| (i * 13 % 256) as u8).collect();
        assert_eq!(s.bytes, Some(bytes));
        for bad in [256.0, -1.0, 3.5, 1e9] {
            for at in [0, 17, 39] {
                let mut w = v.clone();
                w[at] = bad;
                let s = scan(&w);
                assert!(s.bytes.is_none(), "{bad} at {at}");
                let min = w.iter().copied().fold(f32::INFINITY, f32::min);
                let max = w.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                assert_eq!((s.min, s.max), (min, max), "{bad} at {at}");
            }
        }
    }
}
