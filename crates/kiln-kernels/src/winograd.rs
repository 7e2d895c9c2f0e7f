//! Winograd F(m×m, 3×3) convolution of channel-first frames: the 3×3 spatial taps of a
//! stride-1 `(kt, 3, 3)` convolution with `(m+2)²/m²` multiplies per output pixel instead
//! of 9 — 4 for F(2×2, 3×3), which bf16 uses, and 2.25 for F(4×4, 3×3), which f32 uses
//! (its larger transform coefficients would cost bf16 too much precision).
//!
//! Each output tile of m×m pixels reads an n×n input patch `d` (n = m + 2). With the
//! standard transforms, `Y = Aᵀ [ Σ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, so after transforming the
//! weights once (`U = G g Gᵀ`, n² values per 3×3 kernel) and every input frame once
//! (`V = Bᵀ d B`, n² values per tile), the sum over input channels and temporal taps becomes
//! n² independent GEMMs, one per position ξ of the n×n transform domain:
//!
//! `M_ξ (tiles × O) = V_ξ (tiles × kt·C) · U_ξ (kt·C × O)`
//!
//! `V` is laid out `[ξ][tile][frame][channel]`, so the kt frames a temporal tap reads sit
//! next to each other and one GEMM covers every tap; `U_ξ` is packed for the GEMM once, when
//! the weights are loaded. The tiles go through in bands small enough that a band's `M`
//! stays in cache until the output transform `Aᵀ M A` turns it into 2×2 pixels. The
//! transforms are additions only, done in f32 and vectorised across channels; the GEMM runs
//! on the crate's kernels (bf16 products are exact and summed in f32). In bf16 the
//! transformed inputs and weights are rounded to bf16 once each, which the tests bound.

use std::any::Any;
use std::cell::RefCell;

use half::bf16;
use rayon::prelude::*;

use crate::conv::Conv3dShape;
use crate::error::{check_len, KernelError, Result};
use crate::gemm::gemm_prepacked_here;
use crate::gemm::GemmInput;
use crate::kernel_path::{run_vectorised, VectorTask};
use crate::{KernelPath, MatRef, PackedRhs};

/// Tiles per band: `M` of a band is `n² · BAND_TILES · O` f32.
const BAND_TILES: usize = 256;

/// The transform matrices of one F(m×m, 3×3), row-major: `Bᵀ` (n × n), `G` (n × 3) and
/// `Aᵀ` (m × n), n = m + 2 (Lavin & Gray, "Fast Algorithms for Convolutional Neural
/// Networks", 2015; interpolation points 0, ±1, ±2 and ∞).
pub struct Transforms {
    pub m: usize,
    bt: &'static [f32],
    g: &'static [f32],
    at: &'static [f32],
}

impl Transforms {
    /// The patch side, m + 2.
    pub fn n(&self) -> usize {
        self.m + 2
    }
}

/// F(2×2, 3×3): points 0, ±1, ∞.
pub const F2: Transforms = Transforms {
    m: 2,
    #[rustfmt::skip]
    bt: &[
        1.0, 0.0, -1.0, 0.0,
        0.0, 1.0, 1.0, 0.0,
        0.0, -1.0, 1.0, 0.0,
        0.0, 1.0, 0.0, -1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0, 0.0, 0.0,
        0.5, 0.5, 0.5,
        0.5, -0.5, 0.5,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, -1.0,
    ],
};

/// F(4×4, 3×3): points 0, ±1, ±2, ∞.
pub const F4: Transforms = Transforms {
    m: 4,
    #[rustfmt::skip]
    bt: &[
        4.0, 0.0, -5.0, 0.0, 1.0, 0.0,
        0.0, -4.0, -4.0, 1.0, 1.0, 0.0,
        0.0, 4.0, -4.0, -1.0, 1.0, 0.0,
        0.0, -2.0, -1.0, 2.0, 1.0, 0.0,
        0.0, 2.0, -1.0, -2.0, 1.0, 0.0,
        0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    g: &[
        1.0 / 4.0, 0.0, 0.0,
        -1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0,
        -1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0,
        1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0,
        1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0,
        0.0, 0.0, 1.0,
    ],
    #[rustfmt::skip]
    at: &[
        1.0, 1.0, 1.0, 1.0, 1.0, 0.0,
        0.0, 1.0, -1.0, 2.0, -2.0, 0.0,
        0.0, 1.0, 1.0, 4.0, 4.0, 0.0,
        0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
    ],
};

/// An element type the transforms can write: f32 as is, bf16 rounded to nearest even.
pub trait WinogradElement: GemmInput + Default {
    /// The variant [`WinogradWeights::new`] picks for this type (bf16: F(2×2); f32: F(4×4),
    /// though [`Transforms::for_f32`] may pick F(2×2) to save memory).
    const TRANSFORMS: &'static Transforms;

    /// `v` in this type (bf16: to nearest, ties to even, as `half::bf16::from_f32`).
    fn round(v: f32) -> Self;

    /// `dst[k · dst_stride + l] = src[l · src_stride + k]` in f32 for `l, k < 16`, with
    /// AVX-512 register transposes when `fast` (the caller checked the CPU has it).
    fn transpose16(src: &[Self], src_stride: usize, dst: &mut [f32], dst_stride: usize, fast: bool);

    /// Writes `dst[i]` from `src[i]`; the slices are equally long.
    fn store(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = Self::round(s);
        }
    }
}

