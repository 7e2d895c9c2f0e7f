//! The loops around the micro-kernels: splitting C between threads, cache blocking and
//! packing. Shared by every path; a path only supplies a [`MicroKernel`].

use std::cell::RefCell;

use rayon::prelude::*;

use super::GemmInput;

/// A bounds-checked batch of products (built by `gemm_items`); entry `i` reads A from
/// `offsets[i].0` and B from `offsets[i].1` and writes `c[i * m * n..][..m * n]`.
pub struct Problem<'a, E> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a [E],
    /// (row, column) strides of A.
    pub a_strides: (usize, usize),
    pub b: Rhs<'a, E>,
    pub offsets: &'a [(usize, usize)],
    pub accumulate: bool,
    /// Run on the calling thread only: for callers that already spread their own work
    /// over the cores (many small products), where splitting each one costs more than it
    /// gains.
    pub this_thread: bool,
    /// Read A in place instead of packing it, where the kernel can (see
    /// [`MicroKernel::DIRECT_A`]). It pays when A's rows are short runs that overlapping
    /// products share (the Winograd convolution's temporal taps); for one large product
    /// the packed panel streams better.
    pub a_in_place: bool,
    /// Where each finished tile of C is also written rounded to bf16 (see [`RoundTiles`]).
    pub round: Option<RoundTiles<'a>>,
}

/// A bf16 copy of C written tile by tile as each tile becomes final (after its last depth
/// block), with a bias added, while the tile is still in L1. The bf16 linear layers used
/// to fill C with the bias first and round all of it in a pass afterwards: two more trips
/// through memory for every output. [`run`] writes every element of `out` exactly once.
#[derive(Clone, Copy)]
pub struct RoundTiles<'a> {
    /// `items · m × n`, row-major like C (for one thread's block: from its first element,
    /// with C's row stride).
    pub out: SharedBf16,
    /// `n` values added to every row (for a block: from its first column), or none.
    pub bias: Option<&'a [f32]>,
    /// Applied to each rounded value, and rounded again, while the tile is in L1.
    pub epilogue: super::Epilogue,
    pub path: crate::KernelPath,
}

impl RoundTiles<'_> {
    /// Rounds the finished `rows × cols` of C at row `row`, column `col` (row stride
    /// `ldc`, C's and `out`'s) into `out`.
    ///
    /// # Safety
    /// `c` holds that region, and `out` and `bias` are as described on the type.
    unsafe fn finish(
        self,
        c: *const f32,
        ldc: usize,
        (row, col): (usize, usize),
        (rows, cols): (usize, usize),
    ) {
        crate::kernel_path::run_vectorised(
            self.path,
            RoundTile {
                c,
                ldc,
                // SAFETY: per the caller, (row, col) lies inside `out`.
                out: unsafe { self.out.0.add(row * ldc + col) },
                bias: self.bias.map(|b| &b[col..]),
                epilogue: self.epilogue,
                rows,
                cols,
            },
        );
    }
}

/// The bf16 output of [`RoundTiles`]; jobs write disjoint tiles of it.
#[derive(Clone, Copy)]
pub struct SharedBf16(pub *mut half::bf16);
// SAFETY: every job writes only its own tiles, and the caller keeps the slice alive and
// unaliased for the product.
unsafe impl Send for SharedBf16 {}
// SAFETY: as above.
unsafe impl Sync for SharedBf16 {}

/// One finished tile to round: `rows × cols` of C to `out`, both with row stride `ldc`,
/// `bias` starting at the tile's first column.
struct RoundTile<'a> {
    c: *const f32,
    ldc: usize,
    out: *mut half::bf16,
    bias: Option<&'a [f32]>,
    epilogue: super::Epilogue,
    rows: usize,
    cols: usize,
}

