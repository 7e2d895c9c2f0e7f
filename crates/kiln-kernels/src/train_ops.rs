//! Differentiable CPU f32 ops for training the VAE: the channel RMS norm (with its SiLU) and
//! a per-channel bias add, each with a backward that makes one pass. Composed from candle's
//! ops their backwards reduce over broadcast dimensions with candle's strided, single-thread
//! sums, which took a large share of a VAE training step. Inference keeps the forward-only
//! kernels of [`crate::norm`].

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

/// `x / max(‖x‖, EPS)` as `F.normalize` computes it.
const EPS: f32 = 1e-12;

/// Whether `ts` are CPU f32 tensors, the only kind these ops take.
pub fn applies(ts: &[&Tensor]) -> bool {
    ts.iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: f32 only, got {:?}", s.dtype())
    };
    let (start, end) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: needs contiguous tensors")))?;
    Ok(&v[start..end])
}

/// Runs `f` on `t`'s f32 elements in place (a CPU tensor, made contiguous if it is not):
/// a backward reads its inputs without copying them out.
fn with_f32<R>(t: &Tensor, op: &str, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let t = t.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("{op}: CPU tensors only")
    };
    f(f32_slice(cpu, layout, op)?)
}

/// `(outer, channels, inner)` of `dims` around `dim`.
fn around(dims: &[usize], dim: usize) -> (usize, usize, usize) {
    (
        dims[..dim].iter().product(),
        dims[dim],
        dims[dim + 1..].iter().product(),
    )
}

/// `x + bias` with `bias` `(C)` added along `x`'s dimension `dim` (of size C).
pub fn add_channel_bias(x: &Tensor, bias: &Tensor, dim: usize) -> Result<Tensor> {
    if dim >= x.rank() || bias.dims() != [x.dim(dim)?] {
        candle_core::bail!(
            "add_channel_bias: bias {:?} does not match dimension {dim} of {:?}",
            bias.dims(),
            x.dims()
        );
    }
    if !applies(&[x, bias]) {
        candle_core::bail!("add_channel_bias: CPU f32 tensors only");
    }
    x.contiguous()?
        .apply_op2(&bias.contiguous()?, ChannelBias { dim })
}

struct ChannelBias {
    dim: usize,
}

impl CustomOp2 for ChannelBias {
    fn name(&self) -> &'static str {
        "kiln-add-channel-bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(sx, lx, self.name())?;
        let bias = f32_slice(sb, lb, self.name())?;
        let (_, c, inner) = around(lx.dims(), self.dim);
        let mut y = x.to_vec();
        if inner > 0 {
            y.par_chunks_mut(inner).enumerate().for_each(|(i, run)| {
                let b = bias[i % c];
                run.iter_mut().for_each(|v| *v += b);
            });
        }
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (outer, c, inner) = around(x.dims(), self.dim);
        // Per (outer, channel) run sums in parallel, then over `outer` in a fixed order.
        let runs: Vec<f64> = with_f32(grad, self.name(), |g| {
            Ok(if inner == 0 {
                vec![0.0; outer * c]
            } else {
                g.par_chunks(inner)
                    .map(|run| run.iter().map(|&v| v as f64).sum())
                    .collect()
            })
        })?;
        let mut sums = vec![0f64; c];
        for (i, s) in runs.iter().enumerate() {
            sums[i % c] += s;
        }
        let db: Vec<f32> = sums.iter().map(|&s| s as f32).collect();
        Ok((
            Some(grad.clone()),
            Some(Tensor::from_vec(db, c, grad.device())?),
        ))
    }
}

/// The Wan VAE's channel RMS norm `(x / max(‖x‖, 1e-12)) · scale`, norms over dimension
/// `rank − 3` of `x` `(.., C, H, W)`, `scale` `(C)`, then SiLU when `silu`; both inputs
/// receive gradients.
pub fn channel_norm(x: &Tensor, scale: &Tensor, silu: bool) -> Result<Tensor> {
    let rank = x.rank();
    if rank < 3 || scale.dims() != [x.dim(rank - 3)?] {
        candle_core::bail!(
            "train channel_norm: x {:?} must be (.., C, H, W) with scale (C), got scale {:?}",
            x.dims(),
            scale.dims()
        );
    }
    if !applies(&[x, scale]) {
        candle_core::bail!("train channel_norm: CPU f32 tensors only");
    }
    x.contiguous()?
        .apply_op2(&scale.contiguous()?, ChannelNormTrain { silu })
}

struct ChannelNormTrain {
    silu: bool,
}

fn sigmoid(z: f32) -> f32 {
    1.0 / (1.0 + (-z).exp())
}