/// The 16 × 16 transpose by element, with the bounds [`WinogradElement::transpose16`]
/// promises, checked.
#[inline(always)]
fn transpose16_by_element<E: GemmInput>(src: &[E], ss: usize, dst: &mut [f32], ds: usize) {
    for l in 0..16 {
        for k in 0..16 {
            dst[k * ds + l] = src[l * ss + k].to_f32();
        }
    }
}

/// Whether a 16 × 16 block fits the slices as `transpose16` reads and writes it.
fn block_fits(src_len: usize, ss: usize, dst_len: usize, ds: usize) -> bool {
    15 * ss + 16 <= src_len && 15 * ds + 16 <= dst_len
}

impl WinogradElement for f32 {
    const TRANSFORMS: &'static Transforms = &F4;

    #[inline(always)]
    fn round(v: f32) -> f32 {
        v
    }

    #[inline(always)]
    fn transpose16(src: &[f32], ss: usize, dst: &mut [f32], ds: usize, fast: bool) {
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        if fast && block_fits(src.len(), ss, dst.len(), ds) {
            // SAFETY: the block is inside both slices (checked above) and `fast` means the
            // caller runs on a CPU with AVX-512F.
            unsafe { crate::gemm::transpose16_f32(src.as_ptr(), ss, dst.as_mut_ptr(), ds) };
            return;
        }
        let _ = (fast, block_fits);
        transpose16_by_element(src, ss, dst, ds)
    }
}

impl WinogradElement for bf16 {
    const TRANSFORMS: &'static Transforms = &F2;

    /// Branch-free, so loops of it vectorise.
    #[inline(always)]
    fn round(v: f32) -> bf16 {
        crate::convert::round_bf16(v)
    }

    #[inline(always)]
    fn transpose16(src: &[bf16], ss: usize, dst: &mut [f32], ds: usize, fast: bool) {
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        if fast && block_fits(src.len(), ss, dst.len(), ds) {
            // SAFETY: as for f32.
            unsafe { crate::gemm::transpose16_bf16(src.as_ptr(), ss, dst.as_mut_ptr(), ds) };
            return;
        }
        let _ = fast;
        transpose16_by_element(src, ss, dst, ds)
    }
}

/// Weights of a `(kt, 3, 3)` convolution in the transform domain: `U_ξ` (`kt·C × O`) for
/// each ξ, packed for the GEMM.
pub struct WinogradWeights<E> {
    tr: &'static Transforms,
    packed: Vec<PackedRhs<E>>,
    c_out: usize,
    c_in: usize,
    kt: usize,
}

impl<E> std::fmt::Debug for WinogradWeights<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WinogradWeights")
            .field("c_out", &self.c_out)
            .field("c_in", &self.c_in)
            .field("kt", &self.kt)
            .finish()
    }
}

impl<E: WinogradElement> WinogradWeights<E> {
    /// Transforms `weight` `(O, kt·3·3·C)` (taps outer, channels inner, as
    /// [`crate::conv::conv3d`] takes it).
    pub fn new(weight: &[E], c_out: usize, c_in: usize, kt: usize) -> Result<Self> {
        Self::with_transforms(weight, c_out, c_in, kt, E::TRANSFORMS)
    }

    /// As [`Self::new`], with a chosen variant ([`F2`] or [`F4`]).
    pub fn with_transforms(
        weight: &[E],
        c_out: usize,
        c_in: usize,
        kt: usize,
        tr: &'static Transforms,
    ) -> Result<Self> {
        check_len("winograd weight", c_out * kt * 9 * c_in, weight.len())?;
        let k = kt * c_in;
        let xi = tr.n() * tr.n();
        let mut packed = Vec::new();
        if k > 0 && c_out > 0 {
            // U[ξ][o][dt·C + c], then each U_ξ packed as its transpose.
            let mut u = vec![E::default(); xi * c_out * k];
            let mut planes: Vec<Vec<&mut [E]>> =
                (0..c_out).map(|_| Vec::with_capacity(xi)).collect();
            for plane in u.chunks_mut(c_out * k) {
                for (o, row) in plane.chunks_mut(k).enumerate() {
                    planes[o].push(row);
                }
            }
            planes
                .into_par_iter()
                .enumerate()
                .for_each(|(o, mut rows)| {
                    let w = &weight[o * 9 * k..(o + 1) * 9 * k];
                    for dt in 0..kt {
                        for c in 0..c_in {
                            let g = |dh: usize, dw: usize| {
                                w[((dt * 3 + dh) * 3 + dw) * c_in + c].to_f32()
                            };
                            let t = transform_kernel(
                                tr,
                                [
                                    [g(0, 0), g(0, 1), g(0, 2)],
                                    [g(1, 0), g(1, 1), g(1, 2)],
                                    [g(2, 0), g(2, 1), g(2, 2)],
                                ],
                            );
                            for (row, v) in rows.iter_mut().zip(t) {
                                row[dt * c_in + c] = E::round(v);
                            }
                        }
                    }
                });
            for plane in u.chunks(c_out * k) {
                packed.push(PackedRhs::new(MatRef::row_major(plane, c_out, k)?.t())?);
            }
        }
        Ok(Self {
            tr,
            packed,
            c_out,
            c_in,
            kt,
        })
    }
}

