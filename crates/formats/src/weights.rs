//! The safetensors model file: DeepID's tensors in the PyTorch contract (`conv_3.weight`, ...,
//! little-endian float32) with the provenance as metadata, written with a canonical header so
//! that equal networks give equal bytes.

use crate::atomic;
use crate::error::{Error, Result};
use model::weights::{hex, Layer, Param};
use model::{DeepIdWeights, Layers, Provenance};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

pub const ARCHITECTURE: &str = "deepid";

fn st_error(path: &Path) -> impl Fn(safetensors::SafeTensorError) -> Error + '_ {
    move |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    }
}

/// Reading and writing [`DeepIdWeights`] as a safetensors file.
pub trait ModelFile: Sized {
    fn save(&self, path: &Path) -> Result<()>;
    fn load(path: &Path) -> Result<Self>;
}

impl ModelFile for DeepIdWeights {
    /// Writes the file atomically.
    fn save(&self, path: &Path) -> Result<()> {
        let mut meta = self.provenance.to_metadata();
        meta.insert("architecture".into(), ARCHITECTURE.into());
        meta.insert("classes".into(), self.classes().to_string());
        let tensors: Vec<(String, &Param)> = self
            .layers
            .iter()
            .flat_map(|(name, l)| {
                [
                    (format!("{name}.weight"), &l.weight),
                    (format!("{name}.bias"), &l.bias),
                ]
            })
            .collect();
        let bytes = serialize(
            tensors
                .iter()
                .map(|(n, p)| (n.as_str(), Dtype::F32, p.shape.clone(), le_bytes(&p.data))),
            meta,
            path,
        )?;
        atomic::write_bytes(path, &bytes)
    }

    /// Reads and checks a file in the DeepID tensor contract.
    fn load(path: &Path) -> Result<Self> {
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let (tensors, mut meta) = deserialize(&buf, path)?;
        if let Some(arch) = meta.get("architecture").filter(|a| *a != ARCHITECTURE) {
            return Err(Error::invalid(
                path,
                format!("architecture is {arch:?}, not {ARCHITECTURE:?}"),
            ));
        }
        let get_f32 = |name: String| -> Result<Param> {
            let view = tensors
                .tensor(&name)
                .map_err(|_| Error::invalid(path, format!("tensor {name} is missing")))?;
            if view.dtype() != Dtype::F32 {
                return Err(Error::invalid(
                    path,
                    format!("tensor {name} is {:?}, expected F32", view.dtype()),
                ));
            }
            Ok(Param::new(
                view.shape().to_vec(),
                from_le_bytes(view.data()),
            ))
        };
        let layers = Layers::try_from_fn(|name| -> Result<Layer> {
            Ok(Layer {
                weight: get_f32(format!("{name}.weight"))?,
                bias: get_f32(format!("{name}.bias"))?,
            })
        })?;
        DeepIdWeights::validate(&layers, path)?;
        for k in ["architecture", "classes"] {
            meta.remove(k);
        }
        let provenance = Provenance::from_metadata(meta, path)?;
        Ok(Self { layers, provenance })
    }
}

/// A safetensors file's bytes from (name, dtype, shape, data) tensors and string metadata,
/// with the JSON header's keys sorted (safetensors writes its metadata map in hash order).
pub fn serialize<'a>(
    tensors: impl IntoIterator<Item = (&'a str, Dtype, Vec<usize>, &'a [u8])>,
    meta: BTreeMap<String, String>,
    path: &Path,
) -> Result<Vec<u8>> {
    let views = tensors
        .into_iter()
        .map(|(n, dtype, shape, data)| Ok((n, TensorView::new(dtype, shape, data)?)))
        .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(st_error(path))?;
    let mut bytes =
        safetensors::serialize(views, Some(meta.into_iter().collect())).map_err(st_error(path))?;
    canonicalize_header(&mut bytes);
    Ok(bytes)
}

/// The tensors and string metadata of safetensors bytes read from `path`.
pub fn deserialize<'a>(
    buf: &'a [u8],
    path: &Path,
) -> Result<(SafeTensors<'a>, BTreeMap<String, String>)> {
    let (_, header) = SafeTensors::read_metadata(buf).map_err(st_error(path))?;
    let meta = header
        .metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    Ok((SafeTensors::deserialize(buf).map_err(st_error(path))?, meta))
}

/// Rewrites the JSON header with sorted keys; the length is unchanged because only the order
/// of members changes.
fn canonicalize_header(file: &mut [u8]) {
    type Header = BTreeMap<String, BTreeMap<String, serde_json::Value>>;
    let n = u64::from_le_bytes(file[..8].try_into().expect("8-byte length")) as usize;
    let header: Header =
        serde_json::from_slice(&file[8..8 + n]).expect("safetensors wrote a JSON header");
    let mut sorted = serde_json::to_vec(&header).expect("JSON value serializes");
    sorted.resize(n, b' ');
    file[8..8 + n].copy_from_slice(&sorted);
}

// safetensors stores little-endian values: on such machines the bytes are the values' own.
#[cfg(target_endian = "little")]
pub fn le_bytes<T: bytemuck::Pod>(v: &[T]) -> &[u8] {
    bytemuck::cast_slice(v)
}

#[cfg(target_endian = "little")]
pub fn from_le_bytes<T: bytemuck::Pod>(b: &[u8]) -> Vec<T> {
    bytemuck::pod_collect_to_vec(b)
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(hex(&h.finalize()))
}
