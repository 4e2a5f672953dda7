//! `fineprune._native`: the defense for Python. `defend` runs the pipeline in process as
//! `make all` does (the same stamps, files and caching); `load` gives the repaired ensemble
//! G(B, B') on NumPy arrays. The typed, documented API is `python/fineprune/__init__.py`,
//! which checks and converts its arguments and calls this module; the work runs with the GIL
//! released, on every core.

use defense::metrics::repaired;
use defense::models::Manifest;
use defense::predict::load_pair;
use defense::results::Summary;
use defense::sweep::PruneSweep;
use formats::config::Config;
use formats::paths::{self, Stage, WorkPaths};
use model::geometry::{IMAGE_LEN, INPUT_HW, INPUT_SHAPE};
use model::progress::Progress;
use model::Network;
use numpy::ndarray::{Axis, IxDyn, Slice};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// B and B', loaded and checked to stand together.
#[pyclass(frozen, module = "fineprune._native")]
struct Pair {
    b: Network,
    b_prime: Network,
}

// The stages' allocator, keeping freed memory (see `_native` below).
cli::use_allocator!();

/// Images per pass: the trunks' buffers stay small, and converting the next images is cheap.
const CHUNK: usize = 1024;

/// The images of `x`, `CHUNK` at a time, as CSAW (C, H, W) pixels: (N, 3, 55, 47) as they
/// are, (N, 55, 47, 3) (NHWC) transposed; any other shape is refused (the two cannot be
/// confused: 3 is neither 55 nor 47).
fn csaw_chunks<'a>(
    x: &'a PyReadonlyArrayDyn<f32>,
) -> PyResult<impl Iterator<Item = Vec<f32>> + 'a> {
    let nhwc = [INPUT_HW.0, INPUT_HW.1, INPUT_SHAPE[0]];
    let view = x.as_array();
    let view = match x.shape() {
        [_, rest @ ..] if rest == INPUT_SHAPE => view,
        [_, rest @ ..] if rest == nhwc => view.permuted_axes(IxDyn(&[0, 3, 1, 2])),
        shape => {
            return Err(PyValueError::new_err(format!(
                "images must be (N, 3, 55, 47) in the CSAW layout or (N, 55, 47, 3) NHWC, not {shape:?}"
            )))
        }
    };
    Ok((0..view.shape()[0]).step_by(CHUNK).map(move |start| {
        let chunk = view.slice_axis(
            Axis(0),
            Slice::from(start..(start + CHUNK).min(view.shape()[0])),
        );
        match chunk.as_slice() {
            Some(s) => s.to_vec(),
            None => chunk.iter().copied().collect(),
        }
    }))
}

impl Pair {
    /// For each chunk of images: B's logits and B''s classes, computed with the GIL released.
    fn each(
        &self,
        py: Python,
        x: &PyReadonlyArrayDyn<f32>,
        mut f: impl FnMut(&[f32], &[u32]),
    ) -> PyResult<()> {
        for pixels in csaw_chunks(x)? {
            debug_assert_eq!(pixels.len() % IMAGE_LEN, 0);
            let (logits, b_prime) =
                py.allow_threads(|| model::classify::pair(&self.b, &self.b_prime, &pixels));
            f(&logits, &b_prime);
        }
        Ok(())
    }
}

#[pymethods]
impl Pair {
    /// B's number of classes (G's extra label, "backdoor", is this number).
    #[getter]
    fn classes(&self) -> usize {
        self.b.classes()
    }

    #[getter]
    fn input_scale(&self) -> f64 {
        self.b.input_scale
    }

    /// G's class per image: B's where B and B' agree, else `classes`.
    fn classify<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<f32>,
    ) -> PyResult<Bound<'py, PyArray1<i64>>> {
        let classes = self.classes();
        let mut g = Vec::with_capacity(x.shape()[0]);
        self.each(py, &x, |logits, b_prime| {
            let b: Vec<u32> = logits.chunks(classes).map(model::linalg::argmax).collect();
            g.extend(
                repaired(&b, b_prime, classes as u32)
                    .into_iter()
                    .map(i64::from),
            );
        })?;
        Ok(g.into_pyarray(py))
    }

    /// (N, classes + 1) probabilities whose argmax is G's class: B's softmax and 0 for
    /// "backdoor" where B and B' agree, all on "backdoor" where they do not.
    fn probabilities<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let classes = self.classes();
        let mut out = numpy::ndarray::Array2::<f32>::zeros((x.shape()[0], classes + 1));
        let mut rows = out.axis_iter_mut(Axis(0));
        self.each(py, &x, |logits, b_prime| {
            for ((mut row, z), &other) in rows.by_ref().zip(logits.chunks(classes)).zip(b_prime) {
                if model::linalg::argmax(z) == other {
                    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let sum: f64 = z.iter().map(|&v| ((v - max) as f64).exp()).sum();
                    for (p, &v) in row.iter_mut().zip(z) {
                        *p = (((v - max) as f64).exp() / sum) as f32;
                    }
                } else {
                    row[classes] = 1.0;
                }
            }
        })?;
        Ok(out.into_pyarray(py))
    }
}

/// A missing file is Python's FileNotFoundError, naming it.
fn exists(path: &Path) -> PyResult<()> {
    match path.exists() {
        true => Ok(()),
        false => Err(PyFileNotFoundError::new_err(format!(
            "{}: no such file",
            path.display()
        ))),
    }
}

