//! The UMT5 text encoder of Wan 2.1, numerically equal to transformers' (5.23)
//! `UMT5EncoderModel(...).last_hidden_state`.
//!
//! UMT5 is T5 v1.1 with one difference that matters here: every layer owns its relative
//! position bias table (T5 shares layer 0's). As in T5, attention scores are not scaled,
//! the norms are RMS norms without mean subtraction, and padded keys are masked by adding
//! the most negative f32 to their scores; padded queries are computed like any other row.
//!
//! Weights use the Hugging Face key names; [`key_map_for`] maps prefixed copies of that
//! layout and the original Wan release layout (`models_t5_umt5-xxl-enc-*.pth` converted to
//! safetensors) onto them.
//!
//! Half precision follows the reference: norms and attention scores/softmax run in f32; in
//! f16 the `wo` projections stay in f32 (transformers' `_keep_in_fp32_modules`, applied to
//! f16 only), which turns the residual stream into f32 after the first feed-forward, and
//! the residual stream is clamped against inf while it is still f16.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{linear_no_bias, Embedding, Linear, VarBuilder};
use serde::Deserialize;

/// `text_encoder/config.json` as transformers' `UMT5Config` writes it. Absent fields take
/// `UMT5Config`'s defaults (those of `google/umt5-small`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    /// Width of one attention head.
    pub d_kv: usize,
    pub d_ff: usize,
    /// Encoder layers.
    pub num_layers: usize,
    pub num_heads: usize,
    pub relative_attention_num_buckets: usize,
    pub relative_attention_max_distance: usize,
    pub layer_norm_epsilon: f64,
    /// `"gated-<act>"` for the gated feed-forward (`wi_0`, `wi_1`), `"<act>"` for the plain
    /// one (`wi`). `"gated-gelu"` means the tanh approximation (`gelu_new`), as in
    /// transformers; any `dense_act_fn` in the file is ignored, as transformers does.
    pub feed_forward_proj: String,
    /// Token id the tokenizer pads with.
    pub pad_token_id: Option<u32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            vocab_size: 250112,
            d_model: 512,
            d_kv: 64,
            d_ff: 1024,
            num_layers: 8,
            num_heads: 6,
            relative_attention_num_buckets: 32,
            relative_attention_max_distance: 128,
            layer_norm_epsilon: 1e-6,
            feed_forward_proj: "gated-gelu".into(),
            pad_token_id: Some(0),
        }
    }
}

impl Config {
    /// Whether the feed-forward is gated (`wi_0`/`wi_1`) rather than plain (`wi`).
    pub fn is_gated_act(&self) -> bool {
        self.feed_forward_proj.starts_with("gated-")
    }

    /// The feed-forward activation named by `feed_forward_proj`.
    pub fn activation(&self) -> Result<Activation> {
        let bad = || {
            candle_core::Error::Msg(format!(
                "text encoder config has feed_forward_proj = {:?}; expected \"gated-<act>\" or \
                 \"<act>\" with <act> one of gelu, gelu_new, gelu_pytorch_tanh, relu, silu",
                self.feed_forward_proj
            ))
        };
        let (gated, act) = match self.feed_forward_proj.split_once('-') {
            Some(("gated", act)) => (true, act),
            Some(_) => return Err(bad()),
            None => (false, self.feed_forward_proj.as_str()),
        };
        Ok(match act {
            // transformers turns "gated-gelu" into gelu_new (the tanh approximation).
            "gelu" if gated => Activation::GeluTanh,
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            _ => return Err(bad()),
        })
    }

    /// Refuses configs the model cannot be built from.
    pub fn validate(&self) -> Result<()> {
        self.activation()?;
        let dims = [
            ("vocab_size", self.vocab_size),
            ("d_model", self.d_model),
            ("d_kv", self.d_kv),
            ("d_ff", self.d_ff),
            ("num_heads", self.num_heads),
        ];
        for (name, value) in dims {
            if value == 0 {
                candle_core::bail!("text encoder config has {name} = 0; it must be > 0")
            }
        }
        // Bidirectional buckets: half per direction, half of those exact.
        if self.relative_attention_num_buckets < 4 {
            candle_core::bail!(
                "text encoder config has relative_attention_num_buckets = {}; it must be >= 4",
                self.relative_attention_num_buckets
            )
        }
        if self.relative_attention_max_distance <= self.relative_attention_num_buckets / 4 {
            candle_core::bail!(
                "text encoder config has relative_attention_max_distance = {}; it must exceed \
                 relative_attention_num_buckets / 4 = {}",
                self.relative_attention_max_distance,
                self.relative_attention_num_buckets / 4
            )
        }
        Ok(())
    }
}

