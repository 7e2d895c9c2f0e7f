//! kiln's GEMM for candle tensors. [`matmul`] runs CPU f32 and bf16 products through the
//! kernels of this crate as a `CustomOp2` that reads the operands in place through their
//! layouts (transposed and strided views cost no copy) and falls back to candle's own
//! `broadcast_matmul` for anything else. Gradients are defined, so training through it works.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, D};
use half::bf16;
use std::cell::RefCell;

use crate::gemm::{gemm_items, GemmInput, Operand};
use crate::{f32_to_bf16, KernelPath};

/// `a · b` with candle's matmul semantics for the common cases: `(.., m, k) · (.., k, n)`
/// with equal batch dimensions, and `(.., m, k) · (k, n)`. CPU f32 and bf16 tensors of one
/// dtype use kiln's kernels (bf16 accumulates in f32 and rounds once at the end); every
/// other device, dtype or shape goes to candle's `broadcast_matmul`.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if !runs_on_kiln(a, b) {
        return a.broadcast_matmul(b);
    }
    a.apply_op2(b, KilnMatmul)
}

/// Whether [`matmul`] handles the pair itself (see there).
fn runs_on_kiln(a: &Tensor, b: &Tensor) -> bool {
    let (ra, rb) = (a.rank(), b.rank());
    let dtype_ok = matches!(a.dtype(), DType::F32 | DType::BF16) && a.dtype() == b.dtype();
    let shapes_ok = ra >= 2
        && rb >= 2
        && a.dims()[ra - 1] == b.dims()[rb - 2]
        && (rb == 2 || (ra == rb && a.dims()[..ra - 2] == b.dims()[..rb - 2]));
    a.device().is_cpu() && b.device().is_cpu() && dtype_ok && shapes_ok
}

/// The custom op behind [`matmul`]; its operands have passed `runs_on_kiln`.
struct KilnMatmul;

impl CustomOp2 for KilnMatmul {
    fn name(&self) -> &'static str {
        "kiln-matmul"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let shape = output_shape(l1, l2);
        match (s1, s2) {
            (CpuStorage::F32(a), CpuStorage::F32(b)) => {
                let mut c = vec![0.0f32; shape.elem_count()];
                product(a, l1, b, l2, &mut c)?;
                Ok((CpuStorage::F32(c), shape))
            }
            (CpuStorage::BF16(a), CpuStorage::BF16(b)) => {
                let mut rounded = vec![bf16::ZERO; shape.elem_count()];
                with_f32_scratch(rounded.len(), |c| {
                    product(a, l1, b, l2, c)?;
                    f32_to_bf16(c, &mut rounded).map_err(candle_core::Error::wrap)
                })?;
                Ok((CpuStorage::BF16(rounded), shape))
            }
            _ => candle_core::bail!(
                "kiln-matmul: needs two f32 or two bf16 tensors, got {:?} and {:?}",
                s1.dtype(),
                s2.dtype()
            ),
        }
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // C = A·B: dA = dC·Bᵀ, dB = Aᵀ·dC, summed over the batch when B was shared.
        let grad_a = matmul(grad, &b.t()?)?;
        let grad_b = if b.rank() == a.rank() {
            matmul(&a.t()?, grad)?
        } else {
            let rows = a.rank() - 2;
            matmul(&a.flatten_to(rows)?.t()?, &grad.flatten_to(rows)?)?
        };
        Ok((Some(grad_a), Some(grad_b)))
    }
}

/// `(.., m, n)` for layouts checked by `runs_on_kiln`.
fn output_shape(la: &Layout, lb: &Layout) -> Shape {
    let (da, db) = (la.dims(), lb.dims());
    let mut dims = da[..da.len() - 1].to_vec();
    dims.push(db[db.len() - 1]);
    Shape::from(dims)
}

/// Elements of f32 scratch each thread keeps between bf16 products (64 MiB); larger
/// products allocate their own.
const SCRATCH_KEPT: usize = 1 << 24;

thread_local! {
    static F32_SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Lends `len` elements of f32 scratch (contents unspecified). Reusing it spares a bf16
/// product the page faults of a fresh f32 buffer on every call.
fn with_f32_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    if len > SCRATCH_KEPT {
        return f(&mut vec![0.0; len]);
    }
    F32_SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut scratch) => {
            if scratch.len() < len {
                scratch.resize(len, 0.0);
            }
            f(&mut scratch[..len])
        }
        Err(_) => f(&mut vec![0.0; len]),
    })
}

