//! The Wan image-to-video input form and kiln's camera control, as kiln's bundled model is
//! trained (docs/bundled-model.md, `kiln-train`'s `conditioning.rs` and `data.rs`).
//!
//! Such a transformer takes `2·z + 4` input channels: the noise latents, four mask channels
//! at latent resolution (1 = known) and the normalised VAE encoding of the condition video
//! (known pixels, 0 = mid-grey elsewhere). With nothing given — text-to-video — every mask
//! channel is 0 and the condition video is all 0, exactly as training builds the ≈ 25 % of
//! clips that draw no conditioning.

use candle_core::{DType, Device, Tensor};
use kiln_models::wan::vae::WanVae;

/// Mask channels of the Wan image-to-video input (one per pixel frame of a temporal group).
pub const MASK_CHANNELS: usize = 4;
/// Width of the camera-control vector: the six axes / 10, then a "camera given" flag.
pub const CAMERA_DIM: usize = 7;
/// Names of the six camera axes, in the order of `GenerateRequest::camera`.
pub const CAMERA_AXES: [&str; 6] = ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];
/// Each axis runs from −`CAMERA_LIMIT` to `CAMERA_LIMIT`, as Kling's camera_control.
pub const CAMERA_LIMIT: f64 = 10.0;

/// The camera-control vector the bundled model was trained with: each axis / 10, then 1
/// ("camera given"). Computed as kiln-train's `camera_vector` does (in f32), so integer
/// axes give bit for bit the training values.
pub fn camera_vector(axes: [f64; 6]) -> [f32; CAMERA_DIM] {
    let mut v = [0f32; CAMERA_DIM];
    for (slot, a) in v.iter_mut().zip(axes) {
        *slot = a as f32 / 10.0;
    }
    v[CAMERA_DIM - 1] = 1.0;
    v
}

/// Mask channels and condition latents, (1, 4 + z, F', H/8, W/8) in `dtype`, for a clip
/// of which nothing is known: zero masks and the normalised encoding of an all-0 video.
pub(crate) fn nothing_given(
    vae: &WanVae,
    frames: usize,
    height: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    // f32 like the training stream's condition video; `encode` casts to the VAE's dtype.
    let video = Tensor::zeros((1, 3, frames, height, width), DType::F32, device)?;
    let latents = vae.normalize(&vae.encode(&video)?)?;
    let (_, _, f, h, w) = latents.dims5()?;
    let mask = Tensor::zeros((1, MASK_CHANNELS, f, h, w), latents.dtype(), device)?;
    Tensor::cat(&[&mask, &latents], 1)?.to_dtype(dtype)
}
