//! The AVX-512 paths. f32 (and bf16 widened while packing) use `vfmadd231ps` on
//! `MR × 16·NV` tiles with one broadcast of A per row and NV loads of B per k step; bf16
//! with AVX512-BF16 uses `vdpbf16ps`, which multiplies two adjacent k per f32 lane, on the
//! same tile shape with k packed in pairs. Edge tiles store through lane masks.
//!
//! Compiled only on rustc >= 1.89 (see build.rs), hence the MSRV lint allowance.
#![allow(clippy::incompatible_msrv)]

use std::arch::x86_64::*;
use std::ops::Range;

use half::bf16;

use super::driver::MicroKernel;
use super::pack::{pack_bf16_pairs, pack_widened};
use super::GemmInput;

/// Tile rows (broadcasts of A per k step).
const MR: usize = 6;
/// Tile columns in 16-lane vectors; MR × NV accumulators plus NV B vectors fit the 32 zmm.
const NV: usize = 4;
const NR: usize = 16 * NV;

// Cache blocking, in packed elements of 4 bytes (tuned on Zen 4: 32 KiB L1d, 1 MiB L2 per
// core; 256/384/512 k tried). A B micro-panel (512 × 64 × 4 = 128 KiB) stays in L2 while
// the row tiles stream over it, next to the packed A block (384 × 512 × 4 = 768 KiB); the
// C tile is read once per 512 k. NC only matters for more than MC rows, when a packed B
// block (512 × 2048 × 4 = 4 MiB per thread) is kept in L3 for the next row blocks.
const KC_PACKED: usize = 512;
const MC: usize = 384;
const NC: usize = 2048;

/// f32 tiles; bf16 inputs are widened to f32 while packing.
pub(crate) struct Avx512F32;

/// bf16 tiles with k in pairs for `vdpbf16ps`.
pub(crate) struct Avx512Bf16Pairs;

macro_rules! avx512_f32_kernel {
    ($input:ty) => {
        impl MicroKernel<$input> for Avx512F32 {
            type Packed = f32;
            const MR: usize = MR;
            const NR: usize = NR;
            const K_PER_PACKED: usize = 1;
            const KC: usize = KC_PACKED;
            const MC: usize = MC;
            const NC: usize = NC;

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
                // path after checking the CPU has AVX-512F.
                unsafe { pack_f32(src, lane_stride, k_stride, lanes, width, kc, dst) }
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
                unsafe { tile_f32(kp, a, b, c, ldc, rows, cols, accumulate) }
            }
        }
    };
}

avx512_f32_kernel!(f32);
avx512_f32_kernel!(bf16);

impl MicroKernel<bf16> for Avx512Bf16Pairs {
    type Packed = u32;
    const MR: usize = MR;
    const NR: usize = NR;
    const K_PER_PACKED: usize = 2;
    const KC: usize = 2 * KC_PACKED;
    const MC: usize = MC;
    const NC: usize = NC;

    unsafe fn pack(
        src: *const bf16,
        lane_stride: usize,
        k_stride: usize,
        lanes: usize,
        width: usize,
        kc: usize,
        dst: *mut u32,
    ) {
        // SAFETY: the caller's contract covers the pointers, and only reaches this path
        // after checking the CPU has AVX-512F and AVX512-BF16.
        unsafe { pack_pairs(src, lane_stride, k_stride, lanes, width, kc, dst) }
    }

    unsafe fn tile(
        kp: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        // SAFETY: as for `pack`.
        unsafe { tile_bf16_pairs(kp, a, b, c, ldc, rows, cols, accumulate) }
    }

    const DIRECT_A: bool = true;

    unsafe fn tile_direct_a(
        kp: usize,
        a: *const bf16,
        lda: usize,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    ) {
        // SAFETY: as for `pack`; each row holds the kp pairs the kernel reads.
        unsafe { tile_bf16_direct(kp, a, lda, b, c, ldc, rows, cols, accumulate) }
    }
}

