//! The Wan 2.1 transformer: a DiT over 3D patches of the video latent with full
//! spatio-temporal self-attention (3D RoPE), cross-attention to the text embeddings and
//! adaLN modulation from the timestep, numerically equal to diffusers'
//! `WanTransformer3DModel` (0.42.1).
//!
//! Weights use the diffusers key names; `transformer_keys` maps the original Wan release
//! layout onto them. The model runs in the `VarBuilder`'s dtype, but the parts diffusers
//! keeps in float32 (`_keep_in_fp32_modules`: time embedder, modulation tables, the affine
//! cross-attention norm, RoPE) are loaded and evaluated in f32, and every norm, the
//! modulation and the gated residual adds are computed in f32, as the reference does.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::init::{Init, DEFAULT_KAIMING_NORMAL};
use candle_nn::{linear, Linear, VarBuilder};

use crate::kernel_linear::{kernel_linear, KernelLinear};
use serde::Deserialize;

/// `transformer/config.json` as diffusers' `WanTransformer3DModel` writes it. Absent fields
/// take diffusers' defaults (those of the 14B model).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    /// (t, h, w) patch of the latent that becomes one token.
    pub patch_size: [usize; 3],
    pub num_attention_heads: usize,
    pub attention_head_dim: usize,
    pub in_channels: usize,
    /// `null` means "same as `in_channels`", as in diffusers.
    pub out_channels: Option<usize>,
    /// Width of the text encoder's hidden states.
    pub text_dim: usize,
    /// Width of the sinusoidal timestep embedding.
    pub freq_dim: usize,
    pub ffn_dim: usize,
    pub num_layers: usize,
    /// Affine LayerNorm before cross-attention (identity when false).
    pub cross_attn_norm: bool,
    /// diffusers 0.42.1 applies RMS norm over the whole inner dim (all heads) to q and k
    /// whatever this says; kept to read the file.
    pub qk_norm: Option<String>,
    pub eps: f64,
    /// CLIP image feature width of the image-to-video models; `null` for text-to-video.
    pub image_dim: Option<usize>,
    /// Width of the extra image key/value projections of the image-to-video models.
    pub added_kv_proj_dim: Option<usize>,
    /// Number of positions in the RoPE tables, per axis.
    pub rope_max_seq_len: usize,
    /// Learned image position embedding of the first-last-frame models.
    pub pos_embed_seq_len: Option<usize>,
    /// kiln addition (not in diffusers): width of the camera-control vector fed to
    /// `condition_embedder.camera_embedder`, whose output is added to the time embedding.
    /// `null` (every downloaded checkpoint) builds no embedder. See docs/bundled-model.md.
    pub camera_dim: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            patch_size: [1, 2, 2],
            num_attention_heads: 40,
            attention_head_dim: 128,
            in_channels: 16,
            out_channels: Some(16),
            text_dim: 4096,
            freq_dim: 256,
            ffn_dim: 13824,
            num_layers: 40,
            cross_attn_norm: true,
            qk_norm: Some("rms_norm_across_heads".into()),
            eps: 1e-6,
            image_dim: None,
            added_kv_proj_dim: None,
            rope_max_seq_len: 1024,
            pos_embed_seq_len: None,
            camera_dim: None,
        }
    }
}

impl Config {
    /// Model width: heads times head dim.
    pub fn inner_dim(&self) -> usize {
        self.num_attention_heads * self.attention_head_dim
    }

    pub fn out_channels(&self) -> usize {
        match self.out_channels {
            Some(c) if c > 0 => c,
            _ => self.in_channels,
        }
    }

    /// Refuses the variants this model does not implement, and shapes it cannot run.
    pub fn validate(&self) -> Result<()> {
        if let Some(d) = self.image_dim {
            candle_core::bail!(
                "transformer config has image_dim = {d}: image-to-video transformers are not \
                 supported yet; use a text-to-video (T2V) checkpoint"
            )
        }
        if let Some(d) = self.added_kv_proj_dim {
            candle_core::bail!(
                "transformer config has added_kv_proj_dim = {d}: image-to-video transformers \
                 are not supported yet; use a text-to-video (T2V) checkpoint"
            )
        }
        if let Some(n) = self.pos_embed_seq_len {
            candle_core::bail!(
                "transformer config has pos_embed_seq_len = {n}: first-last-frame (FLF2V) \
                 transformers are not supported yet; use a text-to-video (T2V) checkpoint"
            )
        }
        if self.patch_size.contains(&0) {
            candle_core::bail!(
                "transformer config has patch_size {:?}; every entry must be > 0",
                self.patch_size
            )
        }
        if self.num_attention_heads == 0 || self.attention_head_dim == 0 || self.num_layers == 0 {
            candle_core::bail!(
                "transformer config has num_attention_heads = {}, attention_head_dim = {}, \
                 num_layers = {}; all must be > 0",
                self.num_attention_heads,
                self.attention_head_dim,
                self.num_layers
            )
        }
        if self.attention_head_dim % 2 == 1 {
            candle_core::bail!(
                "transformer config has attention_head_dim = {}; RoPE needs an even head dim",
                self.attention_head_dim
            )
        }
        Ok(())
    }
}

