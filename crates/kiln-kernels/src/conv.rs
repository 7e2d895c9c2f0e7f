//! Convolution of channel-first frames as GEMMs read straight from the padded input, with
//! no im2col columns in memory.
//!
//! The trick: each output row is computed over the whole padded width, so a kernel tap
//! `(dt, dh, dw)` turns into one plain strided matrix, `X_tap (C × N)` with element
//! `(c, n)` at `c·Hp·Wp + dh·Wp + dw + n`, where `n = ho·Wp + wo`. The output of a frame
//! is then `Σ_tap W_tap (O × C) · X_tap`, accumulated in f32 by the crate's GEMM, and the
//! `kw - 1` columns per row that straddle the padding are dropped at the end. That wastes
//! `(kw - 1) / Wp` of the work (2 % at 128 wide) and saves the gather of `kt·kh·kw` copies
//! of the input, which cost more than the products in the im2col form.

use half::bf16;

use crate::error::{check_len, KernelError, Result};
use crate::gemm::{gemm_items, GemmInput, Operand};
use crate::KernelPath;

/// The shape of a stride-1 3D convolution over frames `(B, T, C, H, W)`: spatial zero
/// padding `pad_hw` on each side is applied here; temporal padding (the causal cache) is
/// the caller's, so `t` counts the frames given, padding included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conv3dShape {
    pub batch: usize,
    pub t: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    /// `(kt, kh, kw)`.
    pub kernel: (usize, usize, usize),
    pub pad_hw: usize,
}

impl Conv3dShape {
    /// `(T', H', W')` of the output.
    pub fn output_dims(&self) -> Result<(usize, usize, usize)> {
        let (kt, kh, kw) = self.kernel;
        let (hp, wp) = (self.h + 2 * self.pad_hw, self.w + 2 * self.pad_hw);
        if kt == 0 || kh == 0 || kw == 0 || self.t < kt || hp < kh || wp < kw {
            return Err(KernelError::ConvShape {
                input: (self.t, hp, wp),
                kernel: self.kernel,
            });
        }
        Ok((self.t - kt + 1, hp - kh + 1, wp - kw + 1))
    }

    /// `(T', H', W')` after checking the lengths of the input, bias and output slices
    /// against the shape.
    pub(crate) fn check_lens(
        &self,
        x: usize,
        bias: usize,
        y: usize,
    ) -> Result<(usize, usize, usize)> {
        let (t_out, ho, wo) = self.output_dims()?;
        check_len(
            "conv3d input",
            self.batch * self.t * self.c_in * self.h * self.w,
            x,
        )?;
        check_len("conv3d bias", self.c_out, bias)?;
        check_len(
            "conv3d output",
            self.batch * t_out * self.c_out * ho * wo,
            y,
        )?;
        Ok((t_out, ho, wo))
    }

    fn taps(&self) -> usize {
        self.kernel.0 * self.kernel.1 * self.kernel.2
    }
}

/// `y = conv3d(x, weight) + bias`, stride 1. `x` is `(B, T, C, H, W)` row-major, `weight`
/// is `(O, kt·kh·kw·C)` with taps outer and channels inner, `bias` has `O` entries, and `y`
/// receives `(B, T', O, H', W')` in f32. bf16 inputs are multiplied exactly and summed in
/// f32.
pub fn conv3d<E: GemmInput + Default>(
    x: &[E],
    weight: &[E],
    bias: &[f32],
    shape: Conv3dShape,
    y: &mut [f32],
) -> Result<()> {
    conv3d_into(x, weight, bias, shape, y, |src, dst| {
        dst.copy_from_slice(src);
        Ok(())
    })
}

/// [`conv3d`] for bf16 frames, rounding the f32 sums to bf16 once as they are cropped.
pub fn conv3d_bf16(
    x: &[bf16],
    weight: &[bf16],
    bias: &[f32],
    shape: Conv3dShape,
    y: &mut [bf16],
) -> Result<()> {
    conv3d_into(x, weight, bias, shape, y, crate::f32_to_bf16)
}