/// `G g Gᵀ`, row-major n × n.
fn transform_kernel(tr: &Transforms, g: [[f32; 3]; 3]) -> Vec<f32> {
    let n = tr.n();
    // G g: n × 3.
    let mut gg = vec![0f32; n * 3];
    for a in 0..n {
        for j in 0..3 {
            gg[a * 3 + j] = (0..3).map(|r| tr.g[a * 3 + r] * g[r][j]).sum();
        }
    }
    let mut u = vec![0f32; n * n];
    for a in 0..n {
        for b in 0..n {
            u[a * n + b] = (0..3).map(|j| gg[a * 3 + j] * tr.g[b * 3 + j]).sum();
        }
    }
    u
}

impl Transforms {
    /// The variant for f32 weights of `c_out × c_in` channels. F(4×4) needs fewer
    /// multiplies but holds 36 transformed values per 3×3 kernel against F(2×2)'s 16, 4× the
    /// plain weight, so it is kept to convolutions of at most 192 × 192 channels (in the Wan
    /// VAE, the high-resolution stages, where most of the work is); the wider ones,
    /// which hold most of the weight bytes, use F(2×2).
    pub fn for_f32(c_out: usize, c_in: usize) -> &'static Transforms {
        if c_out * c_in <= 192 * 192 {
            &F4
        } else {
            &F2
        }
    }
}

/// Whether [`conv3d_winograd`] takes this shape: a 3×3 spatial kernel.
pub fn applies(shape: &Conv3dShape) -> bool {
    shape.kernel.1 == 3 && shape.kernel.2 == 3
}

/// `y = conv3d(x, weight) + bias` as [`crate::conv::conv3d`] computes it (stride 1, spatial
/// zero padding `pad_hw`, `x` `(B, T, C, H, W)`, `y` `(B, T', O, H', W')`), for kernels
/// `(kt, 3, 3)` given as [`WinogradWeights`]. The result is rounded to `E` once.
pub fn conv3d_winograd<E: WinogradElement>(
    x: &[E],
    weights: &WinogradWeights<E>,
    bias: &[f32],
    shape: Conv3dShape,
    y: &mut [E],
) -> Result<()> {
    let Conv3dShape {
        batch,
        t,
        c_in,
        h,
        w,
        c_out,
        kernel: (kt, _, _),
        pad_hw,
    } = shape;
    if !applies(&shape) || weights.kt != kt || weights.c_in != c_in || weights.c_out != c_out {
        return Err(KernelError::ConvShape {
            input: (t, h, w),
            kernel: shape.kernel,
        });
    }
    let (t_out, ho, wo) = shape.check_lens(x.len(), bias.len(), y.len())?;
    if y.is_empty() {
        return Ok(());
    }
    let k = kt * c_in;
    if k == 0 {
        for (i, plane) in y.chunks_exact_mut(ho * wo).enumerate() {
            plane.fill(E::round(bias[i % c_out]));
        }
        return Ok(());
    }
    let tr = weights.tr;
    let (mt, xi) = (tr.m, tr.n() * tr.n());
    let tiles = Tiles {
        rows: ho.div_ceil(mt),
        cols: wo.div_ceil(mt),
        wo,
    };
    let (th, tw) = (tiles.rows, tiles.cols);
    let frames = batch * t;
    // Bands of whole tile rows, at least two per thread so the cores stay busy.
    let threads = rayon::current_num_threads().max(1);
    let band_rows = (BAND_TILES / tw).clamp(1, th.div_ceil(2 * threads).max(1));
    let bands = th.div_ceil(band_rows);

    // Output rows `(item, o, oy)`, dealt to the band that writes them.
    let mut dealt: Vec<Vec<&mut [E]>> = (0..bands).map(|_| Vec::new()).collect();
    for (r, row) in y.chunks_exact_mut(wo).enumerate() {
        dealt[(r % ho) / mt / band_rows].push(row);
    }
    let path = KernelPath::best();
    let input = Input {
        x,
        frames,
        c: c_in,
        h,
        w,
        pad: pad_hw,
        tiles: &tiles,
        tr,
        fast: matches!(path, KernelPath::Avx512Bf16 | KernelPath::Avx512),
    };
    dealt
        .into_par_iter()
        .enumerate()
        .try_for_each(|(band, mut rows)| {
            with_band_scratch(|scratch: &mut BandScratch<E>| -> Result<()> {
                scratch.fit(tr, band_rows * tw, frames, c_in, c_out, tw);
                let (i0, i1) = (band * band_rows, ((band + 1) * band_rows).min(th));
                let tiles_in = (i1 - i0) * tw;
                let rows_per_o = (mt * i1).min(ho) - mt * i0;
                let v = &mut scratch.v[..xi * tiles_in * frames * c_in];
                run_vectorised(
                    path,
                    InputBand {
                        input: &input,
                        band: (i0, i1),
                        last: &mut scratch.last,
                        across: &mut scratch.across,
                        v,
                    },
                );
                let v = &*v;
                let m = &mut scratch.m[..xi * tiles_in * c_out];
                for (item, rows) in rows.chunks_exact_mut(c_out * rows_per_o).enumerate() {
                    let (bi, to) = (item / t_out, item % t_out);
                    let first = (bi * t + to) * c_in;
                    for (x_i, (m_xi, u)) in m
                        .chunks_exact_mut(tiles_in * c_out)
                        .zip(&weights.packed)
                        .enumerate()
                    {
                        let start = x_i * tiles_in * frames * c_in + first;
                        let a = MatRef::new(&v[start..], tiles_in, k, frames * c_in, 1)?;
                        gemm_prepacked_here(a, u, m_xi, false)?;
                    }
                    for i in i0..i1 {
                        let task = OutputTask {
                            m,
                            band: tiles_in,
                            first_tile: (i - i0) * tw,
                            bias,
                            tiles: &tiles,
                            tr,
                            c_out,
                            rows_per_o,
                            first_row: mt * (i - i0),
                            fast: input.fast,
                        };
                        let row = OutputRow {
                            task: &task,
                            scratch: &mut scratch.y,
                            rows,
                        };
                        run_vectorised(path, row);
                    }
                }
                Ok(())
            })
        })
}

