//! Fused attention, `softmax(q · kᵀ / √D) · v` over (B, H, L, D) tensors, flash-attention
//! style: the queries of one head are taken a block at a time and the keys a block at a
//! time, with a running max and sum per query row (online softmax), so only one small score
//! tile exists at a time instead of the Lq × Lk matrix. The tile products go through the
//! crate's GEMM; exp is evaluated vectorised in f32. bf16 inputs are multiplied exactly and
//! summed in f32 (softmax too); the softmax weights are rounded to bf16 for `p · v` (as
//! torch's CPU flash attention does), and the output is rounded to bf16 once.
//!
//! [`attention`] is the candle entry: CPU f32/bf16 tensors outside autograd run the kernel,
//! everything else the composite [`attention_composite`], which candle differentiates.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, D};
use half::bf16;
use rayon::prelude::*;

use crate::error::{KernelError, Result};
use crate::gemm::{gemm_items, GemmInput, Operand};
use crate::{f32_to_bf16, KernelPath};

/// Dimensions of one attention call: q and the output are (batch, heads, q_len, head_dim),
/// k and v (batch, heads, kv_len, head_dim), all row-major and contiguous.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub heads: usize,
    pub q_len: usize,
    pub kv_len: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    /// Elements of (q and out, k and v).
    fn lens(&self) -> Result<(usize, usize)> {
        let heads = self.batch.checked_mul(self.heads);
        let len = |l: usize, operand| {
            heads
                .and_then(|h| h.checked_mul(l))
                .and_then(|n| n.checked_mul(self.head_dim))
                .ok_or(KernelError::Overflow { operand })
        };
        Ok((len(self.q_len, "q")?, len(self.kv_len, "k")?))
    }

    fn check<T, U>(&self, q: &[T], k: &[T], v: &[T], out: &[U]) -> Result<()> {
        let (q_len, kv_len) = self.lens()?;
        for (operand, expected, found) in [
            ("q", q_len, q.len()),
            ("k", kv_len, k.len()),
            ("v", kv_len, v.len()),
            ("out", q_len, out.len()),
        ] {
            if expected != found {
                return Err(KernelError::AttentionLen {
                    operand,
                    expected,
                    found,
                });
            }
        }
        Ok(())
    }
}

/// Attention over f32 slices on the fastest path of this CPU (see [`AttentionShape`]).
pub fn attention_f32(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
) -> Result<()> {
    attention_f32_with(KernelPath::best(), q, k, v, out, shape)
}

/// [`attention_f32`] on a chosen path; fails if this CPU cannot run it.
pub fn attention_f32_with(
    path: KernelPath,
    q: &[f32],
    k: &[f32],
    v: &[f32],
    out: &mut [f32],
    shape: AttentionShape,
) -> Result<()> {
    if !prepare(path, q, k, v, out, shape)? {
        return Ok(());
    }
    let blocks = BlockSizes::for_head_dim(shape.head_dim);
    // The f32 output is the accumulator itself: no copy at the end.
    for_each_block(out, shape, blocks.q, |head, q0, o| {
        run_block(path, q, k, v, shape, blocks, (head, q0), o)
    })
}

/// Attention over bf16 slices on the fastest path of this CPU: products exact, sums and
/// softmax in f32, the weights rounded to bf16 for `p · v`, the output rounded once.
pub fn attention_bf16(
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    out: &mut [bf16],
    shape: AttentionShape,
) -> Result<()> {
    attention_bf16_with(KernelPath::best(), q, k, v, out, shape)
}

/// [`attention_bf16`] on a chosen path; fails if this CPU cannot run it.
pub fn attention_bf16_with(
    path: KernelPath,
    q: &[bf16],
    k: &[bf16],
    v: &[bf16],
    out: &mut [bf16],
    shape: AttentionShape,
) -> Result<()> {
    if !prepare(path, q, k, v, out, shape)? {
        return Ok(());
    }
    let blocks = BlockSizes::for_head_dim(shape.head_dim);
    for_each_block(out, shape, blocks.q, |head, q0, o| {
        let mut wide = vec![0f32; o.len()];
        run_block(path, q, k, v, shape, blocks, (head, q0), &mut wide)?;
        // In pieces that f32_to_bf16 converts on this thread (it spreads long slices
        // over the pool, and every thread is busy with blocks already).
        for (src, dst) in wide.chunks(CONVERT_PIECE).zip(o.chunks_mut(CONVERT_PIECE)) {
            f32_to_bf16(src, dst)?;
        }
        Ok(())
    })
}

/// Elements per `f32_to_bf16` call; below its parallel threshold.
const CONVERT_PIECE: usize = 1 << 13;