/// Pairs of rows of a row-major B (lanes contiguous, full panel): each lane's even and odd k
/// are zero-extended to 32 bits and merged, 16 lanes at a time. The convolutions read B
/// this way (see `conv`); the scalar interleave was an eighth of their time.
///
/// # Safety
/// As `MicroKernel::pack` with `lanes == width`, `width` a multiple of 16; the CPU has
/// AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn pack_pairs_lanes_contiguous(
    src: *const bf16,
    k_stride: usize,
    width: usize,
    kc: usize,
    dst: *mut u32,
) {
    // SAFETY: every lane < width and k < kc of src is readable and dst holds
    // `kc.div_ceil(2) * width` elements, per the caller's contract.
    unsafe {
        for q in 0..kc.div_ceil(2) {
            let even = src.add(2 * q * k_stride);
            let odd = (2 * q + 1 < kc).then(|| src.add((2 * q + 1) * k_stride));
            let out = dst.add(q * width);
            for v in (0..width).step_by(16) {
                let e = _mm512_cvtepu16_epi32(_mm256_loadu_si256(even.add(v).cast()));
                let pair = match odd {
                    Some(odd) => {
                        let o = _mm512_cvtepu16_epi32(_mm256_loadu_si256(odd.add(v).cast()));
                        _mm512_or_si512(e, _mm512_slli_epi32::<16>(o))
                    }
                    None => e,
                };
                _mm512_storeu_si512(out.add(v).cast(), pair);
            }
        }
    }
}

/// # Safety
/// As `MicroKernel::pack`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn pack_f32<E: WidenToF32>(
    src: *const E,
    lane_stride: usize,
    k_stride: usize,
    lanes: usize,
    width: usize,
    kc: usize,
    dst: *mut f32,
) {
    if k_stride != 1 || lane_stride == 1 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { pack_widened(src, lane_stride, k_stride, lanes, width, kc, dst) };
        return;
    }
    // k contiguous per lane (row-major A, a transposed weight as B): transpose 16 × 16
    // blocks in registers instead of scattering one element at a time.
    let blocks = kc / 16;
    // SAFETY: as the caller's contract, with k < 16 * blocks <= kc.
    unsafe {
        transpose_blocks(
            |lane, k| E::widen16(src.add(lane * lane_stride + k)),
            |lane, k| prefetch_t0(src.wrapping_add(lane * lane_stride + k)),
            lanes,
            width,
            blocks,
            dst,
        );
    }
    if 16 * blocks < kc {
        // SAFETY: the remaining k of every lane, as the caller's contract.
        unsafe {
            pack_widened(
                src.add(16 * blocks),
                lane_stride,
                1,
                lanes,
                width,
                kc - 16 * blocks,
                dst.add(16 * blocks * width),
            )
        }
    }
}

/// # Safety
/// As `MicroKernel::pack`; the CPU has AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn pack_pairs(
    src: *const bf16,
    lane_stride: usize,
    k_stride: usize,
    lanes: usize,
    width: usize,
    kc: usize,
    dst: *mut u32,
) {
    if lane_stride == 1 && lanes == width && width.is_multiple_of(16) {
        // SAFETY: forwarded from the caller's contract, with every lane readable.
        unsafe { pack_pairs_lanes_contiguous(src, k_stride, width, kc, dst) };
        return;
    }
    if k_stride != 1 || lane_stride == 1 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { pack_bf16_pairs(src, lane_stride, k_stride, lanes, width, kc, dst) };
        return;
    }
    // k contiguous per lane: a pair of adjacent k is one 32-bit word already, so this is a
    // transpose of 32-bit words, 16 pairs (32 k) per block.
    let blocks = kc / 32;
    // SAFETY: as the caller's contract, with k < 32 * blocks <= kc; the packed u32 are
    // moved through f32 registers bit for bit.
    unsafe {
        transpose_blocks(
            |lane, q| _mm512_loadu_ps(src.add(lane * lane_stride + 2 * q).cast()),
            |lane, q| prefetch_t0(src.wrapping_add(lane * lane_stride + 2 * q)),
            lanes,
            width,
            blocks,
            dst.cast(),
        );
    }
    if 32 * blocks < kc {
        // SAFETY: the remaining k of every lane, as the caller's contract.
        unsafe {
            pack_bf16_pairs(
                src.add(32 * blocks),
                lane_stride,
                1,
                lanes,
                width,
                kc - 32 * blocks,
                dst.add(16 * blocks * width),
            )
        }
    }
}

