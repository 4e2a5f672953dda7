//! The deployed defense: classify images with the backdoored network B and, given a pruned or
//! fine-pruned B', with the repaired ensemble G(B, B'), which answers N ("backdoor", N = the
//! number of classes) wherever B and B' disagree. Inputs are photos (PNG, JPEG; folders are
//! searched for them, each file once), CSAW HDF5 files (labels optional) and image Parquet
//! tables. Every input is opened and checked before any work, and must be a regular file: a
//! FIFO, device or socket, given or found in a folder under a photo's name, is refused by name
//! (other names in a folder are not inputs, whatever they are). Decoding runs on its own thread
//! a batch ahead of the networks, and both use all cores.

use crate::{Error, Result};
use formats::h5::check_signature;
use formats::source::Images;
use formats::table::{Column, Floats, Table};
use formats::ModelFile;
use formats::{files, photos};
use model::geometry::IMAGE_LEN;
use model::progress::Progress;
use model::{DeepIdWeights, Network};
use rayon::prelude::*;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Images decoded and classified together.
const BATCH: usize = 256;

pub struct PredictFiles {
    /// B: safetensors, or Keras HDF5 (taking `input_scale`).
    pub model: PathBuf,
    /// B' (pruned or fine-pruned), for the repaired answers.
    pub pruned: Option<PathBuf>,
    /// Photos, folders of photos, CSAW HDF5 files, image Parquet tables.
    pub inputs: Vec<PathBuf>,
    /// Input scale of Keras models (safetensors files record their own).
    pub input_scale: f64,
    /// How many best classes to list per image (0: none).
    pub top_k: usize,
}

/// One image's answers.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    pub input: String,
    /// The image's row in an HDF5 or Parquet input (photos: none).
    pub row: Option<usize>,
    pub label: Option<i32>,
    /// B's class and its softmax probability.
    pub class: u32,
    pub probability: f64,
    /// The best classes, best first, with probabilities.
    pub top: Vec<(u32, f64)>,
    pub pruned_class: Option<u32>,
    /// G's answer: the class where B and B' agree, N where they do not.
    pub repaired_class: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PredictSummary {
    pub images: usize,
    pub classes: usize,
    /// Images G flags as triggered (B and B' disagree); with a pruned network only.
    pub flagged_backdoor: Option<usize>,
}

/// An input, opened and checked.
enum Source {
    Photos(Vec<PathBuf>),
    Table(Images),
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Photos(p) => p.len(),
            Source::Table(t) => t.len(),
        }
    }
}

/// Decoded images with where they came from.
struct Chunk {
    pixels: Vec<f32>,
    origins: Vec<(String, Option<usize>, Option<i32>)>,
}

/// Loads a model file: safetensors, or Keras HDF5 with `input_scale`.
pub fn load_model(path: &Path, input_scale: f64) -> Result<DeepIdWeights> {
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        Ok(DeepIdWeights::load(path)?)
    } else {
        Ok(formats::keras::import(path, input_scale)?)
    }
}

/// B and B' for G(B, B'), from safetensors or Keras files (`input_scale` for Keras ones),
/// checked to stand together ([`check_pair`]).
/// `names`: what the caller calls the two (`--model` and `--pruned` on the command line), for
/// the errors.
pub fn load_pair(
    model_path: &Path,
    pruned_path: &Path,
    input_scale: f64,
    names: [&str; 2],
) -> Result<(DeepIdWeights, DeepIdWeights)> {
    let model = load_model(model_path, input_scale)?;
    let pruned = load_model(pruned_path, input_scale)?;
    check_pair([model_path, pruned_path], &model, &pruned, names)?;
    Ok((model, pruned))
}

