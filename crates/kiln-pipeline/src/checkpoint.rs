//! Finding a checkpoint's parts on disk and building the models from them.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use kiln_models::umt5::{self, UMT5EncoderModel};
use kiln_models::wan::transformer::{self, WanTransformer};
use kiln_models::wan::vae::{self, WanVae};
use kiln_models::wan::{transformer_keys, vae_keys};
use kiln_models::{component_files, read_config, KeyMap, WeightSource};
use kiln_sampling::SchedulerConfig;

use crate::condition_cache;
use crate::conditioning::MASK_CHANNELS;
use crate::defaults::ModelDefaults;
use crate::prompt::PromptTokenizer;
use crate::{ModelGeometry, PipelineError};

/// A diffusers-layout folder, with optional single-file overrides of its weights.
#[derive(Debug, Clone, Default)]
pub struct CheckpointPaths {
    pub model: PathBuf,
    pub transformer: Option<PathBuf>,
    pub vae: Option<PathBuf>,
    pub text_encoder: Option<PathBuf>,
}

pub(crate) struct Parts {
    pub tokenizer: PromptTokenizer,
    pub text_encoder: UMT5EncoderModel,
    pub transformer: WanTransformer,
    pub vae: WanVae,
    pub scheduler_config: SchedulerConfig,
    pub geometry: ModelGeometry,
    pub defaults: ModelDefaults,
    /// Text-only conditions shipped in the model folder, by (width, height).
    pub shipped_conditions: std::collections::HashMap<(usize, usize), candle_core::Tensor>,
}

fn load_err(message: String) -> PipelineError {
    PipelineError::Load { message }
}

