//! Small result tables (profiles, sweeps, summaries) as Parquet: named columns in, named
//! columns out, written atomically with key-value metadata.

use crate::atomic::AtomicFile;
use crate::checksum;
use crate::error::{Error, Result, WithPath};
use arrow::array::{Array, ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ArrowWriter;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One column's values; `None` is a null (e.g. a figure that does not apply to a row).
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    Int(Vec<Option<i32>>),
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
            Column::Float(v) => (DataType::Float64, Arc::new(Float64Array::from(v.clone()))),
            Column::Text(v) => (DataType::Utf8, Arc::new(StringArray::from(v.clone()))),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Column::Int(v) => v.len(),
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
        let mut writer =
            ArrowWriter::try_new(checksum::Summed::new(out.create()?), schema, None).at(&temp)?;
        writer.write(&batch).at(&temp)?;
        checksum::finish(writer, &temp)?;
        out.commit()
    }

    /// Reads a whole table.
    pub fn read(path: &Path) -> Result<Self> {
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
            metadata: schema.metadata().clone().into_iter().collect(),
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
            Column::Int(v) => v
                .iter()
                .map(|x| x.ok_or(()))
                .collect::<std::result::Result<_, _>>()
                .map_err(|()| Error::invalid(&self.path, format!("column `{name}` has nulls"))),
            _ => Err(Error::invalid(
                &self.path,
                format!("column `{name}` is not Int32"),
            )),
        }
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
