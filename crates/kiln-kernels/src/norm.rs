//! Row-wise LayerNorm fused with the affine or adaLN modulation after it, and the gated
//! residual `x + y · gate`: each is one pass over the activations in f32, rounded to the
//! activation dtype once, where the composite form is ten elementwise passes with a dtype
//! conversion at each end.
//!
//! Rows come in `groups` consecutive groups (the batch), each with its own per-column
//! vectors: `(B, L, D)` activations with `(B, 1, D)` modulation.

use half::bf16;
use rayon::prelude::*;

use crate::error::{check_len, KernelError, Result};
use crate::kernel_path::{run_vectorised, VectorTask};

/// An activation element: f32, or bf16 computed in f32.
pub trait Activation: Copy + Send + Sync + 'static {
    fn load(self) -> f32;
    fn store(v: f32) -> Self;
}

impl Activation for f32 {
    #[inline(always)]
    fn load(self) -> f32 {
        self
    }
    #[inline(always)]
    fn store(v: f32) -> Self {
        v
    }
}

impl Activation for bf16 {
    #[inline(always)]
    fn load(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }
    /// To nearest, ties to even, bit for bit as `bf16::from_f32`, but branch-free so loops
    /// of it vectorise.
    #[inline(always)]
    fn store(v: f32) -> Self {
        crate::convert::round_bf16(v)
    }
}

/// The shape shared by the kernels here: `groups · rows_per_group` rows of `dim`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowShape {
    pub groups: usize,
    pub rows_per_group: usize,
    pub dim: usize,
}

impl RowShape {
    fn elements(&self) -> usize {
        self.groups * self.rows_per_group * self.dim
    }
}

/// Rows per parallel task: enough work to amortise the task.
fn rows_per_task(dim: usize) -> usize {
    (16_384 / dim.max(1)).max(1)
}

/// Rows of [`layer_norm_affine`] for one task.
struct LayerNormRows<'a, E> {
    x: &'a [E],
    out: &'a mut [E],
    a: &'a [f32],
    b: &'a [f32],
    first_row: usize,
    rows_per_group: usize,
    dim: usize,
    eps: f32,
}

impl<E: Activation> VectorTask for LayerNormRows<'_, E> {
    #[inline(always)]
    fn run(self) {
        let LayerNormRows {
            x,
            out,
            a,
            b,
            first_row,
            rows_per_group,
            dim,
            eps,
        } = self;
        let mut row_f32 = vec![0f32; dim];
        for (r, (xr, or)) in x
            .chunks_exact(dim)
            .zip(out.chunks_exact_mut(dim))
            .enumerate()
        {
            let group = (first_row + r) / rows_per_group;
            let (ag, bg) = (
                &a[group * dim..(group + 1) * dim],
                &b[group * dim..(group + 1) * dim],
            );
            for (f, &v) in row_f32.iter_mut().zip(xr) {
                *f = v.load();
            }
            let mean = lane_sum(&row_f32, |v| v) / dim as f32;
            let var = lane_sum(&row_f32, |v| (v - mean) * (v - mean)) / dim as f32;
            let inv = 1.0 / (var + eps).sqrt();
            for (((o, &v), &ai), &bi) in or.iter_mut().zip(&row_f32).zip(ag).zip(bg) {
                *o = E::store((v - mean) * inv * ai + bi);
            }
        }
    }
}

/// Rows of [`rms_norm`] for one task.
struct RmsNormRows<'a, E> {
    x: &'a [E],
    out: &'a mut [E],
    weight: &'a [f32],
    dim: usize,
    eps: f32,
}

impl<E: Activation> VectorTask for RmsNormRows<'_, E> {
    #[inline(always)]
    fn run(self) {
        let RmsNormRows {
            x,
            out,
            weight,
            dim,
            eps,
        } = self;
        let mut row_f32 = vec![0f32; dim];
        for (xr, or) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
            for (f, &v) in row_f32.iter_mut().zip(xr) {
                *f = v.load();
            }
            let inv = 1.0 / (lane_sum(&row_f32, |v| v * v) / dim as f32 + eps).sqrt();
            for ((o, &v), &w) in or.iter_mut().zip(&row_f32).zip(weight) {
                *o = E::store(v * inv * w);
            }
        }
    }
}

