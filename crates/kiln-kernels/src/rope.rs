//! Rotary position embedding with interleaved pairs (Wan's RoPE): `(x₀, x₁)` at each pair
//! `i` of a row at position `l` becomes `(x₀·cos − x₁·sin, x₀·sin + x₁·cos)` with the
//! angle's `cos[l, i]`, `sin[l, i]`. One pass in f32, rounded to the activation dtype once.

use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::norm::Activation;

/// `x` and `out` are `(groups, len, dim)` row-major (groups = batch × heads); `cos` and
/// `sin` are `(len, dim / 2)`; `dim` is even.
pub fn rope_interleaved<E: Activation>(
    x: &[E],
    cos: &[f32],
    sin: &[f32],
    len: usize,
    dim: usize,
    out: &mut [E],
) -> Result<()> {
    let plane = len * dim;
    let shape_error = |operand, expected, found| KernelError::ShapeLen {
        operand,
        expected,
        found,
    };
    if dim % 2 == 1 {
        return Err(shape_error("rope dim (must be even)", dim + 1, dim));
    }
    if cos.len() != len * dim / 2 || sin.len() != cos.len() {
        return Err(shape_error(
            "rope cos/sin",
            len * dim / 2,
            cos.len().min(sin.len()),
        ));
    }
    if out.len() != x.len() || (plane > 0 && !x.len().is_multiple_of(plane)) {
        return Err(shape_error(
            "rope x/out",
            x.len().next_multiple_of(plane.max(1)),
            out.len(),
        ));
    }
    if plane == 0 {
        return Ok(());
    }
    let path = crate::KernelPath::best();
    x.par_chunks(plane)
        .zip(out.par_chunks_mut(plane))
        .for_each(|(x, out)| {
            let plane = RopePlane {
                x,
                out,
                cos,
                sin,
                dim,
            };
            crate::kernel_path::run_vectorised(path, plane)
        });
    Ok(())
}

/// One `(len, dim)` plane of [`rope_interleaved`].
struct RopePlane<'a, E> {
    x: &'a [E],
    out: &'a mut [E],
    cos: &'a [f32],
    sin: &'a [f32],
    dim: usize,
}

impl<E: Activation> crate::kernel_path::VectorTask for RopePlane<'_, E> {
    #[inline(always)]
    fn run(self) {
        let RopePlane {
            x,
            out,
            cos,
            sin,
            dim,
        } = self;
        for (l, (xr, or)) in x
            .chunks_exact(dim)
            .zip(out.chunks_exact_mut(dim))
            .enumerate()
        {
            let (c, s) = (
                &cos[l * dim / 2..(l + 1) * dim / 2],
                &sin[l * dim / 2..(l + 1) * dim / 2],
            );
            for (((xp, op), &ci), &si) in
                xr.chunks_exact(2).zip(or.chunks_exact_mut(2)).zip(c).zip(s)
            {
                let (x0, x1) = (xp[0].load(), xp[1].load());
                op[0] = E::store(x0 * ci - x1 * si);
                op[1] = E::store(x0 * si + x1 * ci);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::bf16;

    #[test]
    fn rotates_each_pair_by_its_angle() {
        let (groups, len, dim) = (3, 5, 6);
        let x: Vec<f32> = (0..groups * len * dim)
            .map(|i| (i as f32 * 0.37).sin())
            .collect();
        let angles: Vec<f32> = (0..len * dim / 2).map(|i| i as f32 * 0.21).collect();
        let cos: Vec<f32> = angles.iter().map(|a| a.cos()).collect();
        let sin: Vec<f32> = angles.iter().map(|a| a.sin()).collect();
        let mut got = vec![0f32; x.len()];
        rope_interleaved(&x, &cos, &sin, len, dim, &mut got).unwrap();
        for g in 0..groups {
            for l in 0..len {
                for i in 0..dim / 2 {
                    let at = (g * len + l) * dim + 2 * i;
                    let a = angles[l * dim / 2 + i];
                    let (x0, x1) = (x[at], x[at + 1]);
                    assert!((got[at] - (x0 * a.cos() - x1 * a.sin())).abs() < 1e-6);
                    assert!((got[at + 1] - (x0 * a.sin() + x1 * a.cos())).abs() < 1e-6);
                }
            }
        }
        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut gotb = vec![bf16::ZERO; x.len()];
        rope_interleaved(&xb, &cos, &sin, len, dim, &mut gotb).unwrap();
        for (b, f) in gotb.iter().zip(&got) {
            assert!((b.to_f32() - f).abs() <= 1e-2, "{b} vs {f}");
        }
    }

    #[test]
    fn bad_shapes_are_errors() {
        assert!(
            rope_interleaved::<f32>(&[0.0; 6], &[0.0; 3], &[0.0; 3], 1, 5, &mut [0.0; 6]).is_err()
        );
        assert!(
            rope_interleaved::<f32>(&[0.0; 6], &[0.0; 2], &[0.0; 3], 1, 6, &mut [0.0; 6]).is_err()
        );
        assert!(
            rope_interleaved::<f32>(&[0.0; 7], &[0.0; 3], &[0.0; 3], 1, 6, &mut [0.0; 7]).is_err()
        );
        rope_interleaved::<f32>(&[], &[], &[], 0, 6, &mut []).unwrap();
    }
}
