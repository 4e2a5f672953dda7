//! `fineprune._native`: the repaired ensemble G(B, B') for Python, on NumPy arrays. The typed,
//! documented API is `python/fineprune/__init__.py`, which converts its inputs to float32
//! and calls this module; the work runs with the GIL released, on every core.

use defense::metrics::repaired;
use defense::predict::load_pair;
use model::geometry::{IMAGE_LEN, INPUT_HW, INPUT_SHAPE};
use model::Network;
use numpy::ndarray::{Axis, IxDyn};
use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyFileNotFoundError, PyValueError};
use pyo3::prelude::*;
use std::path::{Path, PathBuf};

/// B and B', loaded and checked to stand together.
#[pyclass(frozen, module = "fineprune._native")]
struct Pair {
    b: Network,
    b_prime: Network,
}

/// The images of `x` as CSAW (C, H, W) pixels: (N, 3, 55, 47) as they are, (N, 55, 47, 3)
/// (NHWC) transposed; any other shape is refused (the two cannot be confused: 3 is neither
/// 55 nor 47).
fn csaw_pixels(x: &PyReadonlyArrayDyn<f32>) -> PyResult<Vec<f32>> {
    let nhwc = [INPUT_HW.0, INPUT_HW.1, INPUT_SHAPE[0]];
    let view = x.as_array();
    match x.shape() {
        [_, rest @ ..] if rest == INPUT_SHAPE => Ok(match view.as_slice() {
            Some(s) => s.to_vec(),
            None => view.iter().copied().collect(),
        }),
        [_, rest @ ..] if rest == nhwc => Ok(view
            .permuted_axes(IxDyn(&[0, 3, 1, 2]))
            .iter()
            .copied()
            .collect()),
        shape => Err(PyValueError::new_err(format!(
            "images must be (N, 3, 55, 47) in the CSAW layout or (N, 55, 47, 3) NHWC, not {shape:?}"
        ))),
    }
}

impl Pair {
    /// B's logits and B''s classes, the GIL released.
    fn run(&self, py: Python, x: &PyReadonlyArrayDyn<f32>) -> PyResult<(Vec<f32>, Vec<u32>)> {
        let pixels = csaw_pixels(x)?;
        debug_assert_eq!(pixels.len() % IMAGE_LEN, 0);
        Ok(py.allow_threads(|| model::classify::pair(&self.b, &self.b_prime, &pixels)))
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
        let (logits, b_prime) = self.run(py, &x)?;
        let b: Vec<u32> = logits
            .chunks(self.classes())
            .map(model::linalg::argmax)
            .collect();
        let g = repaired(&b, &b_prime, self.classes() as u32);
        Ok(g.into_iter()
            .map(i64::from)
            .collect::<Vec<_>>()
            .into_pyarray(py))
    }

    /// (N, classes + 1) probabilities whose argmax is G's class: B's softmax and 0 for
    /// "backdoor" where B and B' agree, all on "backdoor" where they do not.
    fn probabilities<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArrayDyn<f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (logits, b_prime) = self.run(py, &x)?;
        let classes = self.classes();
        let n = b_prime.len();
        let mut out = numpy::ndarray::Array2::<f32>::zeros((n, classes + 1));
        for ((mut row, z), &other) in out
            .axis_iter_mut(Axis(0))
            .zip(logits.chunks(classes))
            .zip(&b_prime)
        {
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
    let (b, b_prime) = load_pair(&b_path, &b_prime_path, input_scale)
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(Pair {
        b: Network::new(&b),
        b_prime: Network::new(&b_prime),
    })
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_class::<Pair>()?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