impl crate::kernel_path::VectorTask for RoundTile<'_> {
    #[inline(always)]
    fn run(self) {
        for i in 0..self.rows {
            // SAFETY: `gemm_block` builds a RoundTile only for a tile inside C and the
            // output, which `RoundTiles`' owner sized `m × n` like C.
            let (src, dst) = unsafe {
                (
                    std::slice::from_raw_parts(self.c.add(i * self.ldc), self.cols),
                    std::slice::from_raw_parts_mut(self.out.add(i * self.ldc), self.cols),
                )
            };
            match self.bias {
                Some(bias) => {
                    for ((d, &s), &b) in dst.iter_mut().zip(src).zip(&bias[..self.cols]) {
                        *d = crate::convert::round_bf16(s + b);
                    }
                }
                None => crate::convert::round_slice(src, dst),
            }
            match self.epilogue {
                super::Epilogue::Round => {}
                // Rounded twice, as the separate layer would: the reference's GELU reads
                // the bf16 output of the linear layer.
                super::Epilogue::RoundGeluTanh => {
                    use crate::norm::Activation;
                    for d in dst.iter_mut() {
                        *d = half::bf16::store(crate::activation::gelu(d.load()));
                    }
                }
            }
        }
    }
}

/// Where B comes from.
#[derive(Clone, Copy)]
pub enum Rhs<'a, E> {
    /// A strided matrix, packed during the product.
    Strided {
        data: &'a [E],
        /// (row, column) strides.
        strides: (usize, usize),
    },
    /// Packed beforehand by [`prepack`] with the same kernel (B offsets are ignored).
    Prepacked(&'a [CacheLine]),
}

/// A packed element: `f32`, or `u32` holding the bf16 of two adjacent k (low half first).
pub trait PackedElement: Copy + 'static {}
impl PackedElement for f32 {}
impl PackedElement for u32 {}

/// One instruction-set path's register-blocked kernel and its packing format.
pub trait MicroKernel<E> {
    type Packed: PackedElement;
    /// Rows of C per tile (A micro-panel width).
    const MR: usize;
    /// Columns of C per tile (B micro-panel width).
    const NR: usize;
    /// k values per packed element (2 for bf16 pairs).
    const K_PER_PACKED: usize;
    /// Cache blocking: k depth of a packed block, rows of a packed A block, columns of a
    /// packed B block.
    const KC: usize;
    const MC: usize;
    const NC: usize;

    /// Packs one micro-panel: `dst[q * width + l]` holds k = `q * K_PER_PACKED ..` of lane
    /// `l`, read from `src[l * lane_stride + k * k_stride]`; lanes `lanes..width` and k past
    /// `kc` are zero. A lane is a row of A or a column of B.
    ///
    /// # Safety
    /// Every `src` element named above with `l < lanes`, `k < kc` must be readable, and `dst`
    /// must hold `kc.div_ceil(K_PER_PACKED) * width` elements.
    #[allow(clippy::too_many_arguments)]
    unsafe fn pack(
        src: *const E,
        lane_stride: usize,
        k_stride: usize,
        lanes: usize,
        width: usize,
        kc: usize,
        dst: *mut Self::Packed,
    );

    /// `C[..rows][..cols] (+)= A-panel · B-panel` over `kp` packed k steps, C with row
    /// stride `ldc`.
    ///
    /// # Safety
    /// `a` holds `kp * MR`, `b` holds `kp * NR` packed elements; `c` addresses a `rows × cols`
    /// region (`rows <= MR`, `cols <= NR`) with row stride `ldc`; the CPU supports the path.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        kp: usize,
        a: *const Self::Packed,
        b: *const Self::Packed,
        c: *mut f32,
        ldc: usize,
        rows: usize,
        cols: usize,
        accumulate: bool,
    );

    /// Whether [`Self::tile_direct_a`] exists: the kernel can read A's rows in place when
    /// each row's k run is contiguous, so A needs no packing.
    const DIRECT_A: bool = false;

    /// As [`Self::tile`], with A read in place: row `i < rows` of the tile starts at
    /// `a + i · lda` and holds `kp · K_PER_PACKED` contiguous k.
    ///
    /// # Safety
    /// As [`Self::tile`], with those rows readable in place of the packed panel; only
    /// called when [`Self::DIRECT_A`] is true.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile_direct_a(
        _kp: usize,
        _a: *const E,
        _lda: usize,
        _b: *const Self::Packed,
        _c: *mut f32,
        _ldc: usize,
        _rows: usize,
        _cols: usize,
        _accumulate: bool,
    ) {
        unreachable!("tile_direct_a on a kernel without DIRECT_A")
    }
}