/// Checks the call; `Ok(false)` when the output is already final (empty, or zeros for
/// no keys: an empty sum, as `(Lq × 0) · (0 × D)` is).
fn prepare<T, U: Default + Copy>(
    path: KernelPath,
    q: &[T],
    k: &[T],
    v: &[T],
    out: &mut [U],
    shape: AttentionShape,
) -> Result<bool> {
    if !path.is_supported() {
        return Err(KernelError::PathUnavailable { path });
    }
    shape.check(q, k, v, out)?;
    if out.is_empty() {
        return Ok(false);
    }
    if shape.kv_len == 0 {
        out.fill(U::default());
        return Ok(false);
    }
    Ok(true)
}

/// gemm's driver runs a product with fewer than 2^18 multiply-adds on the calling thread
/// (its `PARALLEL_MIN_MACS`) and splits larger ones over the pool. The query blocks already
/// keep every thread busy, so tiles stay below that: a nested split would pack the same
/// operands twice and synchronise for nothing. (Only head dims above ~5400 exceed it even
/// at the smallest tile, 6 × 8; the nested split is then still correct.)
const INLINE_MACS: usize = crate::gemm::PARALLEL_MIN_MACS - 1;
/// Keys per tile: one 64-column micro-panel of the AVX-512 GEMM (four of AVX2).
const KEY_BLOCK: usize = 64;
/// Query rows per tile: a multiple of the AVX-512 micro-kernel's 6 rows, at most 120.
const ROW_GRAIN: usize = 6;
const MAX_QUERY_BLOCK: usize = 120;

#[derive(Debug, Clone, Copy)]
struct BlockSizes {
    /// Query rows per task.
    q: usize,
    /// Keys per tile.
    k: usize,
}

impl BlockSizes {
    /// The largest tile, in query rows first, whose two products (`q × k × D` each) stay
    /// below [`INLINE_MACS`]. D = 128 gives 30 × 64.
    fn for_head_dim(head_dim: usize) -> Self {
        let d = head_dim.max(1);
        let rows = INLINE_MACS / (KEY_BLOCK * d);
        let q = (rows / ROW_GRAIN * ROW_GRAIN).clamp(ROW_GRAIN, MAX_QUERY_BLOCK);
        let k = (INLINE_MACS / (q * d) / 8 * 8).clamp(8, KEY_BLOCK);
        BlockSizes { q, k }
    }
}

/// Runs `run(head, first_query, out_block)` for every block of `q_block` query rows of
/// every (batch, head), in parallel. `out` is non-empty (see `prepare`).
fn for_each_block<T: Send>(
    out: &mut [T],
    shape: AttentionShape,
    q_block: usize,
    run: impl Fn(usize, usize, &mut [T]) -> Result<()> + Sync,
) -> Result<()> {
    let d = shape.head_dim;
    let mut blocks: Vec<(usize, usize, &mut [T])> = out
        .chunks_mut(shape.q_len * d)
        .enumerate()
        .flat_map(|(head, rows)| {
            rows.chunks_mut(q_block * d)
                .enumerate()
                .map(move |(i, block)| (head, i * q_block, block))
        })
        .collect();
    if let [(head, q0, block)] = blocks.as_mut_slice() {
        return run(*head, *q0, block);
    }
    blocks
        .into_par_iter()
        .try_for_each(|(head, q0, block)| run(head, q0, block))
}

/// An input element type of the kernel.
trait AttentionInput: GemmInput + Default {
    /// `o (+)= p · v[v_start..]` for `p` (`rows × cols`, f32) and `cols` rows of V of
    /// `d`: f32 as is; bf16 rounds p to bf16 first (into `scratch`), as torch's CPU flash
    /// attention does for reduced types, so the product runs on the bf16 kernels.
    #[allow(clippy::too_many_arguments)]
    fn p_times_v(
        path: KernelPath,
        p: &[f32],
        dims: (usize, usize, usize),
        v: &[Self],
        v_start: usize,
        scratch: &mut [Self],
        o: &mut [f32],
        accumulate: bool,
    ) -> Result<()>;
}

/// `o (+)= p · v` with p and V of one type.
#[allow(clippy::too_many_arguments)]
fn product_with_v<E: GemmInput>(
    path: KernelPath,
    p: &[E],
    (rows, cols, d): (usize, usize, usize),
    v: &[E],
    v_start: usize,
    o: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    let p = Operand {
        data: p,
        rows,
        cols,
        row_stride: cols,
        col_stride: 1,
    };
    let v_rows = Operand {
        data: v,
        rows: cols,
        cols: d,
        row_stride: d,
        col_stride: 1,
    };
    gemm_items(path, p, v_rows, &[(0, v_start)], o, accumulate)
}