/// Per pixel of a frame `(C, P)`: `1 / max(‖x‖, EPS)` and whether the norm was clamped.
fn inverse_norms(frame: &[f32], c: usize, p: usize) -> Vec<(f32, bool)> {
    let mut sq = vec![0f32; p];
    for ch in frame.chunks_exact(p).take(c) {
        for (s, &v) in sq.iter_mut().zip(ch) {
            *s += v * v;
        }
    }
    sq.iter()
        .map(|&s| {
            let n = s.sqrt();
            if n > EPS {
                (1.0 / n, false)
            } else {
                (1.0 / EPS, true)
            }
        })
        .collect()
}

impl CustomOp2 for ChannelNormTrain {
    fn name(&self) -> &'static str {
        "kiln-channel-norm-train"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(sx, lx, self.name())?;
        let scale = f32_slice(ss, ls, self.name())?;
        let dims = lx.dims();
        let rank = dims.len();
        let (c, p) = (dims[rank - 3], dims[rank - 2] * dims[rank - 1]);
        let mut y = vec![0f32; x.len()];
        if c * p > 0 {
            y.par_chunks_mut(c * p)
                .zip(x.par_chunks(c * p))
                .for_each(|(yf, xf)| {
                    let inv = inverse_norms(xf, c, p);
                    for ((yc, xc), &s) in yf.chunks_exact_mut(p).zip(xf.chunks_exact(p)).zip(scale)
                    {
                        for ((o, &v), &(r, _)) in yc.iter_mut().zip(xc).zip(&inv) {
                            let z = v * r * s;
                            *o = if self.silu { z * sigmoid(z) } else { z };
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(y), lx.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        scale: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims().to_vec();
        let rank = dims.len();
        let (c, p) = (dims[rank - 3], dims[rank - 2] * dims[rank - 1]);
        let scale_v = scale.to_vec1::<f32>()?;
        let name = self.name();
        let (dx, partial) = with_f32(x, name, |xs| {
            with_f32(grad, name, |gs| {
                let mut dx = vec![0f32; xs.len()];
                let frame = c * p;
                // Each frame's dx, and its contribution to d scale (summed over frames in order).
                let partial: Vec<Vec<f64>> = if frame == 0 {
                    Vec::new()
                } else {
                    dx.par_chunks_mut(frame)
                        .zip(xs.par_chunks(frame))
                        .zip(gs.par_chunks(frame))
                        .map(|((dxf, xf), gf)| {
                            let inv = inverse_norms(xf, c, p);
                            let mut d_scale = vec![0f64; c];
                            // du = dz · s per channel, kept in dxf; dot = Σ_c u·du per pixel.
                            let mut dot = vec![0f32; p];
                            for (ch, ((dc, xc), gc)) in dxf
                                .chunks_exact_mut(p)
                                .zip(xf.chunks_exact(p))
                                .zip(gf.chunks_exact(p))
                                .enumerate()
                            {
                                let s = scale_v[ch];
                                let mut ds = 0f64;
                                for (((d, &v), &g), (&(r, _), dt)) in dc
                                    .iter_mut()
                                    .zip(xc)
                                    .zip(gc)
                                    .zip(inv.iter().zip(dot.iter_mut()))
                                {
                                    let u = v * r;
                                    let dz = if self.silu {
                                        let z = u * s;
                                        let sg = sigmoid(z);
                                        g * sg * (1.0 + z * (1.0 - sg))
                                    } else {
                                        g
                                    };
                                    ds += (dz * u) as f64;
                                    let du = dz * s;
                                    *d = du;
                                    *dt += u * du;
                                }
                                d_scale[ch] = ds;
                            }
                            // dx = (du − u·(u·du)) / ‖x‖, or du / EPS where the norm was clamped.
                            for (dc, xc) in dxf.chunks_exact_mut(p).zip(xf.chunks_exact(p)) {
                                for ((d, &v), (&(r, clamped), &dt)) in
                                    dc.iter_mut().zip(xc).zip(inv.iter().zip(&dot))
                                {
                                    *d = if clamped {
                                        *d * r
                                    } else {
                                        (*d - v * r * dt) * r
                                    };
                                }
                            }
                            d_scale
                        })
                        .collect()
                };
                Ok((dx, partial))
            })
        })?;
        let mut d_scale = vec![0f64; c];
        for part in &partial {
            for (a, b) in d_scale.iter_mut().zip(part) {
                *a += b;
            }
        }
        let d_scale: Vec<f32> = d_scale.iter().map(|&v| v as f32).collect();
        Ok((
            Some(Tensor::from_vec(dx, dims, x.device())?),
            Some(Tensor::from_vec(d_scale, c, x.device())?),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_values::hashed as values;
    use candle_core::{Device, Var, D};

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(D::Minus1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn bias_add_and_gradients_match_broadcast_add() -> Result<()> {
        let dev = Device::Cpu;
        let dims = (2, 3, 4, 5, 6);
        let x = Var::from_tensor(&Tensor::from_vec(values(720, 1), dims, &dev)?)?;
        let b = Var::from_tensor(&Tensor::from_vec(values(4, 2), 4, &dev)?)?;
        let w = Tensor::from_vec(values(720, 3), dims, &dev)?;
        let ours = add_channel_bias(x.as_tensor(), b.as_tensor(), 2)?;
        let theirs = x.broadcast_add(&b.reshape((4, 1, 1))?)?;
        assert_eq!(max_diff(&ours, &theirs), 0.0);
        let g1 = (&ours * &w)?.sum_all()?.backward()?;
        let g2 = (&theirs * &w)?.sum_all()?.backward()?;
        assert_eq!(max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap()), 0.0);
        assert!(max_diff(g1.get(&b).unwrap(), g2.get(&b).unwrap()) < 1e-5);
        assert!(add_channel_bias(x.as_tensor(), b.as_tensor(), 1).is_err());
        Ok(())
    }

    /// The norm as candle's own ops compose it (the path these ops replace).
    fn composite(x: &Tensor, scale: &Tensor, silu: bool) -> Result<Tensor> {
        let rank = x.rank();
        let c = x.dim(rank - 3)?;
        let norm = x.sqr()?.sum_keepdim(rank - 3)?.sqrt()?.maximum(1e-12)?;
        let y = x
            .broadcast_div(&norm)?
            .broadcast_mul(&scale.reshape((c, 1, 1))?)?;
        if silu {
            y.silu()
        } else {
            Ok(y)
        }
    }

    #[test]
    fn channel_norm_and_gradients_match_the_composite() -> Result<()> {
        let dev = Device::Cpu;
        for silu in [false, true] {
            let dims = (2, 3, 5, 4, 3);
            let xv = values(360, 4);
            let x = Var::from_tensor(&Tensor::from_vec(xv, dims, &dev)?)?;
            let s = Var::from_tensor(&Tensor::from_vec(values(5, 5), 5, &dev)?)?;
            let w = Tensor::from_vec(values(360, 6), dims, &dev)?;
            let ours = channel_norm(x.as_tensor(), s.as_tensor(), silu)?;
            let theirs = composite(x.as_tensor(), s.as_tensor(), silu)?;
            assert!(max_diff(&ours, &theirs) < 1e-6, "silu {silu} forward");
            let g1 = (&ours * &w)?.sum_all()?.backward()?;
            let g2 = (&theirs * &w)?.sum_all()?.backward()?;
            let dx = max_diff(g1.get(&x).unwrap(), g2.get(&x).unwrap());
            let ds = max_diff(g1.get(&s).unwrap(), g2.get(&s).unwrap());
            assert!(dx < 1e-4, "silu {silu}: dx differs by {dx}");
            assert!(ds < 1e-4, "silu {silu}: d scale differs by {ds}");
        }
        Ok(())
    }

    /// A pixel of zeros: the composite's sqrt backward gives 0/0 there (NaN); this op treats
    /// the clamped norm as the constant it is.
    #[test]
    fn a_zero_pixel_has_finite_gradients() -> Result<()> {
        let dev = Device::Cpu;
        let mut xv = values(2 * 3 * 4, 8);
        for ch in 0..2 {
            xv[ch * 12] = 0.0;
        }
        let x = Var::from_tensor(&Tensor::from_vec(xv, (2, 3, 4), &dev)?)?;
        let s = Var::from_tensor(&Tensor::ones(2, DType::F32, &dev)?)?;
        let y = channel_norm(x.as_tensor(), s.as_tensor(), true)?;
        assert_eq!(y.flatten_all()?.to_vec1::<f32>()?[0], 0.0);
        let g = y.sum_all()?.backward()?;
        let dx = g.get(&x).unwrap().flatten_all()?.to_vec1::<f32>()?;
        assert!(dx.iter().all(|v| v.is_finite()));
        Ok(())
    }

    #[test]
    fn other_inputs_are_errors() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((1, 2, 3, 3), DType::BF16, &dev).unwrap();
        let s = Tensor::ones(2, DType::BF16, &dev).unwrap();
        assert!(channel_norm(&x, &s, true).is_err());
        let x = Tensor::zeros((1, 2, 3, 3), DType::F32, &dev).unwrap();
        let s = Tensor::ones(3, DType::F32, &dev).unwrap();
        assert!(channel_norm(&x, &s, true).is_err());
    }
}