/// Below this many multiply-adds a product runs on the calling thread: spreading it costs
/// more than it saves.
pub(crate) const PARALLEL_MIN_MACS: usize = 1 << 18;

/// One piece of work for one thread: rows `rows.0..rows.1` and columns `cols.0..cols.1`
/// of batch entry `item`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub item: usize,
    pub rows: (usize, usize),
    pub cols: (usize, usize),
}

/// Splits the batch into jobs for `threads` threads: whole entries when they balance,
/// otherwise each entry cut into column strips (keeps each thread's packed B share
/// disjoint) or, when C is too narrow, row strips. With B packed beforehand (`b_packed`)
/// row strips come first: a column split would have every thread pack all of A, a row
/// split packs each row once.
pub(crate) fn plan_jobs(
    items: usize,
    (m, n, k): (usize, usize, usize),
    threads: usize,
    (mr, nr): (usize, usize),
    b_packed: bool,
) -> Vec<Job> {
    let whole = |item| Job {
        item,
        rows: (0, m),
        cols: (0, n),
    };
    let macs = items.saturating_mul(m).saturating_mul(n).saturating_mul(k);
    // Whole entries balance when they divide evenly or are many; 3 entries on 2 threads
    // would leave one thread idle a third of the time.
    let whole_entries_balance = items.is_multiple_of(threads) || items >= 4 * threads;
    if threads <= 1 || macs < PARALLEL_MIN_MACS || whole_entries_balance {
        return (0..items).map(whole).collect();
    }
    let col_strips = n.div_ceil(nr);
    let row_strips = m.div_ceil(mr);
    let mut jobs = Vec::new();
    for item in 0..items {
        let by_rows = if b_packed {
            row_strips >= threads * 2 || row_strips >= col_strips
        } else {
            col_strips < threads * 2 && col_strips < row_strips
        };
        if !by_rows {
            for (start, end) in split_even(col_strips, threads) {
                jobs.push(Job {
                    item,
                    rows: (0, m),
                    cols: (start * nr, (end * nr).min(n)),
                });
            }
        } else {
            for (start, end) in split_even(row_strips, threads) {
                jobs.push(Job {
                    item,
                    rows: (start * mr, (end * mr).min(m)),
                    cols: (0, n),
                });
            }
        }
    }
    jobs
}

/// `count` units cut into at most `parts` contiguous, non-empty ranges of near-equal size.
fn split_even(count: usize, parts: usize) -> impl Iterator<Item = (usize, usize)> {
    let parts = parts.min(count).max(1);
    (0..parts).map(move |p| (count * p / parts, count * (p + 1) / parts))
}

