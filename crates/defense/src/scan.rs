//! The scan stage: does a network carry a backdoor, towards which label, and does the repaired
//! network still answer to it? From clean validation images alone, Neural Cleanse's trigger
//! inversion ([`model::cleanse`]) looks for each label's smallest trigger; a backdoor's target
//! needs a far smaller one than the others (anomaly index). B is scanned, then every network
//! finetune made; B's most anomalous trigger, stamped on held-out clean images, estimates how
//! often each network still follows the backdoor (an estimate: the inverted trigger stands in
//! for the attacker's).
//!
//! With many classes a screen chooses which labels to invert: each pool_3 channel raised in
//! turn ([`cleanse::stimulate`]); the `candidates` labels that single channels send the most
//! images to get a full inversion, with `reference` labels drawn at random as the baseline. A
//! backdoor spread over many channels, none of which alone sends images to its target, can be
//! missed. The anomaly index is the deviation of ln(mask L1) below the reference labels'
//! median, in their standard deviations, corrected for the number of labels the top one was
//! chosen from.

use crate::config::ScanConfig;
use crate::fingerprint::check_same_model;
use crate::models::finetuned;
use crate::sweep::PruneSweep;
use crate::{Error, Result};
use formats::paths::{self, label, Stage, WorkPaths};
use formats::source::Images;
use formats::table::{Column, Table};
use formats::ModelFile;
use model::cleanse::{self, Inverted, Trigger};
use model::geometry::IMAGE_LEN;
use model::progress::Progress;
use model::train::Examples;
use model::{DeepIdWeights, Network};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// What the scan stage reads and writes.
pub struct ScanFiles {
    pub model: PathBuf,
    /// Clean validation images.
    pub valid: PathBuf,
    pub prune_sweep: PathBuf,
    /// Where `finetune` wrote its networks and `models.json`.
    pub finetune_dir: PathBuf,
    pub output_dir: PathBuf,
}

impl ScanFiles {
    /// The files make gives the stage in the work folder `work`.
    pub fn in_work(work: &WorkPaths) -> Self {
        Self {
            model: work.model(),
            valid: work.dataset(paths::Split::Valid),
            prune_sweep: work.prune_sweep(),
            finetune_dir: work.stage(Stage::Finetune),
            output_dir: work.stage(Stage::Scan),
        }
    }
}

/// One scanned label.
#[derive(Debug, Clone)]
struct Label {
    label: u32,
    /// The screen's score ([`cleanse::stimulate`]; none when every label is inverted).
    stimulated: Option<f64>,
    /// A full inversion's result, for the candidates and the reference labels.
    full: Option<Full>,
}

#[derive(Debug, Clone)]
struct Full {
    trigger: Trigger,
    /// The inversion's kept working triggers ([`Inverted::kept`]).
    kept: Vec<Trigger>,
    works: bool,
    mask_l1: f64,
    /// Standard deviations of ln(mask L1) below the reference labels' median.
    deviation: f64,
    anomaly_index: f64,
    /// The trigger's success on held-out clean images of other labels, percent.
    success: f64,
    /// Whether the label was drawn as a reference (else a candidate, or every label was).
    reference: bool,
}

