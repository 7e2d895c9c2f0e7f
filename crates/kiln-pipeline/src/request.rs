//! A text-to-video request and its validation against the loaded model.

use candle_core::{DType, Tensor};

use crate::conditioning::{VideoConditions, CAMERA_AXES, CAMERA_DIM, CAMERA_LIMIT};
use crate::{ModelGeometry, PipelineError};

/// The seeds' default negative prompt.
pub const DEFAULT_NEGATIVE_PROMPT: &str = "blur, distort, and low quality";
/// The hosted APIs' prompt limit.
pub const MAX_PROMPT_CHARS: usize = 2500;

#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub num_frames: usize,
    pub height: usize,
    pub width: usize,
    pub steps: usize,
    /// Classifier-free guidance; ≤ 1 runs one pass and ignores the negative prompt.
    pub guidance_scale: f64,
    pub seed: u64,
    /// Used instead of seeded noise: (1, C, F', H/8, W/8), f32.
    pub init_latents: Option<Tensor>,
    /// Camera motion as [horizontal, vertical, pan, tilt, roll, zoom], each −10 to 10, for
    /// models with kiln's camera embedder; `None` leaves the camera to the prompt.
    pub camera: Option<[f64; 6]>,
    /// First frame, last frame, static and dynamic masks, for models that take the Wan
    /// image-to-video input form.
    pub conditions: VideoConditions,
}

impl GenerateRequest {
    pub fn latent_shape(&self, g: &ModelGeometry) -> (usize, usize, usize, usize, usize) {
        (
            1,
            g.latent_channels,
            (self.num_frames - 1) / g.temporal_factor + 1,
            self.height / g.spatial_factor,
            self.width / g.spatial_factor,
        )
    }

    pub fn validate(&self, g: &ModelGeometry) -> Result<(), PipelineError> {
        let bad = |m: String| Err(PipelineError::Input(m));
        let chars = self.prompt.chars().count();
        // With a first frame the picture is given and the model may choose the motion.
        if self.prompt.trim().is_empty() && self.conditions.first_frame.is_none() {
            return bad(
                "the prompt is empty; describe the video to generate (it may be empty only with a first-frame image)"
                    .into(),
            );
        }
        if chars > MAX_PROMPT_CHARS {
            return bad(format!(
                "the prompt has {chars} characters, at most {MAX_PROMPT_CHARS} are allowed; shorten it"
            ));
        }
        if self.negative_prompt.chars().count() > MAX_PROMPT_CHARS {
            return bad(format!(
                "the negative prompt has {} characters, at most {MAX_PROMPT_CHARS} are allowed; shorten it",
                self.negative_prompt.chars().count()
            ));
        }
        let tf = g.temporal_factor;
        if self.num_frames == 0 || !(self.num_frames - 1).is_multiple_of(tf) {
            let lower = self.num_frames.saturating_sub(1) / tf * tf + 1;
            return bad(format!(
                "frames = {}, but the frame count must be of the form {tf}n+1; use {} or {}",
                self.num_frames,
                lower,
                lower + tf
            ));
        }
        let m = g.spatial_factor * g.patch[1].max(g.patch[2]);
        for (name, v) in [("width", self.width), ("height", self.height)] {
            if v == 0 || !v.is_multiple_of(m) {
                let lower = (v / m * m).max(m);
                return bad(format!(
                    "{name} = {v}, but sizes must be positive multiples of {m}; use {lower} or {}",
                    lower + m
                ));
            }
        }
        if self.steps == 0 || self.steps > 1000 {
            return bad(format!("steps = {}, expected 1 to 1000", self.steps));
        }
        if !self.guidance_scale.is_finite()
            || self.guidance_scale < 0.0
            || self.guidance_scale > 50.0
        {
            return bad(format!(
                "guidance = {}, expected a number from 0 to 50 (1 or less turns guidance off)",
                self.guidance_scale
            ));
        }
        if let Some(axes) = &self.camera {
            match g.camera_dim {
                None => {
                    return bad(
                        "--camera: this model has no camera control; leave out --camera or use a model with a camera embedder (kiln's bundled model)"
                            .into(),
                    )
                }
                Some(d) if d != CAMERA_DIM => {
                    return bad(format!(
                        "--camera: this model's camera embedder takes {d} numbers but kiln sends {CAMERA_DIM} (six axes and a 'given' flag); leave out --camera or use a model trained by kiln"
                    ))
                }
                Some(_) => {}
            }
            for (name, v) in CAMERA_AXES.iter().zip(axes) {
                if !v.is_finite() || v.abs() > CAMERA_LIMIT {
                    return bad(format!(
                        "--camera {name} = {v}, expected a number from -{CAMERA_LIMIT} to {CAMERA_LIMIT}"
                    ));
                }
            }
        }
        if !self.conditions.is_empty() {
            if g.conditioning_channels == 0 {
                return bad(
                    "this model takes text only; --image, --image-tail and the masks need an image-to-video model (kiln's bundled model or a Wan i2v checkpoint)"
                        .into(),
                );
            }
            self.conditions
                .validate(self.height, self.width)
                .map_err(PipelineError::Input)?;
        }
        if let Some(t) = &self.init_latents {
            let want = self.latent_shape(g);
            let want = [want.0, want.1, want.2, want.3, want.4];
            if t.dims() != want {
                return bad(format!(
                    "init latents have shape {:?}, expected {want:?} for {} frames at {}x{}; write them with that shape",
                    t.dims(),
                    self.num_frames,
                    self.width,
                    self.height
                ));
            }
            if t.dtype() != DType::F32 {
                return bad(format!(
                    "init latents are {:?}, expected f32; save them as float32",
                    t.dtype()
                ));
            }
        }
        Ok(())
    }
}
