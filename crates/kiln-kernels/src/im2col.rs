//! The im2col columns of a strided 3-D convolution as one candle op with a backward, for
//! training. Built from candle's own ops (a strided view per tap, then a stack), the
//! columns cost little forward, but their backward turns every tap's view into a zero
//! tensor of the whole input plus an add: 27 full passes over the input per 3×3×3
//! convolution, which made that backward most of a VAE training step. Here the forward is
//! one gather and the backward one scatter-add (col2im), each element written once.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, Layout, Result, Shape, Tensor};
use half::bf16;
use rayon::prelude::*;

/// The geometry of one convolution's columns: input `(b, t, c, h, w)` (padding applied
/// already), kernel `(kt, kh, kw)`, stride `st` in time and `s` in space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    b: usize,
    t: usize,
    c: usize,
    h: usize,
    w: usize,
    kernel: (usize, usize, usize),
    st: usize,
    s: usize,
}

impl Columns {
    fn taps(&self) -> usize {
        self.kernel.0 * self.kernel.1 * self.kernel.2
    }

    /// `(t', h', w')`, the output positions.
    fn out_lens(&self) -> (usize, usize, usize) {
        let (kt, kh, kw) = self.kernel;
        (
            (self.t - kt) / self.st + 1,
            (self.h - kh) / self.s + 1,
            (self.w - kw) / self.s + 1,
        )
    }

    /// `(b·t', taps·c, h'·w')`.
    fn out_shape(&self) -> (usize, usize, usize) {
        let (to, ho, wo) = self.out_lens();
        (self.b * to, self.taps() * self.c, ho * wo)
    }

    /// Input element offsets `(plane start, first row offset)` read by column row `r`
    /// (`r` over `b·t'·taps·c`): the plane `(bi, ti, ch)` and the tap's `(dh, dw)` corner.
    fn source(&self, r: usize) -> (usize, usize) {
        let (kt_, kh, kw) = self.kernel;
        let (to_len, _, _) = self.out_lens();
        let per_frame = self.taps() * self.c;
        let (bt, rem) = (r / per_frame, r % per_frame);
        let (tap, ch) = (rem / self.c, rem % self.c);
        let (dt, dh, dw) = (tap / (kh * kw), (tap / kw) % kh, tap % kw);
        debug_assert!(dt < kt_);
        let (bi, to) = (bt / to_len, bt % to_len);
        let ti = to * self.st + dt;
        let plane = ((bi * self.t + ti) * self.c + ch) * self.h * self.w;
        (plane, dh * self.w + dw)
    }
}

/// An element type of the columns: f32, or bf16 (the backward sums in f32).
trait ColumnElement: Copy + Default + Send + Sync {
    fn to_f32(self) -> f32;
    fn from_f32(v: f32) -> Self;
}

impl ColumnElement for f32 {
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(v: f32) -> f32 {
        v
    }
}

impl ColumnElement for bf16 {
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(v: f32) -> bf16 {
        bf16::from_f32(v)
    }
}

/// The columns of `x` `(B, T, C, H, W)`: `(B·T', kt·kh·kw·C, H'·W')`, taps outer (time, row,
/// column), channels inner, output positions last, with `T' = (T − kt) / st + 1` and
/// `H' = (H − kh) / s + 1` (likewise W'). `x` carries any padding already. CPU f32 and bf16
/// only; the gradient flows back to `x`.
pub fn im2col3d(
    x: &Tensor,
    kernel: (usize, usize, usize),
    stride: (usize, usize),
) -> Result<Tensor> {
    let (b, t, c, h, w) = x.dims5()?;
    let (kt, kh, kw) = kernel;
    let (st, s) = stride;
    if kt == 0 || kh == 0 || kw == 0 || st == 0 || s == 0 {
        candle_core::bail!("im2col3d: kernel {kernel:?} and stride {stride:?} must be positive");
    }
    if t < kt || h < kh || w < kw {
        candle_core::bail!("im2col3d: input {t}x{h}x{w} is smaller than the kernel {kt}x{kh}x{kw}");
    }
    if !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::BF16) {
        candle_core::bail!(
            "im2col3d: CPU f32 or bf16 tensors only, got {:?} on {:?}",
            x.dtype(),
            x.device()
        );
    }
    let geometry = Columns {
        b,
        t,
        c,
        h,
        w,
        kernel,
        st,
        s,
    };
    x.contiguous()?.apply_op1(Im2col(geometry))
}

struct Im2col(Columns);