/// The convolution, with `store` writing each output row from its f32 sums.
fn conv3d_into<E: GemmInput + Default, O>(
    x: &[E],
    weight: &[E],
    bias: &[f32],
    shape: Conv3dShape,
    y: &mut [O],
    store: impl Fn(&[f32], &mut [O]) -> Result<()>,
) -> Result<()> {
    let Conv3dShape {
        batch,
        t,
        c_in,
        h,
        w,
        c_out,
        kernel: (kt, kh, kw),
        pad_hw,
    } = shape;
    let (t_out, ho, wo) = shape.check_lens(x.len(), bias.len(), y.len())?;
    let (hp, wp) = (h + 2 * pad_hw, w + 2 * pad_hw);
    check_len("conv3d weight", c_out * shape.taps() * c_in, weight.len())?;
    if y.is_empty() {
        return Ok(());
    }

    let padded = if pad_hw == 0 {
        std::borrow::Cow::Borrowed(x)
    } else {
        std::borrow::Cow::Owned(pad_frames(x, batch * t * c_in, h, w, pad_hw))
    };
    let frame = c_in * hp * wp;
    // Columns of one output frame in padded-width coordinates; the last row stops at wo.
    let n = (ho - 1) * wp + wo;
    let items = batch * t_out;
    let mut acc = vec![0f32; items * c_out * n];
    for item in acc.chunks_exact_mut(c_out * n) {
        for (row, &b) in item.chunks_exact_mut(n).zip(bias) {
            row.fill(b);
        }
    }
    let mut offsets = vec![(0usize, 0usize); items];
    let path = KernelPath::best();
    let mut tap = 0;
    for dt in 0..kt {
        for dh in 0..kh {
            for dw in 0..kw {
                for (i, off) in offsets.iter_mut().enumerate() {
                    let (b, to) = (i / t_out, i % t_out);
                    *off = (tap * c_in, (b * t + to + dt) * frame + dh * wp + dw);
                }
                let a = Operand {
                    data: weight,
                    rows: c_out,
                    cols: c_in,
                    row_stride: shape.taps() * c_in,
                    col_stride: 1,
                };
                let b = Operand {
                    data: &padded,
                    rows: c_in,
                    cols: n,
                    row_stride: hp * wp,
                    col_stride: 1,
                };
                gemm_items(path, a, b, &offsets, &mut acc, true)?;
                tap += 1;
            }
        }
    }

    // Drop the columns that straddle the padding.
    for (src, dst) in acc.chunks_exact(n).zip(y.chunks_exact_mut(ho * wo)) {
        for (r, out_row) in dst.chunks_exact_mut(wo).enumerate() {
            store(&src[r * wp..r * wp + wo], out_row)?;
        }
    }
    Ok(())
}