/// A hint to load the line at `ptr` into L1. A prefetch never faults, so it may point past
/// the operand (the address is formed with wrapping arithmetic).
#[inline(always)]
fn prefetch_t0<T>(ptr: *const T) {
    // SAFETY: prefetching reads nothing architecturally and cannot fault.
    unsafe { _mm_prefetch::<_MM_HINT_T0>(ptr.cast()) }
}

/// An input that loads 16 consecutive elements as 16 f32.
trait WidenToF32: GemmInput {
    /// # Safety
    /// 16 elements at `ptr` are readable; the CPU has AVX-512F.
    unsafe fn widen16(ptr: *const Self) -> __m512;
}

impl WidenToF32 for f32 {
    #[inline(always)]
    unsafe fn widen16(ptr: *const f32) -> __m512 {
        // SAFETY: forwarded from the caller's contract.
        unsafe { _mm512_loadu_ps(ptr) }
    }
}

impl WidenToF32 for bf16 {
    #[inline(always)]
    unsafe fn widen16(ptr: *const bf16) -> __m512 {
        // SAFETY: forwarded from the caller's contract. A bf16 shifted into the upper half
        // of a 32-bit word is the same value as an f32.
        unsafe {
            _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(
                _mm256_loadu_si256(ptr.cast()),
            )))
        }
    }
}

/// `dst[k * dst_stride + l] = src[l * src_stride + k]` widened to f32, for a 16 × 16 block:
/// a channel-first block moved channels-last (the Winograd input transform's operand).
///
/// # Safety
/// 16 elements are readable at `src + l * src_stride` and writable at
/// `dst + k * dst_stride` for every `l, k < 16`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
unsafe fn transpose16_widened<E: WidenToF32>(
    src: *const E,
    src_stride: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        let mut rows = [_mm512_setzero_ps(); 16];
        for (l, row) in rows.iter_mut().enumerate() {
            *row = E::widen16(src.add(l * src_stride));
        }
        transpose16(&mut rows);
        for (k, row) in rows.iter().enumerate() {
            _mm512_storeu_ps(dst.add(k * dst_stride), *row);
        }
    }
}

/// [`transpose16_widened`] for f32.
///
/// # Safety
/// As [`transpose16_widened`].
pub(crate) unsafe fn transpose16_f32(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { transpose16_widened(src, ss, dst, ds) }
}

/// [`transpose16_widened`] for bf16.
///
/// # Safety
/// As [`transpose16_widened`].
pub(crate) unsafe fn transpose16_bf16(src: *const bf16, ss: usize, dst: *mut f32, ds: usize) {
    // SAFETY: forwarded from the caller's contract.
    unsafe { transpose16_widened(src, ss, dst, ds) }
}