/// Attention of `q` (B, H, Lq, D) over `k`, `v` (B, H, Lk, D): softmax(q kᵀ / √D) v, in f32
/// whatever the input dtype (the reference's kernels accumulate in f32 too), returned in
/// `q`'s dtype. CPU f32/bf16 inference runs kiln-kernels' fused kernel (online softmax, no
/// score matrix); anything else (training, other devices or dtypes) the composite form with
/// queries in blocks, so the score matrix stays bounded on long videos.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    if kiln_kernels::attention::runs_fused(q, k, v) {
        // Takes non-contiguous inputs (it makes them contiguous itself).
        return kiln_kernels::attention::attention(q, k, v);
    }
    attention_in_blocks(q, k, v, None, SCORE_BUDGET)
}

/// Score elements per block of the composite attention: 64 Mi f32 = 256 MiB.
const SCORE_BUDGET: usize = 1 << 26;

/// Composite (differentiable) attention over blocks of queries; `key_bias` (Lk,) f32, when
/// given, is added to every query's logits (prompts whose padding is folded into one row,
/// see [`WanTransformer::forward_with_text_padding`]).
fn attention_in_blocks(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    key_bias: Option<&Tensor>,
    score_budget: usize,
) -> Result<Tensor> {
    let (b, h, lq, d) = q.dims4()?;
    let lk = k.dim(2)?;
    let dtype = q.dtype();
    let scale = 1.0 / (d as f64).sqrt();
    let q = q.to_dtype(DType::F32)?;
    let k_t = k.to_dtype(DType::F32)?.t()?;
    let v = v.to_dtype(DType::F32)?;
    let block = (score_budget / (b * h * lk).max(1)).clamp(1, lq.max(1));
    let mut outs = Vec::with_capacity(lq.div_ceil(block));
    let mut start = 0;
    while start < lq {
        let len = block.min(lq - start);
        let q_blk = q.narrow(2, start, len)?;
        let mut scores = (q_blk.matmul(&k_t)? * scale)?;
        if let Some(bias) = key_bias {
            scores = scores.broadcast_add(bias)?;
        }
        let probs = softmax_last_dim(&scores)?;
        outs.push(probs.matmul(&v)?);
        start += len;
    }
    let out = if outs.len() == 1 {
        outs.remove(0)
    } else {
        Tensor::cat(&outs, 2)?
    };
    out.to_dtype(dtype)
}

/// kiln addition for training: candle's fused softmax and RMS norm record no backward op,
/// so a graph that tracks gradients (weights from a `VarMap`) takes the composite forms,
/// which candle differentiates. Inference on loaded weights keeps the fused kernels.
fn softmax_last_dim(x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_nn::ops::softmax(x, D::Minus1)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

/// Weight and bias of an affine `FP32LayerNorm`, held in f32.
#[derive(Debug, Clone)]
struct AffineNorm {
    weight: Tensor,
    bias: Tensor,
}

impl AffineNorm {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.to_dtype(DType::F32);
        Ok(Self {
            weight: vb.get_with_hints(dim, "weight", Init::Const(1.))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.))?,
        })
    }
}

/// `torch.nn.RMSNorm` over the whole inner dim, evaluated in f32 and returned in the input dtype.
#[derive(Debug, Clone)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn new(dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let weight = vb
            .get_with_hints(dim, "weight", Init::Const(1.))?
            .to_dtype(DType::F32)?;
        Ok(Self {
            weight,
            eps: eps as f32,
        })
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // One fused pass for inference; the differentiable composite when training.
        kiln_kernels::candle_ops::rms_norm(x, &self.weight, f64::from(self.eps))
    }
}

/// Cos and sin tables of the 3D RoPE for one latent grid, each (tokens, head_dim / 2) in f32:
/// the head dim is split into a time part and two equal height/width parts, each rotated by
/// its own axis position.
#[derive(Debug, Clone)]
struct RotaryPosEmbed {
    /// Frequencies of the (t, h, w) parts, one per rotated pair, in f64 like the reference.
    freqs: [Vec<f64>; 3],
    max_seq_len: usize,
}

impl RotaryPosEmbed {
    const THETA: f64 = 10000.0;