impl AttentionInput for f32 {
    fn p_times_v(
        path: KernelPath,
        p: &[f32],
        dims: (usize, usize, usize),
        v: &[f32],
        v_start: usize,
        _: &mut [f32],
        o: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        product_with_v(path, p, dims, v, v_start, o, accumulate)
    }
}

impl AttentionInput for bf16 {
    fn p_times_v(
        path: KernelPath,
        p: &[f32],
        dims: (usize, usize, usize),
        v: &[bf16],
        v_start: usize,
        scratch: &mut [bf16],
        o: &mut [f32],
        accumulate: bool,
    ) -> Result<()> {
        let rounded = &mut scratch[..p.len()];
        crate::f32_to_bf16(p, rounded)?;
        product_with_v(path, rounded, dims, v, v_start, o, accumulate)
    }
}

/// One task: query rows `q0 ..` of head `head` (`o.len() / D` of them) against all keys,
/// the normalised f32 result written to `o`.
#[allow(clippy::too_many_arguments)]
fn run_block<E: AttentionInput>(
    path: KernelPath,
    q: &[E],
    k: &[E],
    v: &[E],
    shape: AttentionShape,
    blocks: BlockSizes,
    (head, q0): (usize, usize),
    o: &mut [f32],
) -> Result<()> {
    let (d, lk) = (shape.head_dim, shape.kv_len);
    let rows = o.len() / d;
    let scale = 1.0 / (d as f32).sqrt();
    let q_start = (head * shape.q_len + q0) * d;
    let kv_start = head * lk * d;
    let mut scores = vec![0f32; rows * blocks.k];
    let mut stats = RowStats::new(rows);
    let mut p_scratch = vec![E::default(); rows * blocks.k];
    let q_block = Operand {
        data: q,
        rows,
        cols: d,
        row_stride: d,
        col_stride: 1,
    };
    for k0 in (0..lk).step_by(blocks.k) {
        let cols = blocks.k.min(lk - k0);
        let tile = &mut scores[..rows * cols];
        let block_start = kv_start + k0 * d;
        // S = q · kᵀ: kᵀ is k's rows read as columns, no copy.
        let k_t = Operand {
            data: k,
            rows: d,
            cols,
            row_stride: 1,
            col_stride: d,
        };
        gemm_items(path, q_block, k_t, &[(q_start, block_start)], tile, false)?;
        softmax_tile(path, tile, cols, &mut stats, scale);
        let first = k0 == 0;
        if !first {
            // Earlier blocks were weighted against a smaller max; bring them to the new one.
            for (row, &alpha) in o.chunks_exact_mut(d).zip(&stats.alpha) {
                if alpha != 1.0 {
                    row.iter_mut().for_each(|x| *x *= alpha);
                }
            }
        }
        E::p_times_v(
            path,
            tile,
            (rows, cols, d),
            v,
            block_start,
            &mut p_scratch,
            o,
            !first,
        )?;
    }
    for (row, &sum) in o.chunks_exact_mut(d).zip(&stats.sum) {
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|x| *x *= inv);
    }
    Ok(())
}

/// Online-softmax state of a block's query rows: the largest raw score seen, the sum of
/// `exp((s - max) · scale)` over the keys seen, and the factor the last tile moved the max by.
struct RowStats {
    max: Vec<f32>,
    sum: Vec<f32>,
    alpha: Vec<f32>,
}

impl RowStats {
    fn new(rows: usize) -> Self {
        RowStats {
            max: vec![f32::NEG_INFINITY; rows],
            sum: vec![0.0; rows],
            alpha: vec![0.0; rows],
        }
    }
}

