//! DeepID parameters in the PyTorch tensor contract (`conv_k.weight` as (out, in, kh, kw),
//! dense `.weight` as (out, in), NCHW flatten order), and their safetensors file format.

use crate::atomic;
use crate::error::{Error, Result};
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// The layers that carry weights, in forward order.
pub const LAYERS: [&str; 7] = [
    "conv_1", "conv_2", "conv_3", "conv_4", "fc_1", "fc_2", "output",
];

/// DeepID's fixed geometry: input (3, 55, 47), conv_3 (60, 10, 8), pool_3 (60, 5, 4).
pub const INPUT_SHAPE: [usize; 3] = [3, 55, 47];
pub const CONV3_CHANNELS: usize = 60;
pub const FEATURES: usize = 160;

/// Expected PyTorch-layout weight shape of `layer`; `classes` sizes the output layer.
pub fn weight_shape(layer: &str, classes: usize) -> Vec<usize> {
    match layer {
        "conv_1" => vec![20, 3, 4, 4],
        "conv_2" => vec![40, 20, 3, 3],
        "conv_3" => vec![60, 40, 3, 3],
        "conv_4" => vec![80, 60, 2, 2],
        "fc_1" => vec![FEATURES, 60 * 5 * 4],
        "fc_2" => vec![FEATURES, 80 * 4 * 3],
        "output" => vec![classes, FEATURES],
        _ => unreachable!("unknown DeepID layer {layer}"),
    }
}

/// A dense float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Param {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        Self { shape, data }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub weight: Param,
    pub bias: Param,
}

/// Where a set of weights came from; stored as safetensors metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub source: String,
    pub source_sha256: String,
    pub input_scale: f64,
    /// Further keys (pruned channels, fine-tuning settings, ...).
    pub extra: BTreeMap<String, String>,
}

/// All DeepID parameters, PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepIdWeights {
    /// Indexed like [`LAYERS`].
    pub layers: Vec<Layer>,
    pub provenance: Provenance,
}

pub const ARCHITECTURE: &str = "deepid";

impl DeepIdWeights {
    pub fn layer(&self, name: &str) -> &Layer {
        &self.layers[layer_index(name)]
    }

    pub fn layer_mut(&mut self, name: &str) -> &mut Layer {
        &mut self.layers[layer_index(name)]
    }

    pub fn classes(&self) -> usize {
        self.layer("output").weight.shape[0]
    }

    /// Checks every layer against DeepID's shapes; `path` names the file in the error.
    pub fn validate(layers: &[Layer], path: &Path) -> Result<()> {
        if layers.len() != LAYERS.len() {
            return Err(Error::invalid(
                path,
                "DeepID needs exactly 7 weighted layers",
            ));
        }
        let classes = layers[6].weight.shape.first().copied().unwrap_or(0);
        if classes < 2 {
            return Err(Error::invalid(
                path,
                "output layer has fewer than 2 classes",
            ));
        }
        for (name, layer) in LAYERS.iter().zip(layers) {
            let want = weight_shape(name, classes);
            if layer.weight.shape != want {
                return Err(Error::invalid(
                    path,
                    format!(
                        "layer {name}: weight has shape {:?}, DeepID needs {:?}",
                        layer.weight.shape, want
                    ),
                ));
            }
            if layer.bias.shape != [want[0]] {
                return Err(Error::invalid(
                    path,
                    format!(
                        "layer {name}: bias has shape {:?}, DeepID needs [{}]",
                        layer.bias.shape, want[0]
                    ),
                ));
            }
            if let Some(bad) = layer
                .weight
                .data
                .iter()
                .chain(&layer.bias.data)
                .find(|v| !v.is_finite())
            {
                return Err(Error::invalid(
                    path,
                    format!("layer {name} holds a non-finite value ({bad})"),
                ));
            }
        }
        Ok(())
    }

    /// Zeroes conv_3 output channels: their kernels and biases (the pruning operation).
    pub fn prune_conv3(&mut self, channels: &[usize]) {
        let conv3 = self.layer_mut("conv_3");
        let per_channel = conv3.weight.data.len() / CONV3_CHANNELS;
        for &c in channels {
            conv3.weight.data[c * per_channel..(c + 1) * per_channel].fill(0.0);
            conv3.bias.data[c] = 0.0;
        }
    }