/// Packs `blocks` transposed 16 × 16 blocks per group of 16 lanes: lane `l`, k `16b + j`
/// comes from `load(l, 16b)` element `j` and goes to `dst[(16b + j) * width + l]`. Lanes
/// `lanes..width` get zeros. The 16 lanes are 16 separate streams, more than the hardware
/// prefetchers follow, so each block also prefetches the same k of the next 16 lanes
/// (`prefetch(lane, k)`, lanes past `width` being the next micro-panel's).
///
/// # Safety
/// `load(lane, 16 * b)` must be safe for every `lane < lanes`, `b < blocks`; `dst` must
/// hold `16 * blocks * width` elements; the CPU has AVX-512F.
#[inline(always)]
unsafe fn transpose_blocks(
    load: impl Fn(usize, usize) -> __m512,
    prefetch: impl Fn(usize, usize),
    lanes: usize,
    width: usize,
    blocks: usize,
    dst: *mut f32,
) {
    for l0 in (0..width).step_by(16) {
        let in_group = lanes.saturating_sub(l0).min(16);
        let mask = column_mask(width - l0, 0);
        for b in 0..blocks {
            // SAFETY: the caller runs with AVX-512F and guarantees the loads; packed row
            // 16b + j has `width` elements, and the mask keeps each store to those from l0 on.
            unsafe {
                let mut rows = [_mm512_setzero_ps(); 16];
                for (i, row) in rows.iter_mut().enumerate().take(in_group) {
                    *row = load(l0 + i, 16 * b);
                }
                for i in 0..16 {
                    prefetch(l0 + 16 + i, 16 * b);
                }
                transpose16(&mut rows);
                for (j, row) in rows.iter().enumerate() {
                    _mm512_mask_storeu_ps(dst.add((16 * b + j) * width + l0), mask, *row);
                }
            }
        }
    }
}

/// Transposes a 16 × 16 matrix of 32-bit values held one row per register: 32-bit then
/// 64-bit interleaves inside 128-bit lanes, then two rounds of 128-bit lane shuffles.
#[inline(always)]
fn transpose16(r: &mut [__m512; 16]) {
    // SAFETY: register-only shuffles; every caller runs with AVX-512F.
    unsafe {
        let mut t = [_mm512_setzero_ps(); 16];
        for i in 0..8 {
            t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
            t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
        }
        // u[4g + c], 128-bit lane L: column 4L + c of rows 4g..4g + 4.
        let mut u = [_mm512_setzero_ps(); 16];
        for g in 0..4 {
            let (s0, s1) = (_mm512_castps_pd(t[4 * g]), _mm512_castps_pd(t[4 * g + 1]));
            let (s2, s3) = (
                _mm512_castps_pd(t[4 * g + 2]),
                _mm512_castps_pd(t[4 * g + 3]),
            );
            u[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(s0, s2));
            u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(s0, s2));
            u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(s1, s3));
            u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(s1, s3));
        }
        for c in 0..4 {
            let p0 = _mm512_shuffle_f32x4::<0x44>(u[c], u[4 + c]);
            let p1 = _mm512_shuffle_f32x4::<0xEE>(u[c], u[4 + c]);
            let q0 = _mm512_shuffle_f32x4::<0x44>(u[8 + c], u[12 + c]);
            let q1 = _mm512_shuffle_f32x4::<0xEE>(u[8 + c], u[12 + c]);
            r[c] = _mm512_shuffle_f32x4::<0x88>(p0, q0);
            r[4 + c] = _mm512_shuffle_f32x4::<0xDD>(p0, q0);
            r[8 + c] = _mm512_shuffle_f32x4::<0x88>(p1, q1);
            r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(p1, q1);
        }
    }
}

/// The lanes of vector `v` (columns `16v..16v+16`) that lie inside `cols`.
#[inline(always)]
fn column_mask(cols: usize, v: usize) -> __mmask16 {
    let valid = cols.saturating_sub(16 * v).min(16);
    ((1u32 << valid) - 1) as __mmask16
}