/// One network's scan, as the summary reports it.
#[derive(Debug, Clone, Serialize)]
pub struct ScanRow {
    pub network: String,
    pub threshold_percent: Option<f64>,
    /// The label with the largest anomaly index, and that index.
    pub top_label: u32,
    pub anomaly_index: f64,
    pub mask_l1: f64,
    /// Whether the top label's index exceeds the threshold.
    pub flagged: bool,
    /// Held-out success of B's top trigger on this network: the estimated residual attack
    /// success; none when B's top label is not flagged (no backdoor found to follow).
    pub estimated_attack_success: Option<f64>,
    pub labels_inverted: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ScanSummary {
    pub rows: Vec<ScanRow>,
    pub outputs: Vec<PathBuf>,
}

/// The scan's clean images: one part to invert triggers on, one to score them.
struct Split {
    fit: Examples,
    held: Examples,
}

impl Split {
    /// `share` of `valid` held out (at least one image, and one left to invert on); the fit
    /// part compacted in `valid`'s own buffer, so the images are held once.
    fn new(mut valid: Examples, share: f64, seed: u64) -> Self {
        let (fit, held) = valid.split(share, seed);
        let held = {
            let (pixels, labels) = held.gather(&(0..held.len()).collect::<Vec<_>>());
            Examples { pixels, labels }
        };
        let fit = fit.ids;
        // `fit` ascends: each image moves down or stays.
        for (k, &i) in fit.iter().enumerate() {
            valid
                .pixels
                .copy_within(i * IMAGE_LEN..(i + 1) * IMAGE_LEN, k * IMAGE_LEN);
            valid.labels[k] = valid.labels[i];
        }
        valid.pixels.truncate(fit.len() * IMAGE_LEN);
        valid.labels.truncate(fit.len());
        Self { fit: valid, held }
    }
}

/// Up to `most` of `data`'s images, evenly spaced, and their labels.
fn spread(data: &Examples, most: usize) -> (Vec<f32>, Vec<u32>) {
    let pick: Vec<usize> = (0..data.len())
        .step_by(data.len().div_ceil(most).max(1))
        .collect();
    let images = pick
        .iter()
        .flat_map(|&i| &data.pixels[i * IMAGE_LEN..][..IMAGE_LEN])
        .copied()
        .collect();
    (images, pick.iter().map(|&i| data.labels[i]).collect())
}

/// Inverts `label`'s trigger on the fit images of the other labels.
fn invert(
    net: &Network,
    scale: f32,
    split: &Split,
    label: u32,
    settings: &cleanse::Settings,
) -> Result<Inverted> {
    cleanse::invert(net, scale, &split.fit, label, settings)
        .map_err(|e| Error::diverged(e, "scan", "scan.learning_rate"))
}

/// Which labels get a full inversion: all of them when there are at most `candidates +
/// reference`; else the `candidates` labels that stimulated channels send the most images
/// to ([`cleanse::stimulate`] on up to `screen_images` fit images), and `reference` others
/// drawn at random. Returns (label, drawn as a reference) in label order, and per label the
/// stimulation's share.
fn choose(
    network: &Network,
    fit: &Examples,
    config: &ScanConfig,
) -> (Vec<(u32, bool)>, Option<Vec<f64>>) {
    let classes = network.classes() as u32;
    if network.classes() <= config.candidates + config.reference {
        return ((0..classes).map(|l| (l, true)).collect(), None);
    }
    let (images, labels) = spread(fit, config.screen_images);
    let shares = cleanse::stimulate(network, (&images, &labels));
    let mut by_share: Vec<u32> = (0..classes).collect();
    by_share.sort_by(|&a, &b| {
        shares[b as usize]
            .total_cmp(&shares[a as usize])
            .then(a.cmp(&b))
    });
    let (candidates, rest) = by_share.split_at(config.candidates);
    let mut rest = rest.to_vec();
    rest.sort_unstable();
    rest.shuffle(&mut ChaCha8Rng::seed_from_u64(config.seed));
    let mut chosen: Vec<(u32, bool)> = candidates
        .iter()
        .map(|&l| (l, false))
        .chain(rest.iter().take(config.reference).map(|&l| (l, true)))
        .collect();
    chosen.sort_unstable();
    (chosen, Some(shares))
}

/// Scans one network: the screen (when there are many classes), full inversions, anomaly
/// indices and held-out success.
fn scan_network(
    w: &DeepIdWeights,
    split: &Split,
    config: &ScanConfig,
    name: &str,
    progress: &dyn Progress,
) -> Result<Vec<Label>> {
    let network = Network::new(w);
    let scale = w.provenance.input_scale as f32;
    let (chosen, shares) = choose(&network, &split.fit, config);
    progress.start(&format!("{name}: invert"), chosen.len() as u64);
    let full = config.full();
    let inverted = chosen
        .par_iter()
        .map(|&(l, _)| {
            let r = invert(&network, scale, split, l, &full);
            progress.advance(1);
            r
        })
        .collect::<Result<Vec<Inverted>>>()?;
    progress.finish();
    let norms: Vec<f64> = inverted.iter().map(|i| i.trigger.l1()).collect();
    let baseline: Vec<f64> = norms
        .iter()
        .zip(&chosen)
        .filter(|(_, (_, reference))| *reference)
        .map(|(n, _)| *n)
        .collect();
    let deviations = cleanse::deviations(&norms, &baseline);
    let mut labels: Vec<Label> = (0..network.classes())
        .map(|l| Label {
            label: l as u32,
            stimulated: shares.as_ref().map(|c| c[l]),
            full: None,
        })
        .collect();
    for ((&(l, reference), inv), deviation) in chosen.iter().zip(inverted).zip(deviations) {
        let held = &split.held;
        let success = cleanse::success(&network, &inv.trigger, (&held.pixels, &held.labels), l);
        labels[l as usize].full = Some(Full {
            mask_l1: inv.trigger.l1(),
            works: inv.works,
            trigger: inv.trigger,
            kept: inv.kept,
            deviation,
            anomaly_index: cleanse::anomaly_index(deviation, network.classes()),
            success,
            reference,
        });
    }
    Ok(labels)
}

/// The trigger whose held-out success estimates the attack's: the smallest of the label's
/// kept triggers that sends `success` percent of the fit images of other labels (of up to
/// 1,024 fit images) to it; the largest kept when none does. The smallest working trigger
/// alone worked on one batch and sends fewer held-out images than the attacker's would.
fn confirmed(network: &Network, full: &Full, fit: &Examples, label: u32, success: f64) -> Trigger {
    let (images, labels) = spread(fit, 1024);
    full.kept
        .iter()
        .rev()
        .find(|t| cleanse::success(network, t, (&images, &labels), label) >= success)
        .or(full.kept.first())
        .unwrap_or(&full.trigger)
        .clone()
}

/// The label with the largest anomaly index (the first on ties).
fn top(labels: &[Label]) -> &Label {
    labels
        .iter()
        .filter(|l| l.full.is_some())
        .fold(None::<&Label>, |best, l| match best {
            Some(b) if anomaly(b) >= anomaly(l) => Some(b),
            _ => Some(l),
        })
        .expect("at least one label is inverted")
}

fn anomaly(l: &Label) -> f64 {
    l.full
        .as_ref()
        .map_or(f64::NEG_INFINITY, |f| f.anomaly_index)
}

/// One network's labels as a table: label, the stimulation's share, and for the inverted labels
/// mask L1, whether the trigger works, deviation, anomaly index, held-out success, whether it
/// was a reference label.
fn label_table(labels: &[Label], fingerprint: &str) -> Table {
    let full = |f: &dyn Fn(&Full) -> f64| {
        Column::Float(labels.iter().map(|l| l.full.as_ref().map(f)).collect())
    };
    Table::new()
        .with("label", Column::ints(labels.iter().map(|l| l.label as i32)))
        .with(
            "stimulated",
            Column::Float(labels.iter().map(|l| l.stimulated).collect()),
        )
        .with("mask_l1", full(&|f| f.mask_l1))
        .with("trigger_works", full(&|f| f.works as i32 as f64))
        .with("deviation", full(&|f| f.deviation))
        .with("anomaly_index", full(&|f| f.anomaly_index))
        .with("inverted_trigger_success", full(&|f| f.success))
        .with(
            "reference",
            Column::Int(
                labels
                    .iter()
                    .map(|l| l.full.as_ref().map(|f| f.reference as i32))
                    .collect(),
            ),
        )
        .meta(crate::fingerprint::MODEL_KEY, fingerprint)
}

pub fn run(files: &ScanFiles, config: &ScanConfig, progress: &dyn Progress) -> Result<ScanSummary> {
    let summary_out = files.output_dir.join(paths::SCAN_SUMMARY);
    formats::written::check_paths(
        &[
            ("the network", &files.model),
            ("the validation images", &files.valid),
            ("the prune sweep", &files.prune_sweep),
            (
                "the fine-tuned networks' list",
                &files.finetune_dir.join(paths::FINETUNE_MODELS),
            ),
        ],
        &[("the scan summary", &summary_out)],
    )?;
    let backdoored = DeepIdWeights::load(&files.model)?;
    let fingerprint = backdoored.fingerprint();
    let mut rows = Vec::new();
    let mut outputs = Vec::new();
    if config.enabled {
        let prune = PruneSweep::read(&files.prune_sweep)?;
        check_same_model(&files.prune_sweep, &prune.model_fingerprint, &fingerprint)?;
        let tuned = finetuned(&files.finetune_dir, &prune, &backdoored)?;
        let valid = Images::open(&files.valid, backdoored.classes())?.read_all()?;
        if valid.labels.len() < 2 {
            return Err(Error::invalid(
                &files.valid,
                "the scan needs at least two validation images",
            ));
        }
        let split = Split::new(
            Examples {
                labels: valid.labels.iter().map(|&l| l as u32).collect(),
                pixels: valid.pixels,
            },
            config.holdout,
            config.seed,
        );
        let mut networks: Vec<(String, Option<f64>, &DeepIdWeights)> =
            vec![("backdoored".into(), None, &backdoored)];
        for t in &tuned {
            let name = match t.threshold {
                Some(th) => format!("fine_pruned_{}", label(th)),
                None => "fine_tuned".into(),
            };
            networks.push((name, t.threshold, &t.weights));
        }
        // B's top label and trigger, when flagged.
        let mut b_top: Option<Option<(u32, Trigger)>> = None;
        let mut scanned: Vec<(String, Vec<Label>)> = Vec::new();
        for (name, threshold, w) in networks {
            // Thresholds that prune alike share one network: scanned once.
            let fp = w.fingerprint();
            let labels = match scanned.iter().find(|(f, _)| *f == fp) {
                Some((_, l)) => l.clone(),
                None => {
                    let l = scan_network(w, &split, config, &name, progress)?;
                    scanned.push((fp, l.clone()));
                    l
                }
            };
            let t = top(&labels);
            let f = t.full.as_ref().expect("top is inverted");
            let flagged = f.anomaly_index > config.anomaly_threshold;
            let b = b_top.get_or_insert_with(|| {
                flagged.then(|| {
                    (
                        t.label,
                        confirmed(&Network::new(w), f, &split.fit, t.label, config.success),
                    )
                })
            });
            let estimated = b.as_ref().map(|(b_label, b_trigger)| {
                let held = &split.held;
                cleanse::success(
                    &Network::new(w),
                    b_trigger,
                    (&held.pixels, &held.labels),
                    *b_label,
                )
            });
            let out = files.output_dir.join(format!("{name}.parquet"));
            label_table(&labels, &fingerprint).write(&out)?;
            outputs.push(out);
            rows.push(ScanRow {
                network: name,
                threshold_percent: threshold,
                top_label: t.label,
                anomaly_index: f.anomaly_index,
                mask_l1: f.mask_l1,
                flagged,
                estimated_attack_success: estimated,
                labels_inverted: labels.iter().filter(|l| l.full.is_some()).count(),
            });
            let triggers = files.output_dir.join(format!(
                "{}_trigger.safetensors",
                rows.last().expect("pushed").network
            ));
            save_trigger(&triggers, &f.trigger, t.label, &fingerprint)?;
            outputs.push(triggers);
        }
    }
    summary_table(&rows)
        .meta("enabled", config.enabled.to_string())
        .meta(crate::fingerprint::MODEL_KEY, &fingerprint)
        .write(&summary_out)?;
    outputs.push(summary_out);
    Ok(ScanSummary { rows, outputs })
}

/// The summary: one row per network (also the report's `scan.csv`).
pub fn summary_table(rows: &[ScanRow]) -> Table {
    Table::new()
        .with(
            "network",
            Column::Text(rows.iter().map(|r| Some(r.network.clone())).collect()),
        )
        .with(
            "threshold_percent",
            Column::Float(rows.iter().map(|r| r.threshold_percent).collect()),
        )
        .with(
            "top_label",
            Column::ints(rows.iter().map(|r| r.top_label as i32)),
        )
        .with(
            "anomaly_index",
            Column::floats(rows.iter().map(|r| r.anomaly_index)),
        )
        .with("mask_l1", Column::floats(rows.iter().map(|r| r.mask_l1)))
        .with(
            "flagged",
            Column::ints(rows.iter().map(|r| r.flagged as i32)),
        )
        .with(
            "estimated_attack_success",
            Column::Float(rows.iter().map(|r| r.estimated_attack_success).collect()),
        )
        .with(
            "labels_inverted",
            Column::ints(rows.iter().map(|r| r.labels_inverted as i32)),
        )
}

/// A trigger as safetensors: `mask` (55, 47) and `pattern` (3, 55, 47), pixels 0..255.
fn save_trigger(path: &Path, trigger: &Trigger, target: u32, fingerprint: &str) -> Result<()> {
    use formats::weights::{le_bytes, serialize};
    use safetensors::Dtype;
    let [c, h, w] = model::geometry::INPUT_SHAPE;
    let meta = [
        ("target".to_string(), target.to_string()),
        (
            crate::fingerprint::MODEL_KEY.to_string(),
            fingerprint.to_string(),
        ),
    ]
    .into_iter()
    .collect();
    let bytes = serialize(
        [
            ("mask", Dtype::F32, vec![h, w], le_bytes(&trigger.mask)),
            (
                "pattern",
                Dtype::F32,
                vec![c, h, w],
                le_bytes(&trigger.pattern),
            ),
        ],
        meta,
        path,
    )?;
    Ok(formats::atomic::write_bytes(path, &bytes)?)
}

/// Reads the scan summary written by [`run`]: its rows, none when the scan was disabled.
pub fn read_summary(path: &Path) -> Result<Vec<ScanRow>> {
    let t = Table::read(path)?;
    if t.metadata.get("enabled").map(String::as_str) == Some("false") {
        return Ok(Vec::new());
    }
    let bad = |what: &str| Error::invalid(path, format!("not a scan summary: {what}"));
    let col = |name: &str| {
        t.columns
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
            .ok_or_else(|| bad(&format!("no column `{name}`")))
    };
    let floats = |name: &str| -> Result<Vec<Option<f64>>> {
        match col(name)? {
            Column::Float(v) => Ok(v.clone()),
            _ => Err(bad(&format!("`{name}` is not a float column"))),
        }
    };
    let ints = |name: &str| -> Result<Vec<i32>> {
        match col(name)? {
            Column::Int(v) => v
                .iter()
                .map(|x| {
                    x.filter(|x| *x >= 0)
                        .ok_or_else(|| bad(&format!("`{name}` holds a missing or negative value")))
                })
                .collect(),
            _ => Err(bad(&format!("`{name}` is not an integer column"))),
        }
    };
    let networks = match col("network")? {
        Column::Text(v) => v
            .iter()
            .map(|n| n.clone().ok_or_else(|| bad("a network without a name")))
            .collect::<Result<Vec<_>>>()?,
        _ => return Err(bad("`network` is not a text column")),
    };
    let (thresholds, tops, indices, l1, flagged, estimated, inverted) = (
        floats("threshold_percent")?,
        ints("top_label")?,
        floats("anomaly_index")?,
        floats("mask_l1")?,
        ints("flagged")?,
        floats("estimated_attack_success")?,
        ints("labels_inverted")?,
    );
    let value = |v: Option<f64>, name: &str| {
        v.ok_or_else(|| bad(&format!("`{name}` holds a missing value")))
    };
    (0..networks.len())
        .map(|i| {
            Ok(ScanRow {
                network: networks[i].clone(),
                threshold_percent: thresholds[i],
                top_label: tops[i] as u32,
                anomaly_index: value(indices[i], "anomaly_index")?,
                mask_l1: value(l1[i], "mask_l1")?,
                flagged: flagged[i] != 0,
                estimated_attack_success: estimated[i],
                labels_inverted: inverted[i] as usize,
            })
        })
        .collect()
}

/// The trigger a scan saved for `network` beside its summary: mask (positions) and pattern
/// (CHW pixel values).
pub fn read_trigger(summary: &Path, network: &str) -> Result<Trigger> {
    let path = summary.with_file_name(format!("{network}_trigger.safetensors"));
    let buf = formats::weights::read(&path)?;
    let (tensors, _) = formats::weights::deserialize(&buf, &path)?;
    let floats = |name: &str, len: usize| -> Result<Vec<f32>> {
        let t = tensors
            .tensor(name)
            .map_err(|_| Error::invalid(&path, format!("no `{name}` tensor")))?;
        let v = formats::weights::from_le_bytes::<f32>(t.data());
        if v.len() != len || v.iter().any(|x| !x.is_finite()) {
            return Err(Error::invalid(
                &path,
                format!("`{name}` is not {len} finite values"),
            ));
        }
        Ok(v)
    };
    Ok(Trigger {
        mask: floats("mask", cleanse::POSITIONS)?,
        pattern: floats("pattern", IMAGE_LEN)?,
    })
}

impl std::fmt::Display for ScanSummary {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        for r in &self.rows {
            writeln!(
                f,
                "{:<20} top label {:>5} (anomaly index {:5.2}{}), mask L1 {:7.1}; estimated attack success of B's trigger {} ({} labels inverted)",
                r.network,
                r.top_label,
                r.anomaly_index,
                if r.flagged { ", FLAGGED" } else { "" },
                r.mask_l1,
                r.estimated_attack_success
                    .map_or("n/a (B not flagged)".into(), |e| format!("{e:.2}%")),
                r.labels_inverted
            )?;
        }
        write!(
            f,
            "-> {}",
            self.outputs.last().expect("the summary").display()
        )
    }
}
