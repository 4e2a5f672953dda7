//! Keras HDF5 weights <-> [`DeepIdWeights`].
//!
//! Reads Keras 2 weights-only files (`layer_names` at the root) and full-model files (weights
//! under `model_weights/`), with Keras 2 (`kernel:0`) or Keras 3 (`kernel`) weight names, by
//! following each layer's `weight_names` attribute. Keras computes in NHWC and flattens in
//! (h, w, c) order; the PyTorch contract is NCHW, so kernels and dense columns are permuted here.

use crate::error::{Error, Result, WithPath};
use crate::weights::sha256_file;
use hdf5::types::{FixedAscii, TypeDescriptor, VarLenAscii, VarLenUnicode};
use model::layout::{from_matrix, keras_shape, to_matrix};
use model::weights::{Layer, Param};
use model::{DeepIdWeights, LayerName, Layers, Provenance};
use std::path::Path;

/// Imports a Keras DeepID weights file.
pub fn import(path: &Path, input_scale: f64) -> Result<DeepIdWeights> {
    check_signature(path)?;
    let file = hdf5::File::open(path).at(path)?;
    let root = if file.attr("layer_names").is_ok() {
        file.as_group().at(path)?
    } else if let Ok(g) = file.group("model_weights") {
        g
    } else {
        return Err(Error::invalid(
            path,
            "not a Keras weights file: no `layer_names` attribute at the root and no `model_weights` group",
        ));
    };
    let names = read_strings(&root.attr("layer_names").at(path)?).at(path)?;
    let keras = Layers::try_from_fn(|name| -> Result<Layer> {
        if !names.iter().any(|n| n == name.as_str()) {
            return Err(Error::invalid(
                path,
                format!(
                    "layer {name} is missing (the file has: {})",
                    names.join(", ")
                ),
            ));
        }
        let group = root
            .group(name.as_str())
            .map_err(|_| Error::invalid(path, format!("layer {name} has no weight group")))?;
        let weight_names = read_strings(&group.attr("weight_names").at(path)?).at(path)?;
        let find = |role: &str| -> Result<Param> {
            let wn = weight_names
                .iter()
                .find(|w| w.rsplit('/').next().map(|s| s.trim_end_matches(":0")) == Some(role))
                .ok_or_else(|| {
                    Error::invalid(path, format!("layer {name} has no {role} weight"))
                })?;
            let ds = group.dataset(wn).map_err(|_| {
                Error::invalid(path, format!("layer {name}: dataset {wn} is missing"))
            })?;
            let data = ds.read_raw::<f32>().at(path)?;
            Ok(Param::new(ds.shape(), data))
        };
        Ok(Layer {
            weight: find("kernel")?,
            bias: find("bias")?,
        })
    })?;
    let classes = keras.output.weight.shape.get(1).copied().unwrap_or(0);
    let layers = keras.try_map(|name, layer| -> Result<Layer> {
        let want = name.weight_shape(classes);
        let keras_shape = keras_shape(&want);
        if layer.weight.shape != keras_shape {
            return Err(Error::invalid(
                path,
                format!(
                    "layer {name}: kernel has shape {:?}, DeepID needs {:?}",
                    layer.weight.shape, keras_shape
                ),
            ));
        }
        Ok(Layer {
            weight: from_matrix(name, &want, &layer.weight.data),
            bias: layer.bias.clone(),
        })
    })?;
    DeepIdWeights::validate(&layers, path)?;
    let source = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(DeepIdWeights {
        layers,
        provenance: Provenance::new(source, sha256_file(path)?, input_scale),
    })
}

/// Writes a Keras 2 weights-only file (what `model.save_weights("x.h5")` writes) that Keras
/// loads into the DeepID architecture and [`import`] reads back bit for bit. `generated` tags
/// the file as made by `synth`.
pub fn export(weights: &DeepIdWeights, path: &Path, generated: bool) -> Result<()> {
    let out = crate::atomic::AtomicFile::new(path)?;
    write_keras(weights, out.temp_path(), generated).at(path)?;
    out.commit()
}