/// The output's m×m tiles.
struct Tiles {
    rows: usize,
    cols: usize,
    wo: usize,
}

/// Each band task's working space, reused for the bands a thread takes.
struct BandScratch<E> {
    /// `V[ξ][tile][frame][channel]` of the band.
    v: Vec<E>,
    /// The band's padded input rows of one frame, channels-last, in f32.
    last: Vec<f32>,
    /// `d B` of one tile's rows: `[row][b][channel]`.
    across: Vec<f32>,
    /// `M[ξ][tile][o]` of the band.
    m: Vec<f32>,
    /// A tile row's output pixels, channels-last, with the general form's working space.
    y: Vec<f32>,
}

impl<E: WinogradElement> BandScratch<E> {
    /// Grows the buffers to a band of `tiles` tiles (never shrinks them): every element a
    /// band reads is written by it first, so old contents are harmless.
    fn fit(
        &mut self,
        tr: &Transforms,
        tiles: usize,
        frames: usize,
        c: usize,
        c_out: usize,
        tw: usize,
    ) {
        fn at_least<T: Copy>(buf: &mut Vec<T>, len: usize, zero: T) {
            if buf.len() < len {
                buf.resize(len, zero);
            }
        }
        let (mt, n) = (tr.m, tr.n());
        at_least(&mut self.v, n * n * tiles * frames * c, E::default());
        at_least(
            &mut self.last,
            (mt * tiles.div_ceil(tw) + 2) * (mt * tw + 2) * c,
            0.0,
        );
        at_least(&mut self.across, n * n * c, 0.0);
        at_least(&mut self.m, n * n * tiles * c_out, 0.0);
        // A tile row's pixels, a 16 × 16 block, and the general form's `Aᵀ M` of one tile.
        at_least(&mut self.y, (mt * mt * tw + n * mt) * c_out + 256, 0.0);
    }
}

impl<E> Default for BandScratch<E> {
    fn default() -> Self {
        Self {
            v: Vec::new(),
            last: Vec::new(),
            across: Vec::new(),
            m: Vec::new(),
            y: Vec::new(),
        }
    }
}

thread_local! {
    /// Each thread's band scratch, one per element type, kept between convolutions: a
    /// decode runs hundreds of them, and fresh zeroed buffers for every band had cost a
    /// few percent of it in memset and page faults.
    static BAND_SCRATCH: RefCell<Vec<Box<dyn Any>>> = const { RefCell::new(Vec::new()) };
}

/// Lends this thread's scratch for `E` (a nested call, should one happen, gets its own).
fn with_band_scratch<E: 'static, R>(f: impl FnOnce(&mut BandScratch<E>) -> R) -> R {
    BAND_SCRATCH.with(|cell| {
        let Ok(mut kept) = cell.try_borrow_mut() else {
            return f(&mut BandScratch::default());
        };
        let slot = match kept.iter().position(|b| b.is::<BandScratch<E>>()) {
            Some(i) => i,
            None => {
                kept.push(Box::new(BandScratch::<E>::default()));
                kept.len() - 1
            }
        };
        match kept[slot].downcast_mut::<BandScratch<E>>() {
            Some(scratch) => f(scratch),
            None => f(&mut BandScratch::default()),
        }
    })
}