/// Adds (or writes) the accumulators to C through lane masks, skipping rows past `rows`
/// and vectors wholly past `cols`.
///
/// Inlined into the kernels, so the accumulators stay in registers: as a call it took them
/// by reference, which kept them in memory (zeroed by a memset on every tile).
///
/// # Safety
/// As `MicroKernel::tile`; the CPU has AVX-512F.
#[inline(always)]
unsafe fn store_tile<const W: usize>(
    acc: &[[__m512; W]; MR],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    for (i, acc_row) in acc.iter().enumerate().take(rows) {
        for (v, &sum) in acc_row.iter().enumerate() {
            if 16 * v >= cols {
                break;
            }
            let mask = column_mask(cols, v);
            // SAFETY: row `i < rows`, column `16v < cols` is inside C, and the mask keeps
            // the load and store to the columns below `cols`.
            unsafe {
                let out = c.add(i * ldc + 16 * v);
                let sum = if accumulate {
                    _mm512_add_ps(sum, _mm512_maskz_loadu_ps(mask, out))
                } else {
                    sum
                };
                _mm512_mask_storeu_ps(out, mask, sum);
            }
        }
    }
}

/// k steps before the end of a tile at which C's lines are prefetched: C is touched once
/// per tile and is usually not in cache, so its loads would otherwise stall the store.
const C_PREFETCH_STEPS: usize = 48;

/// Prefetches the lines of C that `store_tile` will read and write.
///
/// # Safety
/// As `MicroKernel::tile`.
#[inline(always)]
unsafe fn prefetch_c_tile(c: *mut f32, ldc: usize, rows: usize, cols: usize) {
    for i in 0..rows.min(MR) {
        for line in (0..cols).step_by(16) {
            prefetch_t0(c.wrapping_add(i * ldc + line));
        }
    }
}

/// The k loop of one tile kind: how A and B are read and multiplied, one k step (one
/// packed element) at a time, into `W` accumulator vectors per row.
trait TileSteps: Copy {
    /// `acc += A · B` over k steps `steps`.
    ///
    /// # Safety
    /// Every step in `steps` is inside the operands; the CPU has the kind's features.
    unsafe fn run<const W: usize>(self, acc: &mut [[__m512; W]; MR], steps: Range<usize>);
}

/// f32 panels: one broadcast of A per row, W loads of B, `vfmadd231ps`.
#[derive(Clone, Copy)]
struct F32Steps {
    a: *const f32,
    b: *const f32,
}

impl TileSteps for F32Steps {
    #[inline(always)]
    unsafe fn run<const W: usize>(self, acc: &mut [[__m512; W]; MR], steps: Range<usize>) {
        for p in steps {
            // SAFETY: step `p` of the packed panels holds MR values of A and NR of B.
            unsafe {
                let b_p = self.b.add(p * NR);
                let b_vecs: [__m512; W] = std::array::from_fn(|v| _mm512_loadu_ps(b_p.add(16 * v)));
                for (i, acc_row) in acc.iter_mut().enumerate() {
                    let a_i = _mm512_set1_ps(*self.a.add(p * MR + i));
                    for (sum, &b_v) in acc_row.iter_mut().zip(&b_vecs) {
                        *sum = _mm512_fmadd_ps(a_i, b_v, *sum);
                    }
                }
            }
        }
    }
}

/// bf16 pairs with `vdpbf16ps`: row `i`'s pair at step `p` is the u32 at byte offset
/// `p · a_step + row_offset[i]` from `a`: the packed panel (`a_step` = 4·MR, offsets 4·i),
/// or A's rows read in place (`a_step` = 4, offsets one row stride apart, which an odd
/// stride leaves 2-byte aligned: hence bytes, and unaligned reads).
#[derive(Clone, Copy)]
struct PairSteps {
    a: *const u8,
    a_step: usize,
    row_offset: [usize; MR],
    b: *const u32,
}

