//! Elementwise activations over slices: branch-free f32 arithmetic the compiler turns into
//! vector code, split over the threads. candle evaluates them one element at a time on one
//! thread with libm's `tanhf`, which costs a 1.3B-shaped transformer forward about as much
//! as a fifth of its matrix products.

use half::bf16;
use rayon::prelude::*;

use crate::kernel_path::{run_vectorised, VectorTask};
use crate::norm::Activation;
use crate::{KernelError, KernelPath, Result};

/// Elements per task: large enough to amortise the split, small enough to balance 2+ cores.
const CHUNK: usize = 1 << 14;
const SQRT_2_OVER_PI: f32 = 0.797_884_6;

/// e^x for x in [-87, 88], within 2 ulp: x = n·ln2 + r with |r| ≤ ln2/2, e^r by its
/// degree-6 Taylor polynomial, 2^n through the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // Adding and removing 1.5·2^23 rounds to the nearest integer without a branch.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// tanh(u) = (e^{2u} − 1) / (e^{2u} + 1); |u| ≥ 9 is ±1 to f32 precision.
#[inline(always)]
fn tanh(u: f32) -> f32 {
    let e = exp(2.0 * u.clamp(-9.0, 9.0));
    (e - 1.0) / (e + 1.0)
}

/// GELU with the tanh approximation, as candle's `gelu` and diffusers' "gelu-approximate":
/// 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
#[inline(always)]
pub(crate) fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + tanh(SQRT_2_OVER_PI * x * (1.0 + 0.044_715 * x * x)))
}

fn check(len_in: usize, len_out: usize) -> Result<()> {
    if len_in != len_out {
        return Err(KernelError::ElementwiseLen {
            op: "gelu",
            input: len_in,
            output: len_out,
        });
    }
    Ok(())
}

/// One chunk of GELU: `out[i] = gelu(x[i])` in f32, rounded once to the output type.
struct GeluChunk<'a, I, O> {
    x: &'a [I],
    out: &'a mut [O],
}

impl VectorTask for GeluChunk<'_, f32, f32> {
    #[inline(always)]
    fn run(self) {
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            *o = gelu(x);
        }
    }
}

impl VectorTask for GeluChunk<'_, bf16, bf16> {
    #[inline(always)]
    fn run(self) {
        for (o, &x) in self.out.iter_mut().zip(self.x) {
            *o = <bf16 as Activation>::store(gelu(x.load()));
        }
    }
}

/// `out[i] = gelu(xs[i])`.
pub fn gelu_tanh_f32(xs: &[f32], out: &mut [f32]) -> Result<()> {
    check(xs.len(), out.len())?;
    let path = KernelPath::best();
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .for_each(|(out, x)| run_vectorised(path, GeluChunk { x, out }));
    Ok(())
}

/// `out[i] = gelu(xs[i])` computed in f32 and rounded once to bf16.
pub fn gelu_tanh_bf16(xs: &[bf16], out: &mut [bf16]) -> Result<()> {
    check(xs.len(), out.len())?;
    let path = KernelPath::best();
    out.par_chunks_mut(CHUNK)
        .zip(xs.par_chunks(CHUNK))
        .for_each(|(out, x)| run_vectorised(path, GeluChunk { x, out }));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(x: f32) -> f32 {
        let x = f64::from(x);
        (0.5 * x * (1.0 + (0.797_884_560_802_865_4 * x * (1.0 + 0.044715 * x * x)).tanh())) as f32
    }

    #[test]
    fn exp_and_gelu_match_f64_references() {
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        let mut worst = 0f32;
        for i in -20_000..=20_000 {
            let x = i as f32 * 1e-3;
            worst = worst.max((gelu(x) - reference(x)).abs() / x.abs().max(1.0));
        }
        assert!(worst < 5e-7, "worst scaled gelu error {worst}");
        for x in [f32::MAX, -f32::MAX, 1e30, -1e30] {
            assert!(gelu(x).is_finite() || x.abs() > 1e19, "{x}");
        }
        assert_eq!(gelu(0.0), 0.0);
    }

    #[test]
    fn slices_of_any_length() {
        for len in [0, 1, 7, CHUNK - 1, CHUNK, CHUNK + 3, 3 * CHUNK + 5] {
            let xs: Vec<f32> = (0..len).map(|i| (i as f32 * 0.37).sin() * 6.0).collect();
            let mut out = vec![f32::NAN; len];
            gelu_tanh_f32(&xs, &mut out).unwrap();
            for (&x, &y) in xs.iter().zip(&out) {
                assert!(
                    (y - reference(x)).abs() <= 5e-7 * x.abs().max(1.0),
                    "{x} -> {y}"
                );
            }
            let xb: Vec<bf16> = xs.iter().map(|&x| bf16::from_f32(x)).collect();
            let mut ob = vec![bf16::ZERO; len];
            gelu_tanh_bf16(&xb, &mut ob).unwrap();
            for (&x, &y) in xb.iter().zip(&ob) {
                assert_eq!(y, bf16::from_f32(gelu(x.to_f32())), "{x}");
            }
        }
        assert!(gelu_tanh_f32(&[1.0], &mut []).is_err());
    }
}
