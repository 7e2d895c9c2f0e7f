//! The machine's arithmetic peak, measured: every thread runs independent multiply-adds on
//! registers only (no memory traffic), so a GEMM's GFLOP/s can be read against it.
#![cfg_attr(kiln_avx512, allow(clippy::incompatible_msrv))]

use std::time::Instant;

use rayon::prelude::*;

use crate::KernelPath;

/// Which multiply-add the peak is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeakKind {
    /// f32 fused multiply-add at the path's vector width.
    F32,
    /// bf16 pair dot products (`vdpbf16ps`) on [`KernelPath::Avx512Bf16`]; other paths
    /// multiply bf16 as f32, so their bf16 peak is the f32 one.
    Bf16,
}

/// GFLOP/s of all rayon threads together, each running `iterations` rounds of independent
/// multiply-adds for `path` (best of 5 tries). Returns 0 when the path is not supported; the scalar path is
/// not measured (its speed depends on auto-vectorisation) and also returns 0.
pub fn peak_gflops(path: KernelPath, kind: PeakKind, iterations: usize) -> f64 {
    if !path.is_supported() {
        return 0.0;
    }
    let threads = rayon::current_num_threads();
    // Best of a few short rounds: on a shared machine a round may lose its core for a while.
    (0..5)
        .map(|_| {
            let start = Instant::now();
            let flops: f64 = (0..threads)
                .into_par_iter()
                .map(|_| flops_on_this_thread(path, kind, iterations))
                .sum();
            flops / start.elapsed().as_secs_f64() / 1e9
        })
        .fold(0.0, f64::max)
}

fn flops_on_this_thread(path: KernelPath, kind: PeakKind, iterations: usize) -> f64 {
    #[cfg(not(target_arch = "x86_64"))]
    let _ = iterations;
    match (path, kind) {
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        (KernelPath::Avx512Bf16, PeakKind::Bf16) => {
            // SAFETY: the path is supported, so the CPU has AVX-512F and AVX512-BF16.
            unsafe { x86::bf16_pairs(iterations) }
        }
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        (KernelPath::Avx512Bf16 | KernelPath::Avx512, _) => {
            // SAFETY: the path is supported, so the CPU has AVX-512F.
            unsafe { x86::f32_zmm(iterations) }
        }
        #[cfg(target_arch = "x86_64")]
        (KernelPath::Avx2Fma, _) => {
            // SAFETY: the path is supported, so the CPU has AVX2 and FMA.
            unsafe { x86::f32_ymm(iterations) }
        }
        _ => 0.0,
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::hint::black_box;

    /// Independent accumulators: enough to cover the FMA latency on two ports.
    #[cfg(kiln_avx512)]
    const CHAINS: usize = 24;

    /// Returns the flops done.
    #[cfg(kiln_avx512)]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn f32_zmm(iterations: usize) -> f64 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        let a = black_box(_mm512_set1_ps(0.999));
        let b = black_box(_mm512_set1_ps(1.001));
        for _ in 0..iterations {
            for sum in acc.iter_mut() {
                *sum = _mm512_fmadd_ps(a, b, *sum);
            }
        }
        black_box(acc);
        (iterations * CHAINS * 16 * 2) as f64
    }

    #[cfg(kiln_avx512)]
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn bf16_pairs(iterations: usize) -> f64 {
        let mut acc = [_mm512_setzero_ps(); CHAINS];
        // SAFETY: both are 64 bytes of plain bits.
        let (a, b) = unsafe {
            (
                std::mem::transmute::<__m512i, __m512bh>(black_box(_mm512_set1_epi16(0x3f80))),
                std::mem::transmute::<__m512i, __m512bh>(black_box(_mm512_set1_epi16(0x3f80))),
            )
        };
        for _ in 0..iterations {
            for sum in acc.iter_mut() {
                *sum = _mm512_dpbf16_ps(*sum, a, b);
            }
        }
        black_box(acc);
        (iterations * CHAINS * 32 * 2) as f64
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn f32_ymm(iterations: usize) -> f64 {
        let mut acc = [_mm256_setzero_ps(); 12];
        let a = black_box(_mm256_set1_ps(0.999));
        let b = black_box(_mm256_set1_ps(1.001));
        for _ in 0..iterations {
            for sum in acc.iter_mut() {
                *sum = _mm256_fmadd_ps(a, b, *sum);
            }
        }
        black_box(acc);
        (iterations * 12 * 8 * 2) as f64
    }
}