/// The frames to transform, channel-first.
struct Input<'a, E> {
    x: &'a [E],
    frames: usize,
    c: usize,
    h: usize,
    w: usize,
    pad: usize,
    tiles: &'a Tiles,
    tr: &'a Transforms,
    /// Whether the CPU has AVX-512F (for the channels-last move).
    fast: bool,
}

/// One band's input transform, run per vector width.
struct InputBand<'a, 'b, E> {
    input: &'a Input<'b, E>,
    band: (usize, usize),
    last: &'a mut [f32],
    across: &'a mut [f32],
    v: &'a mut [E],
}

impl<E: WinogradElement> VectorTask for InputBand<'_, '_, E> {
    #[inline(always)]
    fn run(self) {
        input_transform(self.input, self.band, self.last, self.across, self.v)
    }
}

/// `dst = Σ coef[s] · src[s]` over channel vectors, skipping zero coefficients (most of
/// `Bᵀ` and `Aᵀ` is 0 or ±1).
#[inline(always)]
fn combine(coef: &[f32], src: impl Fn(usize) -> usize, data: &[f32], c: usize, dst: &mut [f32]) {
    let mut first = true;
    for (s, &k) in coef.iter().enumerate() {
        if k == 0.0 {
            continue;
        }
        let x = &data[src(s)..src(s) + c];
        if first {
            for (d, &v) in dst.iter_mut().zip(x) {
                *d = k * v;
            }
            first = false;
        } else {
            for (d, &v) in dst.iter_mut().zip(x) {
                *d += k * v;
            }
        }
    }
    if first {
        dst.fill(0.0);
    }
}

