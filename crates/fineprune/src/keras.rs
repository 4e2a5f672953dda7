//! Keras HDF5 weights <-> [`DeepIdWeights`].
//!
//! Reads Keras 2 weights-only files (`layer_names` at the root) and full-model files (weights
//! under `model_weights/`), with Keras 2 (`kernel:0`) or Keras 3 (`kernel`) weight names, by
//! following each layer's `weight_names` attribute. Keras computes in NHWC and flattens in
//! (h, w, c) order; the PyTorch contract is NCHW, so kernels and dense columns are permuted here.

use crate::error::{Error, Result, WithPath};
use crate::weights::{sha256_file, weight_shape, DeepIdWeights, Layer, Param, Provenance, LAYERS};
use hdf5::types::{FixedAscii, TypeDescriptor, VarLenAscii, VarLenUnicode};
use std::collections::BTreeMap;
use std::path::Path;

/// Feature-map sizes (h, w) feeding fc_1 (pool_3) and fc_2 (conv_4).
const FC_INPUT_HW: [(&str, usize, usize); 2] = [("fc_1", 5, 4), ("fc_2", 4, 3)];

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
    let mut layers = Vec::with_capacity(LAYERS.len());
    for name in LAYERS {
        if !names.iter().any(|n| n == name) {
            return Err(Error::invalid(
                path,
                format!(
                    "layer {name} is missing (the file has: {})",
                    names.join(", ")
                ),
            ));
        }
        let group = root
            .group(name)
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
        let kernel = find("kernel")?;
        let bias = find("bias")?;
        layers.push(Layer {
            weight: kernel,
            bias,
        });
    }
    let classes = layers[6].weight.shape.get(1).copied().unwrap_or(0);
    for (name, layer) in LAYERS.iter().zip(layers.iter_mut()) {
        let want = weight_shape(name, classes);
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
        layer.weight = to_torch(name, &layer.weight, &want);
    }
    DeepIdWeights::validate(&layers, path)?;
    Ok(DeepIdWeights {
        layers,
        provenance: Provenance {
            source: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            source_sha256: sha256_file(path)?,
            input_scale,
            extra: BTreeMap::new(),
        },
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
        let Some(i) = LAYERS.iter().position(|l| *l == name) else {
            group.new_attr::<f64>().shape([0]).create("weight_names")?;
            continue;
        };
        let layer = &weights.layers[i];
        let wn: Vec<FixedAscii<64>> = [format!("{name}/kernel:0"), format!("{name}/bias:0")]
            .iter()
            .map(|s| ascii(s))
            .collect();
        group
            .new_attr_builder()
            .with_data(&wn)
            .create("weight_names")?;
        let sub = new_group(&group, name)?;
        let kernel = to_keras(name, &layer.weight);
        let kernel = ndarray::ArrayD::from_shape_vec(kernel.shape, kernel.data)
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

/// Keras's kernel shape for a PyTorch weight shape: OIHW -> HWIO, (out, in) -> (in, out).
fn keras_shape(torch: &[usize]) -> Vec<usize> {
    match *torch {
        [o, i, h, w] => vec![h, w, i, o],
        [o, i] => vec![i, o],
        _ => unreachable!("DeepID weights are 2-D or 4-D"),
    }
}

/// Maps each PyTorch flat index to the Keras flat index holding the same weight.
pub(crate) fn keras_index(name: &str, torch: &[usize]) -> impl Fn(usize) -> usize {
    let torch = torch.to_vec();
    let hw = FC_INPUT_HW
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|&(_, h, w)| (h, w));
    move |t| match (torch.as_slice(), hw) {
        (&[o, i, kh, kw], _) => {
            let (oo, r) = (t / (i * kh * kw), t % (i * kh * kw));
            let (ii, r) = (r / (kh * kw), r % (kh * kw));
            let (y, x) = (r / kw, r % kw);
            ((y * kw + x) * i + ii) * o + oo
        }
        (&[o, i], Some((h, w))) => {
            // NCHW flatten column c*h*w + p is NHWC flatten row p*c + c.
            let (oo, col) = (t / i, t % i);
            let c = i / (h * w);
            let (ch, p) = (col / (h * w), col % (h * w));
            (p * c + ch) * o + oo
        }
        (&[o, i], None) => {
            let (oo, col) = (t / i, t % i);
            col * o + oo
        }
        _ => unreachable!("DeepID weights are 2-D or 4-D"),
    }
}

fn to_torch(name: &str, keras: &Param, torch_shape: &[usize]) -> Param {
    let index = keras_index(name, torch_shape);
    let data = (0..keras.data.len())
        .map(|t| keras.data[index(t)])
        .collect();
    Param::new(torch_shape.to_vec(), data)
}

fn to_keras(name: &str, torch: &Param) -> Param {
    let index = keras_index(name, &torch.shape);
    let mut data = vec![0.0; torch.data.len()];
    for (t, v) in torch.data.iter().enumerate() {
        data[index(t)] = *v;
    }
    Param::new(keras_shape(&torch.shape), data)
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
pub(crate) fn check_signature(path: &Path) -> Result<()> {
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