/// The weights of one component: the override file when given, else the folder's files.
fn weights(
    dir: &Path,
    override_file: Option<&Path>,
    flag: &str,
    key_map_for: fn(&[String]) -> Option<KeyMap>,
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, PipelineError> {
    let files = match override_file {
        Some(f) if f.is_file() => vec![f.to_path_buf()],
        Some(f) => {
            return Err(load_err(format!(
                "{}: no such file; check the path given to {flag}",
                f.display()
            )))
        }
        None => component_files(dir)?,
    };
    let fix = match override_file {
        Some(_) => format!("the file given to {flag} is not a complete checkpoint of this component or does not match the model's config.json"),
        None => format!("the checkpoint folder {} is incomplete; download it again", dir.display()),
    };
    let source = WeightSource::open(&files, None, fix)?;
    let key_map = key_map_for(&source.stored_keys());
    Ok(source.with_key_map(key_map).into_var_builder(dtype, device))
}

fn require_dir(model: &Path, sub: &str) -> Result<PathBuf, PipelineError> {
    let dir = model.join(sub);
    if !dir.is_dir() {
        return Err(load_err(format!(
            "{}: missing; a Wan checkpoint in the diffusers layout has model_index.json and the folders tokenizer/, text_encoder/, transformer/, vae/, scheduler/",
            dir.display()
        )));
    }
    Ok(dir)
}

pub(crate) fn load(
    paths: &CheckpointPaths,
    dtype: DType,
    device: &Device,
) -> Result<Parts, PipelineError> {
    let model = &paths.model;
    if !model.is_dir() {
        return Err(load_err(format!(
            "{}: no such checkpoint folder; pass --model DIR with a Wan checkpoint in the diffusers layout",
            model.display()
        )));
    }
    let index = model.join("model_index.json");
    let index: serde_json::Value = read_config(&index, "model_index.json")?;
    let class = index
        .get("_class_name")
        .and_then(|c| c.as_str())
        .unwrap_or("");
    if class != "WanPipeline" {
        return Err(load_err(format!(
            "{}: pipeline class is `{class}`, expected `WanPipeline`; kiln runs Wan 2.1 text-to-video checkpoints",
            model.join("model_index.json").display()
        )));
    }

    let defaults = ModelDefaults::from_model_index(&index)
        .map_err(|e| load_err(format!("{}: {e}", model.join("model_index.json").display())))?;
    let tokenizer = PromptTokenizer::from_file(
        &require_dir(model, "tokenizer")?.join("tokenizer.json"),
        defaults.max_sequence_length,
    )?;

    let te_dir = require_dir(model, "text_encoder")?;
    let te_cfg: umt5::Config = read_config(&te_dir.join("config.json"), "UMT5 config")?;
    let te_vb = weights(
        &te_dir,
        paths.text_encoder.as_deref(),
        "--text-encoder",
        umt5::key_map_for,
        dtype,
        device,
    )?;
    let text_encoder = UMT5EncoderModel::new(&te_cfg, te_vb)?;

    let tr_dir = require_dir(model, "transformer")?;
    let tr_cfg: transformer::Config =
        read_config(&tr_dir.join("config.json"), "Wan transformer config")?;
    let tr_vb = weights(
        &tr_dir,
        paths.transformer.as_deref(),
        "--transformer",
        transformer_keys::key_map_for,
        dtype,
        device,
    )?;
    let transformer = WanTransformer::new(&tr_cfg, tr_vb)?;

    let vae_dir = require_dir(model, "vae")?;
    let vae_cfg: vae::Config = read_config(&vae_dir.join("config.json"), "Wan VAE config")?;
    let vae_vb = weights(
        &vae_dir,
        paths.vae.as_deref(),
        "--vae",
        vae_keys::key_map_for,
        dtype,
        device,
    )?;
    let vae = WanVae::new(&vae_cfg, vae_vb)?;
    // Only hash the VAE (hundreds of MB for real Wan) when there is a cache to check.
    let cache_path = model.join(condition_cache::FILE_NAME);
    let shipped_conditions = if paths.vae.is_none() && cache_path.is_file() {
        match condition_cache::vae_fingerprint(&component_files(&vae_dir)?) {
            Ok(fingerprint) => condition_cache::read(&cache_path, &fingerprint, device),
            Err(_) => Default::default(),
        }
    } else {
        Default::default()
    };

    let sched_path = require_dir(model, "scheduler")?.join("scheduler_config.json");
    // Parsing through the scheduler first gives errors that name the file and field.
    kiln_sampling::Scheduler::from_config_file(&sched_path).map_err(|e| load_err(e.to_string()))?;
    let text = std::fs::read_to_string(&sched_path)
        .map_err(|e| load_err(format!("{}: {e}", sched_path.display())))?;
    let scheduler_config = SchedulerConfig::from_json(&text)
        .map_err(|e| load_err(format!("{}: {e}", sched_path.display())))?;

    // Two input forms: text-to-video (the noise latents only) and Wan's image-to-video
    // (noise, mask channels, condition latents), which kiln's bundled model uses.
    let z = vae_cfg.z_dim;
    let conditioning_channels = if tr_cfg.in_channels == z {
        0
    } else if tr_cfg.in_channels == 2 * z + MASK_CHANNELS {
        z + MASK_CHANNELS
    } else {
        return Err(load_err(format!(
            "transformer in_channels = {} but VAE z_dim = {z}, expected {z} (text-to-video) or {} (image-to-video input: noise, {MASK_CHANNELS} mask channels, condition latents); the transformer and VAE come from different checkpoints",
            tr_cfg.in_channels,
            2 * z + MASK_CHANNELS
        )));
    };
    if tr_cfg.out_channels() != z {
        return Err(load_err(format!(
            "transformer out_channels = {} but VAE z_dim = {z}; the transformer and VAE come from different checkpoints",
            tr_cfg.out_channels()
        )));
    }
    if te_cfg.d_model != tr_cfg.text_dim {
        return Err(load_err(format!(
            "text encoder d_model = {} but transformer text_dim = {}; the text encoder and transformer come from different checkpoints",
            te_cfg.d_model, tr_cfg.text_dim
        )));
    }
    let temporal_factor = 1usize << vae_cfg.temperal_downsample.iter().filter(|&&d| d).count();
    let spatial_factor = 1usize << vae_cfg.temperal_downsample.len();
    let patch = [
        tr_cfg.patch_size[0],
        tr_cfg.patch_size[1],
        tr_cfg.patch_size[2],
    ];
    Ok(Parts {
        tokenizer,
        text_encoder,
        transformer,
        vae,
        scheduler_config,
        geometry: ModelGeometry {
            latent_channels: z,
            conditioning_channels,
            camera_dim: tr_cfg.camera_dim,
            temporal_factor,
            spatial_factor,
            patch,
            max_sequence_length: defaults.max_sequence_length,
        },
        defaults,
        shipped_conditions,
    })
}
