//! Small result tables (profiles, sweeps, summaries) as Parquet: named columns in, named
//! columns out, written atomically with key-value metadata.

use crate::atomic::AtomicFile;
use crate::checksum;
use crate::error::{Error, Result, WithPath};
use arrow::array::{
    Array, ArrayRef, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How a CSV file writes floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Floats {
    /// As Python's `repr` (`100.0`, `1.3333333333333335`): the shortest text that reads back
    /// to the same value, as the reference's files have it.
    Repr,
    /// With this many decimals, for people.
    Fixed(usize),
}

impl Floats {
    pub fn format(self, v: f64) -> String {
        match self {
            Floats::Repr => format!("{v:?}"),
            Floats::Fixed(d) => format!("{v:.d$}"),
        }
    }
}

/// One column's values; `None` is a null (e.g. a figure that does not apply to a row).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Int(Vec<Option<i32>>),
    /// For counts that may pass Int32's range (images).
    Int64(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
}

impl Column {
    pub fn ints(v: impl IntoIterator<Item = i32>) -> Self {
        Column::Int(v.into_iter().map(Some).collect())
    }

    pub fn floats(v: impl IntoIterator<Item = f64>) -> Self {
        Column::Float(v.into_iter().map(Some).collect())
    }

    fn array(&self) -> (DataType, ArrayRef) {
        match self {
            Column::Int(v) => (DataType::Int32, Arc::new(Int32Array::from(v.clone()))),
            Column::Int64(v) => (DataType::Int64, Arc::new(Int64Array::from(v.clone()))),
            Column::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::Text(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
        }
    }

    /// Appends `other`'s values; a column of another type gives nulls instead.
    pub fn extend_from(&mut self, other: &Column) {
        match (self, other) {
            (Column::Int(a), Column::Int(b)) => a.extend_from_slice(b),
            (Column::Int64(a), Column::Int64(b)) => a.extend_from_slice(b),
            (Column::Float(a), Column::Float(b)) => a.extend_from_slice(b),
            (Column::Text(a), Column::Text(b)) => a.extend_from_slice(b),
            (this, other) => (0..other.len()).for_each(|_| this.push_null()),
        }
    }

    pub fn push_null(&mut self) {
        match self {
            Column::Int(v) => v.push(None),
            Column::Int64(v) => v.push(None),
            Column::Float(v) => v.push(None),
            Column::Text(v) => v.push(None),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
            Column::Int64(v) => v.len(),
            Column::Float(v) => v.len(),
            Column::Text(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An ordered set of equally long columns plus metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    pub columns: Vec<(String, Column)>,
    pub metadata: BTreeMap<String, String>,
    /// Where it was read from, for error messages.
    pub path: PathBuf,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, name: &str, column: Column) -> Self {
        self.columns.push((name.to_string(), column));
        self
    }

    pub fn meta(mut self, key: &str, value: impl Into<String>) -> Self {
        self.metadata.insert(key.to_string(), value.into());
        self
    }

    pub fn rows(&self) -> usize {
        self.columns.first().map_or(0, |(_, c)| c.len())
    }

    /// Writes the table as CSV (header, then one line per row; nulls as empty fields).
    pub fn to_csv(&self, out: impl std::io::Write, floats: Floats) -> std::io::Result<()> {
        // The writer's own errors are I/O errors here: keep their kind (a closed pipe, say).
        let io = |e: csv::Error| match e.into_kind() {
            csv::ErrorKind::Io(e) => e,
            other => std::io::Error::other(format!("{other:?}")),
        };
        let mut w = csv::Writer::from_writer(out);
        w.write_record(self.columns.iter().map(|(n, _)| n.as_str()))
            .map_err(io)?;
        for row in 0..self.rows() {
            w.write_record(self.columns.iter().map(|(_, c)| match c {
                Column::Int(v) => v[row].map(|x| x.to_string()).unwrap_or_default(),
                Column::Int64(v) => v[row].map(|x| x.to_string()).unwrap_or_default(),
                Column::Float(v) => v[row].map(|x| floats.format(x)).unwrap_or_default(),
                Column::Text(v) => v[row].clone().unwrap_or_default(),
            }))
            .map_err(io)?;
        }
        w.flush()
    }

    /// Writes the table as a CSV file, atomically.
    pub fn write_csv(&self, path: &Path, floats: Floats) -> Result<()> {
        let out = AtomicFile::new(path)?;
        let sink = std::io::BufWriter::new(out.create()?);
        self.to_csv(sink, floats).at(out.temp_path())?;
        out.commit()
    }

    /// Writes the table atomically as one row group.
    pub fn write(&self, path: &Path) -> Result<()> {
        let (fields, arrays): (Vec<Field>, Vec<ArrayRef>) = self
            .columns
            .iter()
            .map(|(name, col)| {
                let (dt, arr) = col.array();
                (Field::new(name, dt, arr.null_count() > 0), arr)
            })
            .unzip();
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let schema = Arc::new(Schema::new_with_metadata(fields, meta));
        let out = AtomicFile::new(path)?;
        let temp = out.temp_path().to_path_buf();
        let batch = RecordBatch::try_new(schema.clone(), arrays).at(&temp)?;
        let sink = checksum::Summed::new(out.create()?);
        let mut writer = ArrowWriter::try_new(sink, schema.clone(), None).at(&temp)?;
        writer.write(&batch).at(&temp)?;
        checksum::finish(writer, &schema, &temp)?;
        out.commit()
    }

    /// Reads a whole table.
    pub fn read(path: &Path) -> Result<Self> {
        crate::files::regular(path)?;
        let file = std::fs::File::open(path).at(path)?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).at(path)?;
        checksum::verify(path, builder.metadata())?;
        let schema = builder.schema().clone();
        let batches = builder
            .build()
            .at(path)?
            .collect::<std::result::Result<Vec<_>, _>>()
            .at(path)?;
        let batch = arrow::compute::concat_batches(&schema, &batches).at(path)?;
        let columns = schema
            .fields()
            .iter()
            .zip(batch.columns())
            .filter_map(|(f, a)| {
                let col = match f.data_type() {
                    DataType::Int32 => {
                        Column::Int(a.as_any().downcast_ref::<Int32Array>()?.iter().collect())
                    }
                    DataType::Int64 => {
                        Column::Int64(a.as_any().downcast_ref::<Int64Array>()?.iter().collect())
                    }
                    DataType::Float64 => {
                        Column::Float(a.as_any().downcast_ref::<Float64Array>()?.iter().collect())
                    }
                    DataType::Utf8 => Column::Text(
                        a.as_any()
                            .downcast_ref::<StringArray>()?
                            .iter()
                            .map(|s| s.map(str::to_string))
                            .collect(),
                    ),
                    _ => return None,
                };
                Some((f.name().clone(), col))
            })
            .collect();
        Ok(Self {
            columns,
            // The footer's checksum describes the file, not the table.
            metadata: schema
                .metadata()
                .iter()
                .filter(|(k, _)| *k != checksum::KEY)
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            path: path.to_path_buf(),
        })
    }

    fn column(&self, name: &str) -> Result<&Column> {
        self.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| Error::invalid(&self.path, format!("no `{name}` column")))
    }

    /// A column of integers without nulls.
    pub fn ints(&self, name: &str) -> Result<Vec<i32>> {
        match self.column(name)? {
            Column::Int(v) => self.no_nulls(name, v),
            _ => Err(Error::invalid(
                &self.path,
                format!("column `{name}` is not Int32"),
            )),
        }
    }

    /// A column of 64-bit integers without nulls.
    pub fn int64s(&self, name: &str) -> Result<Vec<i64>> {
        match self.column(name)? {
            Column::Int64(v) => self.no_nulls(name, v),
            _ => Err(Error::invalid(
                &self.path,
                format!("column `{name}` is not Int64"),
            )),
        }
    }

    fn no_nulls<T: Copy>(&self, name: &str, v: &[Option<T>]) -> Result<Vec<T>> {
        v.iter()
            .map(|x| x.ok_or(()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|()| Error::invalid(&self.path, format!("column `{name}` has nulls")))
    }

    /// A column of floats (nulls kept).
    pub fn floats(&self, name: &str) -> Result<Vec<Option<f64>>> {
        match self.column(name)? {
            Column::Float(v) => Ok(v.clone()),
            _ => Err(Error::invalid(
                &self.path,
                format!("column `{name}` is not Float64"),
            )),
        }
    }

    pub fn texts(&self, name: &str) -> Result<Vec<Option<String>>> {
        match self.column(name)? {
            Column::Text(v) => Ok(v.clone()),
            _ => Err(Error::invalid(
                &self.path,
                format!("column `{name}` is not text"),
            )),
        }
    }

    pub fn meta_value(&self, key: &str) -> Result<&str> {
        self.metadata
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| Error::invalid(&self.path, format!("metadata key `{key}` is missing")))
    }
}