/// Rows of [`gated_residual`] for one task.
struct GatedRows<'a, E> {
    x: &'a [E],
    y: &'a [E],
    out: &'a mut [E],
    gate: &'a [f32],
    first_row: usize,
    rows_per_group: usize,
    dim: usize,
}

impl<E: Activation> VectorTask for GatedRows<'_, E> {
    #[inline(always)]
    fn run(self) {
        let GatedRows {
            x,
            y,
            out,
            gate,
            first_row,
            rows_per_group,
            dim,
        } = self;
        for (r, ((xr, yr), or)) in x
            .chunks_exact(dim)
            .zip(y.chunks_exact(dim))
            .zip(out.chunks_exact_mut(dim))
            .enumerate()
        {
            let group = (first_row + r) / rows_per_group;
            let g = &gate[group * dim..(group + 1) * dim];
            for (((o, &xv), &yv), &gv) in or.iter_mut().zip(xr).zip(yr).zip(g) {
                *o = E::store(xv.load() + yv.load() * gv);
            }
        }
    }
}

/// `out = (x - mean) / sqrt(var + eps) · a + b` per row (biased variance, two passes, as
/// torch's LayerNorm), with `a`, `b` of `groups · dim`. adaLN's `norm · (1 + scale) + shift`
/// is `a = 1 + scale`, `b = shift`.
pub fn layer_norm_affine<E: Activation>(
    x: &[E],
    a: &[f32],
    b: &[f32],
    shape: RowShape,
    eps: f32,
    out: &mut [E],
) -> Result<()> {
    let RowShape {
        groups,
        rows_per_group,
        dim,
    } = shape;
    check_len("layer_norm x", shape.elements(), x.len())?;
    check_len("layer_norm out", shape.elements(), out.len())?;
    check_len("layer_norm scale", groups * dim, a.len())?;
    check_len("layer_norm shift", groups * dim, b.len())?;
    if dim == 0 {
        return Ok(());
    }
    let chunk = rows_per_task(dim) * dim;
    let path = crate::KernelPath::best();
    x.par_chunks(chunk)
        .zip(out.par_chunks_mut(chunk))
        .enumerate()
        .for_each(|(task, (x, out))| {
            let rows = LayerNormRows {
                x,
                out,
                a,
                b,
                first_row: task * chunk / dim,
                rows_per_group,
                dim,
                eps,
            };
            run_vectorised(path, rows)
        });
    Ok(())
}

/// `out = x / sqrt(mean(x²) + eps) · weight` per row of `dim` (torch's `RMSNorm`), in f32.
pub fn rms_norm<E: Activation>(
    x: &[E],
    weight: &[f32],
    dim: usize,
    eps: f32,
    out: &mut [E],
) -> Result<()> {
    check_len("rms_norm x", out.len(), x.len())?;
    check_len("rms_norm weight", dim, weight.len())?;
    if dim == 0 || x.is_empty() {
        return Ok(());
    }
    if !x.len().is_multiple_of(dim) {
        return Err(KernelError::ShapeLen {
            operand: "rms_norm x",
            expected: x.len().next_multiple_of(dim),
            found: x.len(),
        });
    }
    let chunk = rows_per_task(dim) * dim;
    let path = crate::KernelPath::best();
    x.par_chunks(chunk)
        .zip(out.par_chunks_mut(chunk))
        .for_each(|(x, out)| {
            let rows = RmsNormRows {
                x,
                out,
                weight,
                dim,
                eps,
            };
            run_vectorised(path, rows)
        });
    Ok(())
}