/// Writes the product of two layouts checked by `runs_on_kiln` into `c` (shaped as
/// `output_shape`).
fn product<E: GemmInput>(a: &[E], la: &Layout, b: &[E], lb: &Layout, c: &mut [f32]) -> Result<()> {
    let (da, sa) = (la.dims(), la.stride());
    let (db, sb) = (lb.dims(), lb.stride());
    let (ra, rb) = (da.len(), db.len());
    let (m, k, n) = (da[ra - 2], da[ra - 1], db[rb - 1]);
    let batch_dims = &da[..ra - 2];
    let b_shared = rb == 2 || batch_dims.iter().zip(sb).all(|(&d, &s)| d == 1 || s == 0);

    // B shared by the whole batch and A's batch folding into its rows: one tall product,
    // so B is packed once instead of once per batch entry.
    let rows_fold = {
        let mut expected = sa[ra - 2].saturating_mul(m);
        batch_dims.iter().zip(sa).rev().all(|(&d, &s)| {
            let ok = d == 1 || s == expected;
            expected = expected.saturating_mul(d);
            ok
        })
    };
    let (rows, offsets) = if b_shared && rows_fold {
        let rows = batch_dims.iter().product::<usize>() * m;
        (rows, vec![(la.start_offset(), lb.start_offset())])
    } else {
        (m, batch_offsets(batch_dims, sa, &sb[..rb - 2], la, lb))
    };
    let operand_a = Operand {
        data: a,
        rows,
        cols: k,
        row_stride: sa[ra - 2],
        col_stride: sa[ra - 1],
    };
    let operand_b = Operand {
        data: b,
        rows: k,
        cols: n,
        row_stride: sb[rb - 2],
        col_stride: sb[rb - 1],
    };
    gemm_items(KernelPath::best(), operand_a, operand_b, &offsets, c, false)
        .map_err(candle_core::Error::wrap)
}

/// Start offsets of A and B for every batch index, in row-major order of the batch dims.
/// `b_batch_strides` is empty when B is a single matrix.
fn batch_offsets(
    batch_dims: &[usize],
    a_batch_strides: &[usize],
    b_batch_strides: &[usize],
    la: &Layout,
    lb: &Layout,
) -> Vec<(usize, usize)> {
    let count: usize = batch_dims.iter().product();
    let mut offsets = Vec::with_capacity(count);
    let mut index = vec![0usize; batch_dims.len()];
    for _ in 0..count {
        let a_off: usize = index.iter().zip(a_batch_strides).map(|(i, s)| i * s).sum();
        let b_off: usize = index.iter().zip(b_batch_strides).map(|(i, s)| i * s).sum();
        offsets.push((la.start_offset() + a_off, lb.start_offset() + b_off));
        // Next index, last dimension fastest.
        for (i, &d) in index.iter_mut().zip(batch_dims).rev() {
            *i += 1;
            if *i < d {
                break;
            }
            *i = 0;
        }
    }
    offsets
}

/// GELU in its tanh form, computed in f32 and returned in `x`'s dtype. CPU f32 and bf16
/// tensors outside autograd run [`crate::activation`]'s vectorised, threaded loop; tensors
/// that record gradients, other dtypes and devices take candle's `gelu` in f32.
pub fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let fast = x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::BF16);
    if !fast || x.track_op() {
        return x.to_dtype(DType::F32)?.gelu()?.to_dtype(x.dtype());
    }
    x.contiguous()?.apply_op1_no_bwd(&GeluTanh)
}

struct GeluTanh;

impl candle_core::CustomOp1 for GeluTanh {
    fn name(&self) -> &'static str {
        "kiln-gelu-tanh"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("kiln-gelu-tanh: needs a contiguous tensor")
        };
        let wrap = candle_core::Error::wrap;
        let out = match storage {
            CpuStorage::F32(xs) => {
                let mut out = vec![0f32; end - start];
                crate::activation::gelu_tanh_f32(&xs[start..end], &mut out).map_err(wrap)?;
                CpuStorage::F32(out)
            }
            CpuStorage::BF16(xs) => {
                let mut out = vec![bf16::ZERO; end - start];
                crate::activation::gelu_tanh_bf16(&xs[start..end], &mut out).map_err(wrap)?;
                CpuStorage::BF16(out)
            }
            other => {
                candle_core::bail!("kiln-gelu-tanh: f32 or bf16 only, got {:?}", other.dtype())
            }
        };
        Ok((out, layout.shape().clone()))
    }
}

/// A stride-1 convolution of frames `x` `(B, T, C, H, W)` by `weight` `(O, kt·kh·kw·C)`
/// (taps outer, channels inner) plus an f32 `bias` `(O)`, zero-padding H and W by `pad_hw`:
/// `(B, T', O, H', W')` in `x`'s dtype, summed in f32 (see [`crate::conv`]). For CPU f32 or
/// bf16 tensors outside autograd; it has no backward, so callers keep a differentiable
/// form for training.
pub fn conv3d(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    kernel: (usize, usize, usize),
    pad_hw: usize,
) -> Result<Tensor> {
    let (batch, t, c_in, h, w) = x.dims5()?;
    let (c_out, k) = weight.dims2()?;
    let (kt, kh, kw) = kernel;
    if k != kt * kh * kw * c_in {
        candle_core::bail!(
            "kiln-conv3d: weight has {k} columns, kernel {kernel:?} over {c_in} channels needs {}",
            kt * kh * kw * c_in
        );
    }
    if x.dtype() != weight.dtype() || bias.dtype() != DType::F32 || bias.elem_count() != c_out {
        candle_core::bail!(
            "kiln-conv3d: needs x and weight of one dtype and an f32 bias of {c_out}, got {:?}, {:?}, {:?} {:?}",
            x.dtype(),
            weight.dtype(),
            bias.dtype(),
            bias.dims()
        );
    }
    let shape = crate::conv::Conv3dShape {
        batch,
        t,
        c_in,
        h,
        w,
        c_out,
        kernel,
        pad_hw,
    };
    x.contiguous()?.apply_op3_no_bwd(
        &weight.contiguous()?,
        &bias.flatten_all()?.contiguous()?,
        &Conv3dOp(shape),
    )
}

struct Conv3dOp(crate::conv::Conv3dShape);

