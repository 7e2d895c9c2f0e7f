//! A linear layer whose product runs on kiln-kernels' GEMM (f32, and bf16 with f32
//! accumulation) on the CPU, and on candle's matmul elsewhere. Same weights, keys and
//! equation as `candle_nn::Linear`: y = x·Wᵀ + b.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

#[derive(Debug, Clone)]
pub struct KernelLinear {
    /// (out, in), as checkpoints store it; read transposed in place by the kernels.
    weight: Tensor,
    bias: Option<Tensor>,
}

impl KernelLinear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self { weight, bias }
    }
}

/// `weight` (out, in) and `bias` (out) under `vb`, initialised as `candle_nn::linear` does.
pub fn kernel_linear(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<KernelLinear> {
    let inner = candle_nn::linear(in_dim, out_dim, vb)?;
    Ok(KernelLinear::new(
        inner.weight().clone(),
        inner.bias().cloned(),
    ))
}

impl Module for KernelLinear {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = kiln_kernels::candle_ops::matmul(x, &self.weight.t()?)?;
        match &self.bias {
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
}