    fn new(head_dim: usize, max_seq_len: usize) -> Self {
        let h_dim = 2 * (head_dim / 6);
        let t_dim = head_dim - 2 * h_dim;
        let axis_freqs = |dim: usize| -> Vec<f64> {
            (0..dim / 2)
                .map(|i| 1.0 / Self::THETA.powf((2 * i) as f64 / dim as f64))
                .collect()
        };
        Self {
            freqs: [axis_freqs(t_dim), axis_freqs(h_dim), axis_freqs(h_dim)],
            max_seq_len,
        }
    }

    /// Tables for a (frames, height, width) token grid, tokens in frame-major order.
    fn tables(&self, grid: [usize; 3], device: &Device) -> Result<(Tensor, Tensor)> {
        if let Some(&n) = grid.iter().find(|&&n| n > self.max_seq_len) {
            candle_core::bail!(
                "latent grid {grid:?} (tokens per axis) exceeds rope_max_seq_len = {}; \
                 generate fewer frames or a smaller size ({n} positions requested)",
                self.max_seq_len
            )
        }
        let half: usize = self.freqs.iter().map(Vec::len).sum();
        let tokens = grid.iter().product::<usize>();
        let mut cos = Vec::with_capacity(tokens * half);
        let mut sin = Vec::with_capacity(tokens * half);
        for f in 0..grid[0] {
            for h in 0..grid[1] {
                for w in 0..grid[2] {
                    for (pos, freqs) in [f, h, w].into_iter().zip(&self.freqs) {
                        for &freq in freqs {
                            let angle = pos as f64 * freq;
                            cos.push(angle.cos() as f32);
                            sin.push(angle.sin() as f32);
                        }
                    }
                }
            }
        }
        Ok((
            Tensor::from_vec(cos, (tokens, half), device)?,
            Tensor::from_vec(sin, (tokens, half), device)?,
        ))
    }
}

/// Interleaved-pair rotation of `x` (B, H, L, D) in f32, returned in `x`'s dtype.
fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    kiln_kernels::candle_ops::rope_interleaved(x, cos, sin)
}

/// `WanAttention` without the image branch: q/k/v projections, RMS norm of q and k across
/// heads, optional RoPE, attention, output projection.
#[derive(Debug, Clone)]
struct Attention {
    to_q: KernelLinear,
    to_k: KernelLinear,
    to_v: KernelLinear,
    to_out: KernelLinear,
    norm_q: RmsNorm,
    norm_k: RmsNorm,
    heads: usize,
}

impl Attention {
    fn new(dim: usize, heads: usize, head_dim: usize, eps: f64, vb: VarBuilder) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            to_q: kernel_linear(dim, inner, vb.pp("to_q"))?,
            to_k: kernel_linear(dim, inner, vb.pp("to_k"))?,
            to_v: kernel_linear(dim, inner, vb.pp("to_v"))?,
            to_out: kernel_linear(inner, dim, vb.pp("to_out.0"))?,
            norm_q: RmsNorm::new(inner, eps, vb.pp("norm_q"))?,
            norm_k: RmsNorm::new(inner, eps, vb.pp("norm_k"))?,
            heads,
        })
    }

    /// (B, L, inner) -> (B, heads, L, head_dim)
    fn split_heads(&self, x: &Tensor) -> Result<Tensor> {
        let (b, l, inner) = x.dims3()?;
        x.reshape((b, l, self.heads, inner / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Self-attention when `context` is None, else cross-attention to `context`, whose
    /// keys' logits get `key_bias` when given.
    fn forward(
        &self,
        x: &Tensor,
        context: Option<&Tensor>,
        rope: Option<&(Tensor, Tensor)>,
        key_bias: Option<&Tensor>,
    ) -> Result<Tensor> {
        let context = context.unwrap_or(x);
        let q = self.split_heads(&self.norm_q.forward(&self.to_q.forward(x)?)?)?;
        let k = self.split_heads(&self.norm_k.forward(&self.to_k.forward(context)?)?)?;
        let v = self.split_heads(&self.to_v.forward(context)?)?;
        let (q, k) = match rope {
            Some((cos, sin)) => (apply_rope(&q, cos, sin)?, apply_rope(&k, cos, sin)?),
            None => (q, k),
        };
        let out = match key_bias {
            Some(bias) => attention_in_blocks(&q, &k, &v, Some(bias), SCORE_BUDGET)?,
            None => attention(&q, &k, &v)?,
        };
        let (b, h, l, d) = out.dims4()?;
        let out = out.transpose(1, 2)?.reshape((b, l, h * d))?;
        self.to_out.forward(&out)
    }
}

/// Two-layer MLP with tanh-approximated GELU (`FeedForward`, "gelu-approximate").
#[derive(Debug, Clone)]
struct FeedForward {
    proj_in: KernelLinear,
    proj_out: KernelLinear,
}

impl FeedForward {
    fn new(dim: usize, hidden: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            proj_in: kernel_linear(dim, hidden, vb.pp("net.0.proj"))?,
            proj_out: kernel_linear(hidden, dim, vb.pp("net.2"))?,
        })
    }
}

