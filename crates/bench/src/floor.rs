//! The compute floor: each stage's arithmetic (the FLOPs it reports, [`model::flops`]) at the
//! rate this machine multiplies matrices of DeepID's shapes, so that `make bench` shows how far
//! each stage is from the time its products alone take.

use model::geometry::{convolved, Conv, CONV_1, CONV_2, CONV_3, INPUT_HW, POOL_1_HW, POOL_2_HW};
use model::linalg::matmul;
use std::time::Instant;

/// Matrix-product rates, FLOP/s, every core busy.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    /// The convolutions' products one image at a time, single-threaded on each core, as the
    /// trunk runs them (conv_1, conv_2 and conv_3 in their FLOP proportions).
    pub deepid: f64,
    /// 512 x 512 x 512 products, one per core: what the cores reach on large matrices.
    pub square: f64,
}

/// One product shape: (rows, inner, columns).
type Shape = (usize, usize, usize);

fn conv_shape(input_hw: (usize, usize), c: Conv) -> Shape {
    let (h, w) = convolved(input_hw, c);
    (h * w, c.kernel * c.kernel * c.inputs, c.outputs)
}

/// FLOP/s of `shapes` multiplied `repeats` times on every core at once.
fn rate(shapes: &[Shape], repeats: usize) -> f64 {
    let cores = rayon::current_num_threads();
    let clock = Instant::now();
    rayon::broadcast(|_| {
        let buffers: Vec<_> = shapes
            .iter()
            .map(|&(m, k, n)| {
                let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
                (a, b, vec![0f32; m * n])
            })
            .collect();
        let mut buffers = buffers;
        for _ in 0..repeats {
            for (&(m, k, n), (a, b, c)) in shapes.iter().zip(&mut buffers) {
                matmul(m, k, n, a, b, c);
            }
        }
        std::hint::black_box(&buffers);
    });
    let flops: usize = shapes.iter().map(|(m, k, n)| 2 * m * k * n).sum();
    (flops * repeats * cores) as f64 / clock.elapsed().as_secs_f64()
}

/// Measures both rates (about two seconds).
pub fn rates() -> Rates {
    let deepid = [
        conv_shape(INPUT_HW, CONV_1),
        conv_shape(POOL_1_HW, CONV_2),
        conv_shape(POOL_2_HW, CONV_3),
    ];
    // A warm-up, then the measured runs.
    rate(&deepid, 20);
    Rates {
        deepid: rate(&deepid, 2_000),
        square: rate(&[(512, 512, 512)], 40),
    }
}