impl candle_core::CustomOp3 for Conv3dOp {
    fn name(&self) -> &'static str {
        "kiln-conv3d"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let s = self.0;
        let (t_out, ho, wo) = s.output_dims().map_err(candle_core::Error::wrap)?;
        let shape = Shape::from((s.batch, t_out, s.c_out, ho, wo));
        let slice = |l: &Layout| match l.contiguous_offsets() {
            Some(range) => Ok(range),
            None => Err(candle_core::Error::Msg(
                "kiln-conv3d: needs contiguous tensors".into(),
            )),
        };
        let (rx, rw, rb) = (slice(lx)?, slice(lw)?, slice(lb)?);
        let CpuStorage::F32(bias) = sb else {
            candle_core::bail!("kiln-conv3d: bias must be f32")
        };
        let bias = &bias[rb.0..rb.1];
        let wrap = candle_core::Error::wrap;
        match (sx, sw) {
            (CpuStorage::F32(x), CpuStorage::F32(w)) => {
                let mut y = vec![0f32; shape.elem_count()];
                crate::conv::conv3d(&x[rx.0..rx.1], &w[rw.0..rw.1], bias, s, &mut y)
                    .map_err(wrap)?;
                Ok((CpuStorage::F32(y), shape))
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(w)) => {
                let mut y = vec![bf16::ZERO; shape.elem_count()];
                crate::conv::conv3d_bf16(&x[rx.0..rx.1], &w[rw.0..rw.1], bias, s, &mut y)
                    .map_err(wrap)?;
                Ok((CpuStorage::BF16(y), shape))
            }
            _ => candle_core::bail!(
                "kiln-conv3d: needs f32 or bf16 x and weight of one dtype, got {:?} and {:?}",
                sx.dtype(),
                sw.dtype()
            ),
        }
    }
}

/// Runs `$body` on the contiguous f32 or bf16 storage `$s` (as `$x`, writing `$out` of the
/// same length and dtype): one body for both element types of the fused one-pass ops.
macro_rules! map_activation {
    ($op:expr, $s:expr, $l:expr, |$x:ident, $out:ident| $body:expr) => {{
        let (start, end) = contiguous_range($l)?;
        match $s {
            CpuStorage::F32(all) => {
                let $x = &all[start..end];
                let mut $out = vec![0f32; end - start];
                $body.map_err(candle_core::Error::wrap)?;
                CpuStorage::F32($out)
            }
            CpuStorage::BF16(all) => {
                let $x = &all[start..end];
                let mut $out = vec![bf16::ZERO; end - start];
                $body.map_err(candle_core::Error::wrap)?;
                CpuStorage::BF16($out)
            }
            other => candle_core::bail!("{}: f32 or bf16 only, got {:?}", $op, other.dtype()),
        }
    }};
}

/// `LayerNorm(x) · a + b` over the last dim of `x` `(B, L, D)`, computed in f32 and returned
/// in `x`'s dtype; `a` and `b` are f32 `(B, 1, D)` or `(1, 1, D)` (one for the whole batch).
/// adaLN's `norm · (1 + scale) + shift` passes `a = 1 + scale`, `b = shift`. CPU f32 and
/// bf16 tensors outside autograd run [`crate::norm`]'s fused pass; the rest the composite
/// form, which candle differentiates.
pub fn layer_norm_affine(x: &Tensor, a: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor> {
    let (batch, _, dim) = x.dims3()?;
    let fused = fusable(x, &[a, b]);
    let (a, b) = (per_batch(a, batch, dim)?, per_batch(b, batch, dim)?);
    if !fused {
        let x32 = x.to_dtype(DType::F32)?;
        let mean = x32.mean_keepdim(2)?;
        let centered = x32.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(2)?;
        let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
        return normed
            .broadcast_mul(&a.unsqueeze(1)?)?
            .broadcast_add(&b.unsqueeze(1)?)?
            .to_dtype(x.dtype());
    }
    x.contiguous()?
        .apply_op3_no_bwd(&a, &b, &LayerNormAffine { eps: eps as f32 })
}

/// `x + y · gate` in f32, returned in `x`'s dtype: `x`, `y` `(B, L, D)` of one dtype,
/// `gate` f32 `(B, 1, D)` or `(1, 1, D)`. Fused as [`layer_norm_affine`].
pub fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    let (batch, _, dim) = x.dims3()?;
    let fused = fusable(x, &[y, gate]) && y.dtype() == x.dtype() && y.dims() == x.dims();
    let gate = per_batch(gate, batch, dim)?;
    if !fused {
        let y = y.to_dtype(DType::F32)?.broadcast_mul(&gate.unsqueeze(1)?)?;
        return (x.to_dtype(DType::F32)? + y)?.to_dtype(x.dtype());
    }
    x.contiguous()?
        .apply_op3_no_bwd(&y.contiguous()?, &gate, &GatedResidual)
}

fn fusable(x: &Tensor, others: &[&Tensor]) -> bool {
    x.device().is_cpu()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
        && !x.track_op()
        && others.iter().all(|t| !t.track_op() && t.device().is_cpu())
}

/// An f32 `(B, D)` contiguous copy of a `(B | 1, 1, D)` vector.
fn per_batch(v: &Tensor, batch: usize, dim: usize) -> Result<Tensor> {
    let v = v.to_dtype(DType::F32)?;
    let v = match v.rank() {
        3 => v.squeeze(1)?,
        2 => v,
        1 => v.unsqueeze(0)?,
        _ => candle_core::bail!("per-row vector of shape {:?}: expected (B, 1, D)", v.dims()),
    };
    v.broadcast_as((batch, dim))?.contiguous()
}

