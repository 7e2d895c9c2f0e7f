//! From a resolved request to the pipeline's input: images fetched, fitted crop-centre to
//! the clip, masks thresholded at luma 128, trajectories mapped through the same crop (the
//! rules of `kiln generate`). Blocking: workers call it on a blocking thread.

use kiln_media::image_in::{fit_image, load_image, FetchLimits, Fit, ImageSource, RgbImage};
use kiln_pipeline::{DynamicMask, GenerateRequest, VideoConditions};

use crate::request::ResolvedRequest;

fn read_image(field: &str, source: &str, limits: &FetchLimits) -> Result<RgbImage, String> {
    load_image(&ImageSource::parse(source), limits).map_err(|e| format!("{field}: {e}"))
}

fn fitted(field: &str, image: &RgbImage, width: usize, height: usize) -> Result<RgbImage, String> {
    fit_image(image, width as u32, height as u32, Fit::CropCenter)
        .map_err(|e| format!("{field}: {e}"))
}

/// White (luma ≥ 128) pixels of a mask image fitted to the clip.
fn read_mask(
    field: &str,
    source: &str,
    width: usize,
    height: usize,
    limits: &FetchLimits,
) -> Result<Vec<bool>, String> {
    let image = fitted(field, &read_image(field, source, limits)?, width, height)?;
    Ok(image
        .pixels
        .chunks_exact(3)
        .map(|p| 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]) >= 128_000)
        .collect())
}

/// Loads the request's images and masks. Errors name the request field.
pub fn load_conditions(
    request: &ResolvedRequest,
    limits: &FetchLimits,
) -> Result<VideoConditions, String> {
    let (width, height) = (request.width, request.height);
    let mut c = VideoConditions::default();
    let mut source_size = None;
    if let Some(src) = &request.first_frame {
        let image = read_image("images (first frame)", src, limits)?;
        source_size = Some((image.width as f32, image.height as f32));
        c.first_frame = Some(fitted("images (first frame)", &image, width, height)?.pixels);
    }
    if let Some(src) = &request.last_frame {
        let image = read_image("images (last frame)", src, limits)?;
        c.last_frame = Some(fitted("images (last frame)", &image, width, height)?.pixels);
    }
    if let Some(src) = &request.static_mask {
        c.static_mask = Some(read_mask("static_mask", src, width, height, limits)?);
    }
    for (i, m) in request.dynamic_masks.iter().enumerate() {
        let field = format!("dynamic_masks[{i}]");
        let (sw, sh) = source_size.ok_or_else(|| format!("{field}: needs a first-frame image"))?;
        // Crop-centre: scale to cover, then cut the overflow equally from both sides.
        let scale = (width as f32 / sw).max(height as f32 / sh);
        let (ox, oy) = (
            (sw * scale - width as f32) / 2.0,
            (sh * scale - height as f32) / 2.0,
        );
        let trajectory = m
            .trajectory
            .iter()
            .map(|[x, y]| [x * scale - ox, y * scale - oy])
            .collect();
        c.dynamic_masks.push(DynamicMask {
            mask: read_mask(&field, &m.mask, width, height, limits)?,
            trajectory,
        });
    }
    Ok(c)
}

/// The pipeline request for result `index` (seed + index).
pub fn generate_request(
    request: &ResolvedRequest,
    conditions: &VideoConditions,
    index: u32,
) -> GenerateRequest {
    GenerateRequest {
        prompt: request.prompt.clone(),
        negative_prompt: request.negative_prompt.clone(),
        num_frames: request.frames,
        height: request.height,
        width: request.width,
        steps: request.steps,
        guidance_scale: request.guidance_scale,
        seed: request.seed.wrapping_add(u64::from(index)),
        init_latents: None,
        camera: request.camera,
        conditions: conditions.clone(),
    }
}
