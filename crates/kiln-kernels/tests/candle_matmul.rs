//! `kiln_kernels::candle_ops::matmul` against candle's own matmul on 2-D, batched and
//! broadcast shapes, including transposed and strided views, in f32 and bf16, plus the
//! fallback dtypes and gradients.
//!
//! Tolerances: f32 within 1e-4 of the largest |element| of candle's result (summation
//! order differs). bf16 is checked against candle's f32 matmul of the same bf16 values:
//! kiln accumulates in f32 and rounds once, so it is within half a bf16 step (2⁻⁸
//! relative) of that reference, plus the f32 summation slack (1e-4 of the largest
//! element); and against candle's bf16 matmul within one bf16 step (2⁻⁷) plus that slack.

use candle_core::{DType, Device, IndexOp, Result, Tensor, Var};
use kiln_kernels::candle_ops::matmul;

fn randn(dims: &[usize], seed: f32) -> Result<Tensor> {
    // Deterministic values without a global RNG: a smooth function of the index.
    let n: usize = dims.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|i| ((i as f32 * 0.7548 + seed).sin() * 43758.547).fract() * 2.0 - 1.0)
        .collect();
    Tensor::from_vec(values, dims, &Device::Cpu)
}

fn max_abs(t: &Tensor) -> Result<f32> {
    t.to_dtype(DType::F32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()
}

/// Checks kiln against candle for one pair, in f32 and in bf16.
fn check(a: &Tensor, b: &Tensor, what: &str) -> Result<()> {
    // f32. candle's matmul rejects batch strides that do not fold (kiln reads them in
    // place), so its reference gets contiguous copies.
    let expected = a.contiguous()?.broadcast_matmul(&b.contiguous()?)?;
    let got = matmul(a, b)?;
    assert_eq!(got.dims(), expected.dims(), "{what}: shape");
    assert_eq!(got.dtype(), DType::F32);
    let scale = max_abs(&expected)?.max(1e-30);
    let err = max_abs(&(&got - &expected)?)?;
    assert!(
        err <= 1e-4 * scale,
        "{what} f32: max error {err} vs scale {scale}"
    );

    // bf16 against the f32 product of the bf16-rounded inputs.
    let (a16, b16) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
    let reference = a16
        .to_dtype(DType::F32)?
        .contiguous()?
        .broadcast_matmul(&b16.to_dtype(DType::F32)?.contiguous()?)?;
    let got = matmul(&a16, &b16)?;
    assert_eq!(got.dtype(), DType::BF16);
    let got = got.to_dtype(DType::F32)?;
    let scale = max_abs(&reference)?.max(1e-30);
    let bound = ((reference.abs()? * 2f64.powi(-8))? + 1e-4 * scale as f64)?;
    let excess = ((&got - &reference)?.abs()? - bound)?;
    let worst = excess.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    assert!(
        worst <= 0.0,
        "{what} bf16: exceeds the bound by {worst} (scale {scale})"
    );
    Ok(())
}

#[test]
fn two_d_shapes_and_views() -> Result<()> {
    check(
        &randn(&[17, 33], 1.0)?,
        &randn(&[33, 65], 2.0)?,
        "17x33 . 33x65",
    )?;
    check(&randn(&[1, 300], 1.0)?, &randn(&[300, 7], 2.0)?, "one row")?;
    check(&randn(&[40, 1], 1.0)?, &randn(&[1, 9], 2.0)?, "k = 1")?;
    check(&randn(&[1, 1], 1.0)?, &randn(&[1, 1], 2.0)?, "1x1x1")?;
    // A linear layer: x · wᵀ with w stored (out, in).
    let (x, w) = (randn(&[70, 130], 3.0)?, randn(&[90, 130], 4.0)?);
    check(&x, &w.t()?, "x . w^T")?;
    // Transposed A, and a strided column slice of a wider matrix.
    check(
        &randn(&[130, 70], 5.0)?.t()?,
        &randn(&[130, 31], 6.0)?,
        "a^T . b",
    )?;
    let wide = randn(&[64, 100], 7.0)?;
    check(
        &randn(&[23, 64], 8.0)?,
        &wide.narrow(1, 10, 50)?,
        "narrowed b",
    )?;
    Ok(())
}

#[test]
fn batched_shapes_and_views() -> Result<()> {
    check(
        &randn(&[3, 19, 40], 1.0)?,
        &randn(&[3, 40, 23], 2.0)?,
        "3-D",
    )?;
    let k = randn(&[3, 23, 40], 3.0)?;
    check(
        &randn(&[3, 19, 40], 4.0)?,
        &k.transpose(1, 2)?,
        "3-D with b^T",
    )?;
    // Attention: q · kᵀ per (batch, head), with q and k as transposed views of
    // (batch, tokens, heads, dim) tensors, so the batch dims do not fold.
    let q = randn(&[2, 32, 5, 16], 5.0)?.transpose(1, 2)?;
    let kt = randn(&[2, 24, 5, 16], 6.0)?.transpose(1, 2)?.t()?;
    check(&q, &kt, "attention q . k^T")?;
    let scores = randn(&[2, 5, 32, 24], 7.0)?;
    let v = randn(&[2, 24, 5, 16], 8.0)?.transpose(1, 2)?;
    check(&scores, &v, "attention p . v")?;
    Ok(())
}

#[test]
fn batched_times_shared_matrix() -> Result<()> {
    let w = randn(&[9, 40], 1.0)?;
    // Contiguous A folds into one tall product; the transposed view does not.
    check(&randn(&[2, 7, 40], 2.0)?, &w.t()?, "(2,7,40) . (40,9)")?;
    check(
        &randn(&[2, 40, 7], 3.0)?.transpose(1, 2)?,
        &w.t()?,
        "strided (2,7,40) . (40,9)",
    )?;
    check(
        &randn(&[2, 3, 5, 40], 4.0)?,
        &randn(&[40, 6], 5.0)?,
        "4-D . 2-D",
    )?;
    Ok(())
}

#[test]
fn empty_and_k_zero() -> Result<()> {
    let got = matmul(&randn(&[0, 5], 1.0)?, &randn(&[5, 3], 2.0)?)?;
    assert_eq!(got.dims(), &[0, 3]);
    let a = Tensor::zeros((2, 0), DType::F32, &Device::Cpu)?;
    let b = Tensor::zeros((0, 3), DType::F32, &Device::Cpu)?;
    let got = matmul(&a, &b)?;
    assert_eq!(got.to_vec2::<f32>()?, vec![vec![0.0; 3]; 2]);
    // bf16 goes through reused scratch: a product before must not leak into k = 0.
    let (a16, b16) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
    let ones = Tensor::ones((2, 4), DType::BF16, &Device::Cpu)?;
    matmul(&ones, &ones.t()?)?;
    let got = matmul(&a16, &b16)?.to_dtype(DType::F32)?;
    assert_eq!(got.to_vec2::<f32>()?, vec![vec![0.0; 3]; 2]);
    Ok(())
}

#[test]
fn other_dtypes_fall_back_to_candle() -> Result<()> {
    let a = randn(&[6, 5], 1.0)?.to_dtype(DType::F64)?;
    let b = randn(&[5, 4], 2.0)?.to_dtype(DType::F64)?;
    let got = matmul(&a, &b)?;
    assert_eq!(got.dtype(), DType::F64);
    assert_eq!(got.to_vec2::<f64>()?, a.matmul(&b)?.to_vec2::<f64>()?);
    // Shape errors come from candle, not a panic.
    assert!(matmul(&randn(&[6, 5], 1.0)?, &randn(&[4, 4], 2.0)?).is_err());
    Ok(())
}

#[test]
fn gradients_match_candle() -> Result<()> {
    for (a_dims, b_dims) in [
        (vec![7, 12], vec![12, 5]),
        (vec![2, 7, 12], vec![12, 5]),
        (vec![2, 7, 12], vec![2, 12, 5]),
    ] {
        let a = Var::from_tensor(&randn(&a_dims, 1.0)?)?;
        let b = Var::from_tensor(&randn(&b_dims, 2.0)?)?;
        let weights = randn(&[5], 3.0)?;
        let loss = |c: Tensor| c.broadcast_mul(&weights)?.sum_all();
        let kiln = loss(matmul(a.as_tensor(), b.as_tensor())?)?.backward()?;
        let candle = loss(a.as_tensor().broadcast_matmul(b.as_tensor())?)?.backward()?;
        for var in [&a, &b] {
            let (got, expected) = (kiln.get(var).unwrap(), candle.get(var).unwrap());
            let err = max_abs(&(got - expected)?)?;
            assert!(
                err <= 1e-4 * max_abs(expected)?,
                "{a_dims:?}.{b_dims:?}: grad error {err}"
            );
        }
    }
    // The values themselves: a row of the product equals candle's.
    let a = randn(&[4, 8], 4.0)?;
    let b = randn(&[8, 3], 5.0)?;
    let row: Vec<f32> = matmul(&a, &b)?.i(2)?.to_vec1()?;
    let expected: Vec<f32> = a.matmul(&b)?.i(2)?.to_vec1()?;
    for (g, e) in row.iter().zip(&expected) {
        assert!((g - e).abs() <= 1e-5);
    }
    Ok(())
}

#[test]
fn gelu_equals_candle_gelu() -> candle_core::Result<()> {
    let dev = candle_core::Device::Cpu;
    // A transposed view exercises the contiguous copy.
    let x = (candle_core::Tensor::randn(0f32, 3.0, (37, 129), &dev)?).t()?;
    let ours = kiln_kernels::candle_ops::gelu_tanh(&x)?;
    let theirs = x.gelu()?;
    let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(diff < 2e-6, "f32 gelu differs by {diff}");
    let xb = x.to_dtype(candle_core::DType::BF16)?;
    let ours = kiln_kernels::candle_ops::gelu_tanh(&xb)?;
    assert_eq!(ours.dtype(), candle_core::DType::BF16);
    let theirs = xb.to_dtype(candle_core::DType::F32)?.gelu()?;
    let diff = (ours.to_dtype(candle_core::DType::F32)? - &theirs)?
        .abs()?
        .max_all()?
        .to_scalar::<f32>()?;
    let scale = theirs.abs()?.max_all()?.to_scalar::<f32>()?;
    assert!(
        diff <= scale * 2f32.powi(-8),
        "bf16 gelu differs by {diff} at scale {scale}"
    );
    Ok(())
}
