//! Element conversions that sit next to the kernels, vectorised and spread over the cores.

use half::bf16;
use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::KernelPath;

/// Elements per parallel chunk: large enough to amortise a task, small enough to balance.
const CHUNK: usize = 1 << 15;

/// Rounds f32 to bf16 (to nearest, ties to even; NaN stays NaN), bit for bit as
/// `half::bf16::from_f32`, writing `dst[i]` from `src[i]`. The slices must be equally long.
pub fn f32_to_bf16(src: &[f32], dst: &mut [bf16]) -> Result<()> {
    if src.len() != dst.len() {
        return Err(KernelError::ConvertLen {
            src: src.len(),
            dst: dst.len(),
        });
    }
    let path = KernelPath::best();
    if src.len() <= CHUNK {
        convert_chunk(path, src, dst);
    } else {
        src.par_chunks(CHUNK)
            .zip(dst.par_chunks_mut(CHUNK))
            .for_each(|(src, dst)| convert_chunk(path, src, dst));
    }
    Ok(())
}

fn convert_chunk(path: KernelPath, src: &[f32], dst: &mut [bf16]) {
    match path {
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        KernelPath::Avx512Bf16 | KernelPath::Avx512 => {
            // SAFETY: `KernelPath::best` only returns a path the CPU supports.
            unsafe { round_avx512(src, dst) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => {
            // SAFETY: as above.
            unsafe { round_avx2(src, dst) }
        }
        _ => round_slice(src, dst),
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[allow(clippy::incompatible_msrv)] // compiled only on rustc >= 1.89, see build.rs
#[target_feature(enable = "avx512f")]
unsafe fn round_avx512(src: &[f32], dst: &mut [bf16]) {
    round_slice(src, dst)
}

/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn round_avx2(src: &[f32], dst: &mut [bf16]) {
    round_slice(src, dst)
}

/// Branch-free so the compiler vectorises it at the caller's vector width.
#[inline(always)]
pub(crate) fn round_slice(src: &[f32], dst: &mut [bf16]) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d = round_bf16(s);
    }
}

/// One f32 to bf16, to nearest with ties to even (NaN stays NaN, made quiet), bit for bit
/// as `half::bf16::from_f32`; branch-free, so loops of it vectorise.
#[inline(always)]
pub(crate) fn round_bf16(v: f32) -> bf16 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
    // A NaN keeps its sign and upper payload, made quiet.
    let nan = ((bits >> 16) | 0x0040) as u16;
    bf16::from_bits(if v.is_nan() { nan } else { rounded })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_half_bit_for_bit() {
        let mut values = vec![
            0.0,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            1e-40,
            -1e-40,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            -f32::NAN,
            f32::from_bits(0x7f80_0001),
            // Ties: exactly half way between two bf16, even and odd below.
            f32::from_bits(0x3f80_8000),
            f32::from_bits(0x3f81_8000),
            f32::from_bits(0x7f7f_8000),
        ];
        // And a sweep of bit patterns over the whole range.
        values.extend((0..200_000u32).map(|i| f32::from_bits(i.wrapping_mul(2_147_483))));
        let mut got = vec![bf16::ZERO; values.len()];
        f32_to_bf16(&values, &mut got).unwrap();
        for (v, g) in values.iter().zip(&got) {
            assert_eq!(
                g.to_bits(),
                bf16::from_f32(*v).to_bits(),
                "{v:e} ({:#x})",
                v.to_bits()
            );
        }
        assert!(f32_to_bf16(&values, &mut got[1..]).is_err());
    }
}