impl Module for FeedForward {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.proj_out.forward(&self.proj_in.forward_gelu_tanh(x)?)
    }
}

/// One DiT block: modulated self-attention, cross-attention, modulated FFN.
#[derive(Debug, Clone)]
struct TransformerBlock {
    attn1: Attention,
    attn2: Attention,
    norm2: Option<AffineNorm>,
    ffn: FeedForward,
    /// (1, 6, dim) f32: learned offsets of shift/scale/gate for attention and FFN.
    scale_shift_table: Tensor,
    eps: f64,
}

impl TransformerBlock {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let (heads, head_dim) = (cfg.num_attention_heads, cfg.attention_head_dim);
        let norm2 = if cfg.cross_attn_norm {
            Some(AffineNorm::new(dim, vb.pp("norm2"))?)
        } else {
            None
        };
        Ok(Self {
            attn1: Attention::new(dim, heads, head_dim, cfg.eps, vb.pp("attn1"))?,
            attn2: Attention::new(dim, heads, head_dim, cfg.eps, vb.pp("attn2"))?,
            norm2,
            ffn: FeedForward::new(dim, cfg.ffn_dim, vb.pp("ffn"))?,
            scale_shift_table: modulation_table(6, dim, &vb)?,
            eps: cfg.eps,
        })
    }

    /// `x` (B, L, dim), `context` (B, Lt, dim) with an optional per-key logit bias (Lt,),
    /// `temb` (B, 6, dim) f32.
    fn forward(
        &self,
        x: &Tensor,
        context: &Tensor,
        context_bias: Option<&Tensor>,
        temb: &Tensor,
        rope: &(Tensor, Tensor),
    ) -> Result<Tensor> {
        let m = self.scale_shift_table.broadcast_add(temb)?.chunk(6, 1)?;
        let (shift_msa, scale_msa, gate_msa) = (&m[0], &m[1], &m[2]);
        let (c_shift_msa, c_scale_msa, c_gate_msa) = (&m[3], &m[4], &m[5]);

        // 1. Self-attention; modulation and the gated residual in f32.
        let h = adaln(x, shift_msa, scale_msa, self.eps)?;
        let attn = self.attn1.forward(&h, None, Some(rope), None)?;
        let x = gated_residual(x, &attn, gate_msa)?;

        // 2. Cross-attention; plain residual in the model dtype, as in the reference.
        let h = match &self.norm2 {
            Some(norm) => kiln_kernels::candle_ops::layer_norm_affine(
                &x,
                &norm.weight.reshape((1, 1, ()))?,
                &norm.bias.reshape((1, 1, ()))?,
                self.eps,
            )?,
            None => x.clone(),
        };
        let x = (&x + self.attn2.forward(&h, Some(context), None, context_bias)?)?;

        // 3. Feed-forward.
        let h = adaln(&x, c_shift_msa, c_scale_msa, self.eps)?;
        let ff = self.ffn.forward(&h)?;
        gated_residual(&x, &ff, c_gate_msa)
    }
}

/// SiLU evaluated in f32.
fn silu(x: &Tensor) -> Result<Tensor> {
    x.to_dtype(DType::F32)?.silu()?.to_dtype(x.dtype())
}

/// A (1, rows, dim) `scale_shift_table`, held in f32. The init hints here and elsewhere are
/// diffusers' initialisation; they matter only when the model is built from a `VarMap`.
fn modulation_table(rows: usize, dim: usize, vb: &VarBuilder) -> Result<Tensor> {
    let init = Init::Randn {
        mean: 0.,
        stdev: 1. / (dim as f64).sqrt(),
    };
    vb.to_dtype(DType::F32)
        .get_with_hints((1, rows, dim), "scale_shift_table", init)
}

/// adaLN: `LayerNorm(x) * (1 + scale) + shift` computed in f32 and returned in `x`'s dtype
/// (one fused pass on CPU inference).
fn adaln(x: &Tensor, shift: &Tensor, scale: &Tensor, eps: f64) -> Result<Tensor> {
    kiln_kernels::candle_ops::layer_norm_affine(x, &(scale + 1.0)?, shift, eps)
}

/// `x + y * gate` computed in f32 and returned in `x`'s dtype.
fn gated_residual(x: &Tensor, y: &Tensor, gate: &Tensor) -> Result<Tensor> {
    kiln_kernels::candle_ops::gated_residual(x, y, gate)
}

/// Timestep MLP (`TimestepEmbedding`, kept in f32 by diffusers), its projection to the six
/// modulation vectors, and the text projection (`PixArtAlphaTextProjection`).
#[derive(Debug, Clone)]
struct ConditionEmbedder {
    freq_dim: usize,
    time_linear_1: KernelLinear,
    time_linear_2: KernelLinear,
    time_proj: KernelLinear,
    text_linear_1: KernelLinear,
    text_linear_2: KernelLinear,
    /// kiln addition: camera vector -> time-embedding offset (see `Config::camera_dim`).
    camera_embedder: Option<CameraEmbedder>,
}