/// A pointer that may cross to other threads; the jobs it is used for write disjoint parts.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: every job writes only its own rows × columns of C, so no two threads touch the
// same element, and the slice outlives the parallel section.
unsafe impl Send for SharedOut {}
// SAFETY: as above.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Through a method, so closures capture the whole (Sync) wrapper, not the raw field.
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Runs a checked problem with kernel `K`.
pub(crate) fn run<E: GemmInput, K: MicroKernel<E>>(p: &Problem<'_, E>, c: &mut [f32]) {
    let (m, n, k) = (p.m, p.n, p.k);
    if m == 0 || n == 0 || p.offsets.is_empty() {
        return;
    }
    if k == 0 {
        if !p.accumulate {
            c.fill(0.0);
        }
        if let Some(round) = p.round {
            // No depth block runs, so no tile is finished by the kernels.
            // SAFETY: C and `out` both hold `items · m × n`.
            unsafe { round.finish(c.as_ptr(), n, (0, 0), (p.offsets.len() * m, n)) };
        }
        return;
    }
    let jobs = plan_jobs(
        p.offsets.len(),
        (m, n, k),
        if p.this_thread {
            1
        } else {
            rayon::current_num_threads()
        },
        (K::MR, K::NR),
        matches!(p.b, Rhs::Prepacked(_)),
    );
    let out = SharedOut(c.as_mut_ptr());
    let run_job = |job: &Job| {
        let (a_offset, b_offset) = p.offsets[job.item];
        let (a_rs, a_cs) = p.a_strides;
        // SAFETY: `gemm_items` checked that every element of each entry's A and B is inside
        // its slice (or that the prepacked B was packed for k × n) and that C holds
        // `items * m * n` elements; the job's rows and columns are inside `m × n`, so all
        // offsets below are in bounds.
        unsafe {
            let a = p.a.as_ptr().add(a_offset + job.rows.0 * a_rs);
            let rhs = match p.b {
                Rhs::Strided {
                    data,
                    strides: (row_stride, col_stride),
                } => RhsSource::Strided {
                    b: data.as_ptr().add(b_offset + job.cols.0 * col_stride),
                    row_stride,
                    col_stride,
                },
                // Column jobs start on micro-panel boundaries (see `plan_jobs`).
                Rhs::Prepacked(lines) => RhsSource::Prepacked {
                    packed: lines.as_ptr().cast(),
                    n_strips: n.div_ceil(K::NR),
                    first_strip: job.cols.0 / K::NR,
                },
            };
            let c = out
                .get()
                .add(job.item * m * n + job.rows.0 * n + job.cols.0);
            // The tile at (row, col) of this block rounds to `out` at the same place in C.
            let round = p.round.map(|r| RoundTiles {
                out: SharedBf16(r.out.0.add(job.item * m * n + job.rows.0 * n + job.cols.0)),
                bias: r.bias.map(|b| &b[job.cols.0..]),
                epilogue: r.epilogue,
                path: r.path,
            });
            with_pack_buffers(|buffers| {
                gemm_block::<E, K>(
                    BlockShape {
                        m: job.rows.1 - job.rows.0,
                        n: job.cols.1 - job.cols.0,
                        k,
                    },
                    (a, a_rs, a_cs, p.a_in_place),
                    rhs,
                    (c, n),
                    p.accumulate,
                    round,
                    buffers,
                )
            });
        }
    };
    if jobs.len() == 1 {
        run_job(&jobs[0]);
    } else {
        jobs.par_iter().for_each(run_job);
    }
}

#[derive(Clone, Copy)]
struct BlockShape {
    m: usize,
    n: usize,
    k: usize,
}

/// B for one thread's block.
#[derive(Clone, Copy)]
enum RhsSource<E, P> {
    /// Packed here from a matrix with these strides.
    Strided {
        b: *const E,
        row_stride: usize,
        col_stride: usize,
    },
    /// Packed beforehand in [`prepack`]'s layout for `n_strips` micro-panels per depth
    /// block; this block starts at micro-panel `first_strip`.
    Prepacked {
        packed: *const P,
        n_strips: usize,
        first_strip: usize,
    },
}

