//! A linear layer whose product runs on kiln-kernels' GEMM (f32, and bf16 with f32
//! accumulation) on the CPU, and on candle's matmul elsewhere. Same weights, keys and
//! equation as `candle_nn::Linear`: y = x·Wᵀ + b.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub enum KernelLinear {
    /// `weight` (out, in), as checkpoints store it; read transposed in place by the kernels.
    /// Trainable weights and other devices stay in this form.
    Plain {
        weight: Tensor,
        bias: Option<Tensor>,
    },
    /// Loaded CPU weights packed once for the GEMM, in place of the plain copy.
    Packed(std::sync::Arc<kiln_kernels::candle_ops::PackedLinear>),
}

impl KernelLinear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self::Plain { weight, bias }
    }

    /// As [`new`](Self::new), packing the weight for inference when it is not trainable
    /// (not a `Var`) and lives on the CPU in f32 or bf16.
    pub fn for_inference(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        if weight.is_variable() || bias.as_ref().is_some_and(|b| b.is_variable()) {
            return Ok(Self::new(weight, bias));
        }
        match kiln_kernels::candle_ops::PackedLinear::new(&weight, bias.as_ref())? {
            Some(packed) => Ok(Self::Packed(std::sync::Arc::new(packed))),
            None => Ok(Self::new(weight, bias)),
        }
    }
}

/// `weight` (out, in) and `bias` (out) under `vb`, initialised as `candle_nn::linear` does.
pub fn kernel_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<KernelLinear> {
    let inner = candle_nn::linear(in_dim, out_dim, vb)?;
    KernelLinear::for_inference(inner.weight().clone(), inner.bias().cloned())
}

impl KernelLinear {
    /// `gelu_tanh(self.forward(x))` (computed in f32, rounded to `x`'s dtype); packed bf16
    /// layers apply it to each tile of the product while it is in cache.
    pub fn forward_gelu_tanh(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::Packed(packed) if !x.track_op() => packed.forward_gelu_tanh(x),
            _ => kiln_kernels::candle_ops::gelu_tanh(&self.forward(x)?),
        }
    }
}

impl Module for KernelLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (weight, bias) = match self {
            Self::Packed(packed) => {
                if x.track_op() {
                    candle_core::bail!("a packed (inference) linear layer cannot record gradients");
                }
                return packed.forward(x);
            }
            Self::Plain { weight, bias } => (weight, bias),
        };
        let y = kiln_kernels::candle_ops::matmul(x, &weight.t()?)?;
        match bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    #[test]
    fn equals_candle_linear() -> Result<()> {
        let dev = Device::Cpu;
        let w = Tensor::randn(0f32, 1.0, (24, 40), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 24, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 7, 40), &dev)?;
        let ours = KernelLinear::new(w.clone(), Some(b.clone())).forward(&x)?;
        let theirs = candle_nn::Linear::new(w, Some(b)).forward(&x)?;
        let diff = (ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-5 * scale, "diff {diff} at scale {scale}");
        // bf16 in, bf16 out.
        let xb = x.to_dtype(DType::BF16)?;
        let lb = KernelLinear::new(
            Tensor::randn(0f32, 1.0, (24, 40), &dev)?.to_dtype(DType::BF16)?,
            None,
        );
        assert_eq!(lb.forward(&xb)?.dims(), &[2, 7, 24]);
        Ok(())
    }

    #[test]
    fn packed_for_inference_equals_the_plain_layer() -> Result<()> {
        let dev = Device::Cpu;
        // 1536-deep like the Wan transformer: one full depth block and a short last one.
        let (out, inp) = (70, 1536);
        let w = Tensor::randn(0f32, 0.05, (out, inp), &dev)?;
        let b = Tensor::randn(0f32, 1.0, out, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (3, 5, inp), &dev)?;
        let want = candle_nn::Linear::new(w.clone(), Some(b.clone())).forward(&x)?;
        let packed = KernelLinear::for_inference(w.clone(), Some(b.clone()))?;
        assert!(matches!(packed, KernelLinear::Packed(_)));
        let got = packed.forward(&x)?;
        let diff = (&got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff <= 1e-4, "f32 packed vs candle: {diff}");

        // bf16: the bias is added in f32 before the one rounding.
        let (wb, xb) = (w.to_dtype(DType::BF16)?, x.to_dtype(DType::BF16)?);
        let want = x
            .to_dtype(DType::BF16)?
            .to_dtype(DType::F32)?
            .broadcast_matmul(&wb.to_dtype(DType::F32)?.t()?)?
            .broadcast_add(&b)?;
        let got = KernelLinear::for_inference(wb, Some(b.clone()))?.forward(&xb)?;
        assert_eq!(got.dtype(), DType::BF16);
        let rel = ((got.to_dtype(DType::F32)? - &want)?.abs()? / (want.abs()? + 1e-3)?)?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(rel <= 1.0 / 128.0, "bf16 packed: relative error {rel}");

        // Trainable weights stay unpacked, so gradients flow.
        let var = candle_core::Var::from_tensor(&w)?;
        let trainable = KernelLinear::for_inference(var.as_tensor().clone(), None)?;
        assert!(matches!(trainable, KernelLinear::Plain { .. }));
        let grads = trainable.forward(&x)?.sum_all()?.backward()?;
        assert!(grads.get(var.as_tensor()).is_some());
        Ok(())
    }

    #[test]
    fn fused_gelu_equals_the_separate_activation() -> Result<()> {
        let dev = Device::Cpu;
        let (out, inp) = (150, 70);
        let w = Tensor::randn(0f32, 0.2, (out, inp), &dev)?;
        let b = Tensor::randn(0f32, 1.0, out, &dev)?;
        let x = Tensor::randn(0f32, 1.0, (2, 9, inp), &dev)?;
        for dtype in [DType::F32, DType::BF16] {
            let (w, x) = (w.to_dtype(dtype)?, x.to_dtype(dtype)?);
            for layer in [
                KernelLinear::for_inference(w.clone(), Some(b.clone()))?,
                KernelLinear::new(w.clone(), Some(b.to_dtype(dtype)?)),
            ] {
                let separate = kiln_kernels::candle_ops::gelu_tanh(&layer.forward(&x)?)?;
                let fused = layer.forward_gelu_tanh(&x)?;
                assert_eq!(fused.dtype(), dtype);
                let (f, s) = (fused.to_dtype(DType::F32)?, separate.to_dtype(DType::F32)?);
                let diff = (f - s)?.abs()?.max_all()?.to_scalar::<f32>()?;
                assert_eq!(
                    diff,
                    0.0,
                    "{dtype:?} packed {}",
                    matches!(layer, KernelLinear::Packed(_))
                );
            }
        }
        Ok(())
    }
}