impl TileSteps for PairSteps {
    #[inline(always)]
    unsafe fn run<const W: usize>(self, acc: &mut [[__m512; W]; MR], steps: Range<usize>) {
        for p in steps {
            // SAFETY: step `p` of B's panel holds NR pairs and row `i`'s pair is readable
            // (the caller's contract); `__m512i` and `__m512bh` are both 64 bytes of bits.
            unsafe {
                let b_p = self.b.add(p * NR);
                let b_vecs: [__m512bh; W] = std::array::from_fn(|v| {
                    std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_epi32(
                        b_p.add(16 * v).cast(),
                    ))
                });
                let a_p = self.a.add(p * self.a_step);
                for (acc_row, &offset) in acc.iter_mut().zip(&self.row_offset) {
                    let pair = a_p.add(offset).cast::<u32>().read_unaligned();
                    let a_i =
                        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair as i32));
                    for (sum, &b_v) in acc_row.iter_mut().zip(&b_vecs) {
                        *sum = _mm512_dpbf16_ps(*sum, a_i, b_v);
                    }
                }
            }
        }
    }
}

/// One tile: the k loop with C's lines prefetched shortly before the end, then the store,
/// on only the accumulator vectors `cols` needs (a narrow last panel, such as the VAE's 96
/// or 3 output channels, would otherwise spend whole multiplies on zero lanes).
///
/// # Safety
/// As `MicroKernel::tile`, with `steps` reading valid operands over `0..kp`; the CPU has
/// the features of `steps`' kind.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_any_width<S: TileSteps>(
    steps: S,
    kp: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    // SAFETY: forwarded from the caller's contract.
    unsafe {
        match cols.div_ceil(16) {
            1 => tile_at_width::<1, S>(steps, kp, c, ldc, rows, cols, accumulate),
            2 => tile_at_width::<2, S>(steps, kp, c, ldc, rows, cols, accumulate),
            3 => tile_at_width::<3, S>(steps, kp, c, ldc, rows, cols, accumulate),
            _ => tile_at_width::<NV, S>(steps, kp, c, ldc, rows, cols, accumulate),
        }
    }
}

/// # Safety
/// As [`tile_any_width`] with `cols <= 16 W`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_at_width<const W: usize, S: TileSteps>(
    steps: S,
    kp: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    let split = kp.saturating_sub(C_PREFETCH_STEPS);
    // SAFETY: forwarded from the caller's contract (which includes the CPU features); both
    // ranges lie in 0..kp.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); W]; MR];
        steps.run(&mut acc, 0..split);
        prefetch_c_tile(c, ldc, rows, cols);
        steps.run(&mut acc, split..kp);
        store_tile(&acc, c, ldc, rows, cols, accumulate)
    }
}

/// # Safety
/// As `MicroKernel::tile`; the CPU has AVX-512F.
#[target_feature(enable = "avx512f")]
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
    // SAFETY: forwarded from the caller's contract.
    unsafe { tile_any_width(F32Steps { a, b }, kp, c, ldc, rows, cols, accumulate) }
}

/// # Safety
/// As `MicroKernel::tile`; the CPU has AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16_pairs(
    kp: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    let steps = PairSteps {
        a: a.cast(),
        a_step: 4 * MR,
        row_offset: std::array::from_fn(|i| 4 * i),
        b,
    };
    // SAFETY: forwarded from the caller's contract; the packed panel holds MR pairs a step.
    unsafe { tile_any_width(steps, kp, c, ldc, rows, cols, accumulate) }
}

/// [`tile_bf16_pairs`] with A's rows read in place: row `i` starts at `a + i · lda` (u32
/// pairs, as packing would have put them); rows past `rows` repeat the last one (read,
/// multiplied, never stored).
///
/// # Safety
/// As `MicroKernel::tile_direct_a`; the CPU has AVX-512F and AVX512-BF16.
#[target_feature(enable = "avx512f,avx512bf16")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_bf16_direct(
    kp: usize,
    a: *const bf16,
    lda: usize,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    accumulate: bool,
) {
    // Rows past `rows` repeat the last one.
    let steps = PairSteps {
        a: a.cast(),
        a_step: 4,
        row_offset: std::array::from_fn(|i| 2 * lda * i.min(rows.max(1) - 1)),
        b,
    };
    // SAFETY: forwarded from the caller's contract; each row holds the kp pairs read.
    unsafe { tile_any_width(steps, kp, c, ldc, rows, cols, accumulate) }
}