/// `V = Bᵀ d B` for the tile rows `band.0..band.1` of every frame, every channel at once.
/// The band's padded input rows are first moved channels-last into `last` (once each,
/// though neighbouring tile rows share two); then for each tile `d B` along its n rows
/// (into `across`, `[row][b][channel]`) and `Bᵀ ·` down them, written to
/// `v[ξ][tile][frame][channel]`.
#[inline(always)]
fn input_transform<E: WinogradElement>(
    input: &Input<'_, E>,
    (i0, i1): (usize, usize),
    last: &mut [f32],
    across: &mut [f32],
    v: &mut [E],
) {
    let Input {
        x,
        frames,
        c,
        h,
        w,
        pad,
        tiles,
        tr,
        fast,
    } = *input;
    let (mt, n) = (tr.m, tr.n());
    let tw = tiles.cols;
    let cols = mt * tw + 2;
    let tiles_in = (i1 - i0) * tw;
    // Input columns that land inside the padded row.
    let width = w.min(cols.saturating_sub(pad));
    let band_rows = mt * (i1 - i0) + 2;
    // The general form's one V row before rounding (F(2×2) writes V directly).
    let mut wide = if mt == 2 { Vec::new() } else { vec![0f32; c] };
    for f in 0..frames {
        for r in 0..band_rows {
            let dst = &mut last[r * cols * c..(r + 1) * cols * c];
            let Some(sr) = (mt * i0 + r).checked_sub(pad).filter(|&sr| sr < h) else {
                dst.fill(0.0);
                continue;
            };
            dst[..pad * c].fill(0.0);
            dst[(pad + width) * c..].fill(0.0);
            // 16 × 16 blocks, so reads and writes both run along memory.
            const B: usize = 16;
            let mut block = [[0f32; B]; B];
            for c0 in (0..c).step_by(B) {
                let cb = B.min(c - c0);
                for col0 in (0..width).step_by(B) {
                    let wb = B.min(width - col0);
                    if cb == B && wb == B {
                        let src = &x[((f * c + c0) * h + sr) * w + col0..];
                        let out = &mut dst[(col0 + pad) * c + c0..];
                        E::transpose16(src, h * w, out, c, fast);
                        continue;
                    }
                    for (cc, lane) in block.iter_mut().enumerate().take(cb) {
                        let src = &x[((f * c + c0 + cc) * h + sr) * w + col0..][..wb];
                        for (k, &val) in src.iter().enumerate() {
                            lane[k] = val.to_f32();
                        }
                    }
                    for k in 0..wb {
                        let out = &mut dst[(col0 + k + pad) * c + c0..][..cb];
                        for (cc, o) in out.iter_mut().enumerate() {
                            *o = block[cc][k];
                        }
                    }
                }
            }
        }
        for li in 0..i1 - i0 {
            for j in 0..tw {
                let tile = li * tw + j;
                if mt == 2 {
                    // F(2×2) written out (the general form's zero-skipping loops cost bf16's
                    // decode about a tenth more). Bᵀ = [[1, 0, -1, 0], [0, 1, 1, 0],
                    // [0, -1, 1, 0], [0, 1, 0, -1]]: d B along the rows, then Bᵀ · down.
                    for r in 0..4 {
                        let base = ((2 * li + r) * cols + 2 * j) * c;
                        let d = &last[base..base + 4 * c];
                        let (d0, d1, d2, d3) =
                            (&d[..c], &d[c..2 * c], &d[2 * c..3 * c], &d[3 * c..]);
                        let out = &mut across[4 * r * c..4 * (r + 1) * c];
                        let (h0, rest) = out.split_at_mut(c);
                        let (h1, rest) = rest.split_at_mut(c);
                        let (h2, h3) = rest.split_at_mut(c);
                        for ch in 0..c {
                            h0[ch] = d0[ch] - d2[ch];
                            h1[ch] = d1[ch] + d2[ch];
                            h2[ch] = d2[ch] - d1[ch];
                            h3[ch] = d1[ch] - d3[ch];
                        }
                    }
                    let at = |xi: usize| (xi * tiles_in + tile) * frames * c + f * c;
                    for b in 0..4 {
                        let t = |r: usize| &across[(4 * r + b) * c..(4 * r + b + 1) * c];
                        let (r0, r1, r2, r3) = (t(0), t(1), t(2), t(3));
                        let dst = &mut v[at(b)..at(b) + c];
                        for ch in 0..c {
                            dst[ch] = E::round(r0[ch] - r2[ch]);
                        }
                        let dst = &mut v[at(4 + b)..at(4 + b) + c];
                        for ch in 0..c {
                            dst[ch] = E::round(r1[ch] + r2[ch]);
                        }
                        let dst = &mut v[at(8 + b)..at(8 + b) + c];
                        for ch in 0..c {
                            dst[ch] = E::round(r2[ch] - r1[ch]);
                        }
                        let dst = &mut v[at(12 + b)..at(12 + b) + c];
                        for ch in 0..c {
                            dst[ch] = E::round(r1[ch] - r3[ch]);
                        }
                    }
                    continue;
                }
                // (d B)[r][b] = Σ_s d[r][s] · Bᵀ[b][s]
                for r in 0..n {
                    let base = ((mt * li + r) * cols + mt * j) * c;
                    for b in 0..n {
                        let dst = &mut across[(r * n + b) * c..(r * n + b + 1) * c];
                        combine(&tr.bt[b * n..(b + 1) * n], |s| base + s * c, last, c, dst);
                    }
                }
                // V[a][b] = Σ_r Bᵀ[a][r] · (d B)[r][b]
                for a in 0..n {
                    for b in 0..n {
                        combine(
                            &tr.bt[a * n..(a + 1) * n],
                            |r| (r * n + b) * c,
                            across,
                            c,
                            &mut wide,
                        );
                        let start = ((a * n + b) * tiles_in + tile) * frames * c + f * c;
                        for (d, &val) in v[start..start + c].iter_mut().zip(&wide) {
                            *d = E::round(val);
                        }
                    }
                }
            }
        }
    }
}

/// One tile row of a band to finish, for every output channel.
struct OutputTask<'a> {
    /// `M[ξ][tile of the band][o]`.
    m: &'a [f32],
    /// Tiles in the band.
    band: usize,
    /// The row's first tile within the band.
    first_tile: usize,
    bias: &'a [f32],
    tiles: &'a Tiles,
    tr: &'a Transforms,
    c_out: usize,
    /// Output rows per channel in the band, and this tile row's first among them.
    rows_per_o: usize,
    first_row: usize,
    /// Whether the CPU has AVX-512F (for the move back to channel-first rows).
    fast: bool,
}

/// One tile row's output transform, run per vector width.
struct OutputRow<'a, 'b, 'c, E> {
    task: &'a OutputTask<'b>,
    scratch: &'a mut [f32],
    rows: &'a mut [&'c mut [E]],
}

impl<E: WinogradElement> VectorTask for OutputRow<'_, '_, '_, E> {
    #[inline(always)]
    fn run(self) {
        output_transform(self.task, self.scratch, self.rows)
    }
}