/// Turns a `rows × cols` tile of raw scores into `exp((s - max) · scale)` with each row's
/// running max, and updates the row statistics.
fn softmax_tile(path: KernelPath, tile: &mut [f32], cols: usize, stats: &mut RowStats, scale: f32) {
    match path {
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        KernelPath::Avx512Bf16 | KernelPath::Avx512 => {
            // SAFETY: the entry points checked that the CPU supports the path.
            unsafe { avx512::softmax_tile(tile, cols, stats, scale) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => {
            // SAFETY: as above.
            unsafe { softmax_tile_avx2(tile, cols, stats, scale) }
        }
        _ => softmax_tile_portable(tile, cols, stats, scale),
    }
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_tile_avx2(tile: &mut [f32], cols: usize, stats: &mut RowStats, scale: f32) {
    softmax_tile_portable(tile, cols, stats, scale)
}

/// Lanes of the portable loops: independent accumulators the compiler can vectorise
/// (an f32 sum in one variable is a serial chain it must keep in order).
const LANES: usize = 16;

/// Branch-free so the compiler vectorises it at the caller's vector width.
#[inline(always)]
fn softmax_tile_portable(tile: &mut [f32], cols: usize, stats: &mut RowStats, scale: f32) {
    let rows = tile.chunks_exact_mut(cols);
    let stats = stats
        .max
        .iter_mut()
        .zip(stats.sum.iter_mut())
        .zip(stats.alpha.iter_mut());
    for (row, ((max, sum), alpha)) in rows.zip(stats) {
        let new_max = row_max(row).max(*max);
        *alpha = exp_nonpositive((*max - new_max) * scale);
        *sum = *sum * *alpha + exp_shifted_sum(row, new_max, scale);
        *max = new_max;
    }
}

#[inline(always)]
fn row_max(row: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (lane, &x) in lanes.iter_mut().zip(chunk) {
            *lane = lane.max(x);
        }
    }
    let rest = chunks
        .remainder()
        .iter()
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    lanes.iter().fold(rest, |m, &x| m.max(x))
}

/// `row[j] = exp((row[j] - max) · scale)`, returning their sum.
#[inline(always)]
fn exp_shifted_sum(row: &mut [f32], max: f32, scale: f32) -> f32 {
    let mut lanes = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (lane, x) in lanes.iter_mut().zip(chunk) {
            *x = exp_nonpositive((*x - max) * scale);
            *lane += *x;
        }
    }
    let mut rest = 0.0;
    for x in chunks.into_remainder() {
        *x = exp_nonpositive((*x - max) * scale);
        rest += *x;
    }
    lanes.iter().sum::<f32>() + rest
}

/// e^x for x ≤ 0 (a score minus its row's max), within 2 ulp; below -87 (e^-87 ≈ 2^-125.5,
/// nothing next to the row max's 1) it returns e^-87, and NaN stays NaN. x = n·ln2 + r with
/// |r| ≤ ln2/2, e^r by its degree-6 Taylor polynomial (as `activation`'s exp), 2^n built
/// from the integer the rounding constant leaves in the low mantissa bits.
#[inline(always)]
fn exp_nonpositive(x: f32) -> f32 {
    let x = if x < EXP_MIN { EXP_MIN } else { x };
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // t's bits are ROUND's plus n (|n| ≤ 126 ≪ 2^22); n + 127 ≥ 1 is 2^n's biased exponent.
    let pow2 = f32::from_bits(t.to_bits().wrapping_sub(ROUND_BITS - 127) << 23);
    p * pow2
}

const EXP_MIN: f32 = -87.0;
const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2^23: adding and removing it rounds to the nearest integer without a branch.
const ROUND: f32 = 12_582_912.0;
const ROUND_BITS: u32 = 0x4b40_0000;

/// The same tile update with AVX-512F intrinsics (16 lanes, masked tails, `vscalefps`).
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[allow(clippy::incompatible_msrv)] // compiled only on rustc >= 1.89, see build.rs
mod avx512 {
    use std::arch::x86_64::*;

    use super::{RowStats, EXP_MIN, LN2_HI, LN2_LO, LOG2E, ROUND};

    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn softmax_tile(
        tile: &mut [f32],
        cols: usize,
        stats: &mut RowStats,
        scale: f32,
    ) {
        let rows = tile.chunks_exact_mut(cols);
        let stats = stats
            .max
            .iter_mut()
            .zip(stats.sum.iter_mut())
            .zip(stats.alpha.iter_mut());
        for (row, ((max, sum), alpha)) in rows.zip(stats) {
            let new_max = row_max(row).max(*max);
            *alpha = super::exp_nonpositive((*max - new_max) * scale);
            *sum = *sum * *alpha + exp_shifted_sum(row, new_max, scale);
            *max = new_max;
        }
    }

    /// Lanes `0..len` set.
    #[inline(always)]
    fn tail_mask(len: usize) -> __mmask16 {
        ((1u32 << len) - 1) as __mmask16
    }

    #[inline]
    #[target_feature(enable = "avx512f")]
    fn row_max(row: &[f32]) -> f32 {
        let mut acc = _mm512_set1_ps(f32::NEG_INFINITY);
        let mut chunks = row.chunks_exact(16);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 16 f32.
            acc = _mm512_max_ps(acc, unsafe { _mm512_loadu_ps(chunk.as_ptr()) });
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // SAFETY: the mask reads only the `rest.len() < 16` elements there are; the
            // others keep `acc`'s lanes.
            let x = unsafe { _mm512_mask_loadu_ps(acc, tail_mask(rest.len()), rest.as_ptr()) };
            acc = _mm512_max_ps(acc, x);
        }
        _mm512_reduce_max_ps(acc)
    }

    /// `row[j] = exp((row[j] - max) · scale)`, returning their sum.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_shifted_sum(row: &mut [f32], max: f32, scale: f32) -> f32 {
        let (max, scale) = (_mm512_set1_ps(max), _mm512_set1_ps(scale));
        let mut acc = _mm512_setzero_ps();
        let mut chunks = row.chunks_exact_mut(16);
        for chunk in &mut chunks {
            // SAFETY: the chunk holds 16 f32.
            let x = unsafe { _mm512_loadu_ps(chunk.as_ptr()) };
            let p = exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(x, max), scale));
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(chunk.as_mut_ptr(), p) };
            acc = _mm512_add_ps(acc, p);
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let mask = tail_mask(rest.len());
            // SAFETY: the mask touches only the `rest.len() < 16` elements there are.
            let x = unsafe { _mm512_maskz_loadu_ps(mask, rest.as_ptr()) };
            let p = exp_nonpositive(_mm512_mul_ps(_mm512_sub_ps(x, max), scale));
            // SAFETY: as above.
            unsafe { _mm512_mask_storeu_ps(rest.as_mut_ptr(), mask, p) };
            acc = _mm512_mask_add_ps(acc, mask, acc, p);
        }
        _mm512_reduce_add_ps(acc)
    }

    /// `super::exp_nonpositive` on 16 lanes; 2^n by `vscalefps`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn exp_nonpositive(x: __m512) -> __m512 {
        // max(a, b) is `a > b ? a : b`: with x second, a NaN x passes through.
        let x = _mm512_max_ps(_mm512_set1_ps(EXP_MIN), x);
        let round = _mm512_set1_ps(ROUND);
        let n = _mm512_sub_ps(_mm512_fmadd_ps(x, _mm512_set1_ps(LOG2E), round), round);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
        let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
        let mut p = _mm512_set1_ps(1.0 / 720.0);
        for c in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
        }
        _mm512_scalef_ps(p, n)
    }
}