/// The slices of three contiguous f32/bf16 operands as `RowShape` rows.
fn rows_of(l: &Layout, groups: usize) -> Result<crate::norm::RowShape> {
    let dims = l.dims();
    let dim = *dims.last().unwrap_or(&0);
    let rows = l.shape().elem_count() / dim.max(1);
    Ok(crate::norm::RowShape {
        groups,
        rows_per_group: rows / groups.max(1),
        dim,
    })
}

fn contiguous_range(l: &Layout) -> Result<(usize, usize)> {
    l.contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("kiln norm ops: needs contiguous tensors".into()))
}

struct LayerNormAffine {
    eps: f32,
}

impl candle_core::CustomOp3 for LayerNormAffine {
    fn name(&self) -> &'static str {
        "kiln-layer-norm-affine"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sa: &CpuStorage,
        la: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(a), CpuStorage::F32(b)) = (sa, sb) else {
            candle_core::bail!("kiln-layer-norm-affine: scale and shift must be f32")
        };
        let (ra, rb) = (contiguous_range(la)?, contiguous_range(lb)?);
        let shape = rows_of(lx, la.dims()[0])?;
        let (a, b) = (&a[ra.0..ra.1], &b[rb.0..rb.1]);
        let out = map_activation!("kiln-layer-norm-affine", sx, lx, |x, out| {
            crate::norm::layer_norm_affine(x, a, b, shape, self.eps, &mut out)
        });
        Ok((out, lx.shape().clone()))
    }
}

struct GatedResidual;

impl candle_core::CustomOp3 for GatedResidual {
    fn name(&self) -> &'static str {
        "kiln-gated-residual"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sy: &CpuStorage,
        ly: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(gate) = sg else {
            candle_core::bail!("kiln-gated-residual: the gate must be f32")
        };
        let (rx, ry, rg) = (
            contiguous_range(lx)?,
            contiguous_range(ly)?,
            contiguous_range(lg)?,
        );
        let shape = rows_of(lx, lg.dims()[0])?;
        let gate = &gate[rg.0..rg.1];
        let wrap = candle_core::Error::wrap;
        let out = match (sx, sy) {
            (CpuStorage::F32(x), CpuStorage::F32(y)) => {
                let mut out = vec![0f32; rx.1 - rx.0];
                crate::norm::gated_residual(&x[rx.0..rx.1], &y[ry.0..ry.1], gate, shape, &mut out)
                    .map_err(wrap)?;
                CpuStorage::F32(out)
            }
            (CpuStorage::BF16(x), CpuStorage::BF16(y)) => {
                let mut out = vec![bf16::ZERO; rx.1 - rx.0];
                crate::norm::gated_residual(&x[rx.0..rx.1], &y[ry.0..ry.1], gate, shape, &mut out)
                    .map_err(wrap)?;
                CpuStorage::BF16(out)
            }
            _ => candle_core::bail!(
                "kiln-gated-residual: x and y must be both f32 or both bf16, got {:?} and {:?}",
                sx.dtype(),
                sy.dtype()
            ),
        };
        Ok((out, lx.shape().clone()))
    }
}

/// `RMSNorm` over the last dim: `x / sqrt(mean(x²) + eps) · weight` in f32, returned in `x`'s
/// dtype; `weight` is f32 `(D)`. Fused as [`layer_norm_affine`].
pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f64) -> Result<Tensor> {
    if !fusable(x, &[weight]) || weight.dtype() != DType::F32 {
        let x32 = x.to_dtype(DType::F32)?;
        let rms = (x32.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
        return x32
            .broadcast_div(&rms)?
            .broadcast_mul(weight)?
            .to_dtype(x.dtype());
    }
    x.contiguous()?
        .apply_op2_no_bwd(&weight.contiguous()?, &RmsNormOp { eps: eps as f32 })
}

struct RmsNormOp {
    eps: f32,
}

impl CustomOp2 for RmsNormOp {
    fn name(&self) -> &'static str {
        "kiln-rms-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(w) = sw else {
            candle_core::bail!("kiln-rms-norm: the weight must be f32")
        };
        let rw = contiguous_range(lw)?;
        let w = &w[rw.0..rw.1];
        let dim = w.len();
        let out = map_activation!("kiln-rms-norm", sx, lx, |x, out| crate::norm::rms_norm(
            x, w, dim, self.eps, &mut out
        ));
        Ok((out, lx.shape().clone()))
    }
}

