//! The two operations DeepID needs beyond matrix products, on NHWC tensors, as candle custom
//! ops with backward passes: patch extraction (so a convolution is one matrix product over a
//! patch matrix built with plain memory copies, much faster than candle's CPU `conv2d`) and
//! 2x2 max-pooling.

use candle_core::{CpuStorage, CustomOp1, InplaceOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;
use std::mem::MaybeUninit;

fn contiguous<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("{op}: expected f32 input")
    };
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&data[start..end]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// A vector of `len` values written chunk by chunk in parallel by `fill`, without zeroing it
/// first (zeroing costs as much as the copies that follow). `fill` must write every element of
/// each chunk it is given.
fn filled(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut v: Vec<f32> = Vec::with_capacity(len);
    v.spare_capacity_mut()[..len]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: every element of the first `len` was written by `fill`.
    unsafe { v.set_len(len) };
    v
}

fn write(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    for (d, s) in dst.iter_mut().zip(src) {
        d.write(*s);
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
        let out = filled(n * oh * ow * row, oh * ow * row, |b, dst| {
            let img = &x[b * h * w * c..][..h * w * c];
            for y in 0..oh {
                for xo in 0..ow {
                    let r = &mut dst[(y * ow + xo) * row..][..row];
                    for ky in 0..k {
                        let src = &img[((y + ky) * w + xo) * c..][..k * c];
                        write(&mut r[ky * k * c..][..k * c], src);
                    }
                }
            }
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
            .for_each(|(img, src)| {
                for y in 0..oh {
                    for xo in 0..ow {
                        let r = &src[(y * ow + xo) * row..][..row];
                        for ky in 0..k {
                            let dst = &mut img[((y + ky) * w + xo) * c..][..k * c];
                            for (d, s) in dst.iter_mut().zip(&r[ky * k * c..][..k * c]) {
                                *d += s;
                            }
                        }
                    }
                }
            });
        Ok(Some(Tensor::from_vec(dx, (n, h, w, c), arg.device())?))
    }
}

/// 2x2 max-pooling with stride 2 (valid padding: an odd last row or column is dropped, as in
/// Keras): (N, H, W, C) -> (N, H/2, W/2, C).
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
        out.par_chunks_mut(oh * ow * c)
            .zip(x.par_chunks(h * w * c))
            .for_each(|(dst, img)| {
                for y in 0..oh {
                    for xo in 0..ow {
                        let at = |dy: usize, dx: usize| {
                            &img[((2 * y + dy) * w + 2 * xo + dx) * c..][..c]
                        };
                        let (a, b, p, q) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                        let d = &mut dst[(y * ow + xo) * c..][..c];
                        for i in 0..c {
                            d[i] = a[i].max(b[i]).max(p[i].max(q[i]));
                        }
                    }
                }
            });
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

/// `x = max(x + bias, 0)` in place over the rows of a (rows, channels) matrix: inference
/// only (no backward), saving the two full passes and allocations of add-then-ReLU.
pub struct BiasRelu;

impl InplaceOp2 for BiasRelu {
    fn name(&self) -> &'static str {
        "bias_relu"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(x), CpuStorage::F32(b)) = (s1, s2) else {
            candle_core::bail!("bias_relu: expected f32 tensors")
        };
        let (Some((xs, xe)), Some((bs, be))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("bias_relu: inputs must be contiguous")
        };
        let bias = &b[bs..be];
        x[xs..xe].par_chunks_mut(bias.len() * 256).for_each(|rows| {
            for row in rows.chunks_mut(bias.len()) {
                for (v, b) in row.iter_mut().zip(bias) {
                    *v = (*v + b).max(0.0);
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn ramp(shape: (usize, usize, usize, usize)) -> Tensor {
        let n = shape.0 * shape.1 * shape.2 * shape.3;
        let v: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
            .collect();
        Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn im2col_matmul_equals_candle_conv2d() {
        let x = ramp((2, 6, 5, 3));
        let kernel = ramp((4, 3, 3, 3)); // (O, I, KH, KW)
        let want = x
            .permute((0, 3, 1, 2))
            .unwrap()
            .conv2d(&kernel, 0, 1, 1, 1)
            .unwrap()
            .permute((0, 2, 3, 1))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mat = kernel
            .permute((2, 3, 1, 0))
            .unwrap()
            .reshape((27, 4))
            .unwrap();
        let got = x
            .apply_op1(Im2Col { k: 3 })
            .unwrap()
            .matmul(&mat)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        assert_eq!(want.len(), 2 * 4 * 3 * 4);
        for (a, b) in want.iter().zip(&got) {
            assert!((a - b).abs() < 1e-3, "{a} vs {b}");
        }
    }

    #[test]
    fn gradients_match_finite_differences() {
        let x = Var::from_tensor(&ramp((1, 5, 4, 2))).unwrap();
        let weights = ramp((1, 1, 18, 3)).reshape((18, 3)).unwrap();
        let loss = |x: &Tensor| {
            x.apply_op1(Im2Col { k: 3 })
                .unwrap()
                .matmul(&weights)
                .unwrap()
                .reshape((1, 3, 2, 3))
                .unwrap()
                .apply_op1(MaxPool2)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
        };
        let grads = loss(x.as_tensor()).backward().unwrap();
        let g = grads
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let base = x
            .as_tensor()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        for i in [0, 7, 13, 22, 39] {
            let mut plus = base.clone();
            plus[i] += 1e-2;
            let mut minus = base.clone();
            minus[i] -= 1e-2;
            let f = |v: Vec<f32>| {
                loss(&Tensor::from_vec(v, (1, 5, 4, 2), &Device::Cpu).unwrap())
                    .to_scalar::<f32>()
                    .unwrap()
            };
            let numeric = (f(plus) - f(minus)) / 2e-2;
            assert!(
                (numeric - g[i]).abs() <= 1e-2 * numeric.abs().max(1.0),
                "input {i}: numeric {numeric}, analytic {}",
                g[i]
            );
        }
    }
}