/// `softmax(q · kᵀ / √D) · v` for (B, H, Lq, D) `q` and (B, H, Lk, D) `k`, `v`, computed in
/// f32 and returned in `q`'s dtype. CPU f32 and bf16 tensors outside autograd (see
/// [`runs_fused`]) take the fused kernel; anything else [`attention_composite`].
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    if !runs_fused(q, k, v) {
        return attention_composite(q, k, v);
    }
    q.contiguous()?
        .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &FusedAttention)
}

/// Whether [`attention`] runs the fused kernel: q, k, v on the CPU in one dtype, f32 or
/// bf16, shaped (B, H, Lq, D), (B, H, Lk, D), (B, H, Lk, D), none recording gradients (the
/// kernel has no backward pass).
pub fn runs_fused(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    let dtype = q.dtype();
    let each_ok = [q, k, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == dtype && t.rank() == 4 && !t.track_op());
    if !each_ok || !matches!(dtype, DType::F32 | DType::BF16) {
        return false;
    }
    let (qd, kd, vd) = (q.dims(), k.dims(), v.dims());
    qd[..2] == kd[..2] && kd == vd && qd[3] == kd[3]
}

/// Attention from candle ops, in f32, returned in `q`'s dtype: softmax(q kᵀ · scale) · v
/// with scale 1/√D. Differentiable; any device, dtype and rank ≥ 2 that candle's matmul
/// takes, and v's last dim may differ from q's.
pub fn attention_composite(q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let dtype = q.dtype();
    let scale = 1.0 / (q.dim(D::Minus1)? as f64).sqrt();
    let f32_contiguous = |t: &Tensor| t.to_dtype(DType::F32)?.contiguous();
    let (q, k, v) = (f32_contiguous(q)?, f32_contiguous(k)?, f32_contiguous(v)?);
    if k.dim(D::Minus2)? == 0 {
        // No keys: an empty weighted sum (candle cannot take the max of an empty row).
        let mut dims = q.dims().to_vec();
        if let Some(last) = dims.last_mut() {
            *last = v.dim(D::Minus1)?;
        }
        return Tensor::zeros(dims, dtype, q.device());
    }
    let scores = (q.matmul(&k.t()?)? * scale)?;
    // Softmax does not depend on the shift, so the max is a constant for the gradient.
    let max = scores.max_keepdim(D::Minus1)?.detach();
    let exp = scores.broadcast_sub(&max)?.exp()?;
    let probs = exp.broadcast_div(&exp.sum_keepdim(D::Minus1)?)?;
    probs.matmul(&v)?.to_dtype(dtype)
}

/// The custom op behind [`attention`]; its operands have passed [`runs_fused`] and are
/// contiguous.
struct FusedAttention;