/// Channel-first L2 normalisation, the Wan VAE's `RMS_norm`: for each of `groups` frames
/// of `channels × plane` (plane = H·W), every pixel's channel vector is divided by
/// `max(‖x‖, 1e-12)` (torch's `F.normalize`) and channel `c` scaled by `scale[c]`
/// (`√C · γ`); with `silu`, SiLU follows in the same pass. Pixels are the vector lanes, so
/// the sum over the strided channel axis is plain adds of contiguous rows.
pub fn channel_norm<E: Activation>(
    x: &[E],
    scale: &[f32],
    groups: usize,
    plane: usize,
    silu: bool,
    out: &mut [E],
) -> Result<()> {
    let channels = scale.len();
    let frame = channels * plane;
    check_len("channel_norm x", groups * frame, x.len())?;
    check_len("channel_norm out", groups * frame, out.len())?;
    if frame == 0 {
        return Ok(());
    }
    let strips = plane.div_ceil(STRIP);
    let out_ptr = SharedSlice(out.as_mut_ptr());
    let path = crate::KernelPath::best();
    (0..groups * strips).into_par_iter().for_each(|task| {
        let (g, strip) = (task / strips, task % strips);
        let start = strip * STRIP;
        let len = STRIP.min(plane - start);
        let base = g * frame + start;
        let strip = Strip {
            x,
            scale,
            plane,
            base,
            len,
            silu,
            out: out_ptr,
        };
        run_vectorised(path, strip)
    });
    Ok(())
}

/// Tasks of [`channel_norm`] are (frame, strip of pixels); a strip's sums stay in L1.
const STRIP: usize = 1024;

/// One strip of pixels of one frame for [`channel_norm`]. Made only there, where the
/// tasks' `(base, len)` ranges of every channel row of `out` are disjoint and inside it.
struct Strip<'a, E> {
    x: &'a [E],
    scale: &'a [f32],
    plane: usize,
    base: usize,
    len: usize,
    silu: bool,
    out: SharedSlice<E>,
}

impl<E: Activation> VectorTask for Strip<'_, E> {
    #[inline(always)]
    fn run(self) {
        let Strip {
            x,
            scale,
            plane,
            base,
            len,
            silu,
            out,
        } = self;
        let mut inv = [0f32; STRIP];
        let inv = &mut inv[..len];
        for c in 0..scale.len() {
            let row = &x[base + c * plane..base + c * plane + len];
            for (acc, &v) in inv.iter_mut().zip(row) {
                let v = v.load();
                *acc += v * v;
            }
        }
        for v in inv.iter_mut() {
            *v = 1.0 / v.sqrt().max(1e-12);
        }
        for (c, &sc) in scale.iter().enumerate() {
            let row = &x[base + c * plane..base + c * plane + len];
            // SAFETY: `channel_norm` gives each task a disjoint (frame, strip) range of
            // `out`, which outlives the parallel loop, with `base + c·plane + len` inside it.
            let dst = unsafe { out.row(base + c * plane, len) };
            for ((o, &v), &k) in dst.iter_mut().zip(row).zip(inv.iter()) {
                let y = v.load() * k * sc;
                *o = E::store(if silu {
                    y / (1.0 + crate::activation::exp(-y))
                } else {
                    y
                });
            }
        }
    }
}

/// A pointer to an output that parallel tasks write in disjoint rows.
#[derive(Clone, Copy)]
struct SharedSlice<E>(*mut E);
// SAFETY: used only for disjoint writes (see `channel_norm`).
unsafe impl<E: Send> Send for SharedSlice<E> {}
// SAFETY: as above.
unsafe impl<E: Send> Sync for SharedSlice<E> {}

impl<E> SharedSlice<E> {
    /// # Safety
    /// `start..start + len` is inside the slice and written by no one else meanwhile.
    #[allow(clippy::mut_from_ref)]
    unsafe fn row(&self, start: usize, len: usize) -> &mut [E] {
        // SAFETY: per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.0.add(start), len) }
    }
}

