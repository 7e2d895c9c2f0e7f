//! The engine seen from the server: one trait, so workers never touch tensors and tests run
//! the real pipeline on a tiny checkpoint.

use kiln_pipeline::{GenerateRequest, ModelDefaults, PipelineError, Progress, WanPipeline};
use serde::Serialize;

/// What the loaded model can honour; requests are validated against it once, at submit.
#[derive(Debug, Clone, Serialize)]
pub struct ModelCapabilities {
    pub defaults: ModelDefaults,
    /// First/last frame images and static/dynamic masks (the Wan image-to-video input form).
    pub accepts_images: bool,
    /// Kling-style camera control (kiln's camera embedder).
    pub accepts_camera: bool,
    /// Reference images (subject identity); no loaded architecture takes them yet.
    pub accepts_reference_images: bool,
    /// Frame counts must be `temporal_factor·n + 1`.
    pub temporal_factor: usize,
    /// Width and height must be multiples of this.
    pub size_multiple: usize,
}

/// A finished clip as RGB8 frames, row-major, frame after frame.
#[derive(Debug, Clone)]
pub struct GeneratedClip {
    pub rgb: Vec<u8>,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    /// Seconds spent encoding the prompt, denoising and decoding.
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Failed(String),
}

/// A video model the workers can run. `generate` blocks for the whole run; workers call it
/// on a blocking thread. `progress` returning `false` asks it to stop at the next step.
pub trait VideoGenerator: Send + Sync + 'static {
    fn capabilities(&self) -> ModelCapabilities;

    fn generate(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<GeneratedClip, GenerateError>;
}

impl VideoGenerator for WanPipeline {
    fn capabilities(&self) -> ModelCapabilities {
        let g = self.geometry();
        ModelCapabilities {
            defaults: self.defaults().clone(),
            accepts_images: g.conditioning_channels > 0,
            accepts_camera: g.camera_dim.is_some(),
            accepts_reference_images: false,
            temporal_factor: g.temporal_factor,
            size_multiple: g.spatial_factor * g.patch[1].max(g.patch[2]),
        }
    }

    fn generate(
        &self,
        request: &GenerateRequest,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<GeneratedClip, GenerateError> {
        let generated = WanPipeline::generate(self, request, progress).map_err(|e| match e {
            PipelineError::Cancelled => GenerateError::Cancelled,
            other => GenerateError::Failed(other.to_string()),
        })?;
        let failed = |e: candle_core::Error| GenerateError::Failed(e.to_string());
        let (frames, height, width, _) = generated.video.dims4().map_err(failed)?;
        let floats: Vec<f32> = generated
            .video
            .flatten_all()
            .and_then(|t| t.to_vec1())
            .map_err(failed)?;
        let t = &generated.timings;
        Ok(GeneratedClip {
            rgb: to_rgb8(&floats),
            frames,
            width,
            height,
            seconds: t.encode_prompt + t.denoise + t.decode,
        })
    }
}

/// Floats in [0, 1] → bytes, rounding as image libraries (and `kiln generate`) do.
fn to_rgb8(video: &[f32]) -> Vec<u8> {
    video
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}
