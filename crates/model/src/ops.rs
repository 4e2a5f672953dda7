//! The two operations DeepID needs beyond matrix products, on NHWC tensors, as candle custom
//! ops with backward passes: patch extraction (so a convolution is one matrix product over a
//! patch matrix built with plain memory copies, much faster than candle's CPU `conv2d`) and
//! 2x2 max-pooling.

use crate::trunk::pool_bias_relu;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32 input")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

fn dims4(shape: &Shape, op: &str) -> Result<(usize, usize, usize, usize)> {
    match shape.dims() {
        &[n, h, w, c] => Ok((n, h, w, c)),
        d => candle_core::bail!("{op}: expected an NHWC tensor, got shape {d:?}"),
    }
}

/// Rows of `k x k` patches (valid padding, stride 1): (N, H, W, C) -> (N*OH*OW, k*k*C), each
/// row in (ky, kx, c) order, which is Keras's HWIO kernel order.
pub struct Im2Col {
    pub k: usize,
}

impl Im2Col {
    fn out_hw(&self, h: usize, w: usize) -> (usize, usize) {
        (h + 1 - self.k, w + 1 - self.k)
    }
}

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (n, h, w, c) = dims4(layout.shape(), self.name())?;
        let k = self.k;
        let (oh, ow) = self.out_hw(h, w);
        let row = k * k * c;
        let mut out = vec![0f32; n * oh * ow * row];
        out.par_chunks_mut(oh * ow * row)
            .zip(x.par_chunks(h * w * c))
            .for_each_init(Vec::new, |patches, (dst, img)| {
                crate::linalg::im2col(k, c, img, (1, h, w), patches);
                dst.copy_from_slice(patches);
            });
        Ok((CpuStorage::F32(out), Shape::from((n * oh * ow, row))))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, h, w, c) = arg.dims4()?;
        let k = self.k;
        let (oh, ow) = self.out_hw(h, w);
        let row = k * k * c;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; n * h * w * c];
        dx.par_chunks_mut(h * w * c)
            .zip(g.par_chunks(oh * ow * row))
            .for_each(|(img, src)| crate::linalg::col2im(k, (h, w, c), src, img));
        Ok(Some(Tensor::from_vec(dx, (n, h, w, c), arg.device())?))
    }
}

/// 2x2 max-pooling with stride 2 (valid padding: an odd last row or column is dropped, as in
/// Keras): (N, H, W, C) -> (N, H/2, W/2, C), of ReLU outputs (the inference kernel it shares
/// also clamps at zero, which leaves non-negative inputs as they are).
pub struct MaxPool2;

impl CustomOp1 for MaxPool2 {
    fn name(&self) -> &'static str {
        "max_pool_2x2"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(storage, layout, self.name())?;
        let (n, h, w, c) = dims4(layout.shape(), self.name())?;
        let (oh, ow) = (h / 2, w / 2);
        let mut out = vec![0f32; n * oh * ow * c];
        let zero = vec![0f32; c];
        out.par_chunks_mut(oh * ow * c)
            .zip(x.par_chunks(h * w * c))
            .for_each(|(dst, img)| pool_bias_relu(img, (h, w, c), &zero, dst));
        Ok((CpuStorage::F32(out), Shape::from((n, oh, ow, c))))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (n, h, w, c) = arg.dims4()?;
        let (oh, ow) = (h / 2, w / 2);
        let x = arg.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let m = res.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let g = grad.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let mut dx = vec![0f32; n * h * w * c];
        dx.par_chunks_mut(h * w * c)
            .enumerate()
            .for_each(|(b, img_dx)| {
                let img = &x[b * h * w * c..][..h * w * c];
                for y in 0..oh {
                    for xo in 0..ow {
                        let o = ((b * oh + y) * ow + xo) * c;
                        for i in 0..c {
                            // The gradient goes to the first maximum, as the forward picked it.
                            'window: for dy in 0..2 {
                                for dxx in 0..2 {
                                    let at = ((2 * y + dy) * w + 2 * xo + dxx) * c + i;
                                    if img[at] == m[o + i] {
                                        img_dx[at] += g[o + i];
                                        break 'window;
                                    }
                                }
                            }
                        }
                    }
                }
            });
        Ok(Some(Tensor::from_vec(dx, (n, h, w, c), arg.device())?))
    }
}
