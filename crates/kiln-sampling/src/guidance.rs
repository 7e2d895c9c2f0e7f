//! Classifier-free guidance (Ho & Salimans 2022) and the mapping from the 0-1 `cfg_scale` that
//! seeds carry to Wan's guidance scale.

use crate::error::{Result, SamplingError};
use candle_core::Tensor;

/// `uncond + scale * (cond - uncond)`, as the Wan pipeline combines its two passes.
///
/// With `scale <= 1` diffusers runs the conditional pass only (`do_classifier_free_guidance`
/// is `scale > 1`); deciding that, and skipping the unconditional pass, is the pipeline's job.
/// This function only combines two outputs it is given.
pub fn classifier_free_guidance(
    uncond: &Tensor,
    cond: &Tensor,
    scale: f64,
) -> candle_core::Result<Tensor> {
    uncond + (cond - uncond)?.affine(scale, 0.0)?
}

/// Maps the hosted APIs' `cfg_scale` in [0, 1] to a guidance scale: `1 + 8 * cfg_scale`.
///
/// Linear and increasing: 0 gives 1.0 (no guidance, one model pass), 0.5 (the APIs' default)
/// gives 5.0 (Wan 2.1's default `guidance_scale`), 1 gives 9.0. Values outside [0, 1] (or NaN)
/// are an error rather than clamped, so a caller's mistake is not silently hidden.
pub fn guidance_from_cfg_scale(cfg_scale: f64) -> Result<f64> {
    if !(0.0..=1.0).contains(&cfg_scale) {
        return Err(SamplingError::CfgScaleOutOfRange(cfg_scale));
    }
    Ok(1.0 + 8.0 * cfg_scale)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn cfg_scale_mapping() -> anyhow::Result<()> {
        assert_eq!(guidance_from_cfg_scale(0.0)?, 1.0);
        assert_eq!(guidance_from_cfg_scale(0.5)?, 5.0);
        assert_eq!(guidance_from_cfg_scale(1.0)?, 9.0);
        assert!(guidance_from_cfg_scale(0.25)? < guidance_from_cfg_scale(0.75)?);
        for bad in [-0.01, 1.01, f64::NAN, f64::INFINITY] {
            let err = guidance_from_cfg_scale(bad).expect_err("out of range");
            assert!(err.to_string().contains("cfg_scale"), "{err}");
        }
        Ok(())
    }

    #[test]
    fn guidance_combines_passes() -> anyhow::Result<()> {
        let dev = Device::Cpu;
        let uncond = Tensor::new(&[1.0f32, -2.0, 0.5], &dev)?;
        let cond = Tensor::new(&[3.0f32, -1.0, 0.5], &dev)?;
        let out: Vec<f32> = classifier_free_guidance(&uncond, &cond, 5.0)?.to_vec1()?;
        assert_eq!(out, vec![11.0, 3.0, 0.5]);
        let same: Vec<f32> = classifier_free_guidance(&uncond, &cond, 1.0)?.to_vec1()?;
        assert_eq!(same, vec![3.0, -1.0, 0.5]);
        Ok(())
    }
}
