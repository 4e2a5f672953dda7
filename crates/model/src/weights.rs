//! DeepID parameters in the PyTorch tensor contract (`conv_k.weight` as (out, in, kh, kw),
//! dense `.weight` as (out, in), NCHW flatten order), and where they came from.

use crate::error::{Error, Result};
use crate::geometry::{LayerName, Layers, CONV3_CHANNELS};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

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

/// How a network was derived from the backdoored network B.
#[derive(Debug, Clone, PartialEq)]
pub struct Pruned {
    /// conv_3 channels zeroed, in pruning order.
    pub channels: Vec<usize>,
    /// The accuracy-drop threshold whose network this is, if any.
    pub threshold_percent: Option<f64>,
    /// [`DeepIdWeights::fingerprint`] of B.
    pub backdoored: String,
}

/// Fine-tuning that produced a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Finetuned {
    /// The file it started from.
    pub from: String,
    /// The settings, as JSON.
    pub settings: String,
}

/// Where a set of weights came from; stored as safetensors metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    pub source: String,
    pub source_sha256: String,
    pub input_scale: f64,
    pub pruned: Option<Pruned>,
    pub finetuned: Option<Finetuned>,
}

impl Provenance {
    pub fn new(source: String, source_sha256: String, input_scale: f64) -> Self {
        Self {
            source,
            source_sha256,
            input_scale,
            pruned: None,
            finetuned: None,
        }
    }

    /// The metadata map of a model file (`architecture` and `classes` are the file writer's).
    pub fn to_metadata(&self) -> BTreeMap<String, String> {
        let mut m = BTreeMap::from([
            ("input_scale".to_string(), format!("{:?}", self.input_scale)),
            ("source".to_string(), self.source.clone()),
            ("source_sha256".to_string(), self.source_sha256.clone()),
        ]);
        if let Some(p) = &self.pruned {
            let channels = serde_json::to_string(&p.channels).expect("JSON");
            m.insert(PRUNED_CHANNELS.into(), channels);
            m.insert(BACKDOORED.into(), p.backdoored.clone());
            if let Some(t) = p.threshold_percent {
                m.insert(THRESHOLD.into(), format!("{t}"));
            }
        }
        if let Some(f) = &self.finetuned {
            m.insert(FINETUNED_FROM.into(), f.from.clone());
            m.insert(FINETUNE.into(), f.settings.clone());
        }
        m
    }

    /// Reads [`Provenance::to_metadata`]'s map back; `path` names the file in errors.
    pub fn from_metadata(mut m: BTreeMap<String, String>, path: &Path) -> Result<Self> {
        let bad = |key: &str, v: &str, what: &str| {
            Error::invalid(path, format!("metadata {key} {v:?} is not {what}"))
        };
        let input_scale = match m.remove("input_scale") {
            Some(s) => s
                .parse::<f64>()
                .ok()
                .filter(|v| INPUT_SCALE_RANGE.contains(v))
                .ok_or_else(|| bad("input_scale", &s, "a number in [1e-6, 1e3]"))?,
            None => 1.0,
        };
        let pruned = match m.remove(PRUNED_CHANNELS) {
            Some(s) => {
                let channels: Vec<usize> = serde_json::from_str(&s)
                    .map_err(|_| bad(PRUNED_CHANNELS, &s, "a JSON list of channel indices"))?;
                if let Some(c) = channels.iter().find(|&&c| c >= CONV3_CHANNELS) {
                    return Err(Error::invalid(
                        path,
                        format!("metadata {PRUNED_CHANNELS} names channel {c}; conv_3 has {CONV3_CHANNELS}"),
                    ));
                }
                let threshold_percent = match m.remove(THRESHOLD) {
                    Some(t) => Some(
                        t.parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite())
                            .ok_or_else(|| bad(THRESHOLD, &t, "a number"))?,
                    ),
                    None => None,
                };
                Some(Pruned {
                    channels,
                    threshold_percent,
                    backdoored: m.remove(BACKDOORED).unwrap_or_default(),
                })
            }
            None => None,
        };
        let finetuned = m.remove(FINETUNED_FROM).map(|from| Finetuned {
            from,
            settings: m.remove(FINETUNE).unwrap_or_default(),
        });
        Ok(Self {
            source: m.remove("source").unwrap_or_default(),
            source_sha256: m.remove("source_sha256").unwrap_or_default(),
            input_scale,
            pruned,
            finetuned,
        })
    }
}

