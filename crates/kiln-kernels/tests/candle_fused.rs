//! The fused candle ops against their differentiable composite forms (taken when an input
//! records gradients), in f32 and bf16, and gradients through the composite forms.

use candle_core::{DType, Device, Result, Tensor, Var};
use kiln_kernels::candle_ops::{
    channel_norm, gated_residual, layer_norm_affine, rms_norm, rope_interleaved,
};

fn randn(shape: &[usize], seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i as u64 + 1) * (seed * 7919 + 13)) % 1000) as f32 / 250.0 - 2.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}

/// `f` on plain tensors (fused) and with `x` as a Var (composite); returns the largest gap.
fn fused_vs_composite(x: &Tensor, f: impl Fn(&Tensor) -> Result<Tensor>) -> Result<f32> {
    let fused = f(x)?;
    let var = Var::from_tensor(x)?;
    let composite = f(var.as_tensor())?;
    assert_eq!(fused.dims(), composite.dims());
    assert_eq!(fused.dtype(), composite.dtype());
    // The composite form must be differentiable.
    let grads = composite
        .to_dtype(DType::F32)?
        .sqr()?
        .sum_all()?
        .backward()?;
    assert!(grads.get(var.as_tensor()).is_some());
    max_diff(&fused, &composite)
}

#[test]
fn fused_ops_match_their_composite_forms() -> Result<()> {
    let (b, l, d) = (2, 37, 48);
    for (dtype, tol) in [(DType::F32, 1e-5f32), (DType::BF16, 3e-2)] {
        let x = randn(&[b, l, d], 1)?.to_dtype(dtype)?;
        let y = randn(&[b, l, d], 2)?.to_dtype(dtype)?;
        let a = randn(&[b, 1, d], 3)?;
        let sh = randn(&[1, 1, d], 4)?;
        let gap = fused_vs_composite(&x, |x| layer_norm_affine(x, &a, &sh, 1e-6))?;
        assert!(gap <= tol, "layer_norm_affine {dtype:?}: {gap}");
        let gap = fused_vs_composite(&x, |x| gated_residual(x, &y, &a))?;
        assert!(gap <= tol, "gated_residual {dtype:?}: {gap}");
        let w = randn(&[d], 5)?;
        let gap = fused_vs_composite(&x, |x| rms_norm(x, &w, 1e-6))?;
        assert!(gap <= tol, "rms_norm {dtype:?}: {gap}");
        let q = randn(&[b, 3, l, d], 6)?.to_dtype(dtype)?;
        let angles = randn(&[l, d / 2], 7)?;
        let (cos, sin) = (angles.cos()?, angles.sin()?);
        let gap = fused_vs_composite(&q, |q| rope_interleaved(q, &cos, &sin))?;
        assert!(gap <= tol, "rope {dtype:?}: {gap}");
        let frames = randn(&[b, 3, 5, 7, 9], 8)?.to_dtype(dtype)?;
        let scale = randn(&[5, 1, 1], 9)?;
        for silu in [false, true] {
            let gap = fused_vs_composite(&frames, |x| channel_norm(x, &scale, silu))?;
            assert!(gap <= tol, "channel_norm silu={silu} {dtype:?}: {gap}");
        }
    }
    Ok(())
}

#[test]
fn rope_composite_is_candles_interleaved_rope() -> Result<()> {
    // The pair convention: (x0, x1) -> (x0 cos - x1 sin, x0 sin + x1 cos).
    let q = Tensor::new(&[[[[1f32, 2.0, 3.0, 4.0]]]], &Device::Cpu)?;
    let cos = Tensor::new(&[[0f32, 1.0]], &Device::Cpu)?;
    let sin = Tensor::new(&[[1f32, 0.0]], &Device::Cpu)?;
    let got = rope_interleaved(&q, &cos, &sin)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    assert_eq!(got, vec![-2.0, 1.0, 3.0, 4.0]);
    Ok(())
}

/// The Winograd convolution op equals the direct one, refuses what it cannot run, and
/// reports a dtype mismatch instead of guessing.
#[test]
fn winograd_conv_op_equals_the_direct_convolution() -> Result<()> {
    use kiln_kernels::candle_ops::{conv3d, WinogradConv};
    let (o, c) = (5, 3);
    let weight = (randn(&[o, 27 * c], 3)? * 0.2)?;
    let bias = randn(&[o], 4)?;
    let x = randn(&[2, 4, c, 7, 6], 5)?;
    let conv = WinogradConv::new(&weight, &bias, (3, 3, 3), 1)?.expect("a 3×3 CPU kernel");
    assert_eq!(conv.dtype(), DType::F32);
    let got = conv.forward(&x)?;
    let want = conv3d(&x, &weight, &bias, (3, 3, 3), 1)?;
    assert_eq!(got.dims(), &[2, 2, o, 7, 6]);
    let diff = max_diff(&got, &want)?;
    assert!(diff < 1e-4, "winograd vs direct: {diff}");

    let wb = weight.to_dtype(DType::BF16)?;
    let conv_b = WinogradConv::new(&wb, &bias, (3, 3, 3), 1)?.expect("bf16 too");
    let got = conv_b.forward(&x.to_dtype(DType::BF16)?)?;
    assert_eq!(got.dtype(), DType::BF16);
    let diff = max_diff(&got, &want)?;
    assert!(diff < 0.1, "bf16 winograd vs f32 direct: {diff}");
    assert!(conv_b.forward(&x).is_err(), "f32 input to bf16 weights");
    assert!(
        conv.forward(&randn(&[1, 3, c + 1, 4, 4], 6)?).is_err(),
        "wrong channels"
    );

    // Not 3×3 in space: no Winograd form.
    let pointwise = randn(&[o, c], 7)?;
    assert!(WinogradConv::new(&pointwise, &bias, (1, 1, 1), 0)?.is_none());
    Ok(())
}