impl CustomOp3 for FusedAttention {
    fn name(&self) -> &'static str {
        "kiln-attention"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (b, h, lq, d) = l1.shape().dims4()?;
        let (kb, kh, lk, kd) = l2.shape().dims4()?;
        if (kb, kh, kd) != (b, h, d) || l3.shape() != l2.shape() {
            candle_core::bail!(
                "kiln-attention: q {:?}, k {:?}, v {:?} do not fit (B, H, Lq, D), (B, H, Lk, D) twice",
                l1.dims(),
                l2.dims(),
                l3.dims()
            )
        }
        let shape = AttentionShape {
            batch: b,
            heads: h,
            q_len: lq,
            kv_len: lk,
            head_dim: d,
        };
        let range = |layout: &Layout| match layout.contiguous_offsets() {
            Some((start, end)) => Ok(start..end),
            None => Err(candle_core::Error::Msg(
                "kiln-attention: needs contiguous tensors".into(),
            )),
        };
        let (rq, rk, rv) = (range(l1)?, range(l2)?, range(l3)?);
        let wrap = candle_core::Error::wrap;
        let out = match (s1, s2, s3) {
            (CpuStorage::F32(q), CpuStorage::F32(k), CpuStorage::F32(v)) => {
                let mut out = vec![0f32; l1.shape().elem_count()];
                attention_f32(&q[rq], &k[rk], &v[rv], &mut out, shape).map_err(wrap)?;
                CpuStorage::F32(out)
            }
            (CpuStorage::BF16(q), CpuStorage::BF16(k), CpuStorage::BF16(v)) => {
                let mut out = vec![bf16::ZERO; l1.shape().elem_count()];
                attention_bf16(&q[rq], &k[rk], &v[rv], &mut out, shape).map_err(wrap)?;
                CpuStorage::BF16(out)
            }
            _ => candle_core::bail!(
                "kiln-attention: needs three f32 or three bf16 tensors, got {:?}, {:?}, {:?}",
                s1.dtype(),
                s2.dtype(),
                s3.dtype()
            ),
        };
        Ok((out, l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Deterministic values in [-amp, amp) (xorshift).
    fn values(len: usize, seed: u64, amp: f32) -> Vec<f32> {
        let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * amp
            })
            .collect()
    }

    /// softmax(q kᵀ / √D) v in f64, one row at a time.
    fn naive(q: &[f32], k: &[f32], v: &[f32], s: AttentionShape) -> Vec<f64> {
        let (lq, lk, d) = (s.q_len, s.kv_len, s.head_dim);
        let scale = 1.0 / (d as f64).sqrt();
        let mut out = vec![0f64; s.batch * s.heads * lq * d];
        for head in 0..s.batch * s.heads {
            for i in 0..lq {
                let qi = &q[(head * lq + i) * d..][..d];
                let scores: Vec<f64> = (0..lk)
                    .map(|j| {
                        let kj = &k[(head * lk + j) * d..][..d];
                        let dot: f64 = qi.iter().zip(kj).map(|(&a, &b)| a as f64 * b as f64).sum();
                        dot * scale
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = weights.iter().sum();
                let o = &mut out[(head * lq + i) * d..][..d];
                for (j, w) in weights.iter().enumerate() {
                    for (x, &vj) in o.iter_mut().zip(&v[(head * lk + j) * d..][..d]) {
                        *x += w / total * vj as f64;
                    }
                }
            }
        }
        out
    }

    const fn shape(
        batch: usize,
        heads: usize,
        q_len: usize,
        kv_len: usize,
        d: usize,
    ) -> AttentionShape {
        AttentionShape {
            batch,
            heads,
            q_len,
            kv_len,
            head_dim: d,
        }
    }

    /// Lq and Lk off the tile sizes (30 × 64 tiles at D = 128, 120 × 64 at small D), single
    /// rows and keys, odd and small D, B·H > 2, and nothing to do.
    const SHAPES: &[AttentionShape] = &[
        shape(1, 1, 1, 1, 8),
        shape(2, 3, 130, 150, 8),
        shape(1, 3, 65, 131, 128),
        shape(2, 2, 31, 64, 128),
        shape(1, 2, 1, 200, 12),
        shape(2, 2, 37, 1, 12),
        shape(1, 3, 121, 65, 12),
        shape(3, 1, 7, 9, 5),
        shape(1, 2, 9, 17, 1),
        shape(1, 3, 0, 5, 8),
        shape(0, 3, 4, 5, 8),
        shape(1, 1, 4, 5, 0),
    ];

    /// Inputs for a shape; the keys grow along the sequence, so the row max moves in later
    /// key blocks and the running sums must be rescaled.
    fn inputs(s: AttentionShape, seed: u64) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (q_len, kv_len) = s.lens().expect("small shape");
        let q = values(q_len, seed, 2.0);
        let mut k = values(kv_len, seed + 1, 2.0);
        let row = s.head_dim.max(1);
        for (i, x) in k.iter_mut().enumerate() {
            let pos = (i / row) % s.kv_len.max(1);
            *x *= 1.0 + 2.0 * pos as f32 / s.kv_len.max(1) as f32;
        }
        let v = values(kv_len, seed + 2, 2.0);
        (q, k, v)
    }

    fn supported(path: KernelPath) -> bool {
        if !path.is_supported() {
            eprintln!("skipping {path:?}: not supported on this CPU/build");
        }
        path.is_supported()
    }

    /// f32: every output within 1e-5 of the f64 reference, relative to the output's scale
    /// (max |v|, as each output is a convex combination of v's rows).
    #[test]
    fn f32_matches_naive_on_every_path() {
        for path in KernelPath::ALL {
            if !supported(path) {
                continue;
            }
            for (i, &s) in SHAPES.iter().enumerate() {
                let (q, k, v) = inputs(s, 10 * i as u64);
                let want = naive(&q, &k, &v, s);
                let mut out = vec![f32::NAN; want.len()];
                attention_f32_with(path, &q, &k, &v, &mut out, s).expect("attention");
                let vmax = v.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-30) as f64;
                for (j, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    let err = (got as f64 - want).abs() / vmax;
                    assert!(err < 1e-5, "{path:?} {s:?} [{j}]: {got} vs {want}");
                }
            }
        }
    }