/// kiln addition: `linear_1` (camera_dim -> dim), SiLU, `linear_2` (dim -> dim), in f32 like
/// the time embedder. `linear_2` starts at zero so a fresh embedder changes nothing.
#[derive(Debug, Clone)]
struct CameraEmbedder {
    linear_1: Linear,
    linear_2: Linear,
    camera_dim: usize,
}

impl CameraEmbedder {
    fn new(camera_dim: usize, dim: usize, vb: VarBuilder) -> Result<Self> {
        let vb = vb.to_dtype(DType::F32);
        let zero = Init::Const(0.);
        let linear_2 = Linear::new(
            vb.get_with_hints((dim, dim), "linear_2.weight", zero)?,
            Some(vb.get_with_hints(dim, "linear_2.bias", zero)?),
        );
        Ok(Self {
            linear_1: linear(camera_dim, dim, vb.pp("linear_1"))?,
            linear_2,
            camera_dim,
        })
    }

    /// `camera` (B, camera_dim) or (1, camera_dim) -> (B', dim) f32.
    fn forward(&self, camera: &Tensor) -> Result<Tensor> {
        let h = silu(&self.linear_1.forward(&camera.to_dtype(DType::F32)?)?)?;
        self.linear_2.forward(&h)
    }
}

impl ConditionEmbedder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.inner_dim();
        let time_vb = vb.pp("time_embedder").to_dtype(DType::F32);
        Ok(Self {
            freq_dim: cfg.freq_dim,
            time_linear_1: kernel_linear(cfg.freq_dim, dim, time_vb.pp("linear_1"))?,
            time_linear_2: kernel_linear(dim, dim, time_vb.pp("linear_2"))?,
            time_proj: kernel_linear(dim, 6 * dim, vb.pp("time_proj"))?,
            text_linear_1: kernel_linear(cfg.text_dim, dim, vb.pp("text_embedder.linear_1"))?,
            text_linear_2: kernel_linear(dim, dim, vb.pp("text_embedder.linear_2"))?,
            camera_embedder: cfg
                .camera_dim
                .map(|c| CameraEmbedder::new(c, dim, vb.pp("camera_embedder")))
                .transpose()?,
        })
    }

    /// Sinusoidal embedding of `t` (B,) as `Timesteps(freq_dim, flip_sin_to_cos=True,
    /// downscale_freq_shift=0)`: [cos(t·f), sin(t·f)] with f_i = exp(-ln(10000)·i/half), f32.
    fn sinusoidal(&self, t: &Tensor) -> Result<Tensor> {
        let half = self.freq_dim / 2;
        let log_period = -(10000f64.ln() as f32);
        let freqs: Vec<f32> = (0..half)
            .map(|i| (log_period * i as f32 / half as f32).exp())
            .collect();
        let freqs = Tensor::from_vec(freqs, (1, half), t.device())?;
        let args = t
            .to_dtype(DType::F32)?
            .unsqueeze(1)?
            .broadcast_mul(&freqs)?;
        let mut parts = vec![args.cos()?, args.sin()?];
        if self.freq_dim % 2 == 1 {
            parts.push(Tensor::zeros((args.dim(0)?, 1), DType::F32, t.device())?);
        }
        Tensor::cat(&parts, 1)
    }

    /// Returns temb (B, dim), modulation (B, 6, dim) and context (B, Lt, dim), all in `dtype`:
    /// the timestep MLP runs in f32 and its output is cast, as in the reference.
    fn forward(
        &self,
        t: &Tensor,
        text: &Tensor,
        camera: Option<&Tensor>,
        dtype: DType,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        let temb = self.sinusoidal(t)?;
        let mut temb = self
            .time_linear_2
            .forward(&silu(&self.time_linear_1.forward(&temb)?)?)?;
        // kiln addition: a missing camera is the zero vector ("no camera control").
        if let Some(embedder) = &self.camera_embedder {
            let camera = match camera {
                Some(c) => c.clone(),
                None => Tensor::zeros((1, embedder.camera_dim), DType::F32, t.device())?,
            };
            temb = temb.broadcast_add(&embedder.forward(&camera)?)?;
        }
        let temb = temb.to_dtype(dtype)?;
        let modulation = self.time_proj.forward(&silu(&temb)?)?;
        let (b, six_dim) = modulation.dims2()?;
        let modulation = modulation.reshape((b, 6, six_dim / 6))?;
        let context = self.text_linear_1.forward_gelu_tanh(text)?;
        let context = self.text_linear_2.forward(&context)?;
        Ok((temb, modulation, context))
    }
}