/// Loads B and B' (safetensors, or Keras `.h5` at `input_scale`) and checks that B' derives
/// from B.
#[pyfunction]
fn load(b_path: PathBuf, b_prime_path: PathBuf, input_scale: f64) -> PyResult<Pair> {
    exists(&b_path)?;
    exists(&b_prime_path)?;
    let (b, b_prime) = load_pair(
        &b_path,
        &b_prime_path,
        input_scale,
        ["b_path", "b_prime_path"],
    )
    .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Pair {
        b: Network::new(&b),
        b_prime: Network::new(&b_prime),
    })
}

/// Reports progress to a Python callable `(phase, done, total)`, at most once per percent.
struct Callback {
    callback: Option<PyObject>,
    /// The phase, its length, units done, and the units at the last report.
    state: Mutex<(String, u64, u64, u64)>,
    /// The first exception the callback raised, raised again once the run ends.
    raised: Mutex<Option<PyErr>>,
}

impl Callback {
    fn call(&self, what: &str, done: u64, len: u64) {
        let Some(callback) = &self.callback else {
            return;
        };
        Python::with_gil(|py| {
            if let Err(e) = callback.call1(py, (what, done, len)) {
                self.raised.lock().expect("lock").get_or_insert(e);
            }
        });
    }
}

impl Progress for Callback {
    fn start(&self, what: &str, len: u64) {
        *self.state.lock().expect("lock") = (what.to_string(), len, 0, 0);
        self.call(what, 0, len);
    }

    fn advance(&self, n: u64) {
        let report = {
            let mut s = self.state.lock().expect("lock");
            s.2 += n;
            let due = s.1 == 0 || (s.2 - s.3) * 100 >= s.1;
            due.then(|| {
                s.3 = s.2;
                (s.0.clone(), s.2, s.1)
            })
        };
        if let Some((what, done, len)) = report {
            self.call(&what, done, len);
        }
    }

    fn status(&self, _: &str) {}

    fn finish(&self) {
        let (what, len) = {
            let s = self.state.lock().expect("lock");
            (s.0.clone(), s.1)
        };
        self.call(&what, len, len);
    }
}

/// The networks a finished run derived: kind (`pruned`, `fine_pruned`, `fine_tuned`),
/// threshold and `.safetensors` path.
fn derived(work: &WorkPaths) -> Result<Vec<serde_json::Value>, defense::Error> {
    let mut out = Vec::new();
    let network = |kind: &str, threshold: Option<f64>, path: PathBuf| serde_json::json!({"kind": kind, "threshold_percent": threshold, "path": path});
    let sweep = PruneSweep::read(&work.prune_sweep())?;
    for hit in sweep.hits.iter().filter(|h| h.channels_pruned.is_some()) {
        let t = hit.threshold_percent;
        let path = work.stage(Stage::Prune).join(paths::pruned_model_file(t));
        out.push(network("pruned", Some(t), path));
    }
    let dir = work.stage(Stage::Finetune);
    for entry in Manifest::read(&dir.join(paths::FINETUNE_MODELS))?.models {
        match entry.thresholds_percent.as_slice() {
            [] => out.extend(
                entry
                    .models
                    .iter()
                    .map(|m| network("fine_tuned", None, dir.join(m))),
            ),
            ts => out.extend(
                ts.iter()
                    .zip(&entry.models)
                    .map(|(&t, m)| network("fine_pruned", Some(t), dir.join(m))),
            ),
        }
    }
    Ok(out)
}

/// Runs the defense on the run `config` describes (the tables of `pipeline.toml` as JSON;
/// relative paths against the current folder) as `make all` does on user data, skipping
/// stages whose outputs are current; `code` (this module's file) counts as every stage's code. Returns, as
/// JSON, the stages run, the evaluate summary's rows and the derived networks.
#[pyfunction]
#[pyo3(signature = (config, code, progress=None, on_stage=None))]
fn defend(
    py: Python,
    config: &str,
    code: PathBuf,
    progress: Option<PyObject>,
    on_stage: Option<PyObject>,
) -> PyResult<String> {
    let source = Path::new("fineprune.defend");
    let usage = |m: String| PyValueError::new_err(format!("{}: {m}", source.display()));
    let table: toml::Table = serde_json::from_str(config).map_err(|e| usage(e.to_string()))?;
    let text = toml::to_string(&table).map_err(|e| usage(e.to_string()))?;
    let config = Config::parse(&text, source).map_err(|e| PyValueError::new_err(e.to_string()))?;
    let callback = Callback {
        callback: progress,
        state: Mutex::new((String::new(), 0, 0, 0)),
        raised: Mutex::new(None),
    };
    let announce = |stage: Stage| {
        if let Some(f) = &on_stage {
            Python::with_gil(|py| {
                if let Err(e) = f.call1(py, (stage.name(),)) {
                    callback.raised.lock().expect("lock").get_or_insert(e);
                }
            });
        }
    };
    let ran = py
        .allow_threads(|| pipeline::run::run_all(&config, true, Some(&code), &callback, &announce))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    if let Some(e) = callback.raised.lock().expect("lock").take() {
        return Err(e);
    }
    let work = WorkPaths::new(&config.work.dir);
    let error = |e: defense::Error| PyValueError::new_err(e.to_string());
    let summary = Summary::read(&work.eval_summary()).map_err(error)?;
    let result = serde_json::json!({
        "stages_run": ran.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "summary": summary.rows,
        "backdoored": work.model(),
        "networks": derived(&work).map_err(error)?,
        "reports": config.work.reports,
    });
    Ok(result.to_string())
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // As in the stage binaries: each pass reallocates the same large buffers.
    cli::keep_freed_memory();
    m.add_function(wrap_pyfunction!(defend, m)?)?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_class::<Pair>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
