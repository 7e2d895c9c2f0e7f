//! Matrix multiply `C (+)= A · B` with f32 accumulation, in the BLIS structure: B is packed
//! in `KC × NC` blocks and A in `MC × KC` blocks into cache-friendly micro-panels, then a
//! register-blocked micro-kernel computes one `MR × NR` tile of C at a time. A and B may
//! have any strides (transposes cost nothing, packing absorbs them); C is row-major and
//! contiguous. The two cores work on disjoint parts of C (see `driver::plan_jobs`). A B
//! used for many products (a weight) can be packed once ([`PackedRhs`]).

mod driver;
mod pack;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
mod avx512;
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
pub(crate) use avx512::{transpose16_bf16, transpose16_f32};

use std::marker::PhantomData;

use half::bf16;

use crate::error::{KernelError, Result};
use crate::matrix::{check_extent, BatchRef, MatRef};
use crate::KernelPath;
pub(crate) use driver::PARALLEL_MIN_MACS;
use driver::{CacheLine, Problem, Rhs};

/// An input element type of the GEMM: `f32`, or `bf16` (multiplied exactly and summed in f32).
pub trait GemmInput: Copy + Send + Sync + 'static + sealed::Dispatch {
    fn to_f32(self) -> f32;
}

impl GemmInput for f32 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl GemmInput for bf16 {
    #[inline(always)]
    fn to_f32(self) -> f32 {
        // A bf16 is the upper half of an f32; widening is exact.
        f32::from_bits((self.to_bits() as u32) << 16)
    }
}

pub(crate) mod sealed {
    use super::driver::MicroKernel;
    use crate::KernelPath;
    use half::bf16;

    /// Something to do with a micro-kernel, whichever the path picks.
    pub trait KernelTask<E> {
        type Output;
        fn run<K: MicroKernel<E>>(self) -> Self::Output;
    }

    /// Picks the micro-kernel for an input type on a path. Private: the set of input types
    /// is closed.
    pub trait Dispatch: Sized {
        fn with_kernel<T: KernelTask<Self>>(path: KernelPath, task: T) -> T::Output;
    }

    impl Dispatch for f32 {
        fn with_kernel<T: KernelTask<f32>>(path: KernelPath, task: T) -> T::Output {
            match path {
                #[cfg(all(target_arch = "x86_64", kiln_avx512))]
                KernelPath::Avx512Bf16 | KernelPath::Avx512 => {
                    task.run::<super::avx512::Avx512F32>()
                }
                #[cfg(target_arch = "x86_64")]
                KernelPath::Avx2Fma => task.run::<super::avx2::Avx2F32>(),
                _ => task.run::<super::scalar::ScalarF32>(),
            }
        }
    }

    impl Dispatch for bf16 {
        fn with_kernel<T: KernelTask<bf16>>(path: KernelPath, task: T) -> T::Output {
            match path {
                #[cfg(all(target_arch = "x86_64", kiln_avx512))]
                KernelPath::Avx512Bf16 => task.run::<super::avx512::Avx512Bf16Pairs>(),
                #[cfg(all(target_arch = "x86_64", kiln_avx512))]
                KernelPath::Avx512 => task.run::<super::avx512::Avx512F32>(),
                #[cfg(target_arch = "x86_64")]
                KernelPath::Avx2Fma => task.run::<super::avx2::Avx2F32>(),
                _ => task.run::<super::scalar::ScalarF32>(),
            }
        }
    }
}

/// `C = A · B` (or `C += A · B` with `accumulate`) on the fastest path of this CPU.
/// `A` is `m × k`, `B` is `k × n`, `C` is `m × n` row-major. With `k = 0`, C becomes zeros
/// (or is left as is when accumulating).
pub fn gemm<E: GemmInput>(
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    gemm_with(KernelPath::best(), a, b, c, accumulate)
}

/// [`gemm`] on a chosen path; fails if this CPU cannot run it.
pub fn gemm_with<E: GemmInput>(
    path: KernelPath,
    a: MatRef<'_, E>,
    b: MatRef<'_, E>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    gemm_batched_with(path, a.into(), b.into(), c, accumulate)
}