/// Conv3d with kernel = stride = patch, written as a reshape and a matmul.
#[derive(Debug, Clone)]
struct PatchEmbedding {
    /// (dim, C·pt·ph·pw)
    weight: Tensor,
    bias: Tensor,
    patch: [usize; 3],
}

impl PatchEmbedding {
    fn new(in_channels: usize, dim: usize, patch: [usize; 3], vb: VarBuilder) -> Result<Self> {
        let [pt, ph, pw] = patch;
        let weight = vb.get_with_hints(
            (dim, in_channels, pt, ph, pw),
            "weight",
            DEFAULT_KAIMING_NORMAL,
        )?;
        Ok(Self {
            weight: weight.reshape((dim, in_channels * pt * ph * pw))?,
            bias: vb.get_with_hints(dim, "bias", Init::Const(0.))?,
            patch,
        })
    }

    /// (B, C, F, H, W) -> (B, F'·H'·W', dim), tokens in frame-major order.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, f, h, w) = x.dims5()?;
        let [pt, ph, pw] = self.patch;
        let (gf, gh, gw) = (f / pt, h / ph, w / pw);
        let patches = x
            .reshape(vec![b, c, gf, pt, gh, ph, gw, pw])?
            .permute([0, 2, 4, 6, 1, 3, 5, 7])?
            .reshape((b, gf * gh * gw, c * pt * ph * pw))?;
        patches
            .broadcast_matmul(&self.weight.t()?)?
            .broadcast_add(&self.bias)
    }
}

/// diffusers' `WanTransformer3DModel` for text-to-video.
#[derive(Debug, Clone)]
pub struct WanTransformer {
    patch_embedding: PatchEmbedding,
    rope: RotaryPosEmbed,
    condition_embedder: ConditionEmbedder,
    blocks: Vec<TransformerBlock>,
    proj_out: KernelLinear,
    /// (1, 2, dim) f32: learned offsets of the output shift and scale.
    scale_shift_table: Tensor,
    config: Config,
    dtype: DType,
}

