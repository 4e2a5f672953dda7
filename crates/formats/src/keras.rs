//! Keras HDF5 weights <-> [`DeepIdWeights`].
//!
//! Reads Keras 2 weights-only files (`layer_names` at the root) and full-model files (weights
//! under `model_weights/`), with Keras 2 (`kernel:0`) or Keras 3 (`kernel`) weight names, by
//! following each layer's `weight_names` attribute. Keras computes in NHWC and flattens in
//! (h, w, c) order; the PyTorch contract is NCHW, so kernels and dense columns are permuted here.

use crate::error::{Error, Result, WithPath};
use crate::files::sha256_file;
use hdf5::types::{FixedAscii, TypeDescriptor, VarLenAscii, VarLenUnicode};
use model::layout::{from_matrix, keras_shape, to_matrix};
use model::weights::{check_shape, Layer, Param};
use model::{DeepIdWeights, LayerName, Layers, Provenance};
use std::path::Path;

/// Imports a Keras DeepID weights file. Layers without weights (input, pooling, flatten, ...)
/// may have any name; a layer with weights that DeepID does not have, or a DeepID layer with
/// weights besides its kernel and bias, is refused rather than silently dropped. A full model
/// the pipeline exported keeps its record (pruned channels, fine-tuning) from the root
/// attribute `fineprune`.
pub fn import(path: &Path, input_scale: f64) -> Result<DeepIdWeights> {
    crate::h5::check_signature(path)?;
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
    // A layer's group and the names of its weights.
    let layer = |name: &str| -> Result<(hdf5::Group, Vec<String>)> {
        let group = root
            .group(name)
            .map_err(|_| Error::invalid(path, format!("layer {name} has no weight group")))?;
        let weights = read_strings(&group.attr("weight_names").at(path)?).at(path)?;
        Ok((group, weights))
    };
    for name in names.iter().filter(|n| LayerName::parse(n).is_none()) {
        // Keras gives every layer a group; one without (or without `weight_names`) has no
        // weights Keras would load either.
        let weights = layer(name).map(|(_, w)| w).unwrap_or_default();
        if !weights.is_empty() {
            return Err(Error::invalid(
                path,
                format!(
                    "layer {name} (weights {}) is not one of DeepID's layers with weights ({})",
                    weights.join(", "),
                    LayerName::ALL.map(LayerName::as_str).join(", ")
                ),
            ));
        }
    }
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
        let (group, weight_names) = layer(name.as_str())?;
        if let Some(extra) = weight_names
            .iter()
            .find(|w| !matches!(role(w), "kernel" | "bias"))
        {
            return Err(Error::invalid(
                path,
                format!("layer {name} has weight {extra} besides DeepID's kernel and bias"),
            ));
        }
        let find = |want: &str| -> Result<Param> {
            let wn = weight_names
                .iter()
                .find(|w| role(w) == want)
                .ok_or_else(|| {
                    Error::invalid(path, format!("layer {name} has no {want} weight"))
                })?;
            let ds = group.dataset(wn).map_err(|_| {
                Error::invalid(path, format!("layer {name}: dataset {wn} is missing"))
            })?;
            crate::h5::check_filters(path, wn, &ds)?;
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
        check_shape(
            path,
            name,
            "kernel",
            &layer.weight.shape,
            &keras_shape(&want),
        )?;
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
    let mut provenance = Provenance::new(source, sha256_file(path)?, input_scale);
    if let Ok(attr) = file.attr(PROVENANCE_ATTR) {
        let text = read_strings(&attr).at(path)?.concat();
        let map = serde_json::from_str(&text).map_err(|e| {
            Error::invalid(
                path,
                format!("attribute {PROVENANCE_ATTR} is not a JSON map of strings: {e}"),
            )
        })?;
        let recorded = Provenance::from_metadata(map, path)?;
        provenance.pruned = recorded.pruned;
        provenance.finetuned = recorded.finetuned;
    }
    Ok(DeepIdWeights { layers, provenance })
}

/// The root attribute of an exported full model holding the pipeline's record (JSON).
const PROVENANCE_ATTR: &str = "fineprune";

/// What a Keras weight is (`kernel`, `bias`, ...) from its name: `conv_1/kernel:0` in Keras 2,
/// `conv_1/kernel` in Keras 3.
fn role(weight: &str) -> &str {
    weight
        .rsplit_once('/')
        .map_or(weight, |(_, last)| last)
        .trim_end_matches(":0")
}

/// Writes a Keras 2 weights-only file (what `model.save_weights("x.h5")` writes) that Keras
/// loads into the DeepID architecture and [`import`] reads back bit for bit. `generated` tags
/// the file as made by `synth`.
pub fn export(weights: &DeepIdWeights, path: &Path, generated: bool) -> Result<()> {
    DeepIdWeights::validate(&weights.layers, path)?;
    let out = crate::atomic::AtomicFile::new(path)?;
    write_weights_file(weights, out.temp_path(), generated).at(path)?;
    out.commit()
}

/// Writes a Keras 2.3 full-model file (what `model.save("x.h5")` writes: `model_config` and
/// `model_weights`), which `keras.models.load_model` opens in Keras 2 and 3 with no custom
/// layers: DeepID with a softmax output, taking NHWC pixels multiplied by the network's input
/// scale, as the source network did. The pipeline's provenance (pruned channels, source,
/// input scale) rides along in the root attribute `fineprune` (JSON).
pub fn export_model(weights: &DeepIdWeights, path: &Path) -> Result<()> {
    DeepIdWeights::validate(&weights.layers, path)?;
    let out = crate::atomic::AtomicFile::new(path)?;
    write_model_file(weights, out.temp_path()).at(path)?;
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

/// The Keras 2.3 `model_config` of DeepID with `classes` outputs, layers in [`KERAS_LAYERS`]
/// order.
fn model_config(classes: usize) -> serde_json::Value {
    use model::geometry::{Conv, CONV_1, CONV_2, CONV_3, CONV_4, FEATURES, INPUT_HW};
    use serde_json::{json, Value};
    let initializers = json!({
        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": null}},
        "bias_initializer": {"class_name": "Zeros", "config": {}},
        "kernel_regularizer": null, "bias_regularizer": null, "activity_regularizer": null,
        "kernel_constraint": null, "bias_constraint": null,
    });
    let with = |mut a: Value, b: &Value| {
        let b = b.as_object().expect("a JSON object").clone();
        a.as_object_mut().expect("a JSON object").extend(b);
        a
    };
    let layer = |class: &str, name: &str, inputs: &[&str], extra: Value| {
        let config = with(
            json!({"name": name, "trainable": true, "dtype": "float32"}),
            &extra,
        );
        let nodes: Vec<Value> = inputs.iter().map(|i| json!([i, 0, 0, {}])).collect();
        json!({
            "name": name,
            "class_name": class,
            "config": config,
            "inbound_nodes": if inputs.is_empty() { json!([]) } else { json!([nodes]) },
        })
    };
    let conv = |name: &str, input: &str, c: Conv| {
        let k = c.kernel;
        let extra = json!({
            "filters": c.outputs, "kernel_size": [k, k], "strides": [1, 1],
            "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
            "activation": "relu", "use_bias": true,
        });
        layer("Conv2D", name, &[input], with(extra, &initializers))
    };
    let pool = |name: &str, input: &str| {
        let extra = json!({
            "pool_size": [2, 2], "padding": "valid", "strides": [2, 2],
            "data_format": "channels_last",
        });
        layer("MaxPooling2D", name, &[input], extra)
    };
    let flatten = |name: &str, input: &str| {
        layer(
            "Flatten",
            name,
            &[input],
            json!({"data_format": "channels_last"}),
        )
    };
    let dense = |name: &str, input: &str, units: usize, activation: &str| {
        let extra = json!({"units": units, "activation": activation, "use_bias": true});
        layer("Dense", name, &[input], with(extra, &initializers))
    };
    let (h, w) = INPUT_HW;
    let layers = vec![
        json!({
            "name": "input",
            "class_name": "InputLayer",
            "config": {
                "batch_input_shape": [null, h, w, CONV_1.inputs],
                "dtype": "float32", "sparse": false, "name": "input",
            },
            "inbound_nodes": [],
        }),
        conv("conv_1", "input", CONV_1),
        pool("pool_1", "conv_1"),
        conv("conv_2", "pool_1", CONV_2),
        pool("pool_2", "conv_2"),
        conv("conv_3", "pool_2", CONV_3),
        pool("pool_3", "conv_3"),
        conv("conv_4", "pool_3", CONV_4),
        flatten("flatten_1", "pool_3"),
        flatten("flatten_2", "conv_4"),
        dense("fc_1", "flatten_1", FEATURES, "linear"),
        dense("fc_2", "flatten_2", FEATURES, "linear"),
        layer("Add", "add_1", &["fc_1", "fc_2"], json!({})),
        layer(
            "Activation",
            "activation_1",
            &["add_1"],
            json!({"activation": "relu"}),
        ),
        dense("output", "activation_1", classes, "softmax"),
    ];
    debug_assert!(layers.iter().map(|l| &l["name"]).eq(KERAS_LAYERS.iter()));
    json!({
        "class_name": "Model",
        "config": {
            "name": "deepid",
            "layers": layers,
            "input_layers": [["input", 0, 0]],
            "output_layers": [["output", 0, 0]],
        },
    })
}

/// Compiled as CSAW's networks were (Adam, integer labels), so `model.evaluate` works at once.
fn training_config() -> serde_json::Value {
    serde_json::json!({
        "optimizer_config": {
            "class_name": "Adam",
            "config": {
                "learning_rate": 0.001, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-07,
                "amsgrad": false,
            },
        },
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "weighted_metrics": null,
        "loss_weights": null,
        "sample_weight_mode": null,
    })
}

fn string_attr(loc: &hdf5::Location, name: &str, value: &str) -> hdf5::Result<()> {
    let value: VarLenUnicode = value
        .parse()
        .map_err(|e| hdf5::Error::from(format!("{e}")))?;
    loc.new_attr::<VarLenUnicode>()
        .create(name)?
        .write_scalar(&value)
}

fn write_weights_file(weights: &DeepIdWeights, path: &Path, generated: bool) -> hdf5::Result<()> {
    use crate::h5::{ascii, GENERATOR, GENERATOR_ATTR};
    let file = hdf5::File::create(path)?;
    if generated {
        file.new_attr::<FixedAscii<64>>()
            .create(GENERATOR_ATTR)?
            .write_scalar(&ascii(GENERATOR))?;
    }
    write_layers(&file, weights)?;
    file.close()
}

fn write_model_file(weights: &DeepIdWeights, path: &Path) -> hdf5::Result<()> {
    let file = hdf5::File::create(path)?;
    string_attr(
        &file,
        "model_config",
        &model_config(weights.classes()).to_string(),
    )?;
    string_attr(&file, "training_config", &training_config().to_string())?;
    string_attr(&file, "keras_version", KERAS_VERSION)?;
    string_attr(&file, "backend", "tensorflow")?;
    let provenance = serde_json::to_string(&weights.provenance.to_metadata()).expect("strings");
    string_attr(&file, PROVENANCE_ATTR, &provenance)?;
    write_layers(&crate::h5::group(&file, "model_weights")?, weights)?;
    file.close()
}

/// The Keras release whose file layout the exports follow (that of the reference's users).
const KERAS_VERSION: &str = "2.3.1";

/// The layer groups of a Keras weights file (at the root of a weights-only file, under
/// `model_weights` in a full model).
fn write_layers(root: &hdf5::Group, weights: &DeepIdWeights) -> hdf5::Result<()> {
    use crate::h5::{ascii, group as new_group};
    let names: Vec<FixedAscii<64>> = KERAS_LAYERS.iter().map(|s| ascii(s)).collect();
    root.new_attr_builder()
        .with_data(&names)
        .create("layer_names")?;
    root.new_attr::<FixedAscii<64>>()
        .create("backend")?
        .write_scalar(&ascii("tensorflow"))?;
    root.new_attr::<FixedAscii<64>>()
        .create("keras_version")?
        .write_scalar(&ascii(KERAS_VERSION))?;
    for name in KERAS_LAYERS {
        let group = new_group(root, name)?;
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
    Ok(())
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