/// Interleaved-pair RoPE of `x` `(B, H, L, D)` with f32 `cos`, `sin` `(L, D / 2)`, computed
/// in f32 and returned in `x`'s dtype (candle's `rope_i` semantics). Fused as
/// [`layer_norm_affine`].
pub fn rope_interleaved(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    if !fusable(x, &[cos, sin]) || cos.dtype() != DType::F32 || sin.dtype() != DType::F32 {
        // The differentiable form: pairs as a trailing axis of 2.
        let dims = x.dims().to_vec();
        let (len, dim) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let mut paired = dims.clone();
        paired.truncate(dims.len() - 1);
        paired.extend([dim / 2, 2]);
        let x32 = x.to_dtype(DType::F32)?.reshape(paired)?;
        let last = x32.rank() - 1;
        let (x0, x1) = (x32.narrow(last, 0, 1)?, x32.narrow(last, 1, 1)?);
        let (c, s) = (
            cos.to_dtype(DType::F32)?.reshape((len, dim / 2, 1))?,
            sin.to_dtype(DType::F32)?.reshape((len, dim / 2, 1))?,
        );
        let out0 = (x0.broadcast_mul(&c)? - x1.broadcast_mul(&s)?)?;
        let out1 = (x0.broadcast_mul(&s)? + x1.broadcast_mul(&c)?)?;
        return Tensor::cat(&[out0, out1], last)?
            .reshape(dims)?
            .to_dtype(x.dtype());
    }
    x.contiguous()?
        .apply_op3_no_bwd(&cos.contiguous()?, &sin.contiguous()?, &RopeOp)
}

struct RopeOp;

impl candle_core::CustomOp3 for RopeOp {
    fn name(&self) -> &'static str {
        "kiln-rope-interleaved"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sc: &CpuStorage,
        lc: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(cos), CpuStorage::F32(sin)) = (sc, ss) else {
            candle_core::bail!("kiln-rope-interleaved: cos and sin must be f32")
        };
        let dims = lx.dims();
        if dims.len() < 2 {
            candle_core::bail!("kiln-rope-interleaved: x must be (.., L, D), got {dims:?}");
        }
        let (len, dim) = (dims[dims.len() - 2], dims[dims.len() - 1]);
        let (rc, rs) = (contiguous_range(lc)?, contiguous_range(ls)?);
        let (cos, sin) = (&cos[rc.0..rc.1], &sin[rs.0..rs.1]);
        let out = map_activation!("kiln-rope-interleaved", sx, lx, |x, out| {
            crate::rope::rope_interleaved(x, cos, sin, len, dim, &mut out)
        });
        Ok((out, lx.shape().clone()))
    }
}

/// The Wan VAE's channel-first RMS norm of `x` `(.., C, H, W)`: each pixel's channel vector
/// divided by `max(‖x‖, 1e-12)` and scaled per channel by f32 `scale` `(C, 1, 1)`, then SiLU
/// when `silu`; computed in f32, returned in `x`'s dtype. Fused as [`layer_norm_affine`];
/// CPU f32 tensors that record gradients take [`crate::train_ops::channel_norm`].
pub fn channel_norm(x: &Tensor, scale: &Tensor, silu: bool) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 3 {
        candle_core::bail!("channel_norm: x must be (.., C, H, W), got {:?}", x.dims());
    }
    if (x.track_op() || scale.track_op()) && crate::train_ops::applies(&[x, scale]) {
        return crate::train_ops::channel_norm(x, &scale.flatten_all()?, silu);
    }
    if !fusable(x, &[scale]) || scale.dtype() != DType::F32 {
        let x32 = x.to_dtype(DType::F32)?;
        let norm = x32.sqr()?.sum_keepdim(rank - 3)?.sqrt()?.maximum(1e-12)?;
        let y = x32.broadcast_div(&norm)?.broadcast_mul(scale)?;
        let y = if silu { y.silu()? } else { y };
        return y.to_dtype(x.dtype());
    }
    x.contiguous()?
        .apply_op2_no_bwd(&scale.flatten_all()?.contiguous()?, &ChannelNorm { silu })
}

struct ChannelNorm {
    silu: bool,
}

impl CustomOp2 for ChannelNorm {
    fn name(&self) -> &'static str {
        "kiln-channel-norm"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(scale) = ss else {
            candle_core::bail!("kiln-channel-norm: the scale must be f32")
        };
        let rs = contiguous_range(ls)?;
        let scale = &scale[rs.0..rs.1];
        let dims = lx.dims();
        let rank = dims.len();
        if dims[rank - 3] != scale.len() {
            candle_core::bail!(
                "kiln-channel-norm: {} channels but {} scales",
                dims[rank - 3],
                scale.len()
            );
        }
        let plane = dims[rank - 2] * dims[rank - 1];
        let groups = dims[..rank - 3].iter().product();
        let out = map_activation!("kiln-channel-norm", sx, lx, |x, out| {
            crate::norm::channel_norm(x, scale, groups, plane, self.silu, &mut out)
        });
        Ok((out, lx.shape().clone()))
    }
}

/// A linear layer `y = x · wᵀ + b` with `w` packed once for the GEMM ([`crate::PackedRhs`])
/// and the bias added in f32 before the single rounding to the activation dtype. For
/// inference on CPU f32 or bf16 weights: the packed copy replaces the weight (about the
/// same bytes), so nothing is packed per call. It has no backward.
pub struct PackedLinear {
    weight: PackedWeight,
    bias: Option<Vec<f32>>,
    in_dim: usize,
    out_dim: usize,
}

enum PackedWeight {
    F32(crate::PackedRhs<f32>),
    Bf16(crate::PackedRhs<bf16>),
}

impl std::fmt::Debug for PackedLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedLinear")
            .field("in_dim", &self.in_dim)
            .field("out_dim", &self.out_dim)
            .field("bias", &self.bias.is_some())
            .finish()
    }
}