const PRUNED_CHANNELS: &str = "pruned_channels";
const THRESHOLD: &str = "threshold_percent";
const BACKDOORED: &str = "backdoored_fingerprint";
const FINETUNED_FROM: &str = "finetuned_from";
const FINETUNE: &str = "finetune";

/// What a pixel in 0..255 may be multiplied by before the network sees it: beyond this range a
/// network's inputs would be all but zero or overflow its activations.
pub const INPUT_SCALE_RANGE: std::ops::RangeInclusive<f64> = 1e-6..=1e3;

/// All DeepID parameters, PyTorch layout.
#[derive(Debug, Clone, PartialEq)]
pub struct DeepIdWeights {
    pub layers: Layers<Layer>,
    pub provenance: Provenance,
}

/// Fails unless `part` (weight, kernel, bias) of layer `name` has DeepID's shape `want`.
pub fn check_shape(
    path: &Path,
    name: LayerName,
    part: &str,
    shape: &[usize],
    want: &[usize],
) -> Result<()> {
    if shape == want {
        return Ok(());
    }
    Err(Error::invalid(
        path,
        format!("layer {name}: {part} has shape {shape:?}, DeepID needs {want:?}"),
    ))
}

impl DeepIdWeights {
    pub fn classes(&self) -> usize {
        self.layers.output.weight.shape[0]
    }

    /// Checks every layer against DeepID's shapes; `path` names the file in the error.
    pub fn validate(layers: &Layers<Layer>, path: &Path) -> Result<()> {
        let classes = layers.output.weight.shape.first().copied().unwrap_or(0);
        if classes < 2 {
            return Err(Error::invalid(
                path,
                "output layer has fewer than 2 classes",
            ));
        }
        for (name, layer) in layers.iter() {
            let want = name.weight_shape(classes);
            check_shape(path, name, "weight", &layer.weight.shape, &want)?;
            check_shape(path, name, "bias", &layer.bias.shape, &[want[0]])?;
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

    /// conv_3 channel `c`'s kernel (a contiguous run in the PyTorch layout) and bias.
    fn conv3_channel(&mut self, c: usize) -> (&mut [f32], &mut f32) {
        let conv3 = &mut self.layers.conv_3;
        let per_channel = conv3.weight.data.len() / CONV3_CHANNELS;
        (
            &mut conv3.weight.data[c * per_channel..][..per_channel],
            &mut conv3.bias.data[c],
        )
    }

    /// Zeroes conv_3 output channels: their kernels and biases (the pruning operation).
    pub fn prune_conv3(&mut self, channels: &[usize]) {
        for &c in channels {
            let (kernel, bias) = self.conv3_channel(c);
            kernel.fill(0.0);
            *bias = 0.0;
        }
    }

    /// The first of `channels` whose kernel or bias is not zero.
    pub fn live_channel(&self, channels: &[usize]) -> Option<usize> {
        let conv3 = &self.layers.conv_3;
        let per_channel = conv3.weight.data.len() / CONV3_CHANNELS;
        channels.iter().copied().find(|&c| {
            conv3.bias.data[c] != 0.0
                || conv3.weight.data[c * per_channel..][..per_channel]
                    .iter()
                    .any(|v| *v != 0.0)
        })
    }

    /// conv_3 channels recorded as pruned.
    pub fn pruned_channels(&self) -> &[usize] {
        self.provenance
            .pruned
            .as_ref()
            .map(|p| p.channels.as_slice())
            .unwrap_or_default()
    }

    /// An identifier of this exact network (every tensor and the input scale), to tie derived
    /// files to the model they came from.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for (_, l) in self.layers.iter() {
            for p in [&l.weight, &l.bias] {
                for v in &p.data {
                    h.update(v.to_le_bytes());
                }
            }
        }
        h.update(self.provenance.input_scale.to_le_bytes());
        hex(&h.finalize())[..16].to_string()
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