/// `Y = Aᵀ M A + bias` for one tile row, every channel at once, cropped where the last
/// tile row or column hangs over the output. `rows` holds the band's output rows,
/// `[o][row]`. The row's pixels are first gathered channels-last, `[r][x][o]` (vectorised
/// across channels, as `M` is laid out), then moved to the channel-first rows in 16 × 16
/// register transposes, so every store runs along an output row.
#[inline(always)]
fn output_transform<E: WinogradElement>(
    task: &OutputTask<'_>,
    scratch: &mut [f32],
    rows: &mut [&mut [E]],
) {
    let OutputTask {
        m,
        band,
        first_tile,
        bias,
        tiles,
        tr,
        c_out: o,
        rows_per_o,
        first_row,
        fast,
    } = *task;
    let (mt, n) = (tr.m, tr.n());
    let width = mt * tiles.cols;
    let (pixels, rest) = scratch.split_at_mut(mt * width * o);
    let (block, down) = rest.split_at_mut(256);
    for j in 0..tiles.cols {
        let tile = first_tile + j;
        let at = |xi: usize| &m[(xi * band + tile) * o..(xi * band + tile + 1) * o];
        if mt == 2 {
            // F(2×2) written out (as the input transform): Aᵀ = [[1, 1, 1, 0],
            // [0, 1, -1, -1]].
            let (top, bottom) = pixels.split_at_mut(width * o);
            let (y0, y1) = top[2 * j * o..(2 * j + 2) * o].split_at_mut(o);
            let (y2, y3) = bottom[2 * j * o..(2 * j + 2) * o].split_at_mut(o);
            let m: [&[f32]; 16] = std::array::from_fn(at);
            // Each output written once, from registers; the sums run in the order of
            // `bias + Σ_b Aᵀ[s][b] · (Aᵀ M)[r][b]`, skipping the zero terms.
            for ch in 0..o {
                let down = |b: usize| {
                    let (m0, m1, m2, m3) = (m[b][ch], m[4 + b][ch], m[8 + b][ch], m[12 + b][ch]);
                    (m0 + m1 + m2, m1 - m2 - m3)
                };
                let ((a0, b0), (a1, b1), (a2, b2), (a3, b3)) = (down(0), down(1), down(2), down(3));
                let bias = bias[ch];
                y0[ch] = bias + a0 + a1 + a2;
                y1[ch] = bias + a1 - a2 - a3;
                y2[ch] = bias + b0 + b1 + b2;
                y3[ch] = bias + b1 - b2 - b3;
            }
            continue;
        }
        // (Aᵀ M)[r][b] = Σ_a Aᵀ[r][a] · M[a][b]
        for r in 0..mt {
            for b in 0..n {
                let dst = &mut down[(r * n + b) * o..(r * n + b + 1) * o];
                combine(
                    &tr.at[r * n..(r + 1) * n],
                    |a| ((a * n + b) * band + tile) * o,
                    m,
                    o,
                    dst,
                );
            }
        }
        // Y[r][s] = Σ_b (Aᵀ M)[r][b] · Aᵀ[s][b] + bias
        for r in 0..mt {
            for s in 0..mt {
                let x = mt * j + s;
                let dst = &mut pixels[(r * width + x) * o..(r * width + x + 1) * o];
                combine(
                    &tr.at[s * n..(s + 1) * n],
                    |b| (r * n + b) * o,
                    down,
                    o,
                    dst,
                );
                for (d, &b) in dst.iter_mut().zip(bias) {
                    *d += b;
                }
            }
        }
    }
    let wo = tiles.wo;
    for r in 0..mt.min(rows_per_o - first_row) {
        let src = &pixels[r * width * o..(r + 1) * width * o];
        for c0 in (0..o).step_by(16) {
            let cb = 16.min(o - c0);
            for x0 in (0..wo).step_by(16) {
                let xb = 16.min(wo - x0);
                if cb == 16 && xb == 16 {
                    f32::transpose16(&src[x0 * o + c0..], o, block, 16, fast);
                    for (cc, lane) in block.chunks_exact(16).enumerate() {
                        let row = &mut rows[(c0 + cc) * rows_per_o + first_row + r];
                        E::store(lane, &mut row[x0..x0 + 16]);
                    }
                    continue;
                }
                for cc in 0..cb {
                    let row = &mut rows[(c0 + cc) * rows_per_o + first_row + r];
                    for (k, dst) in row[x0..x0 + xb].iter_mut().enumerate() {
                        *dst = E::round(src[(x0 + k) * o + c0 + cc]);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conv::{conv3d, conv3d_bf16};

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
                (v % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    fn shape(
        batch: usize,
        t: usize,
        c_in: usize,
        (h, w): (usize, usize),
        c_out: usize,
        kt: usize,
        pad_hw: usize,
    ) -> Conv3dShape {
        Conv3dShape {
            batch,
            t,
            c_in,
            h,
            w,
            c_out,
            kernel: (kt, 3, 3),
            pad_hw,
        }
    }

    /// Against the direct convolution (itself tested against the definition): f32 to
    /// summation order, bf16 within the stated tolerance.
    fn check(s: Conv3dShape) {
        let (kt, _, _) = s.kernel;
        let x = values(s.batch * s.t * s.c_in * s.h * s.w, 1);
        let weight = values(s.c_out * kt * 9 * s.c_in, 2);
        let bias = values(s.c_out, 3);
        let (t_out, ho, wo) = s.output_dims().unwrap();
        let n = s.batch * t_out * s.c_out * ho * wo;
        let mut want = vec![0f32; n];
        conv3d(&x, &weight, &bias, s, &mut want).unwrap();
        // Sums of up to kt·9·C terms of magnitude ≤ 1.
        let scale = (kt * 9 * s.c_in) as f32;
        for tr in [&F2, &F4] {
            let u = WinogradWeights::with_transforms(&weight, s.c_out, s.c_in, kt, tr).unwrap();
            let mut got = vec![f32::NAN; n];
            conv3d_winograd(&x, &u, &bias, s, &mut got).unwrap();
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 2e-6 * scale + 1e-5,
                    "{s:?} f32 F({}) at {i}: {g} vs {w}",
                    tr.m
                );
            }
        }

        let xb: Vec<bf16> = x.iter().map(|&v| bf16::from_f32(v)).collect();
        let wb: Vec<bf16> = weight.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut want = vec![bf16::ZERO; n];
        conv3d_bf16(&xb, &wb, &bias, s, &mut want).unwrap();
        let u = WinogradWeights::new(&wb, s.c_out, s.c_in, kt).unwrap();
        let mut got = vec![bf16::ZERO; n];
        conv3d_winograd(&xb, &u, &bias, s, &mut got).unwrap();
        // Transformed inputs and weights are rounded to bf16 (2⁻⁹ relative) and are up to
        // 4× (inputs) and 2.25× (weights) the size of the originals; the errors of the
        // kt·9·C-term sum add at random, so they grow as its square root.
        let (mut worst, mut sum_sq) = (0f32, 0f64);
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            let err = (g.to_f32() - w.to_f32()).abs();
            worst = worst.max(err);
            sum_sq += f64::from(err).powi(2);
            assert!(
                err <= 0.01 * scale.sqrt() + 4e-3 * w.to_f32().abs(),
                "{s:?} bf16 at {i}: {g} vs {w}"
            );
        }
        let rms = (sum_sq / n as f64).sqrt() as f32;
        assert!(
            rms <= 0.0025 * scale.sqrt(),
            "{s:?} bf16 rms error {rms} (worst {worst})"
        );
    }

    #[test]
    fn matches_the_direct_convolution_on_odd_shapes() {
        check(shape(1, 3, 5, (7, 9), 3, 3, 1));
        check(shape(2, 4, 3, (5, 6), 17, 3, 1));
        check(shape(1, 1, 4, (6, 5), 2, 1, 1));
        // One output pixel, one output row, one output column.
        check(shape(1, 3, 3, (1, 1), 4, 3, 1));
        check(shape(1, 3, 3, (3, 3), 4, 3, 0));
        check(shape(1, 3, 2, (1, 8), 3, 3, 1));
        check(shape(1, 3, 2, (8, 1), 3, 3, 1));
        // Padding 2 (a wider output than input).
        check(shape(1, 1, 3, (4, 5), 2, 1, 2));
        // Wider than one GEMM block in every direction.
        check(shape(1, 3, 70, (9, 40), 40, 3, 1));
    }

    #[test]
    fn empty_inputs_and_outputs() {
        // No channels in: the output is the bias.
        let s = shape(1, 3, 0, (4, 4), 2, 3, 1);
        let u = WinogradWeights::<f32>::new(&[], 2, 0, 3).unwrap();
        let mut y = vec![f32::NAN; 2 * 16];
        conv3d_winograd(&[], &u, &[0.5, -1.0], s, &mut y).unwrap();
        assert!(y[..16].iter().all(|&v| v == 0.5) && y[16..].iter().all(|&v| v == -1.0));
        // An empty batch.
        let s = shape(0, 3, 2, (4, 4), 2, 3, 1);
        let u = WinogradWeights::<f32>::new(&[0.0; 2 * 27 * 2], 2, 2, 3).unwrap();
        conv3d_winograd(&[], &u, &[0.0, 0.0], s, &mut []).unwrap();
    }

    #[test]
    fn bad_shapes_are_errors() {
        let u = WinogradWeights::<f32>::new(&[0.0; 27], 1, 1, 3).unwrap();
        // Too few frames for the kernel.
        let s = shape(1, 2, 1, (4, 4), 1, 3, 1);
        let err = conv3d_winograd(&[0.0; 32], &u, &[0.0], s, &mut []).unwrap_err();
        assert!(matches!(err, KernelError::ConvShape { .. }), "{err}");
        // Weights made for another kernel.
        let s = shape(1, 1, 1, (4, 4), 1, 1, 1);
        let err = conv3d_winograd(&[0.0; 16], &u, &[0.0], s, &mut [0.0; 16]).unwrap_err();
        assert!(matches!(err, KernelError::ConvShape { .. }), "{err}");
        // A short input.
        let s = shape(1, 3, 1, (4, 4), 1, 3, 1);
        let err = conv3d_winograd(&[0.0; 47], &u, &[0.0], s, &mut [0.0; 16]).unwrap_err();
        assert!(matches!(err, KernelError::ShapeLen { .. }), "{err}");
        assert!(WinogradWeights::<f32>::new(&[0.0; 26], 1, 1, 3).is_err());
    }
}
