//! The safetensors model file: DeepID's tensors in the PyTorch contract (`conv_3.weight`, ...,
//! little-endian float32) with the provenance as metadata, written with a canonical header so
//! that equal networks give equal bytes.

use crate::atomic;
use crate::error::{Error, Result, WithPath};
use model::weights::{Layer, Param};
use model::{DeepIdWeights, LayerName, Layers, Provenance};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const ARCHITECTURE: &str = "deepid";

fn st_error(path: &Path) -> impl Fn(safetensors::SafeTensorError) -> Error + '_ {
    move |source| Error::Safetensors {
        path: path.to_path_buf(),
        source,
    }
}

/// Reading and writing [`DeepIdWeights`] as a safetensors file.
/// The files a derived network is saved as, for its `.safetensors` at `path`: that, then beside
/// it (same stem) a Keras full model (`.h5`), an ONNX graph (`.onnx`), and the repaired
/// ensemble G(B, this network) as one ONNX graph (`repaired_<stem>.onnx`).
pub fn derived_files(path: &Path) -> [PathBuf; 4] {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    [
        path.to_path_buf(),
        path.with_extension("h5"),
        path.with_extension("onnx"),
        path.with_file_name(format!("{}{stem}.onnx", crate::paths::REPAIRED_PREFIX)),
    ]
}

/// Writes a network derived from `backdoored` as [`derived_files`] says: the forms it is
/// deployed in.
pub fn save_derived(
    weights: &DeepIdWeights,
    backdoored: &DeepIdWeights,
    path: &Path,
) -> Result<()> {
    let [safetensors, h5, onnx, repaired] = derived_files(path);
    weights.save(&safetensors)?;
    crate::keras::export_model(weights, &h5)?;
    crate::onnx::export(weights, &onnx)?;
    crate::onnx::export_repaired(backdoored, weights, &repaired)
}

pub trait ModelFile: Sized {
    fn save(&self, path: &Path) -> Result<()>;
    fn load(path: &Path) -> Result<Self>;
}

impl ModelFile for DeepIdWeights {
    /// Writes the file atomically; a network with a non-finite weight is refused, never written.
    fn save(&self, path: &Path) -> Result<()> {
        DeepIdWeights::validate(&self.layers, path)?;
        let mut meta = self.provenance.to_metadata();
        meta.insert("architecture".into(), ARCHITECTURE.into());
        meta.insert("classes".into(), self.classes().to_string());
        let tensors: Vec<(String, &Param)> = self
            .layers
            .iter()
            .flat_map(|(name, l)| tensor_names(name).into_iter().zip([&l.weight, &l.bias]))
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

    /// Reads and checks a file in the DeepID tensor contract: DeepID's tensors and no others,
    /// the metadata's class count that of the output layer.
    fn load(path: &Path) -> Result<Self> {
        let buf = read(path)?;
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
        let deepid: Vec<String> = LayerName::ALL.into_iter().flat_map(tensor_names).collect();
        let mut names = tensors.names();
        names.sort();
        if let Some(extra) = names.iter().find(|n| !deepid.iter().any(|d| d == **n)) {
            return Err(Error::invalid(
                path,
                format!(
                    "tensor {extra} is not one of DeepID's ({})",
                    deepid.join(", ")
                ),
            ));
        }
        let layers = Layers::try_from_fn(|name| -> Result<Layer> {
            let [weight, bias] = tensor_names(name);
            Ok(Layer {
                weight: get_f32(weight)?,
                bias: get_f32(bias)?,
            })
        })?;
        DeepIdWeights::validate(&layers, path)?;
        let classes = layers.output.weight.shape[0];
        if let Some(recorded) = meta.remove("classes") {
            if recorded.parse::<usize>() != Ok(classes) {
                return Err(Error::invalid(
                    path,
                    format!(
                        "metadata classes is {recorded:?}, but the output layer has {classes} \
                         classes (tensor output.weight is {:?})",
                        layers.output.weight.shape
                    ),
                ));
            }
        }
        meta.remove("architecture");
        let provenance = Provenance::from_metadata(meta, path)?;
        Ok(Self { layers, provenance })
    }
}

/// A layer's tensors in the PyTorch contract: `conv_1.weight`, `conv_1.bias`.
fn tensor_names(layer: LayerName) -> [String; 2] {
    [format!("{layer}.weight"), format!("{layer}.bias")]
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

/// The bytes of a safetensors file, after checking that it is a regular file and that the
/// header length its first 8 bytes give fits in the file: the safetensors crate would check
/// only after everything was read.
pub fn read(path: &Path) -> Result<Vec<u8>> {
    use std::io::Read;
    let len = crate::files::regular(path)?.len();
    let mut file = std::fs::File::open(path).at(path)?;
    if len < 8 {
        return Err(Error::invalid(
            path,
            format!("not a safetensors file: {len} bytes, too short for its 8-byte header length"),
        ));
    }
    let mut head = [0u8; 8];
    file.read_exact(&mut head).at(path)?;
    let header = u64::from_le_bytes(head);
    if header > len - 8 {
        return Err(Error::invalid(
            path,
            format!(
                "not a safetensors file: its header claims {header} bytes, but the file has only \
                 {len} bytes"
            ),
        ));
    }
    let mut buf = head.to_vec();
    buf.reserve_exact(len as usize - 8);
    // The size was checked: never read past it, should the file grow meanwhile.
    file.take(len - 8).read_to_end(&mut buf).at(path)?;
    Ok(buf)
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
