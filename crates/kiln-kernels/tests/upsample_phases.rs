//! The phase form of "2× nearest upsample, then 3×3 convolution": kernels and interleaving
//! against the plain computation on the upsampled frame.

use candle_core::{DType, Device, Result, Tensor};
use kiln_kernels::candle_ops::{conv3d, interleave_phases, nearest_upsample_phase_weights};

/// Small integers, exact in every float type, so paths can be compared bit for bit.
fn integers(shape: &[usize], seed: usize) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0)
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

#[test]
fn phase_convolution_equals_upsampled_convolution() -> Result<()> {
    let (n, c, o, h, w) = (2, 3, 4, 5, 7);
    let weight = integers(&[o, 9 * c], 1)?;
    let bias = integers(&[o], 2)?;
    let x = integers(&[1, n, c, h, w], 3)?;
    // Plain: upsample, then the 3×3 convolution with padding 1.
    let up = x
        .reshape((n, c, h, w))?
        .upsample_nearest2d(2 * h, 2 * w)?
        .reshape((1, n, c, 2 * h, 2 * w))?;
    let want = conv3d(&up, &weight, &bias, (1, 3, 3), 1)?.reshape((n, o, 2 * h, 2 * w))?;
    for dtype in [DType::F32, DType::BF16] {
        let phases = nearest_upsample_phase_weights(&weight, dtype)?;
        assert_eq!(phases.dims(), &[4 * o, 4 * c]);
        let y = conv3d(&x.to_dtype(dtype)?, &phases, &bias.repeat(4)?, (1, 2, 2), 1)?;
        let got = interleave_phases(&y.reshape((n, 4 * o, h + 1, w + 1))?)?;
        // Integers: every sum is exact (and, for these values, every output too: |y| < 256
        // rounds exactly to bf16), so the two forms agree exactly.
        let diff = (got.to_dtype(DType::F32)? - &want)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert_eq!(diff, 0.0, "{dtype:?}");
    }
    Ok(())
}

#[test]
fn interleave_fast_path_equals_candle_ops() -> Result<()> {
    let y = integers(&[2, 8, 4, 6], 4)?;
    let fast = interleave_phases(&y)?;
    // f16 is not a fast-path dtype: candle's narrow/stack/reshape.
    let slow = interleave_phases(&y.to_dtype(DType::F16)?)?.to_dtype(DType::F32)?;
    assert_eq!(fast.dims(), &[2, 2, 6, 10]);
    assert_eq!(
        fast.flatten_all()?.to_vec1::<f32>()?,
        slow.flatten_all()?.to_vec1::<f32>()?
    );
    assert!(interleave_phases(&integers(&[1, 6, 3, 3], 5)?).is_err());
    Ok(())
}