/// The BLIS loop nest on one thread: for each `NC` column block and `KC` depth block, and
/// each `MC` row block, pack A; then for each B micro-panel (packed during the first row
/// block and kept for the others, or prepacked) run the micro-kernel down the row tiles,
/// the B micro-panel staying in cache across them.
///
/// # Safety
/// A (`m × k`), B (`k × n`) and C (`m × n`, row stride `ldc`) must be valid for the given
/// strides (A read in place where asked and the kernel can), and the CPU must support
/// `K`'s path.
unsafe fn gemm_block<E, K: MicroKernel<E>>(
    shape: BlockShape,
    (a, a_rs, a_cs, a_in_place): (*const E, usize, usize, bool),
    rhs: RhsSource<E, K::Packed>,
    (c, ldc): (*mut f32, usize),
    accumulate: bool,
    round: Option<RoundTiles<'_>>,
    buffers: &mut PackBuffers,
) {
    let BlockShape { m, n, k } = shape;
    // A read in place: its rows' k runs are contiguous and whole packed elements (an odd
    // k would leave a half pair reading past the row).
    let direct_a = a_in_place && K::DIRECT_A && a_cs == 1 && k.is_multiple_of(K::K_PER_PACKED);
    let kp_max = K::KC.min(k).div_ceil(K::K_PER_PACKED);
    let a_len = if direct_a {
        0
    } else {
        K::MC.min(m).next_multiple_of(K::MR) * kp_max
    };
    // With a single row block each B micro-panel is used once, right after packing: one
    // micro-panel of space suffices and the column blocking is moot. Prepacked B needs
    // neither space nor column blocks.
    let single_row_block = m <= K::MC;
    let (nc_block, b_len) = match rhs {
        RhsSource::Prepacked { .. } => (n, 0),
        RhsSource::Strided { .. } if single_row_block => (n, K::NR * kp_max),
        RhsSource::Strided { .. } => (K::NC, K::NC.min(n).next_multiple_of(K::NR) * kp_max),
    };
    let (a_buf, b_buf) = buffers.get::<K::Packed>(a_len, b_len);
    // SAFETY: the caller guarantees A, B and C for the whole block; every offset below is
    // of an element inside them (jc + jr < n, ic + ir < m, pc < k), the packing buffers
    // hold `a_len` and `b_len` elements, and the path is supported.
    unsafe {
        for jc in (0..n).step_by(nc_block) {
            let nc = nc_block.min(n - jc);
            for (depth_block, pc) in (0..k).step_by(K::KC).enumerate() {
                let kc = K::KC.min(k - pc);
                let kp = kc.div_ceil(K::K_PER_PACKED);
                let acc = accumulate || pc > 0;
                for ic in (0..m).step_by(K::MC) {
                    let mc = K::MC.min(m - ic);
                    // Rows to pack: none when A is read in place.
                    let packed_rows = if direct_a { 0 } else { mc };
                    for (strip, ir) in (0..packed_rows).step_by(K::MR).enumerate() {
                        K::pack(
                            a.add((ic + ir) * a_rs + pc * a_cs),
                            a_rs,
                            a_cs,
                            K::MR.min(mc - ir),
                            K::MR,
                            kc,
                            a_buf.add(strip * kp * K::MR),
                        );
                    }
                    for (col_strip, jr) in (0..nc).step_by(K::NR).enumerate() {
                        let b_strip: *const K::Packed = match rhs {
                            RhsSource::Strided {
                                b,
                                row_stride,
                                col_stride,
                            } => {
                                let b_strip = if single_row_block {
                                    b_buf
                                } else {
                                    b_buf.add(col_strip * kp * K::NR)
                                };
                                if ic == 0 {
                                    // Packed just before its first use, so the row tiles
                                    // below read it from L1/L2, not after a trip through L3.
                                    K::pack(
                                        b.add(pc * row_stride + (jc + jr) * col_stride),
                                        col_stride,
                                        row_stride,
                                        K::NR.min(nc - jr),
                                        K::NR,
                                        kc,
                                        b_strip,
                                    );
                                }
                                b_strip
                            }
                            RhsSource::Prepacked {
                                packed,
                                n_strips,
                                first_strip,
                            } => packed.add(
                                depth_block * (K::KC / K::K_PER_PACKED) * n_strips * K::NR
                                    + (first_strip + col_strip) * kp * K::NR,
                            ),
                        };
                        let last_depth = pc + kc == k;
                        for (row_strip, ir) in (0..mc).step_by(K::MR).enumerate() {
                            let (rows, cols) = (K::MR.min(mc - ir), K::NR.min(nc - jr));
                            let tile_c = c.add((ic + ir) * ldc + jc + jr);
                            if direct_a {
                                K::tile_direct_a(
                                    kp,
                                    a.add((ic + ir) * a_rs + pc),
                                    a_rs,
                                    b_strip,
                                    tile_c,
                                    ldc,
                                    rows,
                                    cols,
                                    acc,
                                );
                            } else {
                                K::tile(
                                    kp,
                                    a_buf.add(row_strip * kp * K::MR),
                                    b_strip,
                                    tile_c,
                                    ldc,
                                    rows,
                                    cols,
                                    acc,
                                );
                            }
                            if let Some(r) = round.filter(|_| last_depth) {
                                r.finish(tile_c, ldc, (ic + ir, jc + jr), (rows, cols));
                            }
                        }
                    }
                }
            }
        }
    }
}

