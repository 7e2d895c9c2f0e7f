//! The Wan text-to-video pipeline: `WanPipeline::load` finds and maps a checkpoint (the
//! diffusers folder layout, or single files in the original Wan / ComfyUI layouts), and
//! `WanPipeline::generate` runs prompt → UMT5 → sampler loop (transformer + scheduler +
//! classifier-free guidance) → VAE decode → frames. Transformers in the Wan image-to-video
//! input form (kiln's bundled model) get their mask and condition channels and an optional
//! camera vector (see [`conditioning`]).
//!
//! This crate is the only place that knows the order of the steps. It must not speak HTTP,
//! encode video files, or hold architecture code (that is `kiln-models`) or scheduler maths
//! (that is `kiln-sampling`).

mod checkpoint;
pub mod condition_cache;
pub mod conditioning;
mod defaults;
pub mod noise;
pub mod prompt;
mod request;

use std::sync::Mutex;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use kiln_models::umt5::UMT5EncoderModel;
use kiln_models::wan::transformer::WanTransformer;
use kiln_models::wan::vae::WanVae;
use kiln_sampling::{classifier_free_guidance, Scheduler, SchedulerConfig};

pub use checkpoint::CheckpointPaths;
pub use conditioning::{DynamicMask, VideoConditions};
pub use defaults::{AspectSizes, ModelDefaults};
pub use kiln_sampling::guidance_from_cfg_scale;
pub use request::{GenerateRequest, DEFAULT_NEGATIVE_PROMPT, MAX_PROMPT_CHARS};

/// Everything that can stop a generation, each a one-line message with the cause and the fix.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("{message}")]
    Load { message: String },
    #[error("{0}")]
    Input(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
}

impl From<kiln_models::LoadError> for PipelineError {
    fn from(e: kiln_models::LoadError) -> Self {
        PipelineError::Load {
            message: e.to_string(),
        }
    }
}

/// Where a generation is, for progress bars and server events.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Progress {
    EncodingPrompt,
    Denoising {
        step: usize,
        steps: usize,
        seconds: f64,
    },
    Decoding,
}

/// Wall time of each phase, in seconds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PhaseTimings {
    /// Prompt encoding, and the conditioning's VAE encode for image-to-video input models.
    pub encode_prompt: f64,
    pub denoise: f64,
    pub decode: f64,
}

/// A finished clip: `video` is (frames, height, width, 3), f32 in [0, 1].
pub struct Generated {
    pub video: Tensor,
    pub timings: PhaseTimings,
}

/// Numbers of the loaded checkpoint that decide which requests it can serve.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModelGeometry {
    /// Channels of the noise latents (the VAE's z_dim).
    pub latent_channels: usize,
    /// Input channels after the noise: 0 for text-to-video transformers, 4 mask channels
    /// + z condition latents for the Wan image-to-video input form.
    pub conditioning_channels: usize,
    /// Width of the camera-control vector, for models with kiln's camera embedder.
    pub camera_dim: Option<usize>,
    pub temporal_factor: usize,
    pub spatial_factor: usize,
    pub patch: [usize; 3],
    pub max_sequence_length: usize,
}

/// (frames, height, width) of a clip.
type ClipShape = (usize, usize, usize);

pub struct WanPipeline {
    tokenizer: prompt::PromptTokenizer,
    text_encoder: UMT5EncoderModel,
    transformer: WanTransformer,
    vae: WanVae,
    scheduler_config: SchedulerConfig,
    geometry: ModelGeometry,
    defaults: ModelDefaults,
    dtype: DType,
    device: Device,
    /// The last "nothing given" conditioning and its (frames, height, width): it depends on
    /// the clip's shape only, so repeated requests skip its VAE encode. The encoder is
    /// causal, so a shorter clip of the same size takes the first latent frames.
    text_only_condition: Mutex<Option<(ClipShape, Tensor)>>,
    /// Text-only conditions shipped with the model (see [`condition_cache`]).
    shipped_conditions: std::collections::HashMap<(usize, usize), Tensor>,
}

impl WanPipeline {
    /// Loads every component, mapping weights into `dtype`.
    pub fn load(
        paths: &CheckpointPaths,
        dtype: DType,
        device: &Device,
    ) -> Result<Self, PipelineError> {
        let parts = checkpoint::load(paths, dtype, device)?;
        Ok(Self {
            tokenizer: parts.tokenizer,
            text_encoder: parts.text_encoder,
            transformer: parts.transformer,
            vae: parts.vae,
            scheduler_config: parts.scheduler_config,
            geometry: parts.geometry,
            defaults: parts.defaults,
            dtype,
            device: device.clone(),
            text_only_condition: Mutex::new(None),
            shipped_conditions: parts.shipped_conditions,
        })
    }