    /// bf16: the reference takes the same bf16 inputs; the kernel rounds beyond f32 twice:
    /// the softmax weights p to bf16 before `p · v` (2^-9 relative each, so at most 2^-9 of
    /// the p-weighted mean of |v|, below 2^-9 · max|v|), and the result to bf16 (2^-9
    /// relative). Each output is within 2^-8 · |want| + 2^-9 · max|v| + 2e-5 · max|v|.
    #[test]
    fn bf16_matches_naive_on_every_path() {
        for path in KernelPath::ALL {
            if !supported(path) {
                continue;
            }
            for (i, &s) in SHAPES.iter().enumerate() {
                let (q, k, v) = inputs(s, 10 * i as u64 + 5);
                let to_bf16 =
                    |xs: &[f32]| xs.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>();
                let (qb, kb, vb) = (to_bf16(&q), to_bf16(&k), to_bf16(&v));
                let to_f32 = |xs: &[bf16]| xs.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
                let want = naive(&to_f32(&qb), &to_f32(&kb), &to_f32(&vb), s);
                let mut out = vec![bf16::NAN; want.len()];
                attention_bf16_with(path, &qb, &kb, &vb, &mut out, s).expect("attention");
                let vmax = v.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
                for (j, (&got, &want)) in out.iter().zip(&want).enumerate() {
                    let err = (got.to_f32() as f64 - want).abs();
                    let tol = want.abs() / 256.0 + vmax / 512.0 + 2e-5 * vmax;
                    assert!(err <= tol, "{path:?} {s:?} [{j}]: {got} vs {want}");
                }
            }
        }
    }

    #[test]
    fn no_keys_gives_zeros() {
        let s = shape(1, 2, 3, 0, 4);
        let q = values(24, 1, 1.0);
        let mut out = vec![f32::NAN; 24];
        attention_f32(&q, &[], &[], &mut out, s).expect("attention");
        assert!(out.iter().all(|&x| x == 0.0));
    }

    #[test]
    fn exp_matches_f64() {
        let mut worst = 0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = f64::from(x).exp();
            worst = worst.max((f64::from(exp_nonpositive(x)) - want).abs() / want);
        }
        assert!(worst < 3e-7, "worst relative exp error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
        assert!(exp_nonpositive(f32::NEG_INFINITY) < 1e-37);
    }

    #[test]
    fn bad_input_is_an_error() {
        let s = shape(1, 2, 3, 4, 5);
        let (q, k, v) = (vec![0f32; 30], vec![0f32; 40], vec![0f32; 40]);
        let mut out = vec![0f32; 30];
        assert!(attention_f32(&q, &k, &v, &mut out, s).is_ok());
        assert_eq!(
            attention_f32(&q, &k, &v[1..], &mut out, s),
            Err(KernelError::AttentionLen {
                operand: "v",
                expected: 40,
                found: 39
            })
        );
        assert!(attention_f32(&q, &k, &v, &mut out[1..], s).is_err());
        assert!(attention_f32(&q[1..], &k, &v, &mut out, s).is_err());
        let huge = shape(usize::MAX, 2, 1, 1, 1);
        assert!(matches!(
            attention_f32(&q, &k, &v, &mut out, huge),
            Err(KernelError::Overflow { .. })
        ));
        for path in KernelPath::ALL.into_iter().filter(|p| !p.is_supported()) {
            assert_eq!(
                attention_f32_with(path, &q, &k, &v, &mut out, s),
                Err(KernelError::PathUnavailable { path })
            );
        }
    }