/// A batch of independent products: `C[i] (+)= A[i] · B[i]`, with C holding the batch of
/// `m × n` row-major results one after another. Attention-shaped matmuls (batch × heads,
/// small m and n) spread over the cores by batch entry.
pub fn gemm_batched<E: GemmInput>(
    a: BatchRef<'_, E>,
    b: BatchRef<'_, E>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    gemm_batched_with(KernelPath::best(), a, b, c, accumulate)
}

/// [`gemm_batched`] on a chosen path; fails if this CPU cannot run it.
pub fn gemm_batched_with<E: GemmInput>(
    path: KernelPath,
    a: BatchRef<'_, E>,
    b: BatchRef<'_, E>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    if a.batch != b.batch {
        return Err(KernelError::BatchMismatch {
            a: a.batch,
            b: b.batch,
        });
    }
    let offsets: Vec<(usize, usize)> = (0..a.batch)
        .map(|i| (i * a.batch_stride, i * b.batch_stride))
        .collect();
    gemm_items(
        path,
        Operand {
            data: a.data,
            rows: a.rows,
            cols: a.cols,
            row_stride: a.row_stride,
            col_stride: a.col_stride,
        },
        Operand {
            data: b.data,
            rows: b.rows,
            cols: b.cols,
            row_stride: b.row_stride,
            col_stride: b.col_stride,
        },
        &offsets,
        c,
        accumulate,
    )
}

impl<'a, T> From<MatRef<'a, T>> for BatchRef<'a, T> {
    fn from(m: MatRef<'a, T>) -> Self {
        BatchRef {
            data: m.data,
            batch: 1,
            batch_stride: 0,
            rows: m.rows,
            cols: m.cols,
            row_stride: m.row_stride,
            col_stride: m.col_stride,
        }
    }
}

/// One operand's matrix shape and strides; where each batch entry starts is given apart.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a, E> {
    pub data: &'a [E],
    pub rows: usize,
    pub cols: usize,
    pub row_stride: usize,
    pub col_stride: usize,
}

/// The general entry: entry `i` multiplies the A matrix starting at `offsets[i].0` by the
/// B matrix starting at `offsets[i].1` into `c[i * m * n..]`. Checks every bound, so the
/// kernels below can use raw pointers.
pub(crate) fn gemm_items<E: GemmInput>(
    path: KernelPath,
    a: Operand<'_, E>,
    b: Operand<'_, E>,
    offsets: &[(usize, usize)],
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    if !path.is_supported() {
        return Err(KernelError::PathUnavailable { path });
    }
    if a.cols != b.rows {
        return Err(KernelError::InnerDim {
            a_cols: a.cols,
            b_rows: b.rows,
        });
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let expected = m
        .checked_mul(n)
        .and_then(|mn| mn.checked_mul(offsets.len()))
        .ok_or(KernelError::Overflow { operand: "C" })?;
    if c.len() != expected {
        return Err(KernelError::OutputLen {
            expected,
            found: c.len(),
        });
    }
    for &(a_offset, b_offset) in offsets {
        check_offset_extent("A", a, a_offset)?;
        check_offset_extent("B", b, b_offset)?;
    }
    let problem = Problem {
        m,
        n,
        k,
        a: a.data,
        a_strides: (a.row_stride, a.col_stride),
        b: Rhs::Strided {
            data: b.data,
            strides: (b.row_stride, b.col_stride),
        },
        offsets,
        accumulate,
        this_thread: false,
        a_in_place: false,
        round: None,
    };
    E::with_kernel(
        path,
        RunProblem {
            problem: &problem,
            c,
        },
    );
    Ok(())
}

fn check_offset_extent<E>(operand: &'static str, op: Operand<'_, E>, offset: usize) -> Result<()> {
    if op.rows == 0 || op.cols == 0 {
        return Ok(());
    }
    let len = op
        .data
        .len()
        .checked_sub(offset)
        .ok_or(KernelError::OutOfBounds {
            operand,
            last_index: offset,
            len: op.data.len(),
        })?;
    check_extent(
        operand,
        len,
        &[(op.rows, op.row_stride), (op.cols, op.col_stride)],
    )
    .map_err(|err| match err {
        KernelError::OutOfBounds { last_index, .. } => KernelError::OutOfBounds {
            operand,
            last_index: last_index + offset,
            len: op.data.len(),
        },
        other => other,
    })
}

/// Runs a checked problem.
struct RunProblem<'p, 'a, E> {
    problem: &'p Problem<'a, E>,
    c: &'p mut [f32],
}

impl<E: GemmInput> sealed::KernelTask<E> for RunProblem<'_, '_, E> {
    type Output = ();
    fn run<K: driver::MicroKernel<E>>(self) {
        driver::run::<E, K>(self.problem, self.c)
    }
}

/// Packs a checked B for [`PackedRhs`].
struct PackRhs<'a, E> {
    b: MatRef<'a, E>,
}

