//! ONNX export (opset 13, IR version 8) for serving stacks: one network as a graph from its
//! input to its class probabilities and class, and the repaired ensemble G(B, B') as one
//! graph that answers B's class where B and B' agree and `classes` (the "backdoor" label N)
//! where they do not.
//!
//! The input `input` is (N, 3, 55, 47) float32 in the CSAW layout: pixels times the network's
//! input scale (`input_scale` in the metadata; 1/255 for the CSAW-2020 networks). Weights go
//! in as stored ((out, in, kh, kw) kernels, (out, in) dense matrices in NCHW flatten order),
//! so the graph is Conv/Relu/MaxPool three times, conv_4, Flatten and Gemm. The messages are
//! the subset of `onnx.proto` these graphs use, with its field numbers.

use crate::atomic::AtomicFile;
use crate::error::{Result, WithPath};
use model::geometry::{LayerName, INPUT_SHAPE};
use model::DeepIdWeights;
use prost::Message;
use std::path::Path;

const OPSET: i64 = 13;
const IR_VERSION: i64 = 8;
/// TensorProto.DataType.
const FLOAT: i32 = 1;
const INT64: i32 = 7;

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(string, tag = "3")]
    producer_version: String,
    #[prost(string, tag = "6")]
    doc_string: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
    #[prost(message, repeated, tag = "14")]
    metadata_props: Vec<StringStringEntryProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct StringStringEntryProto {
    #[prost(string, tag = "1")]
    key: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "1")]
    node: Vec<NodeProto>,
    #[prost(string, tag = "2")]
    name: String,
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct NodeProto {
    #[prost(string, repeated, tag = "1")]
    input: Vec<String>,
    #[prost(string, repeated, tag = "2")]
    output: Vec<String>,
    #[prost(string, tag = "3")]
    name: String,
    #[prost(string, tag = "4")]
    op_type: String,
    #[prost(message, repeated, tag = "5")]
    attribute: Vec<AttributeProto>,
}

/// AttributeProto.AttributeType.
const ATTR_INT: i32 = 2;
const ATTR_INTS: i32 = 7;

#[derive(Clone, PartialEq, Message)]
struct AttributeProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(int64, tag = "3")]
    i: i64,
    #[prost(int64, repeated, tag = "8")]
    ints: Vec<i64>,
    #[prost(int32, tag = "20")]
    r#type: i32,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(int64, repeated, tag = "1")]
    dims: Vec<i64>,
    #[prost(int32, tag = "2")]
    data_type: i32,
    #[prost(string, tag = "8")]
    name: String,
    /// Little-endian values.
    #[prost(bytes = "vec", tag = "9")]
    raw_data: Vec<u8>,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorTypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorTypeProto {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(oneof = "DimensionValue", tags = "1, 2")]
    value: Option<DimensionValue>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
enum DimensionValue {
    #[prost(int64, tag = "1")]
    DimValue(i64),
    #[prost(string, tag = "2")]
    DimParam(String),
}

/// A graph under construction.
#[derive(Default)]
struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
}