    /// Writes the safetensors file atomically; tensor data is little-endian float32 and the
    /// header is canonical (sorted keys), so equal weights give equal bytes.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes: Vec<(String, Vec<u8>, Vec<usize>)> = LAYERS
            .iter()
            .zip(&self.layers)
            .flat_map(|(name, l)| {
                [
                    (format!("{name}.weight"), &l.weight),
                    (format!("{name}.bias"), &l.bias),
                ]
            })
            .map(|(n, p)| {
                (
                    n,
                    p.data.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    p.shape.clone(),
                )
            })
            .collect();
        let views = bytes
            .iter()
            .map(|(n, b, s)| Ok((n.as_str(), TensorView::new(Dtype::F32, s.clone(), b)?)))
            .collect::<std::result::Result<Vec<_>, safetensors::SafeTensorError>>()
            .map_err(|source| Error::Safetensors {
                path: path.to_path_buf(),
                source,
            })?;
        let meta = self.metadata().into_iter().collect();
        let mut out =
            safetensors::serialize(views, Some(meta)).map_err(|source| Error::Safetensors {
                path: path.to_path_buf(),
                source,
            })?;
        canonicalize_header(&mut out);
        atomic::write_bytes(path, &out)
    }

    fn metadata(&self) -> BTreeMap<String, String> {
        let p = &self.provenance;
        let mut m = p.extra.clone();
        m.insert("architecture".into(), ARCHITECTURE.into());
        m.insert("classes".into(), self.classes().to_string());
        m.insert("input_scale".into(), format!("{:?}", p.input_scale));
        m.insert("source".into(), p.source.clone());
        m.insert("source_sha256".into(), p.source_sha256.clone());
        m
    }

    /// Reads and checks a safetensors file in the DeepID tensor contract.
    pub fn load(path: &Path) -> Result<Self> {
        let buf = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let st_err = |source| Error::Safetensors {
            path: path.to_path_buf(),
            source,
        };
        let (_, header) = SafeTensors::read_metadata(&buf).map_err(st_err)?;
        let tensors = SafeTensors::deserialize(&buf).map_err(st_err)?;
        let mut meta: BTreeMap<String, String> = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
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
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            Ok(Param::new(view.shape().to_vec(), data))
        };
        let layers = LAYERS
            .iter()
            .map(|name| {
                Ok(Layer {
                    weight: get_f32(format!("{name}.weight"))?,
                    bias: get_f32(format!("{name}.bias"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Self::validate(&layers, path)?;
        let input_scale = match meta.remove("input_scale") {
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    Error::invalid(
                        path,
                        format!("metadata input_scale {s:?} is not a positive number"),
                    )
                })?,
            None => 1.0,
        };
        for k in ["architecture", "classes"] {
            meta.remove(k);
        }
        let provenance = Provenance {
            source: meta.remove("source").unwrap_or_default(),
            source_sha256: meta.remove("source_sha256").unwrap_or_default(),
            input_scale,
            extra: meta,
        };
        Ok(Self { layers, provenance })
    }

    /// conv_3 channels recorded as pruned in the metadata (`pruned_channels`, a JSON list).
    pub fn pruned_channels(&self) -> Vec<usize> {
        self.provenance
            .extra
            .get("pruned_channels")
            .and_then(|s| serde_json::from_str(s).ok())
            .unwrap_or_default()
    }

    /// An identifier of these exact parameters, to tie derived files to the model they came from.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for l in &self.layers {
            for p in [&l.weight, &l.bias] {
                for v in &p.data {
                    h.update(v.to_le_bytes());
                }
            }
        }
        hex(&h.finalize())[..16].to_string()
    }
}

fn layer_index(name: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| *l == name)
        .unwrap_or_else(|| unreachable!("unknown DeepID layer {name}"))
}

/// Rewrites the JSON header with sorted keys (safetensors writes its metadata map in hash
/// order); the length is unchanged because only the order of members changes.
pub(crate) fn canonicalize_header(file: &mut [u8]) {
    type Header = BTreeMap<String, BTreeMap<String, serde_json::Value>>;
    let n = u64::from_le_bytes(file[..8].try_into().expect("8-byte length")) as usize;
    let header: Header =
        serde_json::from_slice(&file[8..8 + n]).expect("safetensors wrote a JSON header");
    let mut sorted = serde_json::to_vec(&header).expect("JSON value serializes");
    sorted.resize(n, b' ');
    file[8..8 + n].copy_from_slice(&sorted);
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|e| Error::io(path, e))?;
    Ok(hex(&h.finalize()))
}
