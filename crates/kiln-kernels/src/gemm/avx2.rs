//! The AVX2 + FMA path: 6 × 16 f32 tiles in 12 ymm accumulators (bf16 widened while
//! packing). Simpler than the AVX-512 path; it serves CPUs without AVX-512.

use std::arch::x86_64::*;

use half::bf16;

use super::driver::MicroKernel;
use super::pack::pack_widened;

const MR: usize = 6;
const NR: usize = 16;

pub(crate) struct Avx2F32;

macro_rules! avx2_kernel {
    ($input:ty) => {
        impl MicroKernel<$input> for Avx2F32 {
            type Packed = f32;
            const MR: usize = MR;
            const NR: usize = NR;
            const K_PER_PACKED: usize = 1;
            const KC: usize = 256;
            const MC: usize = 192;
            const NC: usize = 2048;

            unsafe fn pack(
                src: *const $input,
                lane_stride: usize,
                k_stride: usize,
                lanes: usize,
                width: usize,
                kc: usize,
                dst: *mut f32,
            ) {
                // SAFETY: the caller's contract covers the pointers, and only reaches this
                // path after checking the CPU has AVX2 and FMA.
                unsafe { pack_avx2(src, lane_stride, k_stride, lanes, width, kc, dst) }
            }

            unsafe fn tile(
                kp: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                rows: usize,
                cols: usize,
                accumulate: bool,
            ) {
                // SAFETY: as for `pack`.
                unsafe { tile_avx2(kp, a, b, c, ldc, rows, cols, accumulate) }
            }
        }
    };
}

avx2_kernel!(f32);
avx2_kernel!(bf16);

/// # Safety
/// As `MicroKernel::pack`; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn pack_avx2<E: super::GemmInput>(
    src: *const E,
    lane_stride: usize,
    k_stride: usize,
    lanes: usize,
    width: usize,
    kc: usize,
    dst: *mut f32,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { pack_widened(src, lane_stride, k_stride, lanes, width, kc, dst) }
}

/// # Safety
/// As `MicroKernel::tile`; the CPU has AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_avx2(
    kp: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    for p in 0..kp {
        // SAFETY: step `p < kp` of the packed panels holds MR values of A and NR of B.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let a_i = _mm256_broadcast_ss(&*a.add(p * MR + i));
                acc_row[0] = _mm256_fmadd_ps(a_i, b0, acc_row[0]);
                acc_row[1] = _mm256_fmadd_ps(a_i, b1, acc_row[1]);
            }
        }
    }
    if rows == MR && cols == NR {
        for (i, acc_row) in acc.iter().enumerate() {
            for (v, &sum) in acc_row.iter().enumerate() {
                // SAFETY: a full tile: row i, columns 8v..8v+8 are inside C.
                unsafe {
                    let out = c.add(i * ldc + 8 * v);
                    let sum = if accumulate {
                        _mm256_add_ps(sum, _mm256_loadu_ps(out))
                    } else {
                        sum
                    };
                    _mm256_storeu_ps(out, sum);
                }
            }
        }
    } else {
        // Edge tile: spill the sums and copy the valid part.
        let mut spill = [[0.0f32; NR]; MR];
        for (row, acc_row) in spill.iter_mut().zip(&acc) {
            // SAFETY: each spill row holds NR = 2 × 8 floats.
            unsafe {
                _mm256_storeu_ps(row.as_mut_ptr(), acc_row[0]);
                _mm256_storeu_ps(row.as_mut_ptr().add(8), acc_row[1]);
            }
        }
        for (i, row) in spill.iter().enumerate().take(rows) {
            // SAFETY: row `i < rows` of C has `cols` valid elements.
            let out = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
            for (o, &v) in out.iter_mut().zip(row) {
                *o = if accumulate { *o + v } else { v };
            }
        }
    }
}