impl Graph {
    fn node(&mut self, op: &str, inputs: &[&str], output: &str, attributes: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: vec![output.to_string()],
            name: output.to_string(),
            op_type: op.to_string(),
            attribute: attributes,
        });
    }

    fn floats(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        self.initializers.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.to_string(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }

    fn int64(&mut self, name: &str, value: i64) {
        self.initializers.push(TensorProto {
            dims: Vec::new(),
            data_type: INT64,
            name: name.to_string(),
            raw_data: value.to_le_bytes().to_vec(),
        });
    }

    /// DeepID from `input` to `<prefix>probabilities` and `<prefix>class`; returns their names.
    fn network(&mut self, w: &DeepIdWeights, input: &str, prefix: &str) -> (String, String) {
        let name = |s: &str| format!("{prefix}{s}");
        for layer in LayerName::ALL {
            let l = w.layers.get(layer);
            self.floats(
                &name(&format!("{layer}.weight")),
                &l.weight.shape,
                &l.weight.data,
            );
            self.floats(&name(&format!("{layer}.bias")), &l.bias.shape, &l.bias.data);
        }
        let params = |layer: LayerName| {
            [
                name(&format!("{layer}.weight")),
                name(&format!("{layer}.bias")),
            ]
        };
        let mut x = input.to_string();
        for (layer, pooled) in [
            (LayerName::Conv1, true),
            (LayerName::Conv2, true),
            (LayerName::Conv3, true),
            (LayerName::Conv4, false),
        ] {
            let [weight, bias] = params(layer);
            let out = name(layer.as_str());
            self.node("Conv", &[&x, &weight, &bias], &out, Vec::new());
            let relu = name(&format!("{layer}_relu"));
            self.node("Relu", &[&out], &relu, Vec::new());
            x = relu;
            if pooled {
                let pool = name(&format!("{layer}_pool"));
                self.node(
                    "MaxPool",
                    &[&x],
                    &pool,
                    vec![ints("kernel_shape", &[2, 2]), ints("strides", &[2, 2])],
                );
                x = pool;
            }
        }
        let pool_3 = name("conv_3_pool");
        let mut dense = Vec::new();
        for (layer, from) in [
            (LayerName::Fc1, pool_3.as_str()),
            (LayerName::Fc2, x.as_str()),
        ] {
            let flat = name(&format!("{layer}_input"));
            self.node("Flatten", &[from], &flat, vec![int("axis", 1)]);
            let [weight, bias] = params(layer);
            let out = name(layer.as_str());
            self.node(
                "Gemm",
                &[&flat, &weight, &bias],
                &out,
                vec![int("transB", 1)],
            );
            dense.push(out);
        }
        let (sum, hidden) = (name("fc_sum"), name("hidden"));
        self.node("Add", &[&dense[0], &dense[1]], &sum, Vec::new());
        self.node("Relu", &[&sum], &hidden, Vec::new());
        let [weight, bias] = params(LayerName::Output);
        let (logits, probabilities, class) = (name("logits"), name("probabilities"), name("class"));
        self.node(
            "Gemm",
            &[&hidden, &weight, &bias],
            &logits,
            vec![int("transB", 1)],
        );
        self.node("Softmax", &[&logits], &probabilities, vec![int("axis", 1)]);
        // Softmax is monotonic: the class is the logits' argmax, the first among equals.
        self.node(
            "ArgMax",
            &[&logits],
            &class,
            vec![int("axis", 1), int("keepdims", 0)],
        );
        (probabilities, class)
    }

    fn model(
        self,
        inputs: Vec<ValueInfoProto>,
        outputs: Vec<ValueInfoProto>,
        doc: String,
        scale: f64,
    ) -> ModelProto {
        ModelProto {
            ir_version: IR_VERSION,
            producer_name: "fineprune".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: doc,
            graph: Some(GraphProto {
                node: self.nodes,
                name: "deepid".into(),
                initializer: self.initializers,
                input: inputs,
                output: outputs,
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: vec![StringStringEntryProto {
                key: "input_scale".into(),
                value: scale.to_string(),
            }],
        }
    }
}

fn int(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i,
        r#type: ATTR_INT,
        ..Default::default()
    }
}

fn ints(name: &str, ints: &[i64]) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        ints: ints.to_vec(),
        r#type: ATTR_INTS,
        ..Default::default()
    }
}

/// A tensor value with a symbolic batch dimension `N` first.
fn value(name: &str, elem_type: i32, rest: &[usize]) -> ValueInfoProto {
    let dims = std::iter::once(DimensionValue::DimParam("N".into()))
        .chain(rest.iter().map(|&d| DimensionValue::DimValue(d as i64)))
        .map(|v| Dimension { value: Some(v) })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim: dims }),
            }),
        }),
    }
}

fn input_doc(w: &DeepIdWeights) -> String {
    format!(
        "input: (N, 3, 55, 47) float32, CSAW layout, pixels times the input scale {}",
        w.provenance.input_scale
    )
}

fn write(model: &ModelProto, path: &Path) -> Result<()> {
    let out = AtomicFile::new(path)?;
    std::fs::write(out.temp_path(), model.encode_to_vec()).at(out.temp_path())?;
    out.commit()
}

/// One network: outputs `probabilities` (N, classes) and `class` (N, int64).
pub fn export(w: &DeepIdWeights, path: &Path) -> Result<()> {
    let mut g = Graph::default();
    let (probabilities, class) = g.network(w, "input", "");
    let doc = format!("DeepID; {}; class = argmax of probabilities", input_doc(w));
    let model = g.model(
        vec![value("input", FLOAT, &INPUT_SHAPE)],
        vec![
            value(&probabilities, FLOAT, &[w.classes()]),
            value(&class, INT64, &[]),
        ],
        doc,
        w.provenance.input_scale,
    );
    write(&model, path)
}

/// The repaired ensemble G(B, B'): output `class` (N, int64), B's class where B and B' agree,
/// else `classes` (the label N, "backdoor"). Both networks must take the same input scale.
pub fn export_repaired(b: &DeepIdWeights, b_prime: &DeepIdWeights, path: &Path) -> Result<()> {
    assert_eq!(b.provenance.input_scale, b_prime.provenance.input_scale);
    let mut g = Graph::default();
    let (_, b_class) = g.network(b, "input", "b.");
    let (_, b_prime_class) = g.network(b_prime, "input", "b_prime.");
    let backdoor = b.classes();
    g.int64("backdoor", backdoor as i64);
    g.node("Equal", &[&b_class, &b_prime_class], "agree", Vec::new());
    g.node(
        "Where",
        &["agree", &b_class, "backdoor"],
        "class",
        Vec::new(),
    );
    let doc = format!(
        "G(B, B'): B's class where B and B' agree, else {backdoor} (backdoor); {}",
        input_doc(b)
    );
    let model = g.model(
        vec![value("input", FLOAT, &INPUT_SHAPE)],
        vec![value("class", INT64, &[])],
        doc,
        b.provenance.input_scale,
    );
    write(&model, path)
}