/// Feed-forward activations of the T5 family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new`: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))).
    GeluTanh,
    GeluErf,
    Relu,
    Silu,
}

impl Module for Activation {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Self::GeluTanh => x.gelu(),
            Self::GeluErf => x.gelu_erf(),
            Self::Relu => x.relu(),
            Self::Silu => x.silu(),
        }
    }
}

/// candle's fused softmax records no backward op, so a graph that tracks gradients
/// (training from a `VarMap`) takes the composite form; inference keeps the fused kernel.
fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Bucket of each relative position `key - query` for bidirectional attention, as in
/// transformers' `UMT5Attention._relative_position_bucket` with `is_decoder = False`: half
/// the buckets per direction; within one, small distances get a bucket each and larger
/// ones share logarithmically wider buckets up to `max_distance`.
pub fn relative_position_bucket(
    relative_position: i64,
    num_buckets: usize,
    max_distance: usize,
) -> u32 {
    let half = (num_buckets / 2) as i64;
    let direction = if relative_position > 0 { half } else { 0 };
    let distance = relative_position.abs();
    let max_exact = half / 2;
    let bucket = if distance < max_exact {
        distance
    } else {
        // f32 arithmetic like the reference, so the truncation lands in the same bucket at
        // the exact powers of two (distance 16, 32, 64, ... for the default config).
        let log_ratio = (distance as f32 / max_exact as f32).ln()
            / ((max_distance as f64 / max_exact as f64).ln() as f32)
            * (half - max_exact) as f32;
        (max_exact + log_ratio as i64).min(half - 1)
    };
    (direction + bucket) as u32
}

/// The RMS norm of T5 (`UMT5LayerNorm`): no mean subtraction and no bias, computed in f32,
/// rounded to the weight's dtype when that is half precision, then scaled.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f64,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            weight: vb.get(dim, "weight")?,
            eps,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let x = x.to_dtype(DType::F32)?;
        let variance = x.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = x.broadcast_div(&(variance + self.eps)?.sqrt()?)?;
        let normed = match self.weight.dtype() {
            DType::F16 | DType::BF16 => normed.to_dtype(self.weight.dtype())?,
            _ => normed,
        };
        normed.broadcast_mul(&self.weight)
    }
}

/// Self-attention with this layer's own relative position bias table.
#[derive(Debug, Clone)]
struct SelfAttention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    /// (num_buckets, num_heads).
    relative_attention_bias: Embedding,
    num_heads: usize,
    head_dim: usize,
}