impl Im2col {
    fn run<E: ColumnElement>(g: Columns, x: &[E]) -> Vec<E> {
        let (rows, _, len) = {
            let (n, k, p) = g.out_shape();
            (n * k, k, p)
        };
        let (_, ho, wo) = g.out_lens();
        let mut out = vec![E::default(); rows * len];
        if len == 0 {
            return out;
        }
        out.par_chunks_mut(len).enumerate().for_each(|(r, dst)| {
            let (plane, corner) = g.source(r);
            for (oh, dst_row) in dst.chunks_exact_mut(wo).enumerate().take(ho) {
                let src = &x[plane + corner + oh * g.s * g.w..];
                if g.s == 1 {
                    dst_row.copy_from_slice(&src[..wo]);
                } else {
                    for (ow, d) in dst_row.iter_mut().enumerate() {
                        *d = src[ow * g.s];
                    }
                }
            }
        });
        out
    }
}

impl candle_core::CustomOp1 for Im2col {
    fn name(&self) -> &'static str {
        "kiln-im2col3d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (start, end) = contiguous(layout)?;
        let out = match storage {
            CpuStorage::F32(x) => CpuStorage::F32(Self::run(g, &x[start..end])),
            CpuStorage::BF16(x) => CpuStorage::BF16(Self::run(g, &x[start..end])),
            other => candle_core::bail!("kiln-im2col3d: f32 or bf16 only, got {:?}", other.dtype()),
        };
        Ok((out, Shape::from(g.out_shape())))
    }

    fn bwd(&self, _x: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&Col2im(self.0))?))
    }
}

/// The backward of [`Im2col`]: each input element's gradient is the sum of the column
/// entries that copied it.
struct Col2im(Columns);

impl Col2im {
    fn run<E: ColumnElement>(g: Columns, cols: &[E]) -> Vec<E> {
        let (kt, kh, kw) = g.kernel;
        let (to_len, ho, wo) = g.out_lens();
        let (_, k, len) = g.out_shape();
        let plane_len = g.h * g.w;
        let mut grad = vec![E::default(); g.b * g.t * g.c * plane_len];
        if plane_len == 0 {
            return grad;
        }
        // One task per input plane `(bi, ti, ch)`: it gathers every column entry that read
        // it, in a fixed order, so the sums do not depend on the threads.
        grad.par_chunks_mut(plane_len)
            .enumerate()
            .for_each(|(p, plane)| {
                let (bi, ti, ch) = (p / (g.t * g.c), (p / g.c) % g.t, p % g.c);
                let mut acc = vec![0f32; plane_len];
                for dt in 0..kt {
                    // Output frame `to` reads input frame `to·st + dt`.
                    let Some(off) = ti.checked_sub(dt) else {
                        continue;
                    };
                    if off % g.st != 0 || off / g.st >= to_len {
                        continue;
                    }
                    let bt = bi * to_len + off / g.st;
                    for dh in 0..kh {
                        for dw in 0..kw {
                            let tap = (dt * kh + dh) * kw + dw;
                            let src = &cols[(bt * k + tap * g.c + ch) * len..][..len];
                            for (oh, src_row) in src.chunks_exact(wo).enumerate().take(ho) {
                                let row = (oh * g.s + dh) * g.w + dw;
                                for (ow, &v) in src_row.iter().enumerate() {
                                    acc[row + ow * g.s] += v.to_f32();
                                }
                            }
                        }
                    }
                }
                for (d, &a) in plane.iter_mut().zip(&acc) {
                    *d = E::from_f32(a);
                }
            });
        grad
    }
}

impl candle_core::CustomOp1 for Col2im {
    fn name(&self) -> &'static str {
        "kiln-col2im3d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = self.0;
        let (start, end) = contiguous(layout)?;
        if layout.shape().dims() != [g.out_shape().0, g.out_shape().1, g.out_shape().2] {
            candle_core::bail!(
                "kiln-col2im3d: gradient {:?} does not match the columns {:?}",
                layout.shape().dims(),
                g.out_shape()
            );
        }
        let out = match storage {
            CpuStorage::F32(c) => CpuStorage::F32(Self::run(g, &c[start..end])),
            CpuStorage::BF16(c) => CpuStorage::BF16(Self::run(g, &c[start..end])),
            other => candle_core::bail!("kiln-col2im3d: f32 or bf16 only, got {:?}", other.dtype()),
        };
        Ok((out, Shape::from((g.b, g.t, g.c, g.h, g.w))))
    }
}

