//! From a resolved request to the pipeline's input: images fetched, fitted crop-centre to
//! the clip, masks thresholded at luma 128, trajectories mapped through the same crop; shared
//! with `kiln generate`. Blocking: workers call it on a blocking thread.

use kiln_media::image_in::{fit_image, load_image, FetchLimits, Fit, ImageSource, RgbImage};
use kiln_pipeline::{DynamicMask, GenerateRequest, VideoConditions};

use crate::request::ResolvedRequest;

/// Which input of a request a [`ConditionError`] is about; each surface names it its own
/// way (`--image` on the CLI, `images (first frame)` on the API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConditionInput {
    FirstFrame,
    LastFrame,
    StaticMask,
    DynamicMask(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionError {
    pub input: ConditionInput,
    pub message: String,
}

/// Image sources (paths, URLs, data URIs) of a request's conditions; trajectories are in
/// pixels of the first-frame image.
#[derive(Debug, Clone, Default)]
pub struct ConditionSources<'a> {
    pub first_frame: Option<&'a str>,
    pub last_frame: Option<&'a str>,
    pub static_mask: Option<&'a str>,
    pub dynamic_masks: Vec<(&'a str, &'a [[f32; 2]])>,
}

fn read_image(
    input: ConditionInput,
    source: &str,
    limits: &FetchLimits,
) -> Result<RgbImage, ConditionError> {
    load_image(&ImageSource::parse(source), limits).map_err(|e| ConditionError {
        input,
        message: e.to_string(),
    })
}

fn fitted(
    input: ConditionInput,
    image: &RgbImage,
    width: usize,
    height: usize,
) -> Result<RgbImage, ConditionError> {
    fit_image(image, width as u32, height as u32, Fit::CropCenter).map_err(|e| ConditionError {
        input,
        message: e.to_string(),
    })
}

/// White (luma ≥ 128) pixels of a mask image fitted to the clip.
fn read_mask(
    input: ConditionInput,
    source: &str,
    width: usize,
    height: usize,
    limits: &FetchLimits,
) -> Result<Vec<bool>, ConditionError> {
    let image = fitted(input, &read_image(input, source, limits)?, width, height)?;
    Ok(image
        .pixels
        .chunks_exact(3)
        .map(|p| 299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]) >= 128_000)
        .collect())
}

/// Loads and fits the images and masks of a request to the clip, and maps trajectories
/// from the first-frame image's pixels through the same crop. `kiln generate` and the
/// workers both build their conditions here.
pub fn load_conditions(
    sources: &ConditionSources,
    width: usize,
    height: usize,
    limits: &FetchLimits,
) -> Result<VideoConditions, ConditionError> {
    use ConditionInput as In;
    let mut c = VideoConditions::default();
    let mut source_size = None;
    if let Some(src) = sources.first_frame {
        let image = read_image(In::FirstFrame, src, limits)?;
        source_size = Some((image.width as f32, image.height as f32));
        c.first_frame = Some(fitted(In::FirstFrame, &image, width, height)?.pixels);
    }
    if let Some(src) = sources.last_frame {
        let image = read_image(In::LastFrame, src, limits)?;
        c.last_frame = Some(fitted(In::LastFrame, &image, width, height)?.pixels);
    }
    if let Some(src) = sources.static_mask {
        c.static_mask = Some(read_mask(In::StaticMask, src, width, height, limits)?);
    }
    for (i, (mask, trajectory)) in sources.dynamic_masks.iter().enumerate() {
        let input = In::DynamicMask(i);
        let (sw, sh) = source_size.ok_or_else(|| ConditionError {
            input,
            message: "needs a first-frame image".into(),
        })?;
        // Crop-centre: scale to cover, then cut the overflow equally from both sides.
        let scale = (width as f32 / sw).max(height as f32 / sh);
        let (ox, oy) = (
            (sw * scale - width as f32) / 2.0,
            (sh * scale - height as f32) / 2.0,
        );
        let trajectory = trajectory
            .iter()
            .map(|[x, y]| [x * scale - ox, y * scale - oy])
            .collect();
        c.dynamic_masks.push(DynamicMask {
            mask: read_mask(input, mask, width, height, limits)?,
            trajectory,
        });
    }
    Ok(c)
}

/// A resolved API request's conditions; errors name the request field.
pub fn load_request_conditions(
    request: &ResolvedRequest,
    limits: &FetchLimits,
) -> Result<VideoConditions, String> {
    let sources = ConditionSources {
        first_frame: request.first_frame.as_deref(),
        last_frame: request.last_frame.as_deref(),
        static_mask: request.static_mask.as_deref(),
        dynamic_masks: request
            .dynamic_masks
            .iter()
            .map(|m| (m.mask.as_str(), m.trajectory.as_slice()))
            .collect(),
    };
    load_conditions(&sources, request.width, request.height, limits).map_err(|e| {
        let field = match e.input {
            ConditionInput::FirstFrame => "images (first frame)".to_string(),
            ConditionInput::LastFrame => "images (last frame)".to_string(),
            ConditionInput::StaticMask => "static_mask".to_string(),
            ConditionInput::DynamicMask(i) => format!("dynamic_masks[{i}]"),
        };
        format!("{field}: {}", e.message)
    })
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