impl PackedLinear {
    /// Packs `weight` `(out, in)` (and an optional bias `(out)`), or returns `None` when the
    /// weight is not a CPU f32/bf16 tensor.
    pub fn new(weight: &Tensor, bias: Option<&Tensor>) -> Result<Option<Self>> {
        if !weight.device().is_cpu() {
            return Ok(None);
        }
        let (out_dim, in_dim) = weight.dims2()?;
        let wrap = candle_core::Error::wrap;
        let packed = match weight.dtype() {
            DType::F32 => {
                let w = weight.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let b = crate::MatRef::row_major(&w, out_dim, in_dim).map_err(wrap)?;
                PackedWeight::F32(crate::PackedRhs::new(b.t()).map_err(wrap)?)
            }
            DType::BF16 => {
                let w = weight.contiguous()?.flatten_all()?.to_vec1::<bf16>()?;
                let b = crate::MatRef::row_major(&w, out_dim, in_dim).map_err(wrap)?;
                PackedWeight::Bf16(crate::PackedRhs::new(b.t()).map_err(wrap)?)
            }
            _ => return Ok(None),
        };
        let bias = match bias {
            Some(b) => Some(b.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?),
            None => None,
        };
        if bias.as_ref().is_some_and(|b| b.len() != out_dim) {
            candle_core::bail!("PackedLinear: bias has the wrong length for {out_dim} outputs");
        }
        Ok(Some(Self {
            weight: packed,
            bias,
            in_dim,
            out_dim,
        }))
    }

    /// `x` `(.., in)` in the weight's dtype to `(.., out)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&LinearThen {
            linear: self,
            gelu: false,
        })
    }

    /// `gelu_tanh(self.forward(x))`, the same numbers, with the GELU applied to each bf16
    /// tile of the product while it is still in cache.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(&LinearThen {
            linear: self,
            gelu: true,
        })
    }
}

/// A [`PackedLinear`], optionally followed by [`gelu_tanh`].
struct LinearThen<'a> {
    linear: &'a PackedLinear,
    gelu: bool,
}

impl candle_core::CustomOp1 for LinearThen<'_> {
    fn name(&self) -> &'static str {
        if self.gelu {
            "kiln-packed-linear-gelu"
        } else {
            "kiln-packed-linear"
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (linear, gelu) = (self.linear, self.gelu);
        let dims = layout.dims();
        if dims.last() != Some(&linear.in_dim) {
            candle_core::bail!(
                "kiln-packed-linear: input {dims:?} does not end in {} features",
                linear.in_dim
            );
        }
        let (start, end) = contiguous_range(layout)?;
        let rows = (end - start) / linear.in_dim.max(1);
        let mut out_dims = dims.to_vec();
        *out_dims.last_mut().expect("rank >= 1") = linear.out_dim;
        let shape = Shape::from(out_dims);
        let wrap = candle_core::Error::wrap;
        let fill = |c: &mut [f32]| match &linear.bias {
            Some(b) => c
                .chunks_exact_mut(linear.out_dim)
                .for_each(|row| row.copy_from_slice(b)),
            None => c.fill(0.0),
        };
        let out = match (storage, &linear.weight) {
            (CpuStorage::F32(x), PackedWeight::F32(w)) => {
                let a =
                    crate::MatRef::row_major(&x[start..end], rows, linear.in_dim).map_err(wrap)?;
                let mut c = vec![0f32; rows * linear.out_dim];
                fill(&mut c);
                crate::gemm_prepacked(a, w, &mut c, true).map_err(wrap)?;
                if gelu {
                    let mut y = vec![0f32; c.len()];
                    crate::activation::gelu_tanh_f32(&c, &mut y).map_err(wrap)?;
                    c = y;
                }
                CpuStorage::F32(c)
            }
            (CpuStorage::BF16(x), PackedWeight::Bf16(w)) => {
                let a =
                    crate::MatRef::row_major(&x[start..end], rows, linear.in_dim).map_err(wrap)?;
                let rounded = with_f32_scratch(rows * linear.out_dim, |c| {
                    let epilogue = if gelu {
                        crate::Epilogue::RoundGeluTanh
                    } else {
                        crate::Epilogue::Round
                    };
                    crate::gemm_prepacked_bf16(a, w, linear.bias.as_deref(), epilogue, c)
                        .map_err(wrap)
                })?;
                CpuStorage::BF16(rounded)
            }
            (s, _) => candle_core::bail!(
                "kiln-packed-linear: input {:?} does not match the packed weight's dtype",
                s.dtype()
            ),
        };
        Ok((out, shape))
    }
}

/// A stride-1 `(kt, 3, 3)` convolution with its weights kept in the Winograd domain
/// ([`crate::winograd`]): `x` `(B, T, C, H, W)` to `(B, T', O, H', W')` in the weight's dtype,
/// as [`conv3d`] computes it with 4 multiplies per output pixel and tap instead of 9. For
/// inference on CPU f32 or bf16 weights, in place of the plain weight (16/9 of its bytes).
/// It has no backward.
#[derive(Debug)]
pub struct WinogradConv {
    weights: WinogradWeights,
    bias: Vec<f32>,
    kernel: (usize, usize, usize),
    pad_hw: usize,
    c_in: usize,
    c_out: usize,
}

#[derive(Debug)]
enum WinogradWeights {
    F32(crate::winograd::WinogradWeights<f32>),
    Bf16(crate::winograd::WinogradWeights<bf16>),
}

