//! The portable path: plain Rust the compiler may auto-vectorise for the baseline target.

use half::bf16;

use super::driver::MicroKernel;
use super::pack::pack_widened;

const MR: usize = 4;
const NR: usize = 8;

/// f32 tiles of 4 × 8 (bf16 inputs widened while packing).
pub(crate) struct ScalarF32;

macro_rules! scalar_kernel {
    ($input:ty) => {
        impl MicroKernel<$input> for ScalarF32 {
            type Packed = f32;
            const MR: usize = MR;
            const NR: usize = NR;
            const K_PER_PACKED: usize = 1;
            const KC: usize = 256;
            const MC: usize = 128;
            const NC: usize = 1024;

            unsafe fn pack(
                src: *const $input,
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
                // SAFETY: forwarded from the caller's contract.
                unsafe { tile_f32(kp, a, b, c, ldc, rows, cols, accumulate) }
            }
        }
    };
}

scalar_kernel!(f32);
scalar_kernel!(bf16);

/// # Safety
/// As `MicroKernel::tile`.
#[allow(clippy::too_many_arguments)]
unsafe fn tile_f32(
    kp: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    // SAFETY: the caller guarantees `kp` packed steps of MR and NR elements.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kp * MR),
            std::slice::from_raw_parts(b, kp * NR),
        )
    };
    let mut acc = [[0.0f32; NR]; MR];
    for (a_k, b_k) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (acc_row, &a_ik) in acc.iter_mut().zip(a_k) {
            for (acc_ij, &b_kj) in acc_row.iter_mut().zip(b_k) {
                *acc_ij += a_ik * b_kj;
            }
        }
    }
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        // SAFETY: row `i < rows` of C has `cols` valid elements at `c + i * ldc`.
        let c_row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
        for (c_ij, &v) in c_row.iter_mut().zip(acc_row) {
            *c_ij = if accumulate { *c_ij + v } else { v };
        }
    }
}