/// Checks that `pruned` can stand beside `model` in G: another file, holding a network derived
/// from B, where B (`model`) is not itself pruned. Swapped or repeated roles are usage errors.
/// A network with no pruning record (a Keras file from elsewhere) is taken on trust unless it
/// is B itself.
fn check_pair(
    [model_path, path]: [&Path; 2],
    model: &DeepIdWeights,
    pruned: &DeepIdWeights,
    [b, b_prime]: [&str; 2],
) -> Result<()> {
    let usage = |path: &Path, what: String| {
        let why = format!("the pruned network must be a network derived from {b}");
        Error::config(path, format!("{what}; {why}"))
    };
    if files::same_file(path, model_path) {
        return Err(usage(path, format!("{b_prime} is the same file as {b}")));
    }
    if let Some(p) = &model.provenance.pruned {
        return Err(usage(
            model_path,
            format!(
                "{b} is itself a pruned network (derived from network {}), not the \
                 backdoored network B (are {b} and {b_prime} swapped?)",
                p.backdoored
            ),
        ));
    }
    if let Some(why) = crate::models::incompatible(pruned, model) {
        return Err(Error::invalid(path, why));
    }
    let why = match &pruned.provenance.pruned {
        Some(p) => crate::models::other_parent(p, model),
        None => (pruned.fingerprint() == model.fingerprint())
            .then(|| format!("{b_prime} holds the same network as {b}, not one derived from it")),
    };
    why.map_or(Ok(()), |why| Err(usage(path, why)))
}

/// Opens every input; folders give their photos (searched recursively, in name order).
fn open_inputs(inputs: &[PathBuf], classes: usize) -> Result<Vec<Source>> {
    let mut sources = Vec::new();
    for path in inputs {
        if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
            let found = files::walk(path, &photos::is_photo_name)?;
            if found.is_empty() {
                return Err(Error::invalid(
                    path,
                    format!(
                        "no photos in this folder (looked for .{})",
                        photos::EXTENSIONS.join(", .")
                    ),
                ));
            }
            sources.push(Source::Photos(found));
            continue;
        }
        files::regular(path)?;
        let mut head = [0u8; 16];
        let n = std::io::Read::read(
            &mut std::fs::File::open(path).map_err(|e| Error::io(path, e))?,
            &mut head,
        )
        .map_err(|e| Error::io(path, e))?;
        let head = &head[..n];
        sources.push(if photos::is_photo(head) {
            Source::Photos(vec![path.clone()])
        } else if head.starts_with(b"PAR1") || check_signature(path).is_ok() {
            let parquet = head.starts_with(b"PAR1");
            Source::Table(Images::open_unlabelled(path, classes, parquet)?)
        } else {
            return Err(Error::invalid(
                path,
                "not a PNG or JPEG image, a CSAW HDF5 file or an image Parquet table",
            ));
        });
    }
    Ok(sources)
}

/// Sends each source's images, decoded, in chunks of at most [`BATCH`].
fn decode(sources: Vec<Source>, send: &std::sync::mpsc::SyncSender<Result<Chunk>>) -> Result<()> {
    let send = |chunk: Chunk| send.send(Ok(chunk)).is_ok();
    for source in sources {
        match source {
            Source::Photos(paths) => {
                for part in paths.chunks(BATCH) {
                    let images = part
                        .par_iter()
                        .map(|p| photos::read(p))
                        .collect::<formats::Result<Vec<_>>>()?;
                    let chunk = Chunk {
                        pixels: images.concat(),
                        origins: part
                            .iter()
                            .map(|p| (p.display().to_string(), None, None))
                            .collect(),
                    };
                    if !send(chunk) {
                        return Ok(());
                    }
                }
            }
            Source::Table(images) => {
                let name = images.path().display().to_string();
                let mut start = 0;
                for batch in images {
                    let batch = batch?;
                    let n = batch.len();
                    if !send(chunk_of(&name, start, batch)) {
                        return Ok(());
                    }
                    start += n;
                }
            }
        }
    }
    Ok(())
}

fn chunk_of(name: &str, start: usize, batch: formats::csaw::Batch) -> Chunk {
    let n = batch.len();
    let label = |i: usize| batch.labels.get(i).copied();
    Chunk {
        origins: (0..n)
            .map(|i| (name.to_string(), Some(start + i), label(i)))
            .collect(),
        pixels: batch.pixels,
    }
}

