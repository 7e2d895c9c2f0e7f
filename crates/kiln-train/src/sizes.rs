//! Model sizes and clip geometry: the bundled model's, and a tiny one for tests. The
//! component `config.json` files are produced from here and parsed back through
//! `kiln-models`' own configs, so what is trained is exactly what the pipeline loads.

use kiln_models::umt5;
use kiln_models::wan::{transformer, vae};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::Result;

/// Width of the camera-control vector: the six Kling axes / 10, then a "camera given" flag.
pub const CAMERA_DIM: usize = 7;
/// Mask channels of the Wan image-to-video input (one per frame of a temporal group).
pub const MASK_CHANNELS: usize = 4;

/// The knobs of the three components.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSizes {
    pub vae_base_dim: usize,
    /// Decoder width when narrower than the encoder's (its full-resolution convolutions
    /// dominate the cost of a generation).
    pub vae_decoder_base_dim: Option<usize>,
    pub vae_z_dim: usize,
    pub vae_dim_mult: Vec<usize>,
    pub vae_num_res_blocks: usize,
    pub text_d_model: usize,
    pub text_d_kv: usize,
    pub text_num_heads: usize,
    pub text_d_ff: usize,
    pub text_num_layers: usize,
    pub dit_num_heads: usize,
    pub dit_head_dim: usize,
    pub dit_ffn_dim: usize,
    pub dit_num_layers: usize,
    pub dit_freq_dim: usize,
    /// Rows the prompt embeddings are padded to (the pipeline reads it back from
    /// `model_index.json`'s `kiln_defaults.max_sequence_length`). Wan pads to 512; at this
    /// size the zero rows would take ~95% of every cross-attention query's weight at the
    /// start of training and leave the caption's words a small share of the gradient.
    #[serde(default = "reference_text_len")]
    pub text_len: usize,
}

/// Wan's `max_sequence_length` (states written before `text_len` existed used it).
pub const REFERENCE_TEXT_LEN: usize = 512;

fn reference_text_len() -> usize {
    REFERENCE_TEXT_LEN
}

impl ModelSizes {
    /// The shipped model (see docs/bundled-model.md for the cost estimate).
    pub fn bundled() -> Self {
        Self {
            vae_base_dim: 16,
            vae_decoder_base_dim: Some(8),
            vae_z_dim: 16,
            vae_dim_mult: vec![1, 2, 4, 4],
            vae_num_res_blocks: 1,
            text_d_model: 128,
            text_d_kv: 32,
            text_num_heads: 4,
            text_d_ff: 256,
            text_num_layers: 2,
            dit_num_heads: 4,
            dit_head_dim: 48,
            dit_ffn_dim: 576,
            dit_num_layers: 4,
            dit_freq_dim: 64,
            // The grammar's captions run to 56 tokens (`</s>` included); a test checks they fit.
            text_len: 64,
        }
    }

    /// A model small enough for a smoke test to train it in seconds.
    pub fn tiny() -> Self {
        Self {
            vae_base_dim: 8,
            vae_decoder_base_dim: None,
            vae_z_dim: 4,
            vae_dim_mult: vec![1, 1, 1, 1],
            vae_num_res_blocks: 1,
            text_d_model: 16,
            text_d_kv: 8,
            text_num_heads: 2,
            text_d_ff: 32,
            text_num_layers: 1,
            dit_num_heads: 2,
            dit_head_dim: 8,
            dit_ffn_dim: 32,
            dit_num_layers: 1,
            dit_freq_dim: 16,
            text_len: 64,
        }
    }

    /// `vae/config.json`, with the latent statistics measured after stage 1.
    pub fn vae_config_json(&self, latents_mean: &[f64], latents_std: &[f64]) -> Value {
        json!({
            "_class_name": "AutoencoderKLWan",
            "_diffusers_version": "0.42.1",
            "base_dim": self.vae_base_dim,
            "decoder_base_dim": self.vae_decoder_base_dim,
            "z_dim": self.vae_z_dim,
            "dim_mult": self.vae_dim_mult,
            "num_res_blocks": self.vae_num_res_blocks,
            "attn_scales": [],
            "temperal_downsample": [false, true, true],
            "dropout": 0.0,
            "latents_mean": latents_mean,
            "latents_std": latents_std,
        })
    }

    pub fn vae_config(&self, latents_mean: &[f64], latents_std: &[f64]) -> Result<vae::Config> {
        parse(self.vae_config_json(latents_mean, latents_std))
    }