/// Packs all of B (`k × n`, with the given strides) for kernel `K`: depth block after
/// depth block (`KC` k each), each holding every NR-column micro-panel in turn.
///
/// # Safety
/// B must be valid for `k × n` with the given strides, and the CPU must support `K`'s path.
pub(crate) unsafe fn prepack<E, K: MicroKernel<E>>(
    b: *const E,
    (k, n): (usize, usize),
    (row_stride, col_stride): (usize, usize),
) -> Vec<CacheLine> {
    let n_strips = n.div_ceil(K::NR);
    // Full depth blocks, then a last block only as deep as the k left: readers find a
    // block at `depth_block · KC` and nothing follows the last, so its tail needs no padding
    // (a 1536-deep bf16 weight would otherwise be packed 2048 deep).
    let tail_kp = (k % K::KC).div_ceil(K::K_PER_PACKED);
    let packed_len = ((k / K::KC) * (K::KC / K::K_PER_PACKED) + tail_kp) * n_strips * K::NR;
    let mut lines = vec![CacheLine([0; 16]); packed_len.div_ceil(16)];
    let dst: *mut K::Packed = lines.as_mut_ptr().cast();
    for (depth_block, pc) in (0..k).step_by(K::KC).enumerate() {
        let kc = K::KC.min(k - pc);
        let kp = kc.div_ceil(K::K_PER_PACKED);
        let block = depth_block * (K::KC / K::K_PER_PACKED) * n_strips * K::NR;
        for strip in 0..n_strips {
            let jr = strip * K::NR;
            // SAFETY: column jr < n and row pc < k are inside B; the destination lies
            // inside `packed_len` (full-depth blocks, then the last block's `kp`); the path
            // is supported per the caller.
            unsafe {
                K::pack(
                    b.add(pc * row_stride + jr * col_stride),
                    col_stride,
                    row_stride,
                    K::NR.min(n - jr),
                    K::NR,
                    kc,
                    dst.add(block + strip * kp * K::NR),
                );
            }
        }
    }
    lines
}

/// 64 bytes, aligned to a cache line, so packed panels start on line boundaries.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub struct CacheLine([u32; 16]);

/// Per-thread packing space, kept between calls so a GEMM does not allocate.
#[derive(Default)]
pub(crate) struct PackBuffers {
    a: Vec<CacheLine>,
    b: Vec<CacheLine>,
}

impl PackBuffers {
    /// Raw space for `a_len` and `b_len` packed elements.
    fn get<P: PackedElement>(&mut self, a_len: usize, b_len: usize) -> (*mut P, *mut P) {
        const { assert!(std::mem::size_of::<P>() == 4) };
        let lines = |len: usize| len.div_ceil(16);
        if self.a.len() < lines(a_len) {
            self.a.resize(lines(a_len), CacheLine([0; 16]));
        }
        if self.b.len() < lines(b_len) {
            self.b.resize(lines(b_len), CacheLine([0; 16]));
        }
        (self.a.as_mut_ptr().cast(), self.b.as_mut_ptr().cast())
    }
}

thread_local! {
    static PACK_BUFFERS: RefCell<PackBuffers> = RefCell::new(PackBuffers::default());
}

/// Lends this thread's packing space; a nested call (should one ever happen) gets its own.
fn with_pack_buffers<R>(f: impl FnOnce(&mut PackBuffers) -> R) -> R {
    PACK_BUFFERS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffers) => f(&mut buffers),
        Err(_) => f(&mut PackBuffers::default()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_jobs_covers_c_exactly_once() {
        for &(items, m, n, threads) in &[
            (1, 320, 1536, 2),
            (1, 2048, 20, 2),
            (3, 100, 100, 2),
            (1, 7, 5, 4),
            (1, 1000, 1000, 3),
        ] {
            for b_packed in [false, true] {
                let jobs = plan_jobs(items, (m, n, 1000), threads, (6, 64), b_packed);
                let mut hits = vec![0u8; items * m * n];
                for job in &jobs {
                    assert!(job.rows.0 % 6 == 0 && job.cols.0 % 64 == 0, "{job:?}");
                    for i in job.rows.0..job.rows.1 {
                        for j in job.cols.0..job.cols.1 {
                            hits[job.item * m * n + i * n + j] += 1;
                        }
                    }
                }
                assert!(
                    hits.iter().all(|&h| h == 1),
                    "{items}x{m}x{n} on {threads}, B packed {b_packed}"
                );
            }
        }
    }
}