impl<E: GemmInput> sealed::KernelTask<E> for PackRhs<'_, E> {
    type Output = Vec<CacheLine>;
    fn run<K: driver::MicroKernel<E>>(self) -> Vec<CacheLine> {
        let b = self.b;
        if b.rows == 0 || b.cols == 0 {
            return Vec::new();
        }
        // SAFETY: a `MatRef` only exists with every element inside its slice, and the
        // path was checked to be supported before dispatching here.
        unsafe {
            driver::prepack::<E, K>(
                b.data.as_ptr(),
                (b.rows, b.cols),
                (b.row_stride, b.col_stride),
            )
        }
    }
}

/// B packed once in one path's layout, for products that reuse it (a weight): the packing
/// work and its memory traffic (about a tenth of a product with a few hundred rows) leave
/// the per-call path. Holds `k × n` packed elements, padded to whole micro-panels and
/// depth blocks: as much memory as B (f32 on the paths that widen bf16).
pub struct PackedRhs<E> {
    path: KernelPath,
    rows: usize,
    cols: usize,
    lines: Vec<CacheLine>,
    input: PhantomData<E>,
}

impl<E: GemmInput> PackedRhs<E> {
    /// Packs `b` (`k × n`) for the fastest path of this CPU.
    pub fn new(b: MatRef<'_, E>) -> Result<Self> {
        Self::with_path(KernelPath::best(), b)
    }

    /// Packs `b` for a chosen path; fails if this CPU cannot run it.
    pub fn with_path(path: KernelPath, b: MatRef<'_, E>) -> Result<Self> {
        if !path.is_supported() {
            return Err(KernelError::PathUnavailable { path });
        }
        Ok(PackedRhs {
            path,
            rows: b.rows,
            cols: b.cols,
            lines: E::with_kernel(path, PackRhs { b }),
            input: PhantomData,
        })
    }

    /// k, the rows of B.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// n, the columns of B.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The path the layout is for; [`gemm_prepacked`] runs on it.
    pub fn path(&self) -> KernelPath {
        self.path
    }
}

impl<E> std::fmt::Debug for PackedRhs<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedRhs")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .finish_non_exhaustive()
    }
}

/// `C (+)= A · B` with B packed beforehand, on the path it was packed for. A may be a
/// batch of rows folded into `m` (any strides), C is `m × n` row-major.
pub fn gemm_prepacked<E: GemmInput>(
    a: MatRef<'_, E>,
    b: &PackedRhs<E>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    prepacked_product(a, b, c, accumulate, Placement::Spread, None)
}

/// [`gemm_prepacked`] on the calling thread only, reading A in place where the kernel can:
/// for the Winograd convolution, which runs many small products in parallel itself.
pub(crate) fn gemm_prepacked_here<E: GemmInput>(
    a: MatRef<'_, E>,
    b: &PackedRhs<E>,
    c: &mut [f32],
    accumulate: bool,
) -> Result<()> {
    prepacked_product(a, b, c, accumulate, Placement::HereInPlace, None)
}

/// What a bf16 linear layer does with each rounded output before it leaves the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `round_bf16(A · B + bias)`.
    Round,
    /// `round_bf16(gelu_tanh(round_bf16(A · B + bias)))`: the linear layer and the GELU
    /// after it (Wan's feed-forward), in one pass over the output.
    RoundGeluTanh,
}