impl WanTransformer {
    /// Builds the model from diffusers-named weights. Runs in `vb`'s dtype; the f32 parts are
    /// read in f32 whatever that dtype is.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let dim = cfg.inner_dim();
        let [pt, ph, pw] = cfg.patch_size;
        let blocks = (0..cfg.num_layers)
            .map(|i| TransformerBlock::new(cfg, vb.pp("blocks").pp(i)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            patch_embedding: PatchEmbedding::new(
                cfg.in_channels,
                dim,
                cfg.patch_size,
                vb.pp("patch_embedding"),
            )?,
            rope: RotaryPosEmbed::new(cfg.attention_head_dim, cfg.rope_max_seq_len),
            condition_embedder: ConditionEmbedder::new(cfg, vb.pp("condition_embedder"))?,
            blocks,
            proj_out: kernel_linear(dim, cfg.out_channels() * pt * ph * pw, vb.pp("proj_out"))?,
            scale_shift_table: modulation_table(2, dim, &vb)?,
            config: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dtype the model runs (and returns) in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Predicts the flow for latents `hidden_states` (B, C, F, H, W) at `timestep` (B,) (or
    /// (1,), shared by the batch) given text embeddings `encoder_hidden_states`
    /// (B, L, text_dim). F, H and W must be multiples of the patch size. Inputs are cast to
    /// the model dtype; the output (B, out_channels, F, H, W) is in the model dtype.
    pub fn forward(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_camera(hidden_states, timestep, encoder_hidden_states, None)
    }

    /// kiln addition: [`Self::forward`] with a camera-control vector (B or 1, camera_dim)
    /// for models whose config sets `camera_dim`; ignored by models without it.
    pub fn forward_with_camera(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        camera: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_inner(hidden_states, timestep, encoder_hidden_states, None, camera)
    }

    /// kiln addition: [`Self::forward_with_camera`] for prompt embeddings `text` (B, L,
    /// text_dim) that stand for the same embeddings zero-padded to `padded_len` rows, as
    /// the pipeline passes them (512). The zero rows all embed to one key and one value, so
    /// attending to them equals attending to one such row with its logit raised by
    /// ln(padded_len − L): one row instead of hundreds, the same result up to rounding.
    /// Training uses it; cross-attention over the padding was about 40% of the bundled
    /// transformer's work.
    pub fn forward_with_text_padding(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        text: &Tensor,
        padded_len: usize,
        camera: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, l, d) = text.dims3()?;
        if padded_len < l {
            candle_core::bail!("prompt embeddings have {l} rows, more than padded_len {padded_len}")
        }
        if padded_len == l {
            return self.forward_with_camera(hidden_states, timestep, text, camera);
        }
        let zero_row = Tensor::zeros((b, 1, d), text.dtype(), text.device())?;
        let text = Tensor::cat(&[text, &zero_row], 1)?;
        let mut bias = vec![0f32; l + 1];
        bias[l] = ((padded_len - l) as f32).ln();
        let bias = Tensor::from_vec(bias, l + 1, text.device())?;
        self.forward_inner(hidden_states, timestep, &text, Some(&bias), camera)
    }

    fn forward_inner(
        &self,
        hidden_states: &Tensor,
        timestep: &Tensor,
        encoder_hidden_states: &Tensor,
        context_bias: Option<&Tensor>,
        camera: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (b, c, f, h, w) = hidden_states.dims5()?;
        let [pt, ph, pw] = self.config.patch_size;
        if c != self.config.in_channels || f % pt != 0 || h % ph != 0 || w % pw != 0 {
            candle_core::bail!(
                "transformer input has shape {:?}; expected {} channels and frames/height/width \
                 divisible by the patch size {:?}",
                hidden_states.dims(),
                self.config.in_channels,
                self.config.patch_size
            )
        }
        if timestep.rank() != 1 {
            candle_core::bail!(
                "timestep has shape {:?}; expected (batch,) (per-token timesteps of Wan 2.2 \
                 TI2V are not supported yet)",
                timestep.dims()
            )
        }
        let grid = [f / pt, h / ph, w / pw];
        let rope = self.rope.tables(grid, hidden_states.device())?;

        let mut x = self
            .patch_embedding
            .forward(&hidden_states.to_dtype(self.dtype)?)?;
        let text = encoder_hidden_states.to_dtype(self.dtype)?;
        let (temb, modulation, context) = self
            .condition_embedder
            .forward(timestep, &text, camera, self.dtype)?;
        let modulation = modulation.to_dtype(DType::F32)?;

        for block in &self.blocks {
            x = block.forward(&x, &context, context_bias, &modulation, &rope)?;
        }

        // Output norm and modulation in f32, projection in the model dtype.
        let m = self
            .scale_shift_table
            .broadcast_add(&temb.to_dtype(DType::F32)?.unsqueeze(1)?)?
            .chunk(2, 1)?;
        let x = adaln(&x, &m[0], &m[1], self.config.eps)?;
        let x = self.proj_out.forward(&x)?;

        // Unpatchify: (B, F'H'W', pt·ph·pw·out) -> (B, out, F, H, W).
        let out = self.config.out_channels();
        let [gf, gh, gw] = grid;
        x.reshape(vec![b, gf, gh, gw, pt, ph, pw, out])?
            .permute([0, 7, 1, 4, 2, 5, 3, 6])?
            .reshape((b, out, f, h, w))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_and_refusals() {
        let cfg: Config = serde_json::from_str(
            r#"{"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2],
                "num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960,
                "num_layers": 30, "image_dim": null, "added_kv_proj_dim": null}"#,
        )
        .expect("valid config");
        assert_eq!(cfg.inner_dim(), 1536);
        assert_eq!(cfg.out_channels(), 16);
        assert_eq!(cfg.rope_max_seq_len, 1024);
        assert!(cfg.validate().is_ok());

        let i2v: Config = serde_json::from_str(r#"{"image_dim": 1280, "added_kv_proj_dim": 5120}"#)
            .expect("valid config");
        let err = i2v.validate().expect_err("i2v must be refused").to_string();
        assert!(
            err.contains("image-to-video transformers are not supported yet"),
            "{err}"
        );
    }

    /// Two layers of two 12-wide heads over 8-wide text: small enough for exact checks.
    fn small_config() -> Config {
        Config {
            num_attention_heads: 2,
            attention_head_dim: 12,
            text_dim: 8,
            freq_dim: 16,
            ffn_dim: 32,
            num_layers: 2,
            ..Config::default()
        }
    }

    #[test]
    fn builds_from_a_varmap_with_random_weights() {
        let cfg = small_config();
        let dev = Device::Cpu;
        for dtype in [DType::F32, DType::BF16] {
            let varmap = candle_nn::VarMap::new();
            let vb = VarBuilder::from_varmap(&varmap, dtype, &dev);
            let model = WanTransformer::new(&cfg, vb).expect("model");
            let x = Tensor::randn(0f32, 1., (1, 16, 2, 4, 6), &dev).expect("x");
            let t = Tensor::new(&[500f32], &dev).expect("t");
            let text = Tensor::randn(0f32, 1., (1, 5, 8), &dev).expect("text");
            let y = model.forward(&x, &t, &text).expect("forward");
            assert_eq!(y.dims(), [1, 16, 2, 4, 6]);
            assert_eq!(y.dtype(), dtype);
        }
    }

    /// Folding the zero padding of the prompt into one row with a logit bias gives the
    /// output and the gradients of every weight of attending to all padded rows.
    #[test]
    fn folded_text_padding_matches_padded_rows() {
        let cfg = Config {
            cross_attn_norm: true,
            ..small_config()
        };
        let dev = Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let model = WanTransformer::new(&cfg, vb).expect("model");
        // The zero init of some output weights would hide the text from the loss.
        for var in varmap.all_vars() {
            let noise = Tensor::randn(0f32, 0.2, var.shape(), &dev).unwrap();
            var.set(&(var.as_tensor() + noise).unwrap()).unwrap();
        }
        let x = Tensor::randn(0f32, 1., (2, 16, 2, 4, 6), &dev).unwrap();
        let t = Tensor::new(&[500f32, 20.], &dev).unwrap();
        // Two prompts of 5 rows, the second with its last two rows zeroed (a shorter prompt).
        let text = Tensor::randn(0f32, 1., (2, 5, 8), &dev).unwrap();
        let keep = Tensor::new(&[[1f32, 1., 1., 1., 1.], [1., 1., 1., 0., 0.]], &dev)
            .unwrap()
            .unsqueeze(2)
            .unwrap();
        let text = text.broadcast_mul(&keep).unwrap();
        let padded = Tensor::cat(
            &[&text, &Tensor::zeros((2, 59, 8), DType::F32, &dev).unwrap()],
            1,
        )
        .unwrap();
        let target = Tensor::randn(0f32, 1., (2, 16, 2, 4, 6), &dev).unwrap();
        let loss = |y: &Tensor| (y - &target).unwrap().sqr().unwrap().mean_all().unwrap();
        let full = model.forward(&x, &t, &padded).unwrap();
        let folded = model
            .forward_with_text_padding(&x, &t, &text, 64, None)
            .unwrap();
        let max_abs =
            |t: &Tensor| -> f32 { t.abs().unwrap().max_all().unwrap().to_scalar().unwrap() };
        let max_diff = |a: &Tensor, b: &Tensor| max_abs(&(a - b).unwrap());
        let scale = max_abs(&full);
        assert!(max_diff(&full, &folded) < 1e-5 * scale.max(1.0));
        let (g_full, g_folded) = (
            loss(&full).backward().unwrap(),
            loss(&folded).backward().unwrap(),
        );
        let mut checked = 0;
        for var in varmap.all_vars() {
            let (a, b) = (g_full.get(var.as_tensor()), g_folded.get(var.as_tensor()));
            let (a, b) = (a.expect("gradient"), b.expect("gradient"));
            let size = max_abs(a);
            assert!(max_diff(a, b) <= 1e-4 * size.max(1e-3), "{:?}", var.shape());
            checked += 1;
        }
        assert!(checked > 20);
        // A padded length shorter than the prompt is refused.
        assert!(model
            .forward_with_text_padding(&x, &t, &text, 4, None)
            .is_err());
    }

    #[test]
    fn rope_split_matches_reference() {
        // head_dim 128 -> t 44, h 42, w 42 (pairs 22, 21, 21).
        let rope = RotaryPosEmbed::new(128, 1024);
        assert_eq!(
            rope.freqs.iter().map(Vec::len).collect::<Vec<_>>(),
            [22, 21, 21]
        );
        let (cos, sin) = rope.tables([2, 3, 4], &Device::Cpu).expect("tables");
        assert_eq!(cos.dims(), [24, 64]);
        assert_eq!(sin.dims(), [24, 64]);
        // Token (f=1, h=2, w=3) is the last one; its first t pair rotates by angle 1.
        let row: Vec<f32> = cos.get(23).and_then(|r| r.to_vec1()).expect("row");
        assert!((row[0] - 1f32.cos()).abs() < 1e-7);
        assert!((row[22] - 2f32.cos()).abs() < 1e-7);
        assert!((row[43] - 3f32.cos()).abs() < 1e-7);
    }

    #[test]
    fn attention_blocks_agree_with_one_shot() {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1., (1, 2, 5, 4), &dev).expect("q");
        let k = Tensor::randn(0f32, 1., (1, 2, 7, 4), &dev).expect("k");
        let v = Tensor::randn(0f32, 1., (1, 2, 7, 4), &dev).expect("v");
        let out = attention_in_blocks(&q, &k, &v, None, 2 * 2 * 7 * 2).expect("attention");
        let scores = (q.matmul(&k.t().expect("t")).expect("mm") * 0.5).expect("scale");
        let probs = candle_nn::ops::softmax(&scores, D::Minus1).expect("softmax");
        let want = probs.matmul(&v).expect("mm");
        let diff: f32 = (out - want)
            .and_then(|d| d.abs())
            .and_then(|d| d.max_all())
            .and_then(|d| d.to_scalar())
            .expect("diff");
        assert!(diff < 1e-6, "{diff}");
    }
}