impl WinogradConv {
    /// Transforms `weight` `(O, kt·3·3·C)` (taps outer, channels inner) with its `bias`
    /// `(O)`, or returns `None` when the weight is not a CPU f32/bf16 tensor or the kernel
    /// is not 3×3 in space.
    pub fn new(
        weight: &Tensor,
        bias: &Tensor,
        kernel: (usize, usize, usize),
        pad_hw: usize,
    ) -> Result<Option<Self>> {
        let (kt, kh, kw) = kernel;
        if !weight.device().is_cpu() || (kh, kw) != (3, 3) || kt == 0 {
            return Ok(None);
        }
        let (c_out, k) = weight.dims2()?;
        if k % (9 * kt) != 0 {
            candle_core::bail!("WinogradConv: weight has {k} columns, not kt·3·3·C for kt = {kt}");
        }
        let c_in = k / (9 * kt);
        let wrap = candle_core::Error::wrap;
        let weights = match weight.dtype() {
            DType::F32 => {
                let w = weight.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
                let tr = crate::winograd::Transforms::for_f32(c_out, c_in);
                WinogradWeights::F32(
                    crate::winograd::WinogradWeights::with_transforms(&w, c_out, c_in, kt, tr)
                        .map_err(wrap)?,
                )
            }
            DType::BF16 => {
                let w = weight.contiguous()?.flatten_all()?.to_vec1::<bf16>()?;
                WinogradWeights::Bf16(
                    crate::winograd::WinogradWeights::new(&w, c_out, c_in, kt).map_err(wrap)?,
                )
            }
            _ => return Ok(None),
        };
        let bias = bias.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        if bias.len() != c_out {
            candle_core::bail!("WinogradConv: {} biases for {c_out} outputs", bias.len());
        }
        Ok(Some(Self {
            weights,
            bias,
            kernel,
            pad_hw,
            c_in,
            c_out,
        }))
    }

    /// The dtype `x` must have: the weight's.
    pub fn dtype(&self) -> DType {
        match self.weights {
            WinogradWeights::F32(_) => DType::F32,
            WinogradWeights::Bf16(_) => DType::BF16,
        }
    }

    /// `x` `(B, T, C, H, W)` in [`Self::dtype`].
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl candle_core::CustomOp1 for WinogradConv {
    fn name(&self) -> &'static str {
        "kiln-winograd-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[batch, t, c_in, h, w] = layout.dims() else {
            candle_core::bail!(
                "kiln-winograd-conv: input {:?} is not (B, T, C, H, W)",
                layout.dims()
            )
        };
        if c_in != self.c_in {
            candle_core::bail!(
                "kiln-winograd-conv: input has {c_in} channels, the weight takes {}",
                self.c_in
            );
        }
        let s = crate::conv::Conv3dShape {
            batch,
            t,
            c_in,
            h,
            w,
            c_out: self.c_out,
            kernel: self.kernel,
            pad_hw: self.pad_hw,
        };
        let (t_out, ho, wo) = s.output_dims().map_err(candle_core::Error::wrap)?;
        let shape = Shape::from((batch, t_out, self.c_out, ho, wo));
        let (start, end) = contiguous_range(layout)?;
        let wrap = candle_core::Error::wrap;
        let out = match (storage, &self.weights) {
            (CpuStorage::F32(x), WinogradWeights::F32(u)) => {
                let mut y = vec![0f32; shape.elem_count()];
                crate::winograd::conv3d_winograd(&x[start..end], u, &self.bias, s, &mut y)
                    .map_err(wrap)?;
                CpuStorage::F32(y)
            }
            (CpuStorage::BF16(x), WinogradWeights::Bf16(u)) => {
                let mut y = vec![bf16::ZERO; shape.elem_count()];
                crate::winograd::conv3d_winograd(&x[start..end], u, &self.bias, s, &mut y)
                    .map_err(wrap)?;
                CpuStorage::BF16(y)
            }
            (st, _) => candle_core::bail!(
                "kiln-winograd-conv: input {:?} does not match the weight's dtype {:?}",
                st.dtype(),
                self.dtype()
            ),
        };
        Ok((out, shape))
    }
}

/// Kernel rows (or columns) of a 3×3 kernel that land on tap `j` of the 2×2 phase kernel
/// for output phase `a`, through a 2× nearest upsampling: output row `2i + a` reads upsampled
/// rows `2i + a − 1 ..= 2i + a + 1`, which are small rows `i − 1, i, i` for `a = 0` and
/// `i, i, i + 1` for `a = 1`; tap `j` of a 2×2 convolution padded by 1 at output row
/// `i + a` reads small row `i + a − 1 + j`.
const PHASE_TAPS: [[&[usize]; 2]; 2] = [[&[0], &[1, 2]], [&[0, 1], &[2]]];