    #[test]
    fn tiles_stay_below_the_inline_gemm_size() {
        for d in [1, 5, 8, 12, 64, 128, 256, 512, 1024, 2048, 5000] {
            let b = BlockSizes::for_head_dim(d);
            assert!(b.q * b.k * d <= INLINE_MACS, "{d}: {b:?}");
            assert!(b.q >= ROW_GRAIN && b.k >= 8, "{d}: {b:?}");
        }
        let b = BlockSizes::for_head_dim(128);
        assert_eq!((b.q, b.k), (30, 64));
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a.to_dtype(DType::F32).expect("a") - b.to_dtype(DType::F32).expect("b"))
            .and_then(|d| d.abs())
            .and_then(|d| d.flatten_all())
            .and_then(|d| d.max(0))
            .and_then(|d| d.to_scalar::<f32>())
            .expect("diff")
    }

    /// Non-contiguous inputs (heads split off a (B, L, H·D) tensor, as the transformer
    /// does) through the fused op against the composite form, f32 and bf16.
    #[test]
    fn candle_op_matches_composite() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, h, lq, lk, d) = (2, 3, 70, 45, 16);
        let split = |t: Tensor, l| t.reshape((b, l, h, d))?.transpose(1, 2);
        let q = split(Tensor::randn(0f32, 1.0, (b, lq, h * d), &dev)?, lq)?;
        let k = split(Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev)?, lk)?;
        let v = split(Tensor::randn(0f32, 1.0, (b, lk, h * d), &dev)?, lk)?;
        assert!(!q.is_contiguous() && runs_fused(&q, &k, &v));
        let fused = attention(&q, &k, &v)?;
        let want = attention_composite(&q, &k, &v)?;
        assert_eq!(fused.dims(), &[b, h, lq, d]);
        assert!(max_diff(&fused, &want) < 1e-5);

        let bf = |t: &Tensor| t.to_dtype(DType::BF16);
        let (qb, kb, vb) = (bf(&q)?, bf(&k)?, bf(&v)?);
        let fused = attention(&qb, &kb, &vb)?;
        assert_eq!(fused.dtype(), DType::BF16);
        // Both compute in f32 from the same bf16 inputs and round once: |out| < ~3, so
        // they differ by at most one bf16 step (2^-7 at 2..4) where the roundings part.
        assert!(max_diff(&fused, &attention_composite(&qb, &kb, &vb)?) <= 1.0 / 64.0);
        Ok(())
    }

    /// Tensors that record gradients take the composite form, and gradients flow.
    #[test]
    fn tracked_tensors_keep_autograd() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let q = Var::randn(0f32, 1.0, (1, 2, 5, 4), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (1, 2, 6, 4), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (1, 2, 6, 4), &dev)?;
        assert!(!runs_fused(q.as_tensor(), &k, &v));
        assert!(runs_fused(&q.as_tensor().detach(), &k, &v));
        let out = attention(q.as_tensor(), &k, &v)?;
        assert!(max_diff(&out, &attention(&q.as_tensor().detach(), &k, &v)?) < 1e-5);
        let grads = out.sqr()?.sum_all()?.backward()?;
        let grad = grads.get(q.as_tensor()).expect("q has a gradient");
        assert_eq!(grad.dims(), &[1, 2, 5, 4]);
        Ok(())
    }

    /// Other dtypes go to the composite form, and so do shapes the kernel does not take.
    #[test]
    fn other_inputs_fall_back() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f64, 1.0, (1, 2, 3, 4), &dev)?;
        let k = Tensor::randn(0f64, 1.0, (1, 2, 5, 4), &dev)?;
        let v = Tensor::randn(0f64, 1.0, (1, 2, 5, 6), &dev)?;
        assert!(!runs_fused(&q, &k, &v));
        let out = attention(&q, &k, &v)?;
        assert_eq!((out.dims(), out.dtype()), (&[1, 2, 3, 6][..], DType::F64));
        let empty = Tensor::zeros((1, 2, 0, 4), DType::F32, &dev)?;
        let q = q.to_dtype(DType::F32)?;
        assert_eq!(attention(&q, &empty, &empty)?.dims(), &[1, 2, 3, 4]);
        let composite = attention_composite(&q, &empty, &empty)?;
        assert_eq!(composite.dims(), &[1, 2, 3, 4]);
        assert_eq!(composite.abs()?.sum_all()?.to_scalar::<f32>()?, 0.0);
        assert_eq!(attention(&empty, &q, &q)?.dims(), &[1, 2, 0, 4]);
        Ok(())
    }
}