    pub fn geometry(&self) -> &ModelGeometry {
        &self.geometry
    }

    /// Request defaults of this checkpoint (Wan 2.1's unless it says otherwise).
    pub fn defaults(&self) -> &ModelDefaults {
        &self.defaults
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The pipeline's prompt embeddings: UMT5 output with rows past the prompt's length zeroed.
    pub fn encode_prompt(&self, prompt: &str) -> Result<Tensor, PipelineError> {
        let tokens = self.tokenizer.encode(prompt, &self.device)?;
        let hidden = self
            .text_encoder
            .forward(&tokens.input_ids, &tokens.attention_mask)?;
        let (_, l, d) = hidden.dims3()?;
        let valid = hidden.narrow(1, 0, tokens.len)?;
        let pad = Tensor::zeros((1, l - tokens.len, d), hidden.dtype(), &self.device)?;
        Ok(Tensor::cat(&[valid, pad], 1)?)
    }

    /// The channels concatenated after the noise latents for a text-to-video request of
    /// this shape: `None` for a text-to-video transformer; for the image-to-video input
    /// form, zero mask channels and the normalised encoding of a mid-grey clip
    /// (1, 4 + z, F', H/8, W/8), in the pipeline's dtype.
    pub fn text_only_condition(
        &self,
        num_frames: usize,
        height: usize,
        width: usize,
    ) -> Result<Option<Tensor>, PipelineError> {
        if self.geometry.conditioning_channels == 0 {
            return Ok(None);
        }
        if num_frames == 0 {
            return Err(PipelineError::Input(
                "frames = 0; a clip needs at least one frame".into(),
            ));
        }
        let latent_frames = (num_frames - 1) / self.geometry.temporal_factor + 1;
        if let Some(t) = self.shipped_conditions.get(&(width, height)) {
            // The encoder is causal: a shorter clip's condition is a prefix of a longer one.
            if t.dim(2)? >= latent_frames {
                return Ok(Some(t.narrow(2, 0, latent_frames)?.to_dtype(self.dtype)?));
            }
        }
        // A poisoned lock only means another request failed mid-encode; the cache is
        // replaced whole, so its content is still consistent.
        let mut cache = self
            .text_only_condition
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(((frames, h, w), t)) = cache.as_ref() {
            if (*h, *w) == (height, width) && num_frames <= *frames {
                return Ok(Some(t.narrow(2, 0, latent_frames)?));
            }
        }
        let t = conditioning::nothing_given(
            &self.vae,
            num_frames,
            height,
            width,
            self.dtype,
            &self.device,
        )?;
        *cache = Some(((num_frames, height, width), t.clone()));
        Ok(Some(t))
    }

    /// Computes the text-only conditions of `sizes` ((width, height)) for clips of up to
    /// `frames` frames and writes them into `model_dir` (the folder this pipeline was
    /// loaded from, without a `--vae` override), so later loads skip their VAE encode.
    pub fn write_condition_cache(
        &self,
        model_dir: &std::path::Path,
        sizes: &[(usize, usize)],
        frames: usize,
    ) -> Result<std::path::PathBuf, PipelineError> {
        if self.geometry.conditioning_channels == 0 {
            return Err(PipelineError::Input(
                "this model takes text only; it has no conditions to cache".into(),
            ));
        }
        let files = kiln_models::component_files(&model_dir.join("vae"))?;
        let fingerprint =
            condition_cache::vae_fingerprint(&files).map_err(|e| PipelineError::Load {
                message: format!("{}: {e}", model_dir.join("vae").display()),
            })?;
        let mut conditions = Vec::with_capacity(sizes.len());
        for &(w, h) in sizes {
            let t = conditioning::nothing_given(&self.vae, frames, h, w, DType::F32, &self.device)?;
            conditions.push(((w, h), t));
        }
        let path = model_dir.join(condition_cache::FILE_NAME);
        condition_cache::write(&path, &fingerprint, &conditions)?;
        Ok(path)
    }

    /// Runs text-to-video. `progress` is told of each phase and step; returning `false`
    /// from it cancels the run at the next step.
    pub fn generate(
        &self,
        req: &GenerateRequest,
        progress: &mut dyn FnMut(Progress) -> bool,
    ) -> Result<Generated, PipelineError> {
        req.validate(&self.geometry)?;
        let mut timings = PhaseTimings::default();

        let t0 = Instant::now();
        if !progress(Progress::EncodingPrompt) {
            return Err(PipelineError::Cancelled);
        }
        let use_cfg = req.guidance_scale > 1.0;
        let cond = self.encode_prompt(&req.prompt)?.to_dtype(self.dtype)?;
        let uncond = if use_cfg {
            Some(
                self.encode_prompt(&req.negative_prompt)?
                    .to_dtype(self.dtype)?,
            )
        } else {
            None
        };
        let condition = if req.conditions.is_empty() {
            self.text_only_condition(req.num_frames, req.height, req.width)?
        } else {
            Some(conditioning::given(
                &self.vae,
                &req.conditions,
                req.num_frames,
                req.height,
                req.width,
                self.dtype,
                &self.device,
            )?)
        };
        let camera = match req.camera {
            Some(axes) => Some(Tensor::from_vec(
                conditioning::camera_vector(axes).to_vec(),
                (1, conditioning::CAMERA_DIM),
                &self.device,
            )?),
            None => None,
        };
        timings.encode_prompt = t0.elapsed().as_secs_f64();

        let t1 = Instant::now();
        let mut scheduler = Scheduler::from_config(self.scheduler_config.clone()).map_err(|e| {
            PipelineError::Load {
                message: e.to_string(),
            }
        })?;
        scheduler.set_timesteps(req.steps);
        let shape = req.latent_shape(&self.geometry);
        let mut latents = match &req.init_latents {
            Some(t) => t.to_device(&self.device)?.to_dtype(DType::F32)?,
            None => noise::torch_randn(req.seed, shape, &self.device)?,
        };
        let timesteps: Vec<f64> = scheduler.timesteps().to_vec();
        let steps = timesteps.len();
        for (i, &t) in timesteps.iter().enumerate() {
            let step_start = Instant::now();
            let model_in = latents.to_dtype(self.dtype)?;
            let model_in = match &condition {
                Some(c) => Tensor::cat(&[&model_in, c], 1)?,
                None => model_in,
            };
            // Without a camera this is exactly `forward`. Both guidance passes get the same
            // camera and conditioning: guidance is over the text only, as Wan's i2v does
            // with its image condition. They run as one batch of two (each item exactly its
            // own forward; larger products and half the passes over the weights).
            // Prompt and negative prompt are both padded to the tokenizer's length and the
            // latents are one clip (`GenerateRequest::validate`), so the two stack.
            let pred = match &uncond {
                Some(uncond) => {
                    let both = self.transformer.forward_with_camera(
                        &Tensor::cat(&[&model_in, &model_in], 0)?,
                        &Tensor::new(&[t as f32, t as f32], &self.device)?,
                        &Tensor::cat(&[&cond, uncond], 0)?,
                        camera.as_ref(),
                    )?;
                    let (cond_pred, uncond_pred) = (both.narrow(0, 0, 1)?, both.narrow(0, 1, 1)?);
                    classifier_free_guidance(&uncond_pred, &cond_pred, req.guidance_scale)?
                }
                None => self.transformer.forward_with_camera(
                    &model_in,
                    &Tensor::new(&[t as f32], &self.device)?,
                    &cond,
                    camera.as_ref(),
                )?,
            };
            latents = scheduler.step(&pred.to_dtype(DType::F32)?, &latents)?;
            let seconds = step_start.elapsed().as_secs_f64();
            if !progress(Progress::Denoising {
                step: i + 1,
                steps,
                seconds,
            }) {
                return Err(PipelineError::Cancelled);
            }
        }
        timings.denoise = t1.elapsed().as_secs_f64();

        let t2 = Instant::now();
        if !progress(Progress::Decoding) {
            return Err(PipelineError::Cancelled);
        }
        let z = self.vae.denormalize(&latents.to_dtype(self.dtype)?)?;
        // Frames over 256 px decode in diffusers' overlapping 256-px tiles (its
        // `enable_tiling`), so memory follows the tile: 81 frames of 832×480 stay within a
        // few GB. Smaller frames decode whole, exactly as diffusers' default.
        let video = self
            .vae
            .decode_tiled(&z, kiln_models::wan::vae::DecodeTiling::default())?;
        timings.decode = t2.elapsed().as_secs_f64();
        Ok(Generated {
            video: to_frames(&video)?,
            timings,
        })
    }
}

/// (1, 3, F, H, W) in [-1, 1] → (F, H, W, 3) in [0, 1], f32, as the reference's "np" output.
fn to_frames(video: &Tensor) -> candle_core::Result<Tensor> {
    let v = video.to_dtype(DType::F32)?.squeeze(0)?;
    ((v / 2.0)? + 0.5)?
        .clamp(0f32, 1f32)?
        .permute((1, 2, 3, 0))?
        .contiguous()
}