/// The 3×3 convolution (padding 1) of a frame upsampled 2× by repeating each pixel 2×2
/// (diffusers' `Upsample(scale_factor=2, mode="nearest-exact")` then `Conv2d`), as a 2×2
/// convolution (padding 1) of the frame itself into `4·O` channels. Through the repeated
/// pixels each output pixel sees only 2×2 distinct inputs, so each of the four output
/// phases is a 2×2 kernel of summed taps: 16 multiplies per small pixel and (input, output)
/// channel pair, as the 3×3 convolution of the 4× larger frame, whose copy is never made.
/// [`interleave_phases`] puts the phases in place.
///
/// `weight` `(O, 3·3·C)` (taps outer, channels inner) in f32 or bf16; returns `(4·O, 2·2·C)`
/// in `dtype`, row `p·O + o` the kernel of phase `p = 2a + b` (output pixel
/// `(2i + a, 2j + b)`). The taps are summed in f32 and rounded to `dtype` once.
pub fn nearest_upsample_phase_weights(weight: &Tensor, dtype: DType) -> Result<Tensor> {
    let (c_out, k) = weight.dims2()?;
    if k % 9 != 0 {
        candle_core::bail!("upsample phases: weight has {k} columns, not 3·3·C");
    }
    let c_in = k / 9;
    let w = weight
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let mut phases = vec![0f32; 4 * c_out * 4 * c_in];
    for (p, phase) in phases.chunks_mut(c_out * 4 * c_in).enumerate() {
        let (a, b) = (p / 2, p % 2);
        for (o, row) in phase.chunks_mut(4 * c_in).enumerate() {
            let w = &w[o * k..(o + 1) * k];
            for (jy, jx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let out = &mut row[(jy * 2 + jx) * c_in..][..c_in];
                for &ky in PHASE_TAPS[a][jy] {
                    for &kx in PHASE_TAPS[b][jx] {
                        let tap = &w[(ky * 3 + kx) * c_in..][..c_in];
                        out.iter_mut().zip(tap).for_each(|(v, &t)| *v += t);
                    }
                }
            }
        }
    }
    Tensor::from_vec(phases, (4 * c_out, 4 * c_in), weight.device())?.to_dtype(dtype)
}

/// The output of the 2×2 phase convolution, `(N, 4·O, H + 1, W + 1)`, to the upsampled
/// convolution's `(N, O, 2H, 2W)`: output pixel `(2i + a, 2j + b)` of channel `o` is pixel
/// `(i + a, j + b)` of channel `(2a + b)·O + o`. CPU f32 and bf16 outside autograd move
/// rows in parallel; anything else takes candle's narrow, stack and reshape.
pub fn interleave_phases(y: &Tensor) -> Result<Tensor> {
    let (n, c4, h1, w1) = y.dims4()?;
    if c4 % 4 != 0 || h1 == 0 || w1 == 0 {
        candle_core::bail!(
            "interleave_phases: {:?} is not (N, 4·O, H + 1, W + 1)",
            y.dims()
        );
    }
    let (o, h, w) = (c4 / 4, h1 - 1, w1 - 1);
    let fast = y.device().is_cpu() && matches!(y.dtype(), DType::F32 | DType::BF16);
    if !fast || y.track_op() {
        let phase = |a: usize, b: usize| -> Result<Tensor> {
            y.narrow(1, (2 * a + b) * o, o)?
                .narrow(2, a, h)?
                .narrow(3, b, w)
        };
        // (N, O, H, 2, W, 2): a along dim 3, b along dim 5.
        let rows = |a| Tensor::stack(&[phase(a, 0)?, phase(a, 1)?], 4);
        return Tensor::stack(&[rows(0)?, rows(1)?], 3)?.reshape((n, o, 2 * h, 2 * w));
    }
    y.contiguous()?.apply_op1_no_bwd(&InterleavePhases)
}

struct InterleavePhases;

impl InterleavePhases {
    fn run<E: Copy + Send + Sync + Default>(
        y: &[E],
        (n, c4, h1, w1): (usize, usize, usize, usize),
    ) -> Vec<E> {
        use rayon::prelude::*;
        let (o, h, w) = (c4 / 4, h1 - 1, w1 - 1);
        let plane = h1 * w1;
        let mut out = vec![E::default(); n * o * 4 * h * w];
        // One output row: phase row a of small row i, its columns alternating b = 0, 1.
        out.par_chunks_mut(2 * w).enumerate().for_each(|(r, row)| {
            let (frame_ch, y_out) = (r / (2 * h), r % (2 * h));
            let (f, ch) = (frame_ch / o, frame_ch % o);
            let (i, a) = (y_out / 2, y_out % 2);
            let src = |b: usize| {
                let plane_start = (f * c4 + (2 * a + b) * o + ch) * plane;
                &y[plane_start + (i + a) * w1 + b..][..w]
            };
            let (even, odd) = (src(0), src(1));
            for ((pair, &e), &d) in row.chunks_exact_mut(2).zip(even).zip(odd) {
                pair[0] = e;
                pair[1] = d;
            }
        });
        out
    }
}

impl candle_core::CustomOp1 for InterleavePhases {
    fn name(&self) -> &'static str {
        "kiln-interleave-phases"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let &[n, c4, h1, w1] = layout.dims() else {
            candle_core::bail!(
                "kiln-interleave-phases: input {:?} is not 4-D",
                layout.dims()
            )
        };
        let (start, end) = contiguous_range(layout)?;
        let dims = (n, c4, h1, w1);
        let out = match storage {
            CpuStorage::F32(y) => CpuStorage::F32(Self::run(&y[start..end], dims)),
            CpuStorage::BF16(y) => CpuStorage::BF16(Self::run(&y[start..end], dims)),
            other => candle_core::bail!(
                "kiln-interleave-phases: f32 or bf16 only, got {:?}",
                other.dtype()
            ),
        };
        Ok((out, Shape::from((n, c4 / 4, 2 * (h1 - 1), 2 * (w1 - 1)))))
    }
}