/// `round_bf16(A · B + bias)` with B packed beforehand: a bf16 linear layer, then
/// `epilogue`. Each tile is finished as soon as its sum is final, while it is still in
/// cache; `scratch` (`m × n`) holds the f32 sums on the way. The result is written once,
/// never zeroed first.
pub fn gemm_prepacked_bf16(
    a: MatRef<'_, half::bf16>,
    b: &PackedRhs<half::bf16>,
    bias: Option<&[f32]>,
    epilogue: Epilogue,
    scratch: &mut [f32],
) -> Result<Vec<half::bf16>> {
    if let Some(bias) = bias.filter(|bias| bias.len() != b.cols) {
        return Err(KernelError::OutputLen {
            expected: b.cols,
            found: bias.len(),
        });
    }
    let mut out = Vec::with_capacity(scratch.len());
    let round = driver::RoundTiles {
        out: driver::SharedBf16(out.as_mut_ptr()),
        bias,
        epilogue,
        path: b.path,
    };
    prepacked_product(a, b, scratch, false, Placement::Spread, Some(round))?;
    // SAFETY: the product checked that `scratch` (and so `out`'s capacity) is m × n, and
    // the driver writes every element of a `RoundTiles` output (see `driver::run`).
    unsafe { out.set_len(scratch.len()) };
    Ok(out)
}

/// Where a prepacked product runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Over the pool, A packed.
    Spread,
    /// On the calling thread, A read in place where the kernel can (see
    /// `driver::Problem::a_in_place`): the Winograd convolution's many small products.
    HereInPlace,
}

fn prepacked_product<E: GemmInput>(
    a: MatRef<'_, E>,
    b: &PackedRhs<E>,
    c: &mut [f32],
    accumulate: bool,
    placement: Placement,
    round: Option<driver::RoundTiles<'_>>,
) -> Result<()> {
    if a.cols != b.rows {
        return Err(KernelError::InnerDim {
            a_cols: a.cols,
            b_rows: b.rows,
        });
    }
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let expected = m
        .checked_mul(n)
        .ok_or(KernelError::Overflow { operand: "C" })?;
    if c.len() != expected {
        return Err(KernelError::OutputLen {
            expected,
            found: c.len(),
        });
    }
    let problem = Problem {
        m,
        n,
        k,
        a: a.data,
        a_strides: (a.row_stride, a.col_stride),
        b: Rhs::Prepacked(&b.lines),
        offsets: &[(0, 0)],
        accumulate,
        this_thread: placement == Placement::HereInPlace,
        a_in_place: placement == Placement::HereInPlace,
        round,
    };
    E::with_kernel(
        b.path,
        RunProblem {
            problem: &problem,
            c,
        },
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reading A in place (the Winograd products) multiplies the same values in the same
    /// order as packing it, so the results are bit for bit equal: row tails, several depth
    /// blocks, rows longer than k (strided like the Winograd `V`), odd k (packed instead).
    #[test]
    fn a_in_place_equals_packed_a() {
        for path in KernelPath::supported() {
            for &(m, n, k, lda) in &[
                (1, 1, 2, 2),
                (7, 70, 64, 96),
                (13, 130, 2200, 2300),
                (256, 96, 1152, 2304),
                (5, 33, 7, 9),
            ] {
                let a: Vec<half::bf16> = (0..m * lda)
                    .map(|i| half::bf16::from_f32(((i * 37 % 101) as f32 - 50.0) / 50.0))
                    .collect();
                let b: Vec<half::bf16> = (0..k * n)
                    .map(|i| half::bf16::from_f32(((i * 53 % 97) as f32 - 48.0) / 48.0))
                    .collect();
                let a = MatRef::new(&a, m, k, lda, 1).unwrap();
                let packed =
                    PackedRhs::with_path(path, MatRef::row_major(&b, k, n).unwrap()).unwrap();
                let mut expected = vec![0f32; m * n];
                gemm_prepacked(a, &packed, &mut expected, false).unwrap();
                let mut got = vec![1f32; m * n];
                gemm_prepacked_here(a, &packed, &mut got, false).unwrap();
                assert_eq!(got, expected, "{path:?} {m}x{n}x{k} lda {lda}");
            }
        }
    }
}