impl SelfAttention {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let inner = cfg.num_heads * cfg.d_kv;
        Ok(Self {
            q: linear_no_bias(cfg.d_model, inner, vb.pp("q"))?,
            k: linear_no_bias(cfg.d_model, inner, vb.pp("k"))?,
            v: linear_no_bias(cfg.d_model, inner, vb.pp("v"))?,
            o: linear_no_bias(inner, cfg.d_model, vb.pp("o"))?,
            relative_attention_bias: candle_nn::embedding(
                cfg.relative_attention_num_buckets,
                cfg.num_heads,
                vb.pp("relative_attention_bias"),
            )?,
            num_heads: cfg.num_heads,
            head_dim: cfg.d_kv,
        })
    }

    /// Bias (1, H, L, L) in f32 from the (L, L) bucket indices.
    fn position_bias(&self, buckets: &Tensor) -> Result<Tensor> {
        let (lq, lk) = buckets.dims2()?;
        self.relative_attention_bias
            .forward(&buckets.flatten_all()?)?
            .reshape((lq, lk, self.num_heads))?
            .permute((2, 0, 1))?
            .unsqueeze(0)?
            .to_dtype(DType::F32)
    }

    /// `x` (B, L, d_model); `buckets` (L, L); `key_mask` (B, 1, 1, L) additive, f32.
    fn forward(&self, x: &Tensor, buckets: &Tensor, key_mask: &Tensor) -> Result<Tensor> {
        let (b, l, _) = x.dims3()?;
        let heads = |t: Tensor| -> Result<Tensor> {
            t.reshape((b, l, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let q = heads(self.q.forward(x)?)?;
        let k = heads(self.k.forward(x)?)?;
        let v = heads(self.v.forward(x)?)?;
        // No 1/√d scaling in T5. Scores and softmax in f32, as the reference's attention
        // kernels accumulate them.
        let scores = q
            .to_dtype(DType::F32)?
            .matmul(&k.to_dtype(DType::F32)?.t()?)?
            .broadcast_add(&self.position_bias(buckets)?)?
            .broadcast_add(key_mask)?;
        let probs = softmax_last_dim(&scores)?.to_dtype(v.dtype())?;
        let out =
            probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((b, l, self.num_heads * self.head_dim))?;
        self.o.forward(&out)
    }
}

/// The feed-forward: `wo(act(wi_0 x) * wi_1 x)` when gated, else `wo(act(wi x))`.
#[derive(Debug, Clone)]
struct FeedForward {
    wi: FeedForwardIn,
    /// Held in f32 when the model runs in f16, as transformers keeps it.
    wo: Linear,
    act: Activation,
}

#[derive(Debug, Clone)]
enum FeedForwardIn {
    Gated { wi_0: Linear, wi_1: Linear },
    Plain { wi: Linear },
}

impl FeedForward {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let (d_model, d_ff) = (cfg.d_model, cfg.d_ff);
        let wi = if cfg.is_gated_act() {
            FeedForwardIn::Gated {
                wi_0: linear_no_bias(d_model, d_ff, vb.pp("wi_0"))?,
                wi_1: linear_no_bias(d_model, d_ff, vb.pp("wi_1"))?,
            }
        } else {
            FeedForwardIn::Plain {
                wi: linear_no_bias(d_model, d_ff, vb.pp("wi"))?,
            }
        };
        let wo_vb = if vb.dtype() == DType::F16 {
            vb.pp("wo").to_dtype(DType::F32)
        } else {
            vb.pp("wo")
        };
        Ok(Self {
            wi,
            wo: linear_no_bias(d_ff, d_model, wo_vb)?,
            act: cfg.activation()?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let hidden = match &self.wi {
            FeedForwardIn::Gated { wi_0, wi_1 } => {
                (self.act.forward(&wi_0.forward(x)?)? * wi_1.forward(x)?)?
            }
            FeedForwardIn::Plain { wi } => self.act.forward(&wi.forward(x)?)?,
        };
        self.wo.forward(&hidden.to_dtype(self.wo.weight().dtype())?)
    }
}

/// One encoder layer: pre-norm self-attention, then pre-norm feed-forward, each residual.
#[derive(Debug, Clone)]
struct Block {
    attn_norm: RmsNorm,
    attn: SelfAttention,
    ff_norm: RmsNorm,
    ff: FeedForward,
}

impl Block {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let eps = cfg.layer_norm_epsilon;
        let attn_vb = vb.pp("layer.0");
        let ff_vb = vb.pp("layer.1");
        Ok(Self {
            attn_norm: RmsNorm::new(cfg.d_model, eps, attn_vb.pp("layer_norm"))?,
            attn: SelfAttention::new(cfg, attn_vb.pp("SelfAttention"))?,
            ff_norm: RmsNorm::new(cfg.d_model, eps, ff_vb.pp("layer_norm"))?,
            ff: FeedForward::new(cfg, ff_vb.pp("DenseReluDense"))?,
        })
    }

    fn forward(&self, x: &Tensor, buckets: &Tensor, key_mask: &Tensor) -> Result<Tensor> {
        let attn = self
            .attn
            .forward(&self.attn_norm.forward(x)?, buckets, key_mask)?;
        let x = clamp_f16_overflow(&add_promoting(x, &attn)?)?;
        let ff = self.ff.forward(&self.ff_norm.forward(&x)?)?;
        clamp_f16_overflow(&add_promoting(&x, &ff)?)
    }
}

/// `a + b` with torch's promotion between a half dtype and f32 (the f32 `wo` output in f16
/// mode): both go to f32.
fn add_promoting(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dtype() == b.dtype() {
        a + b
    } else {
        a.to_dtype(DType::F32)? + b.to_dtype(DType::F32)?
    }
}

/// transformers' fp16 guard after each sublayer: if any value overflowed to ±inf, clamp
/// everything to ±(f16::MAX - 1000); otherwise leave it unchanged.
fn clamp_f16_overflow(x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::F16 {
        return Ok(x.clone());
    }
    let any_inf = x
        .abs()?
        .to_dtype(DType::F32)?
        .max_all()?
        .to_scalar::<f32>()?
        .is_infinite();
    if !any_inf {
        return Ok(x.clone());
    }
    let limit = 65504.0 - 1000.0;
    x.clamp(-limit, limit)
}

/// The UMT5 encoder stack with its token embedding.
#[derive(Debug, Clone)]
pub struct UMT5EncoderModel {
    embed_tokens: Embedding,
    blocks: Vec<Block>,
    final_layer_norm: RmsNorm,
    num_buckets: usize,
    max_distance: usize,
}

impl UMT5EncoderModel {
    /// `vb` sits at the root of the Hugging Face layout (`shared.weight`, `encoder.block.N...`).
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let enc = vb.pp("encoder");
        // transformers ties encoder.embed_tokens to shared but keeps a stored
        // encoder.embed_tokens that differs from shared, so that one wins when present.
        let embed_vb = if enc.contains_tensor("embed_tokens.weight") {
            enc.pp("embed_tokens")
        } else {
            vb.pp("shared")
        };
        let embed_tokens = candle_nn::embedding(cfg.vocab_size, cfg.d_model, embed_vb)?;
        let blocks = (0..cfg.num_layers)
            .map(|i| Block::new(cfg, enc.pp(format!("block.{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let final_layer_norm = RmsNorm::new(
            cfg.d_model,
            cfg.layer_norm_epsilon,
            enc.pp("final_layer_norm"),
        )?;
        Ok(Self {
            embed_tokens,
            blocks,
            final_layer_norm,
            num_buckets: cfg.relative_attention_num_buckets,
            max_distance: cfg.relative_attention_max_distance,
        })
    }

    /// The dtype the model computes and returns in.
    pub fn dtype(&self) -> DType {
        self.embed_tokens.embeddings().dtype()
    }

    /// `input_ids` (B, L), u32 or i64; `attention_mask` (B, L), nonzero for real tokens.
    /// Returns the last hidden state (B, L, d_model) for every position, padded ones
    /// included (callers that want the pipeline's embeddings zero those rows).
    pub fn forward(&self, input_ids: &Tensor, attention_mask: &Tensor) -> Result<Tensor> {
        let (b, l) = input_ids.dims2()?;
        let mask_dims = attention_mask.dims();
        if mask_dims != [b, l] {
            candle_core::bail!(
                "text encoder: attention_mask has shape {mask_dims:?}, expected [{b}, {l}] like input_ids"
            )
        }
        let device = input_ids.device();
        let buckets: Vec<u32> = (0..l as i64)
            .flat_map(|query| {
                (0..l as i64).map(move |key| {
                    relative_position_bucket(key - query, self.num_buckets, self.max_distance)
                })
            })
            .collect();
        let buckets = Tensor::from_vec(buckets, (l, l), device)?;
        // Padded keys get the most negative f32 added to their scores.
        let keep = attention_mask.ne(0u32)?.reshape((b, 1, 1, l))?;
        let zeros = Tensor::zeros((b, 1, 1, l), DType::F32, device)?;
        let masked = Tensor::full(f32::MIN, (b, 1, 1, l), device)?;
        let key_mask = keep.where_cond(&zeros, &masked)?;

        let mut x = self.embed_tokens.forward(input_ids)?;
        for block in &self.blocks {
            x = block.forward(&x, &buckets, &key_mask)?;
        }
        self.final_layer_norm.forward(&x)
    }
}

/// How to read a single-file text encoder, from its stored keys: `None` when the keys are
/// already in the Hugging Face layout, else a map from Hugging Face names to the stored
/// ones. Recognises the Hugging Face layout under any prefix (e.g. ComfyUI's
/// `text_encoders.t5xxl.transformer.`) and the original Wan release layout (`blocks.N.attn.q`),
/// also under a prefix.
pub fn key_map_for(stored_keys: &[String]) -> Option<crate::KeyMap> {
    const HF_PROBE: &str = "encoder.block.0.layer.0.SelfAttention.q.weight";
    const WAN_PROBE: &str = "blocks.0.attn.q.weight";
    if stored_keys.iter().any(|k| k == HF_PROBE) {
        return None;
    }
    let prefix_of = |probe: &str| {
        stored_keys.iter().find_map(|k| {
            k.strip_suffix(probe)
                .filter(|p| p.is_empty() || p.ends_with('.'))
                .map(str::to_string)
        })
    };
    if let Some(prefix) = prefix_of(HF_PROBE) {
        return Some(Box::new(move |name: &str| format!("{prefix}{name}")));
    }
    if let Some(prefix) = prefix_of(WAN_PROBE) {
        return Some(Box::new(move |name: &str| {
            format!("{prefix}{}", wan_key(name))
        }));
    }
    None
}

/// The original Wan release name (`wan/modules/t5.py`, `T5Encoder`) of a Hugging Face key.
/// Wan's feed-forward is `fc2(fc1(x) * gelu(gate(x)))`, so `gate.0` is `wi_0` and `fc1`
/// is `wi_1`. Unknown names pass through unchanged.
fn wan_key(name: &str) -> String {
    if name == "shared.weight" || name == "encoder.embed_tokens.weight" {
        return "token_embedding.weight".into();
    }
    if name == "encoder.final_layer_norm.weight" {
        return "norm.weight".into();
    }
    let Some(rest) = name.strip_prefix("encoder.block.") else {
        return name.into();
    };
    let Some((layer, tail)) = rest.split_once('.') else {
        return name.into();
    };
    let wan_tail = match tail {
        "layer.0.layer_norm.weight" => "norm1.weight",
        "layer.0.SelfAttention.q.weight" => "attn.q.weight",
        "layer.0.SelfAttention.k.weight" => "attn.k.weight",
        "layer.0.SelfAttention.v.weight" => "attn.v.weight",
        "layer.0.SelfAttention.o.weight" => "attn.o.weight",
        "layer.0.SelfAttention.relative_attention_bias.weight" => "pos_embedding.embedding.weight",
        "layer.1.layer_norm.weight" => "norm2.weight",
        "layer.1.DenseReluDense.wi_0.weight" => "ffn.gate.0.weight",
        "layer.1.DenseReluDense.wi_1.weight" => "ffn.fc1.weight",
        "layer.1.DenseReluDense.wo.weight" => "ffn.fc2.weight",
        _ => return name.into(),
    };
    format!("blocks.{layer}.{wan_tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Buckets from transformers' `_relative_position_bucket` (32 buckets, max distance 128)
    /// around the powers of two where f32 truncation decides the bucket.
    #[test]
    fn buckets_match_reference_at_boundaries() {
        let expected: &[(i64, u32)] = &[
            (0, 0),
            (1, 17),
            (-1, 1),
            (7, 23),
            (-7, 7),
            (8, 24),
            (-8, 8),
            (11, 24),
            (15, 25),
            (16, 26),
            (-16, 10),
            (17, 26),
            (23, 27),
            (31, 27),
            (32, 28),
            (-32, 12),
            (33, 28),
            (45, 28),
            (63, 29),
            (64, 30),
            (-64, 14),
            (65, 30),
            (90, 30),
            (127, 31),
            (128, 31),
            (-128, 15),
            (129, 31),
            (200, 31),
            (511, 31),
            (-511, 15),
        ];
        for &(rel, bucket) in expected {
            assert_eq!(relative_position_bucket(rel, 32, 128), bucket, "rel {rel}");
        }
    }

    #[test]
    fn wan_keys_map_to_release_names() {
        let stored: Vec<String> = [
            "token_embedding.weight",
            "blocks.0.attn.q.weight",
            "norm.weight",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let map = key_map_for(&stored).expect("Wan layout is detected");
        assert_eq!(map("shared.weight"), "token_embedding.weight");
        assert_eq!(
            map("encoder.block.3.layer.1.DenseReluDense.wi_0.weight"),
            "blocks.3.ffn.gate.0.weight"
        );
        assert_eq!(
            map("encoder.block.3.layer.1.DenseReluDense.wi_1.weight"),
            "blocks.3.ffn.fc1.weight"
        );
        assert_eq!(
            map("encoder.block.11.layer.0.SelfAttention.relative_attention_bias.weight"),
            "blocks.11.pos_embedding.embedding.weight"
        );
        assert_eq!(map("encoder.final_layer_norm.weight"), "norm.weight");
    }

    #[test]
    fn prefixed_hf_keys_are_detected() {
        let stored = vec![
            "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"
                .to_string(),
        ];
        let map = key_map_for(&stored).expect("prefix is detected");
        assert_eq!(
            map("shared.weight"),
            "text_encoders.t5xxl.transformer.shared.weight"
        );
        let plain = vec!["encoder.block.0.layer.0.SelfAttention.q.weight".to_string()];
        assert!(key_map_for(&plain).is_none());
    }
}