fn contiguous(l: &Layout) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kiln-im2col3d: needs a contiguous tensor".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::hashed as values;
    use candle_core::{Device, Var};

    /// The columns as candle's own ops build them: a strided view per tap, stacked.
    fn reference(
        x: &Tensor,
        (kt, kh, kw): (usize, usize, usize),
        (st, s): (usize, usize),
    ) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let (to, ho, wo) = ((t - kt) / st + 1, (h - kh) / s + 1, (w - kw) / s + 1);
        let pick =
            |x: &Tensor, dim: usize, start: usize, len: usize, stride: usize| -> Result<Tensor> {
                let idx: Vec<u32> = (0..len).map(|i| (start + i * stride) as u32).collect();
                x.index_select(&Tensor::new(idx.as_slice(), x.device())?, dim)
            };
        let mut views = Vec::new();
        for dt in 0..kt {
            let xt = pick(x, 1, dt, to, st)?;
            for dh in 0..kh {
                let xh = pick(&xt, 3, dh, ho, s)?;
                for dw in 0..kw {
                    views.push(pick(&xh, 4, dw, wo, s)?);
                }
            }
        }
        Tensor::stack(&views, 2)?.reshape((b * to, kt * kh * kw * c, ho * wo))
    }

    /// Input `(B, T, C, H, W)`, kernel, stride.
    type Case = (
        (usize, usize, usize, usize, usize),
        (usize, usize, usize),
        (usize, usize),
    );

    const CASES: &[Case] = &[
        ((2, 3, 4, 6, 7), (3, 3, 3), (1, 1)),
        ((1, 5, 3, 9, 8), (3, 3, 3), (2, 2)),
        ((2, 1, 2, 5, 5), (1, 3, 3), (1, 2)),
        ((1, 4, 5, 3, 3), (3, 1, 1), (1, 1)),
        ((1, 2, 1, 1, 1), (1, 1, 1), (1, 1)),
        ((1, 3, 2, 4, 4), (3, 3, 3), (1, 1)),
    ];

    #[test]
    fn columns_and_gradients_match_candles_own_ops() -> Result<()> {
        let dev = Device::Cpu;
        for (i, &(dims, kernel, stride)) in CASES.iter().enumerate() {
            let n = dims.0 * dims.1 * dims.2 * dims.3 * dims.4;
            let x = Var::from_tensor(&Tensor::from_vec(values(n, i as u32), dims, &dev)?)?;
            let ours = im2col3d(x.as_tensor(), kernel, stride)?;
            let theirs = reference(x.as_tensor(), kernel, stride)?;
            assert_eq!(ours.dims(), theirs.dims(), "case {i}");
            // Exact: both only copy.
            let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert_eq!(diff, 0.0, "case {i} forward");
            // A weighted sum makes every column entry's gradient distinct.
            let weights =
                Tensor::from_vec(values(ours.elem_count(), 100 + i as u32), ours.dims(), &dev)?;
            let g_ours = (&ours * &weights)?.sum_all()?.backward()?;
            let g_theirs = (&theirs * &weights)?.sum_all()?.backward()?;
            let (a, b) = (
                g_ours.get(&x).expect("grad"),
                g_theirs.get(&x).expect("grad"),
            );
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "case {i} backward differs by {diff}");
        }
        Ok(())
    }

    #[test]
    fn bf16_columns_equal_the_f32_ones_rounded() -> Result<()> {
        let dev = Device::Cpu;
        let dims = (1, 3, 2, 5, 6);
        let x = Tensor::from_vec(values(180, 7), dims, &dev)?.to_dtype(DType::BF16)?;
        let ours = im2col3d(&x, (3, 3, 3), (1, 1))?.to_dtype(DType::F32)?;
        let theirs = im2col3d(&x.to_dtype(DType::F32)?, (3, 3, 3), (1, 1))?;
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        Ok(())
    }

    #[test]
    fn bad_input_is_an_error() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 1, 4, 4), DType::F32, &dev).unwrap();
        assert!(im2col3d(&x, (3, 3, 3), (1, 1)).is_err(), "too few frames");
        assert!(im2col3d(&x, (1, 3, 3), (0, 1)).is_err(), "zero stride");
        let x = Tensor::zeros((1, 2, 1, 4, 4), DType::U32, &dev).unwrap();
        assert!(im2col3d(&x, (1, 3, 3), (1, 1)).is_err(), "u32");
    }
}
