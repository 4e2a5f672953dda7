//! Dense arithmetic on plain row-major buffers ([`crate::trunk`], [`crate::head`],
//! [`crate::backprop`]): matrix products on the calling thread and patch extraction.

use crate::geometry::{CONV_1, CONV_2, CONV_3, CONV_4};

/// `c = a @ b` for row-major a (m, k), b (k, n), c (m, n), on the calling thread (callers
/// spread whole batches of images over the cores instead).
pub fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    product(m, k, n, (a, false), (b, false), c, false);
}

/// `c (+)= op(a) @ op(b)` on the calling thread, for the backward passes: `a` holds a (m, k)
/// matrix row-major, or its transpose (k, m) when its flag is set; `b` likewise (k, n) or
/// (n, k). With `accumulate`, the product is added to `c` (m, n) instead of replacing it.
pub fn product(
    m: usize,
    k: usize,
    n: usize,
    (a, a_t): (&[f32], bool),
    (b, b_t): (&[f32], bool),
    c: &mut [f32],
    accumulate: bool,
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // (row stride, column stride) of each operand as stored.
    let (a_rs, a_cs) = if a_t { (1, m) } else { (k, 1) };
    let (b_rs, b_cs) = if b_t { (1, k) } else { (n, 1) };
    // SAFETY: the three buffers hold the matrices their strides describe (checked above)
    // and `c` does not alias `a` or `b` (it is borrowed mutably).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

/// Rows of `k x k` patches (valid padding, stride 1) of NHWC images `x` of shape (n, h, w, c)
/// into `patches` (n * oh * ow, k * k * c), each row in (ky, kx, c) order, which is Keras's
/// HWIO kernel order. Returns the output height and width.
#[inline(always)]
pub fn im2col(
    k: usize,
    c: usize,
    x: &[f32],
    dims: (usize, usize, usize),
    patches: &mut Vec<f32>,
) -> (usize, usize) {
    // DeepID's patch sizes known at compile time make the row copies a few vector moves.
    const P1: (usize, usize) = (CONV_1.kernel, CONV_1.inputs);
    const P2: (usize, usize) = (CONV_2.kernel, CONV_2.inputs);
    const P3: (usize, usize) = (CONV_3.kernel, CONV_3.inputs);
    const P4: (usize, usize) = (CONV_4.kernel, CONV_4.inputs);
    match (k, c) {
        P1 => patch_rows(P1.0, P1.1, x, dims, patches),
        P2 => patch_rows(P2.0, P2.1, x, dims, patches),
        P3 => patch_rows(P3.0, P3.1, x, dims, patches),
        P4 => patch_rows(P4.0, P4.1, x, dims, patches),
        _ => patch_rows(k, c, x, dims, patches),
    }
}

#[inline(always)]
fn patch_rows(
    k: usize,
    c: usize,
    x: &[f32],
    (n, h, w): (usize, usize, usize),
    patches: &mut Vec<f32>,
) -> (usize, usize) {
    let (oh, ow) = (h + 1 - k, w + 1 - k);
    let row = k * k * c;
    patches.resize(n * oh * ow * row, 0.0);
    for (img, dst) in x.chunks(h * w * c).zip(patches.chunks_mut(oh * ow * row)) {
        for y in 0..oh {
            for xo in 0..ow {
                let r = &mut dst[(y * ow + xo) * row..][..row];
                for ky in 0..k {
                    r[ky * k * c..][..k * c]
                        .copy_from_slice(&img[((y + ky) * w + xo) * c..][..k * c]);
                }
            }
        }
    }
    (oh, ow)
}

/// The adjoint of [`im2col`] for one image: adds each row of `k x k` patch gradients
/// (`d_patches`, rows in (ky, kx, c) order) back onto the (h, w, c) NHWC image gradient `d_x`.
#[inline(always)]
pub fn col2im(k: usize, (h, w, c): (usize, usize, usize), d_patches: &[f32], d_x: &mut [f32]) {
    let (oh, ow) = (h + 1 - k, w + 1 - k);
    let row = k * k * c;
    for y in 0..oh {
        for x in 0..ow {
            let r = &d_patches[(y * ow + x) * row..][..row];
            for ky in 0..k {
                let dst = &mut d_x[((y + ky) * w + x) * c..][..k * c];
                for (d, s) in dst.iter_mut().zip(&r[ky * k * c..][..k * c]) {
                    *d += s;
                }
            }
        }
    }
}

/// `y += a * x`.
#[inline(always)]
pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (y, x) in y.iter_mut().zip(x) {
        *y += a * x;
    }
}

/// `y += sum of a * matrix[row]` over `rows` (the matrix has `y.len()` columns), adding in
/// the order given, a tile of `y` at a time: the tile's accumulators stay in registers over
/// all the rows, and its eight independent vectors keep both FMA units busy.
#[inline(always)]
pub fn add_rows(y: &mut [f32], rows: &[(f32, usize)], matrix: &[f32]) {
    const TILE: usize = 128;
    let width = y.len();
    for start in (0..width).step_by(TILE) {
        let len = TILE.min(width - start);
        let mut acc = [0f32; TILE];
        acc[..len].copy_from_slice(&y[start..start + len]);
        if len == TILE {
            for &(a, r) in rows {
                let w = &matrix[r * width + start..][..TILE];
                for l in 0..TILE {
                    acc[l] = a.mul_add(w[l], acc[l]);
                }
            }
        } else {
            for &(a, r) in rows {
                let w = &matrix[r * width + start..][..len];
                for l in 0..len {
                    acc[l] = a.mul_add(w[l], acc[l]);
                }
            }
        }
        y[start..start + len].copy_from_slice(&acc[..len]);
    }
}

/// The index of the first largest value (numpy's `argmax`), sixteen lanes at a time: each
/// lane keeps its first maximum, and the earliest of the lanes' maxima wins.
#[inline(always)]
pub fn argmax(row: &[f32]) -> u32 {
    const LANES: usize = 16;
    let mut value = [f32::NEG_INFINITY; LANES];
    let mut chunk = [0u32; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder();
    for (c, values) in chunks.enumerate() {
        for l in 0..LANES {
            if values[l] > value[l] {
                value[l] = values[l];
                chunk[l] = c as u32;
            }
        }
    }
    let mut best = (f32::NEG_INFINITY, 0u32);
    for l in 0..LANES {
        let at = chunk[l] * LANES as u32 + l as u32;
        if value[l] > best.0 || (value[l] == best.0 && at < best.1) {
            best = (value[l], at);
        }
    }
    let base = (row.len() - tail.len()) as u32;
    for (t, v) in tail.iter().enumerate() {
        if *v > best.0 {
            best = (*v, base + t as u32);
        }
    }
    best.1
}