/// Softmax probabilities of one row of logits, in f64.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    let exp: Vec<f64> = logits.iter().map(|&z| (z as f64 - max).exp()).collect();
    let sum: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / sum).collect()
}

/// The softmax probability of the argmax of one row of logits: exp(0) over the sum, with no
/// vector of probabilities.
fn top_probability(logits: &[f32]) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    1.0 / logits.iter().map(|&z| (z as f64 - max).exp()).sum::<f64>()
}

/// The `k` best classes, best first (ties: the lower class first, as argmax).
fn top_k(p: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut order: Vec<u32> = (0..p.len() as u32).collect();
    let k = k.min(p.len());
    order.select_nth_unstable_by(k.saturating_sub(1), |&a, &b| {
        p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b))
    });
    order.truncate(k);
    order.sort_by(|&a, &b| p[b as usize].total_cmp(&p[a as usize]).then(a.cmp(&b)));
    order.into_iter().map(|c| (c, p[c as usize])).collect()
}

/// Classifies every image of every input, in input order.
pub fn run(
    files: &PredictFiles,
    progress: &dyn Progress,
) -> Result<(Vec<Prediction>, PredictSummary)> {
    let (model, pruned) = match &files.pruned {
        Some(path) => {
            let (b, p) = load_pair(
                &files.model,
                path,
                files.input_scale,
                ["--model", "--pruned"],
            )?;
            (b, Some(p))
        }
        None => (load_model(&files.model, files.input_scale)?, None),
    };
    let classes = model.classes();
    let sources = open_inputs(&files.inputs, classes)?;
    let total: usize = sources.iter().map(Source::len).sum();
    let b = Network::new(&model);
    let b_prime = pruned.as_ref().map(Network::new);
    progress.start("predict", total as u64);
    let mut out = Vec::with_capacity(total);
    std::thread::scope(|scope| -> Result<()> {
        let (send, receive) = std::sync::mpsc::sync_channel(2);
        let decoder = scope.spawn(move || {
            if let Err(e) = decode(sources, &send) {
                let _ = send.send(Err(e));
            }
        });
        for chunk in receive {
            let chunk = chunk?;
            debug_assert_eq!(chunk.pixels.len(), chunk.origins.len() * IMAGE_LEN);
            let (logits, pruned_classes) = match &b_prime {
                Some(p) => {
                    let (logits, classes) = model::classify::pair(&b, p, &chunk.pixels);
                    (logits, Some(classes))
                }
                None => (b.logits(&chunk.pixels), None),
            };
            let b_classes: Vec<u32> = logits.chunks(classes).map(model::linalg::argmax).collect();
            let repaired = pruned_classes
                .as_ref()
                .map(|c| crate::metrics::repaired(&b_classes, c, classes as u32));
            for (i, (input, row, label)) in chunk.origins.into_iter().enumerate() {
                let z = &logits[i * classes..][..classes];
                let class = b_classes[i];
                out.push(Prediction {
                    input,
                    row,
                    label,
                    class,
                    probability: top_probability(z),
                    // Only a top-k list needs every class's probability.
                    top: match files.top_k {
                        0 => Vec::new(),
                        k => top_k(&softmax(z), k),
                    },
                    pruned_class: pruned_classes.as_ref().map(|c| c[i]),
                    repaired_class: repaired.as_ref().map(|g| g[i]),
                });
            }
            progress.advance((logits.len() / classes) as u64);
        }
        decoder.join().map_err(|_| Error::Decoder)
    })?;
    progress.finish();
    let flagged_backdoor = pruned.as_ref().map(|_| {
        out.iter()
            .filter(|p| p.repaired_class == Some(classes as u32))
            .count()
    });
    let summary = PredictSummary {
        images: out.len(),
        classes,
        flagged_backdoor,
    };
    Ok((out, summary))
}

