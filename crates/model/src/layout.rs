//! The two memory layouts of DeepID's weights and images. Files hold PyTorch's layout (conv
//! (O, I, KH, KW), dense (O, I) over NCHW-flattened inputs; images (C, H, W)); the arithmetic
//! runs on Keras's (conv HWIO, dense (I, O) over NHWC-flattened inputs; images (H, W, C)), in
//! which every layer is one matrix product `x @ matrix` over patch rows in (ky, kx, c) order.

use crate::geometry::{LayerName, INPUT_SHAPE};
use crate::weights::Param;

/// Maps each PyTorch flat index of `layer`'s weight (shape `torch`) to the flat index of the
/// same weight in the (inputs, outputs) matrix, which is exactly Keras's kernel layout.
fn matrix_index(layer: LayerName, torch: &[usize]) -> impl Fn(usize) -> usize {
    let torch = torch.to_vec();
    let hw = layer.flattened_input();
    move |t| match (torch.as_slice(), hw) {
        (&[o, i, kh, kw], _) => {
            let (oo, r) = (t / (i * kh * kw), t % (i * kh * kw));
            let (ii, r) = (r / (kh * kw), r % (kh * kw));
            let (y, x) = (r / kw, r % kw);
            ((y * kw + x) * i + ii) * o + oo
        }
        (&[o, i], Some((h, w))) => {
            // NCHW flatten column c*h*w + p is NHWC flatten row p*c + c.
            let (oo, col) = (t / i, t % i);
            let c = i / (h * w);
            let (ch, p) = (col / (h * w), col % (h * w));
            (p * c + ch) * o + oo
        }
        (&[o, i], None) => {
            let (oo, col) = (t / i, t % i);
            col * o + oo
        }
        _ => unreachable!("DeepID weights are 2-D or 4-D"),
    }
}

/// A PyTorch-layout weight as the flat (inputs, outputs) matrix.
pub fn to_matrix(layer: LayerName, w: &Param) -> Vec<f32> {
    let index = matrix_index(layer, &w.shape);
    let mut m = vec![0f32; w.data.len()];
    for (t, v) in w.data.iter().enumerate() {
        m[index(t)] = *v;
    }
    m
}

/// The (inputs, outputs) matrix `m` back to a PyTorch-layout weight of `shape`.
pub fn from_matrix(layer: LayerName, shape: &[usize], m: &[f32]) -> Param {
    let index = matrix_index(layer, shape);
    Param::new(shape.to_vec(), (0..m.len()).map(|t| m[index(t)]).collect())
}

/// The Keras kernel shape of a PyTorch weight shape: (KH, KW, I, O) or (I, O).
pub fn keras_shape(torch: &[usize]) -> Vec<usize> {
    match *torch {
        [o, i, kh, kw] => vec![kh, kw, i, o],
        [o, i] => vec![i, o],
        _ => torch.to_vec(),
    }
}

/// One CSAW (C, H, W) image to (H, W, C), multiplied by `scale`, into `out`.
#[inline(always)]
pub fn to_nhwc(image: &[f32], scale: f32, out: &mut [f32]) {
    let [c, h, w] = INPUT_SHAPE;
    for ch in 0..c {
        for (p, v) in image[ch * h * w..][..h * w].iter().enumerate() {
            out[p * c + ch] = v * scale;
        }
    }
}