/// Keras's layer list for DeepID; layers without weights get an empty `weight_names`.
const KERAS_LAYERS: [&str; 15] = [
    "input",
    "conv_1",
    "pool_1",
    "conv_2",
    "pool_2",
    "conv_3",
    "pool_3",
    "conv_4",
    "flatten_1",
    "flatten_2",
    "fc_1",
    "fc_2",
    "add_1",
    "activation_1",
    "output",
];

fn write_keras(weights: &DeepIdWeights, path: &Path, generated: bool) -> hdf5::Result<()> {
    use crate::h5write::{ascii, group as new_group, GENERATOR, GENERATOR_ATTR};
    let file = hdf5::File::create(path)?;
    if generated {
        file.new_attr::<FixedAscii<64>>()
            .create(GENERATOR_ATTR)?
            .write_scalar(&ascii(GENERATOR))?;
    }
    let names: Vec<FixedAscii<64>> = KERAS_LAYERS.iter().map(|s| ascii(s)).collect();
    file.new_attr_builder()
        .with_data(&names)
        .create("layer_names")?;
    file.new_attr::<FixedAscii<64>>()
        .create("backend")?
        .write_scalar(&ascii("tensorflow"))?;
    file.new_attr::<FixedAscii<64>>()
        .create("keras_version")?
        .write_scalar(&ascii("2.3.1"))?;
    for name in KERAS_LAYERS {
        let group = new_group(&file, name)?;
        let Some((layer_name, layer)) = LayerName::parse(name).map(|l| (l, weights.layers.get(l)))
        else {
            group.new_attr::<f64>().shape([0]).create("weight_names")?;
            continue;
        };
        let wn: Vec<FixedAscii<64>> = [format!("{name}/kernel:0"), format!("{name}/bias:0")]
            .iter()
            .map(|s| ascii(s))
            .collect();
        group
            .new_attr_builder()
            .with_data(&wn)
            .create("weight_names")?;
        let sub = new_group(&group, name)?;
        let torch = &layer.weight;
        let matrix = to_matrix(layer_name, torch);
        let kernel = ndarray::ArrayD::from_shape_vec(keras_shape(&torch.shape), matrix)
            .expect("kernel data matches its shape");
        sub.new_dataset_builder()
            .with_data(&kernel)
            .create("kernel:0")?;
        sub.new_dataset_builder()
            .with_data(&layer.bias.data)
            .create("bias:0")?;
    }
    file.close()
}

/// Reads a string-list attribute in any of the encodings Keras and h5py use. Layers without
/// weights store an empty float64 array instead of strings.
fn read_strings(attr: &hdf5::Attribute) -> hdf5::Result<Vec<String>> {
    if attr.size() == 0 {
        return Ok(Vec::new());
    }
    let trim = |s: &str| s.trim_end_matches('\0').to_string();
    Ok(match attr.dtype()?.to_descriptor()? {
        TypeDescriptor::VarLenUnicode => attr
            .read_raw::<VarLenUnicode>()?
            .iter()
            .map(|s| trim(s.as_str()))
            .collect(),
        TypeDescriptor::VarLenAscii => attr
            .read_raw::<VarLenAscii>()?
            .iter()
            .map(|s| trim(s.as_str()))
            .collect(),
        TypeDescriptor::FixedAscii(_) | TypeDescriptor::FixedUnicode(_) => attr
            .read_raw::<FixedAscii<1024>>()?
            .iter()
            .map(|s| trim(s.as_str()))
            .collect(),
        other => return Err(format!("expected strings, found {other:?}").into()),
    })
}

/// Gives "not an HDF5 file" a clear message instead of the library's error stack.
pub fn check_signature(path: &Path) -> Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    const MAGIC: &[u8; 8] = b"\x89HDF\r\n\x1a\n";
    let mut f = std::fs::File::open(path).at(path)?;
    let len = f.metadata().at(path)?.len();
    // The superblock sits at 0, 512, 1024, 2048, ... (a user block may precede it).
    let mut offset = 0u64;
    while offset + 8 <= len {
        let mut buf = [0u8; 8];
        f.seek(SeekFrom::Start(offset)).at(path)?;
        f.read_exact(&mut buf).at(path)?;
        if &buf == MAGIC {
            return Ok(());
        }
        offset = if offset == 0 { 512 } else { offset * 2 };
    }
    Err(Error::invalid(path, "not an HDF5 file (no HDF5 signature)"))
}
