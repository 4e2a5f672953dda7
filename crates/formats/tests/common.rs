//! Shared helpers for the integration tests: where the reference fixtures live.
#![allow(dead_code)]

use std::path::PathBuf;

/// `$FINEPRUNE_FIXTURES`, else `../shared/fixtures` beside the workspace.
pub fn fixtures() -> PathBuf {
    let dir = std::env::var_os("FINEPRUNE_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
        });
    assert!(
        dir.join("deepid/bd_weights.h5").exists(),
        "reference fixtures not found at {} (set FINEPRUNE_FIXTURES)",
        dir.display()
    );
    dir
}

/// Reads a whole float dataset of an HDF5 file.
pub fn read_f32(file: &std::path::Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let f = hdf5::File::open(file).unwrap();
    let ds = f.dataset(name).unwrap();
    (ds.shape(), ds.read_raw::<f32>().unwrap())
}

/// Norm of the difference over norm of the reference.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let (mut d, mut r) = (0f64, 0f64);
    for (g, w) in got.iter().zip(want) {
        d += ((g - w) as f64).powi(2);
        r += (*w as f64).powi(2);
    }
    (d / r).sqrt()
}