/// `out = x + y · gate` in f32, `gate` of `groups · dim`.
pub fn gated_residual<E: Activation>(
    x: &[E],
    y: &[E],
    gate: &[f32],
    shape: RowShape,
    out: &mut [E],
) -> Result<()> {
    let RowShape {
        groups,
        rows_per_group,
        dim,
    } = shape;
    check_len("gated_residual x", shape.elements(), x.len())?;
    check_len("gated_residual y", shape.elements(), y.len())?;
    check_len("gated_residual out", shape.elements(), out.len())?;
    check_len("gated_residual gate", groups * dim, gate.len())?;
    if dim == 0 {
        return Ok(());
    }
    let chunk = rows_per_task(dim) * dim;
    let path = crate::KernelPath::best();
    x.par_chunks(chunk)
        .zip(y.par_chunks(chunk))
        .zip(out.par_chunks_mut(chunk))
        .enumerate()
        .for_each(|(task, ((x, y), out))| {
            let rows = GatedRows {
                x,
                y,
                out,
                gate,
                first_row: task * chunk / dim,
                rows_per_group,
                dim,
            };
            run_vectorised(path, rows)
        });
    Ok(())
}

/// `Σ f(v)` over a row with 16 independent partial sums, so the loop vectorises.
#[inline(always)]
fn lane_sum(row: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = row.chunks_exact(16);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f(v);
        }
    }
    let mut total: f32 = chunks.remainder().iter().map(|&v| f(v)).sum();
    total += acc.iter().sum::<f32>();
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_store_is_half_rounding_bit_for_bit() {
        let specials = [
            0.0,
            -0.0,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-40,
            f32::INFINITY,
            f32::NAN,
        ];
        let sweep = (0..300_000u32).map(|i| f32::from_bits(i.wrapping_mul(14_316_557)));
        for v in specials.into_iter().chain(sweep) {
            assert_eq!(
                <bf16 as Activation>::store(v).to_bits(),
                bf16::from_f32(v).to_bits(),
                "{v:e}"
            );
        }
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 250.0 - 4.0
            })
            .collect()
    }

    fn naive_ln(x: &[f32], a: &[f32], b: &[f32], s: RowShape, eps: f64) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        for (r, (xr, or)) in x.chunks(s.dim).zip(out.chunks_mut(s.dim)).enumerate() {
            let g = r / s.rows_per_group;
            let mean = xr.iter().map(|&v| f64::from(v)).sum::<f64>() / s.dim as f64;
            let var = xr
                .iter()
                .map(|&v| (f64::from(v) - mean).powi(2))
                .sum::<f64>()
                / s.dim as f64;
            for (j, (o, &v)) in or.iter_mut().zip(xr).enumerate() {
                let n = (f64::from(v) - mean) / (var + eps).sqrt();
                *o = (n * f64::from(a[g * s.dim + j]) + f64::from(b[g * s.dim + j])) as f32;
            }
        }
        out
    }

    #[test]
    fn layer_norm_matches_the_definition() {
        for (groups, rows, dim) in [
            (1, 1, 1),
            (1, 3, 17),
            (2, 5, 33),
            (3, 700, 48),
            (1, 2, 1536),
        ] {
            let s = RowShape {
                groups,
                rows_per_group: rows,
                dim,
            };
            let x = values(s.elements(), 1);
            let a = values(groups * dim, 2);
            let b = values(groups * dim, 3);
            let want = naive_ln(&x, &a, &b, s, 1e-6);
            let mut got = vec![0f32; x.len()];
            layer_norm_affine(&x, &a, &b, s, 1e-6, &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                    "{s:?} at {i}: {g} vs {w}"
                );
            }
            let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
            let want = naive_ln(
                &xb.iter().map(|v| v.to_f32()).collect::<Vec<_>>(),
                &a,
                &b,
                s,
                1e-6,
            );
            let mut got = vec![bf16::ZERO; x.len()];
            layer_norm_affine(&xb, &a, &b, s, 1e-6, &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                // One rounding to bf16: 2^-8 relative.
                assert!(
                    (g.to_f32() - w).abs() <= 4e-3 * (1.0 + w.abs()),
                    "{s:?} bf16 at {i}: {g} vs {w}"
                );
            }
        }
    }

    #[test]
    fn gated_residual_matches_the_definition() {
        let s = RowShape {
            groups: 2,
            rows_per_group: 300,
            dim: 37,
        };
        let (x, y, gate) = (
            values(s.elements(), 4),
            values(s.elements(), 5),
            values(2 * 37, 6),
        );
        let mut got = vec![0f32; x.len()];
        gated_residual(&x, &y, &gate, s, &mut got).unwrap();
        for (i, g) in got.iter().enumerate() {
            let (r, j) = (i / 37, i % 37);
            let want = x[i] + y[i] * gate[(r / 300) * 37 + j];
            assert_eq!(*g, want, "at {i}");
        }
    }

    #[test]
    fn rms_norm_matches_the_definition() {
        for (rows, dim) in [(1, 1), (3, 17), (700, 48), (2, 1536)] {
            let x = values(rows * dim, 7);
            let w = values(dim, 8);
            let mut got = vec![0f32; x.len()];
            rms_norm(&x, &w, dim, 1e-6, &mut got).unwrap();
            for (r, row) in x.chunks(dim).enumerate() {
                let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / dim as f64;
                for j in 0..dim {
                    let want = (f64::from(row[j]) / (ms + 1e-6).sqrt() * f64::from(w[j])) as f32;
                    let g = got[r * dim + j];
                    assert!(
                        (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                        "{g} vs {want}"
                    );
                }
            }
        }
        let err = rms_norm::<f32>(&[0.0; 5], &[1.0; 2], 2, 1e-6, &mut [0.0; 5]).unwrap_err();
        assert!(err.to_string().contains("rms_norm x"), "{err}");
    }

    #[test]
    fn channel_norm_matches_the_definition() {
        let (groups, channels, plane) = (3, 5, 1500);
        let x = values(groups * channels * plane, 9);
        let scale = values(channels, 10);
        for silu in [false, true] {
            let mut got = vec![0f32; x.len()];
            channel_norm(&x, &scale, groups, plane, silu, &mut got).unwrap();
            for g in 0..groups {
                for p in 0..plane {
                    let at = |c: usize| g * channels * plane + c * plane + p;
                    let norm = (0..channels)
                        .map(|c| f64::from(x[at(c)]).powi(2))
                        .sum::<f64>()
                        .sqrt()
                        .max(1e-12);
                    for c in 0..channels {
                        let y = f64::from(x[at(c)]) / norm * f64::from(scale[c]);
                        let want = if silu { y / (1.0 + (-y).exp()) } else { y } as f32;
                        let got = got[at(c)];
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{got} vs {want}"
                        );
                    }
                }
            }
        }
        // An all-zero pixel stays zero (the 1e-12 floor), not NaN.
        let mut out = vec![1f32; 4];
        channel_norm(&[0f32; 4], &[1.0, 1.0], 1, 2, true, &mut out).unwrap();
        assert_eq!(out, vec![0.0; 4]);
    }

    #[test]
    fn empty_and_mismatched() {
        let s = RowShape {
            groups: 1,
            rows_per_group: 0,
            dim: 8,
        };
        layer_norm_affine::<f32>(&[], &[0.0; 8], &[0.0; 8], s, 1e-6, &mut []).unwrap();
        let s = RowShape {
            groups: 1,
            rows_per_group: 2,
            dim: 8,
        };
        let err =
            layer_norm_affine::<f32>(&[0.0; 15], &[0.0; 8], &[0.0; 8], s, 1e-6, &mut [0.0; 16])
                .unwrap_err();
        assert!(err.to_string().contains("layer_norm x"), "{err}");
    }
}