/// The predictions as a table: `input`, `row`, `label` (when any input has labels), `class`,
/// `probability`, then `class_1`, `probability_1`, ... for the best classes, then
/// `pruned_class` and `repaired_class` when a pruned network was given.
pub fn to_table(predictions: &[Prediction], top_k: usize, classes: usize) -> Table {
    let ints = |f: &dyn Fn(&Prediction) -> Option<i64>| {
        Column::Int(predictions.iter().map(|p| f(p).map(|v| v as i32)).collect())
    };
    let mut t = Table::new()
        .with(
            "input",
            Column::Text(predictions.iter().map(|p| Some(p.input.clone())).collect()),
        )
        .with("row", ints(&|p| p.row.map(|r| r as i64)));
    if predictions.iter().any(|p| p.label.is_some()) {
        t = t.with("label", ints(&|p| p.label.map(i64::from)));
    }
    t = t.with("class", ints(&|p| Some(p.class as i64))).with(
        "probability",
        Column::Float(predictions.iter().map(|p| Some(p.probability)).collect()),
    );
    for k in 0..top_k.min(classes) {
        t = t
            .with(
                &format!("class_{}", k + 1),
                ints(&|p| p.top.get(k).map(|c| c.0 as i64)),
            )
            .with(
                &format!("probability_{}", k + 1),
                Column::Float(
                    predictions
                        .iter()
                        .map(|p| p.top.get(k).map(|c| c.1))
                        .collect(),
                ),
            );
    }
    if predictions.iter().any(|p| p.pruned_class.is_some()) {
        t = t
            .with("pruned_class", ints(&|p| p.pruned_class.map(i64::from)))
            .with("repaired_class", ints(&|p| p.repaired_class.map(i64::from)));
    }
    t.meta("classes", classes.to_string())
        .meta("backdoor_class", classes.to_string())
}

/// Where the predictions go.
pub enum Output {
    Stdout,
    Csv(PathBuf),
    Parquet(PathBuf),
}

impl Output {
    /// `--output`: none is standard output; a file must end in `.csv` or `.parquet`.
    pub fn new(path: Option<PathBuf>) -> Result<Self> {
        let Some(p) = path else {
            return Ok(Output::Stdout);
        };
        match p.extension().and_then(|e| e.to_str()) {
            Some("csv") => Ok(Output::Csv(p)),
            Some("parquet") => Ok(Output::Parquet(p)),
            _ => Err(Error::config(p, "--output must end in .csv or .parquet")),
        }
    }

    pub fn path(&self) -> Option<&Path> {
        match self {
            Output::Stdout => None,
            Output::Csv(p) | Output::Parquet(p) => Some(p),
        }
    }

    /// Checked before anything is read: the output file is none of `files`' inputs and may be
    /// replaced (`force`: even where the pipeline did not write it; a folder never).
    pub fn check(&self, files: &PredictFiles, force: bool) -> Result<()> {
        let Some(p) = self.path() else {
            return Ok(());
        };
        if force {
            formats::written::permit_replacing(p);
        }
        let mut inputs = vec![("--model", files.model.as_path())];
        inputs.extend(files.pruned.as_deref().map(|p| ("--pruned", p)));
        inputs.extend(files.inputs.iter().map(|p| ("an image input", p.as_path())));
        let file_in_way = std::fs::symlink_metadata(p).is_ok_and(|m| !m.is_dir());
        formats::written::check_paths(&inputs, &[("--output", p)]).map_err(|e| match e {
            formats::Error::Invalid { path, message } if path == p && file_in_way => {
                Error::invalid(path, message + " (--force replaces it)")
            }
            e => e.into(),
        })
    }

    pub fn write(&self, table: &Table) -> Result<()> {
        match self {
            Output::Stdout => match table.to_csv(std::io::stdout().lock(), Floats::Repr) {
                // A reader that stops early (`| head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(|e| Error::io("standard output", e)),
            },
            Output::Csv(p) => Ok(table.write_csv(p, Floats::Repr)?),
            Output::Parquet(p) => Ok(table.write(p)?),
        }
    }
}