    /// `text_encoder/config.json` for a vocabulary of `vocab_size` tokens.
    pub fn text_encoder_config_json(&self, vocab_size: usize) -> Value {
        json!({
            "architectures": ["UMT5EncoderModel"],
            "model_type": "umt5",
            "vocab_size": vocab_size,
            "d_model": self.text_d_model,
            "d_kv": self.text_d_kv,
            "d_ff": self.text_d_ff,
            "num_layers": self.text_num_layers,
            "num_heads": self.text_num_heads,
            "relative_attention_num_buckets": 32,
            "relative_attention_max_distance": 128,
            "layer_norm_epsilon": 1e-6,
            "feed_forward_proj": "gated-gelu",
            "pad_token_id": 0,
            "eos_token_id": 1,
        })
    }

    pub fn text_encoder_config(&self, vocab_size: usize) -> Result<umt5::Config> {
        parse(self.text_encoder_config_json(vocab_size))
    }

    /// `transformer/config.json`: Wan image-to-video input (noise, mask, condition latents)
    /// and kiln's camera embedder.
    pub fn transformer_config_json(&self) -> Value {
        let z = self.vae_z_dim;
        json!({
            "_class_name": "WanTransformer3DModel",
            "_diffusers_version": "0.42.1",
            "patch_size": [1, 2, 2],
            "num_attention_heads": self.dit_num_heads,
            "attention_head_dim": self.dit_head_dim,
            "in_channels": z + MASK_CHANNELS + z,
            "out_channels": z,
            "text_dim": self.text_d_model,
            "freq_dim": self.dit_freq_dim,
            "ffn_dim": self.dit_ffn_dim,
            "num_layers": self.dit_num_layers,
            "cross_attn_norm": true,
            "qk_norm": "rms_norm_across_heads",
            "eps": 1e-6,
            "image_dim": null,
            "added_kv_proj_dim": null,
            "rope_max_seq_len": 1024,
            "pos_embed_seq_len": null,
            "camera_dim": CAMERA_DIM,
        })
    }

    pub fn transformer_config(&self) -> Result<transformer::Config> {
        parse(self.transformer_config_json())
    }
}

fn parse<T: serde::de::DeserializeOwned>(value: Value) -> Result<T> {
    serde_json::from_value(value).map_err(|e| crate::TrainError::Options(e.to_string()))
}

/// Which clips the data stream renders. Every step draws one (size, frame count) for the
/// whole batch, so the batch is one tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClipGeometry {
    /// (width, height) in pixels; multiples of 16 (VAE factor 8 × patch 2).
    pub sizes: Vec<(u32, u32)>,
    /// Frame counts, each 1 + 4k.
    pub frame_counts: Vec<usize>,
    pub fps: f32,
    /// Draw scenes from this many fixed seeds instead of an endless stream: for
    /// over-fitting checks (the smoke tests), never for the real model.
    #[serde(default)]
    pub scene_pool: Option<u64>,
    /// At most this many objects per scene (1 to 3; `None`: the world's 3). A curriculum
    /// starts with fewer and resumes with more.
    #[serde(default)]
    pub max_objects: Option<usize>,
}

impl ClipGeometry {
    /// The three aspect ratios of the seeds at 64 px short side, 8 fps, 5 s clips.
    pub fn bundled() -> Self {
        Self {
            sizes: vec![(112, 64), (64, 112), (64, 64)],
            frame_counts: vec![41],
            fps: 8.0,
            scene_pool: None,
            max_objects: None,
        }
    }

    pub fn tiny() -> Self {
        Self {
            sizes: vec![(32, 16), (16, 16)],
            frame_counts: vec![5],
            fps: 8.0,
            scene_pool: None,
            max_objects: None,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(crate::TrainError::Options(m));
        if self.sizes.is_empty() || self.frame_counts.is_empty() {
            return bad("clip geometry needs at least one size and one frame count".into());
        }
        for &(w, h) in &self.sizes {
            if w == 0 || h == 0 || w % 16 != 0 || h % 16 != 0 {
                return bad(format!(
                    "clip size {w}x{h}: width and height must be positive multiples of 16"
                ));
            }
        }
        for &f in &self.frame_counts {
            if f == 0 || (f - 1) % 4 != 0 {
                return bad(format!("frame count {f}: must be of the form 4k+1"));
            }
        }
        if let Some(n) = self.max_objects {
            if !(1..=kiln_world::MAX_OBJECTS).contains(&n) {
                return bad(format!(
                    "at most {n} objects a scene: expected 1 to {}",
                    kiln_world::MAX_OBJECTS
                ));
            }
        }
        if self.scene_pool == Some(0) {
            return bad("scene pool must hold at least one scene".into());
        }
        if self.fps.is_nan() || self.fps <= 0.0 {
            return bad(format!("fps {} must be positive", self.fps));
        }
        Ok(())
    }
}