/// `planes` planes of `h × w` with `pad` zeros on every side.
fn pad_frames<E: Copy + Default>(x: &[E], planes: usize, h: usize, w: usize, pad: usize) -> Vec<E> {
    let (hp, wp) = (h + 2 * pad, w + 2 * pad);
    let mut out = vec![E::default(); planes * hp * wp];
    for (src, dst) in x.chunks_exact(h * w).zip(out.chunks_exact_mut(hp * wp)) {
        for (r, row) in src.chunks_exact(w).enumerate() {
            let start = (r + pad) * wp + pad;
            dst[start..start + w].copy_from_slice(row);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64.
    fn naive(x: &[f32], weight: &[f32], bias: &[f32], s: Conv3dShape) -> Vec<f32> {
        let (t_out, ho, wo) = s.output_dims().unwrap();
        let (kt, kh, kw) = s.kernel;
        let p = s.pad_hw as isize;
        let mut y = vec![0f32; s.batch * t_out * s.c_out * ho * wo];
        for b in 0..s.batch {
            for to in 0..t_out {
                for o in 0..s.c_out {
                    for i in 0..ho {
                        for j in 0..wo {
                            let mut acc = f64::from(bias[o]);
                            for dt in 0..kt {
                                for dh in 0..kh {
                                    for dw in 0..kw {
                                        let (yy, xx) = (
                                            i as isize + dh as isize - p,
                                            j as isize + dw as isize - p,
                                        );
                                        if yy < 0
                                            || xx < 0
                                            || yy >= s.h as isize
                                            || xx >= s.w as isize
                                        {
                                            continue;
                                        }
                                        for c in 0..s.c_in {
                                            let xi = (((b * s.t + to + dt) * s.c_in + c) * s.h
                                                + yy as usize)
                                                * s.w
                                                + xx as usize;
                                            let tap = (dt * kh + dh) * kw + dw;
                                            let wi = o * kt * kh * kw * s.c_in + tap * s.c_in + c;
                                            acc += f64::from(x[xi]) * f64::from(weight[wi]);
                                        }
                                    }
                                }
                            }
                            y[(((b * t_out + to) * s.c_out + o) * ho + i) * wo + j] = acc as f32;
                        }
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn check(s: Conv3dShape) {
        let (kt, kh, kw) = s.kernel;
        let x = values(s.batch * s.t * s.c_in * s.h * s.w, 1);
        let weight = values(s.c_out * kt * kh * kw * s.c_in, 2);
        let bias = values(s.c_out, 3);
        let want = naive(&x, &weight, &bias, s);
        let mut got = vec![f32::NAN; want.len()];
        conv3d(&x, &weight, &bias, s, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                "{s:?} at {i}: {g} vs {w}"
            );
        }

        // bf16: the same products of rounded inputs, summed in f32.
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let wb: Vec<bf16> = weight.iter().map(|&v| bf16::from_f32(v)).collect();
        let want = naive(
            &xb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            &wb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
            &bias,
            s,
        );
        let mut got = vec![bf16::ZERO; want.len()];
        conv3d_bf16(&xb, &wb, &bias, s, &mut got).unwrap();
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            // One bf16 rounding of the result: half an ulp of 8 bits, plus summation order.
            assert!(
                (g.to_f32() - w).abs() <= 4e-3 * (1.0 + w.abs()),
                "{s:?} bf16 at {i}: {g} vs {w}"
            );
        }
    }

    fn shape(
        batch: usize,
        t: usize,
        c_in: usize,
        (h, w): (usize, usize),
        c_out: usize,
        kernel: (usize, usize, usize),
        pad_hw: usize,
    ) -> Conv3dShape {
        Conv3dShape {
            batch,
            t,
            c_in,
            h,
            w,
            c_out,
            kernel,
            pad_hw,
        }
    }

    #[test]
    fn matches_the_definition_on_odd_shapes() {
        check(shape(1, 3, 5, (7, 9), 3, (3, 3, 3), 1));
        check(shape(2, 4, 3, (5, 6), 17, (3, 3, 3), 1));
        check(shape(1, 1, 4, (6, 5), 2, (1, 3, 3), 1));
        check(shape(1, 2, 33, (3, 3), 35, (1, 1, 1), 0));
        check(shape(1, 5, 2, (1, 1), 1, (3, 1, 1), 0));
        // One output column and one output row.
        check(shape(1, 3, 3, (1, 1), 4, (3, 3, 3), 1));
        check(shape(1, 3, 3, (3, 3), 4, (3, 3, 3), 0));
        // Wider than one GEMM block in every direction.
        check(shape(1, 3, 70, (9, 40), 40, (3, 3, 3), 1));
    }

    #[test]
    fn empty_batch_is_empty_output() {
        let s = shape(0, 3, 2, (4, 4), 2, (3, 3, 3), 1);
        let mut y = Vec::new();
        conv3d::<f32>(&[], &vec![0.0; 2 * 27 * 2], &[0.0, 0.0], s, &mut y).unwrap();
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = shape(1, 2, 1, (4, 4), 1, (3, 3, 3), 1);
        let err = conv3d::<f32>(&[0.0; 32], &[0.0; 27], &[0.0], s, &mut []).unwrap_err();
        assert!(matches!(err, KernelError::ConvShape { .. }), "{err}");
        let s = shape(1, 3, 1, (4, 4), 1, (3, 3, 3), 1);
        let err = conv3d::<f32>(&[0.0; 47], &[0.0; 27], &[0.0], s, &mut [0.0; 16]).unwrap_err();
        assert!(matches!(err, KernelError::ShapeLen { .. }), "{err}");
    }
}
