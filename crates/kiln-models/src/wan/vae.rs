//! The Wan 2.1 3D causal VAE, as diffusers' `AutoencoderKLWan` computes it.
//!
//! The video is processed causally in time: the encoder sees the first frame alone and then
//! chunks of four frames, the decoder one latent frame at a time. Every temporal convolution
//! keeps the last [`CACHE_T`] frames of its input from the previous chunk and pads with them
//! instead of zeros, so chunked processing equals one causal pass over the whole clip.
//!
//! Activations are kept frame-major, `(B, T, C, H, W)`, so that a frame range is a slice and a
//! batch of frames is a plain conv2d batch; the public API takes and returns diffusers'
//! `(B, C, T, H, W)`.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::VarBuilder;
use kiln_kernels::candle_ops::WinogradConv;
use serde::Deserialize;
use std::sync::Arc;

/// Frames of input each temporal convolution keeps for the next chunk (diffusers `CACHE_T`).
pub const CACHE_T: usize = 2;

/// Frames per encoder chunk after the first frame (diffusers' `_encode` loop).
const ENCODE_CHUNK: usize = 4;

/// `vae/config.json` as diffusers' `AutoencoderKLWan` writes it. Missing fields take the
/// Wan 2.1 defaults of diffusers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct Config {
    pub base_dim: usize,
    pub decoder_base_dim: Option<usize>,
    pub z_dim: usize,
    pub dim_mult: Vec<usize>,
    pub num_res_blocks: usize,
    pub attn_scales: Vec<f64>,
    /// Spelling as in diffusers.
    pub temperal_downsample: Vec<bool>,
    pub dropout: f64,
    pub latents_mean: Vec<f64>,
    pub latents_std: Vec<f64>,
    /// Wan 2.2: residual down/up blocks with average shortcuts.
    pub is_residual: bool,
    pub in_channels: usize,
    pub out_channels: usize,
    /// Wan 2.2: pixel patchify before the encoder.
    pub patch_size: Option<usize>,
    pub scale_factor_temporal: Option<usize>,
    pub scale_factor_spatial: Option<usize>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            base_dim: 96,
            decoder_base_dim: None,
            z_dim: 16,
            dim_mult: vec![1, 2, 4, 4],
            num_res_blocks: 2,
            attn_scales: vec![],
            temperal_downsample: vec![false, true, true],
            dropout: 0.0,
            latents_mean: vec![
                -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508, 0.4134,
                -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
            ],
            latents_std: vec![
                2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743, 3.2687, 2.1526,
                2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
            ],
            is_residual: false,
            in_channels: 3,
            out_channels: 3,
            patch_size: None,
            scale_factor_temporal: Some(4),
            scale_factor_spatial: Some(8),
        }
    }
}

impl Config {
    /// Refuses what this implementation does not compute, with the reason.
    pub fn validate(&self) -> Result<()> {
        let wan22 = self.is_residual
            || self.patch_size.is_some_and(|p| p != 1)
            || self.in_channels != 3
            || self.out_channels != 3;
        if wan22 {
            return Err(config_error(format!(
                "Wan 2.2 VAE is not supported yet (is_residual={}, patch_size={:?}, in_channels={}, out_channels={}); use a Wan 2.1 VAE (is_residual=false, patch_size=null, 3 channels)",
                self.is_residual, self.patch_size, self.in_channels, self.out_channels
            )));
        }
        if !self.attn_scales.is_empty() {
            return Err(config_error(format!(
                "attn_scales {:?} is not supported (every Wan 2.1 VAE has attn_scales=[]); use the config.json that ships with the checkpoint",
                self.attn_scales
            )));
        }
        if self.dim_mult.is_empty() || self.dim_mult.contains(&0) {
            return Err(config_error(format!(
                "dim_mult {:?} must be non-empty and positive",
                self.dim_mult
            )));
        }
        if self.temperal_downsample.len() + 1 < self.dim_mult.len() {
            return Err(config_error(format!(
                "temperal_downsample {:?} needs at least {} entries for dim_mult {:?}",
                self.temperal_downsample,
                self.dim_mult.len() - 1,
                self.dim_mult
            )));
        }
        if self.base_dim == 0 || self.decoder_base_dim == Some(0) || self.z_dim == 0 {
            return Err(config_error(
                "base_dim, decoder_base_dim and z_dim must be positive".to_string(),
            ));
        }
        if self.latents_mean.len() != self.z_dim || self.latents_std.len() != self.z_dim {
            return Err(config_error(format!(
                "latents_mean has {} and latents_std {} entries, expected z_dim = {}",
                self.latents_mean.len(),
                self.latents_std.len(),
                self.z_dim
            )));
        }
        if self.latents_std.contains(&0.0) {
            return Err(config_error("latents_std contains 0".to_string()));
        }
        Ok(())
    }

    /// Pixels per latent pixel along height and width.
    pub fn spatial_compression(&self) -> usize {
        1 << self.dim_mult.len().saturating_sub(1)
    }

    /// Frames per latent frame (after the first frame, which has its own latent frame).
    pub fn temporal_compression(&self) -> usize {
        let levels = self.dim_mult.len().saturating_sub(1);
        let temporal = self.temperal_downsample.iter().take(levels);
        1 << temporal.filter(|&&t| t).count()
    }

    fn decoder_dim(&self) -> usize {
        self.decoder_base_dim.unwrap_or(self.base_dim)
    }
}

fn config_error(message: String) -> candle_core::Error {
    candle_core::Error::Msg(format!("Wan VAE config: {message}"))
}

/// What a causal layer remembers from the previous chunk.
#[derive(Debug, Clone)]
enum CacheSlot {
    /// First chunk: nothing seen yet.
    Empty,
    /// diffusers' `"Rep"`: an upsample3d layer has passed its first chunk through without
    /// temporal upsampling; later chunks pad with zeros as if nothing were cached.
    Repeat,
    /// The last frames of the layer's input, frame-major.
    Frames(Tensor),
}

/// The per-layer caches of one encode or decode call, visited in a fixed layer order per
/// chunk (diffusers' `feat_cache` with `feat_idx`).
struct FeatureCache {
    slots: Vec<CacheSlot>,
    cursor: usize,
}

impl FeatureCache {
    fn new() -> Self {
        Self {
            slots: Vec::new(),
            cursor: 0,
        }
    }

    fn start_chunk(&mut self) {
        self.cursor = 0;
    }

    fn next_slot(&mut self) -> &mut CacheSlot {
        if self.cursor == self.slots.len() {
            self.slots.push(CacheSlot::Empty);
        }
        self.cursor += 1;
        &mut self.slots[self.cursor - 1]
    }
}

/// The last `CACHE_T` frames of `x` (frame-major); when `x` is shorter, the previous cache's
/// last frame fills the front.
fn frames_to_cache(x: &Tensor, previous: Option<&Tensor>) -> Result<Tensor> {
    let t = x.dim(1)?;
    let tail = x.narrow(1, t.saturating_sub(CACHE_T), t.min(CACHE_T))?;
    match previous {
        Some(prev) if tail.dim(1)? < CACHE_T => {
            let last = prev.narrow(1, prev.dim(1)? - 1, 1)?;
            Tensor::cat(&[&last, &tail], 1)
        }
        _ => Ok(tail),
    }
}

/// Tiles of a [`WanVae::decode_tiled`], in output pixels; diffusers' defaults are 256 and 192.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeTiling {
    pub size: usize,
    pub stride: usize,
}

impl Default for DecodeTiling {
    fn default() -> Self {
        Self {
            size: 256,
            stride: 192,
        }
    }
}

/// `b` with its first `extent` rows (or columns) along `dim` faded in from the last `extent`
/// of `a`: `a·(1 − y/extent) + b·(y/extent)` at offset `y` (diffusers' `blend_v`/`blend_h`).
fn blend_into(a: &Tensor, b: &Tensor, dim: usize, extent: usize) -> Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let ramp: Vec<f32> = (0..extent).map(|y| y as f32 / extent as f32).collect();
    let mut shape = vec![1usize; b.rank()];
    shape[dim] = extent;
    let ramp = Tensor::from_vec(ramp, shape, b.device())?.to_dtype(b.dtype())?;
    let a_tail = a.narrow(dim, a.dim(dim)? - extent, extent)?;
    // The other axis may differ in length at the frame's edge: blend over the common part.
    let other = if dim == 3 { 4 } else { 3 };
    let common = a_tail.dim(other)?.min(b.dim(other)?);
    let a_tail = a_tail.narrow(other, 0, common)?;
    let b_head = b.narrow(dim, 0, extent)?;
    let b_head_common = b_head.narrow(other, 0, common)?;
    let mixed = (a_tail.broadcast_mul(&(1.0 - &ramp)?)? + b_head_common.broadcast_mul(&ramp)?)?;
    let head = if common < b_head.dim(other)? {
        Tensor::cat(
            &[
                mixed,
                b_head.narrow(other, common, b_head.dim(other)? - common)?,
            ],
            other,
        )?
    } else {
        mixed
    };
    let rest = b.dim(dim)? - extent;
    if rest == 0 {
        Ok(head)
    } else {
        Tensor::cat(&[head, b.narrow(dim, extent, rest)?], dim)
    }
}

/// `(B, T, C, H, W)` -> `(B*T, C, H, W)`.
fn frames_as_batch(x: &Tensor) -> Result<Tensor> {
    let (b, t, c, h, w) = x.dims5()?;
    x.reshape((b * t, c, h, w))
}

/// Above this many column elements (256 MB in f32) an inference convolution takes the
/// per-tap conv2d path instead of materialising its im2col columns (full-size Wan decodes).
const MAX_COLUMN_ELEMENTS: usize = 1 << 26;

/// Rows `start, start + stride, ...` (`len` of them) of dimension `dim`, past the end read as
/// zeros: a strided slice built from a narrow and a reshape, so its backward is a copy.
fn strided_narrow(
    x: &Tensor,
    dim: usize,
    start: usize,
    len: usize,
    stride: usize,
) -> Result<Tensor> {
    if stride == 1 {
        return x.narrow(dim, start, len);
    }
    let need = stride * len;
    let avail = x.dim(dim)?.saturating_sub(start).min(need);
    let mut xs = x.narrow(dim, start, avail)?;
    if avail < need {
        xs = xs.pad_with_zeros(dim, 0, need - avail)?;
    }
    let mut shape = xs.dims().to_vec();
    shape[dim] = len;
    shape.insert(dim + 1, stride);
    xs.reshape(shape)?.narrow(dim + 1, 0, 1)?.squeeze(dim + 1)
}

/// A convolution of already padded frames `x` `(B, T, C, H, W)` as one matmul: each kernel
/// tap is a strided view of `x`; stacked along channels they are the im2col columns, and
/// `weight` `(O, kt·kh·kw·C)` (taps outer, channels inner) multiplies them. Its backward is
/// matmuls and copies — candle's CPU conv backward is a direct transposed convolution that
/// made VAE training impractical. Returns f32 `(B, T', O, H', W')` without bias.
fn conv_as_matmul(
    x: &Tensor,
    weight: &Tensor,
    kernel: (usize, usize, usize),
    stride: (usize, usize),
) -> Result<Tensor> {
    let (b, t, c, h, w) = x.dims5()?;
    let (kt, kh, kw) = kernel;
    let (st, s) = stride;
    if t < kt || h < kh || w < kw {
        candle_core::bail!("conv: input {t}x{h}x{w} is smaller than the kernel {kt}x{kh}x{kw}");
    }
    let (t_out, ho, wo) = ((t - kt) / st + 1, (h - kh) / s + 1, (w - kw) / s + 1);
    let taps = kt * kh * kw;
    if x.device().is_cpu() && matches!(x.dtype(), DType::F32 | DType::BF16) && taps > 1 {
        // One op whose backward is a single col2im pass; the views below would each
        // backpropagate through a zero tensor of the whole input.
        let cols = kiln_kernels::im2col::im2col3d(x, kernel, stride)?;
        let y = weight.broadcast_matmul(&cols)?;
        return y.reshape((b, t_out, weight.dim(0)?, ho, wo));
    }
    let mut views = Vec::with_capacity(taps);
    for dt in 0..kt {
        let xt = strided_narrow(x, 1, dt, t_out, st)?;
        for dh in 0..kh {
            let xh = strided_narrow(&xt, 3, dh, ho, s)?;
            for dw in 0..kw {
                views.push(strided_narrow(&xh, 4, dw, wo, s)?);
            }
        }
    }
    let cols = if taps == 1 {
        views.pop().expect("one tap")
    } else {
        Tensor::stack(&views, 2)?
    };
    let cols = cols.reshape((b * t_out, taps * c, ho * wo))?;
    let y = weight.broadcast_matmul(&cols)?;
    y.reshape((b, t_out, weight.dim(0)?, ho, wo))
}

/// `y + bias` in f32, `bias` shaped to broadcast along `y`'s dimension `channel_dim`. When
/// training on the CPU, kiln's op: its bias gradient is one pass, where candle's
/// broadcast backward sums with a strided single-thread reduction.
fn add_bias(y: &Tensor, bias: &Tensor, channel_dim: usize) -> Result<Tensor> {
    let y = y.to_dtype(DType::F32)?;
    if (y.track_op() || bias.track_op()) && kiln_kernels::train_ops::applies(&[&y, bias]) {
        return kiln_kernels::train_ops::add_channel_bias(&y, &bias.flatten_all()?, channel_dim);
    }
    y.broadcast_add(bias)
}

/// Whether a stride-1 convolution runs on kiln-kernels' direct GEMM convolution: CPU f32
/// or bf16 inference. Graphs that record gradients keep the im2col matmul, which candle
/// differentiates.
fn on_kiln_conv(x: &Tensor, weight: &Tensor) -> bool {
    x.device().is_cpu()
        && !x.track_op()
        && !weight.track_op()
        && x.dtype() == weight.dtype()
        && matches!(x.dtype(), DType::F32 | DType::BF16)
}

/// A convolution's weight: `(out, taps·in)` as loaded, or, for inference on the CPU with
/// 3×3 spatial taps and stride 1, only its Winograd transform (kiln-kernels' fastest
/// convolution; keeping both would cost 25/9 of the bytes).
#[derive(Debug, Clone)]
enum ConvWeight {
    Plain(Tensor),
    Winograd(Arc<WinogradConv>),
}

impl ConvWeight {
    /// Trainable weights (`Var`s, or views of them), other devices and other kernels stay
    /// plain.
    fn new(
        weight: Tensor,
        bias: &Tensor,
        kernel: (usize, usize, usize),
        pad: usize,
    ) -> Result<Self> {
        if weight.track_op() || bias.track_op() {
            return Ok(Self::Plain(weight));
        }
        Ok(match WinogradConv::new(&weight, bias, kernel, pad)? {
            Some(conv) => Self::Winograd(Arc::new(conv)),
            None => Self::Plain(weight),
        })
    }
}

/// `conv` applied to `x` `(B, T, C, H, W)`, in `x`'s dtype.
fn winograd_forward(conv: &WinogradConv, x: &Tensor) -> Result<Tensor> {
    if x.track_op() {
        candle_core::bail!(
            "VAE convolution: weights loaded for inference cannot pass gradients; load them as variables (a VarMap) to train"
        );
    }
    if x.dtype() == conv.dtype() {
        conv.forward(x)
    } else {
        conv.forward(&x.to_dtype(conv.dtype())?)?
            .to_dtype(x.dtype())
    }
}

/// candle's CPU backend has no bf16 GEMM, so bf16 operands are widened to f32 there.
fn widen_on_cpu(x: &Tensor) -> Result<Tensor> {
    if x.dtype() == DType::BF16 && x.device().is_cpu() {
        x.to_dtype(DType::F32)
    } else {
        Ok(x.clone())
    }
}

/// A 2D convolution with bias applied to `(N, C, H, W)` frames (`nn.Conv2d` in diffusers).
#[derive(Debug, Clone)]
struct FrameConv {
    /// `(out, kh·kw·in)`, taps outer.
    weight: ConvWeight,
    /// f32, `(1, out, 1, 1)`: added before rounding to the activation dtype.
    bias: Tensor,
    kernel: usize,
    padding: usize,
    stride: usize,
}

impl FrameConv {
    fn new(
        in_dim: usize,
        out_dim: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, kernel, kernel), "weight")?;
        let weight = weight
            .permute((0, 2, 3, 1))?
            .reshape((out_dim, kernel * kernel * in_dim))?;
        let bias = vb.get(out_dim, "bias")?.to_dtype(DType::F32)?;
        let weight = if stride == 1 {
            ConvWeight::new(weight, &bias, (1, kernel, kernel), padding)?
        } else {
            ConvWeight::Plain(weight)
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, out_dim, 1, 1))?,
            kernel,
            padding,
            stride,
        })
    }
}

impl Module for FrameConv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = x.dims4()?;
        let weight = match &self.weight {
            ConvWeight::Winograd(conv) => {
                let y = winograd_forward(conv, &x.reshape((1, n, c, h, w))?)?;
                let (_, _, o, ho, wo) = y.dims5()?;
                return y.reshape((n, o, ho, wo));
            }
            ConvWeight::Plain(weight) => weight,
        };
        if self.stride == 1 && on_kiln_conv(x, weight) {
            let y = kiln_kernels::candle_ops::conv3d(
                &x.reshape((1, n, c, h, w))?,
                weight,
                &self.bias,
                (1, self.kernel, self.kernel),
                self.padding,
            )?;
            let (_, _, o, ho, wo) = y.dims5()?;
            return y.reshape((n, o, ho, wo));
        }
        let xw = widen_on_cpu(x)?;
        let weight = widen_on_cpu(weight)?;
        let p = self.padding;
        let xw = if p > 0 {
            xw.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?
        } else {
            xw
        };
        let k = self.kernel;
        let y = if x.track_op() || n * k * k * c * h * w <= MAX_COLUMN_ELEMENTS {
            let y = conv_as_matmul(
                &xw.reshape((1, n, c, h + 2 * p, w + 2 * p))?,
                &weight,
                (1, k, k),
                (1, self.stride),
            )?;
            let (_, _, o, ho, wo) = y.dims5()?;
            y.reshape((n, o, ho, wo))?
        } else {
            let o = weight.dim(0)?;
            let kernel = weight
                .reshape((o, k, k, c))?
                .permute((0, 3, 1, 2))?
                .contiguous()?;
            xw.conv2d(&kernel, 0, self.stride, 1, 1)?
        };
        add_bias(&y, &self.bias, 1)?.to_dtype(x.dtype())
    }
}

/// A 3D convolution that is causal in time: `2 * padding_t` frames of padding all go in
/// front, taken from the cache when one is given. Computed as one im2col matmul, or for
/// inputs whose columns would be too large, as a sum over temporal taps of conv2d.
#[derive(Debug, Clone)]
struct CausalConv3d {
    /// `(out, kt·kh·kw·in)`, taps outer.
    weight: ConvWeight,
    /// Kept in f32: the taps are summed in f32.
    bias: Tensor,
    kernel: (usize, usize, usize),
    in_dim: usize,
    stride_t: usize,
    pad_front: usize,
    pad_hw: usize,
}

impl CausalConv3d {
    fn new(
        in_dim: usize,
        out_dim: usize,
        kernel: (usize, usize, usize),
        stride_t: usize,
        padding: (usize, usize),
        vb: VarBuilder,
    ) -> Result<Self> {
        let (kt, kh, kw) = kernel;
        let weight = vb.get((out_dim, in_dim, kt, kh, kw), "weight")?;
        let weight = weight
            .permute((0, 2, 3, 4, 1))?
            .reshape((out_dim, kt * kh * kw * in_dim))?;
        let bias = vb.get(out_dim, "bias")?.to_dtype(DType::F32)?;
        let (padding_t, pad_hw) = padding;
        let weight = if stride_t == 1 {
            ConvWeight::new(weight, &bias, kernel, pad_hw)?
        } else {
            ConvWeight::Plain(weight)
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, 1, out_dim, 1, 1))?,
            kernel,
            in_dim,
            stride_t,
            pad_front: 2 * padding_t,
            pad_hw,
        })
    }

    /// 3x3x3, padding 1: the convolution of residual blocks and heads.
    fn cube(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_dim, out_dim, (3, 3, 3), 1, (1, 1), vb)
    }

    /// 1x1x1: shortcuts and the (post-)quant convolutions.
    fn pointwise(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        Self::new(in_dim, out_dim, (1, 1, 1), 1, (0, 0), vb)
    }

    /// `x`: `(B, T, C, H, W)`; `cache`: frames that precede `x`, replacing front padding.
    fn forward(&self, x: &Tensor, cache: Option<&Tensor>) -> Result<Tensor> {
        let mut pad = self.pad_front;
        let x = match cache {
            Some(cache) if self.pad_front > 0 => {
                pad = pad.saturating_sub(cache.dim(1)?);
                Tensor::cat(&[cache, x], 1)?
            }
            _ => x.clone(),
        };
        let unpadded = x.clone();
        let x = if pad > 0 {
            x.pad_with_zeros(1, pad, 0)?
        } else {
            x
        };
        let (kt, kh, kw) = self.kernel;
        let (b, t, c, h, w) = x.dims5()?;
        if t < kt {
            candle_core::bail!("causal conv3d: {t} frames after padding, kernel needs {kt}");
        }
        let weight = match &self.weight {
            ConvWeight::Winograd(conv) => return winograd_forward(conv, &x),
            ConvWeight::Plain(weight) => weight,
        };
        if self.stride_t == 1 && on_kiln_conv(&x, weight) {
            return kiln_kernels::candle_ops::conv3d(
                &x,
                weight,
                &self.bias,
                self.kernel,
                self.pad_hw,
            );
        }
        let t_out = (t - kt) / self.stride_t + 1;
        let columns = b * t_out * kt * kh * kw * c * h * w;
        let y = if x.track_op() || columns <= MAX_COLUMN_ELEMENTS {
            // One frame after kt − 1 frames of zero padding meets only the last temporal tap:
            // that tap alone gives the same output and gradients for 1/kt of the columns
            // (the first chunk of every clip, and all of single-frame training). The frame
            // is taken before padding, so the backward does not pass through the padding.
            let (x, weight, kernel) = if kt > 1 && pad + 1 == kt && t == kt && self.stride_t == 1 {
                let last_tap = weight.narrow(1, (kt - 1) * kh * kw * c, kh * kw * c)?;
                (unpadded, last_tap, (1, kh, kw))
            } else {
                (x.clone(), weight.clone(), self.kernel)
            };
            let p = self.pad_hw;
            let xw = widen_on_cpu(&x)?;
            let xw = if p > 0 {
                xw.pad_with_zeros(3, p, p)?.pad_with_zeros(4, p, p)?
            } else {
                xw
            };
            conv_as_matmul(&xw, &widen_on_cpu(&weight)?, kernel, (self.stride_t, 1))?
        } else {
            self.forward_by_taps(&x, weight, t_out)?
        };
        add_bias(&y, &self.bias, 2)?.to_dtype(x.dtype())
    }

    /// The sum over temporal taps of conv2d over batches of frames: no im2col columns of
    /// the whole chunk in memory at once.
    fn forward_by_taps(&self, x: &Tensor, weight: &Tensor, t_out: usize) -> Result<Tensor> {
        let (b, _, c, h, w) = x.dims5()?;
        let (kt, kh, kw) = self.kernel;
        let out = weight.dim(0)?;
        let weight = widen_on_cpu(weight)?.reshape((out, kt, kh, kw, self.in_dim))?;
        let mut acc: Option<Tensor> = None;
        for k in 0..kt {
            let tap = weight
                .narrow(1, k, 1)?
                .squeeze(1)?
                .permute((0, 3, 1, 2))?
                .contiguous()?;
            // Frames k, k + s, ..., k + s * (t_out - 1) meet tap k.
            let frames = strided_narrow(x, 1, k, t_out, self.stride_t)?;
            let frames = widen_on_cpu(&frames.reshape((b * t_out, c, h, w))?)?;
            let y = frames
                .conv2d(&tap, self.pad_hw, 1, 1, 1)?
                .to_dtype(DType::F32)?;
            acc = Some(match acc {
                Some(a) => (a + y)?,
                None => y,
            });
        }
        let y = acc.ok_or_else(|| candle_core::Error::Msg("causal conv3d without taps".into()))?;
        let (_, o, ho, wo) = y.dims4()?;
        y.reshape((b, t_out, o, ho, wo))
    }

    /// The usual cached call: pad with the cached frames, then remember this input's tail.
    fn forward_cached(&self, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
        let previous = match slot {
            CacheSlot::Frames(t) => Some(t.clone()),
            _ => None,
        };
        let next = frames_to_cache(x, previous.as_ref())?;
        let y = self.forward(x, previous.as_ref())?;
        *slot = CacheSlot::Frames(next);
        Ok(y)
    }
}

/// diffusers' `WanRMS_norm`: `F.normalize(x, dim=channels) * sqrt(C) * gamma`, normalised in
/// f32. Works on `(..., C, H, W)`.
#[derive(Debug, Clone)]
struct RmsNorm {
    /// `sqrt(C) * gamma`, f32, `(C, 1, 1)`.
    scale: Tensor,
}

impl RmsNorm {
    /// `images`: the gamma is stored as `(C, 1, 1)` (attention) rather than `(C, 1, 1, 1)`.
    fn new(dim: usize, images: bool, vb: VarBuilder) -> Result<Self> {
        let gamma = if images {
            vb.get((dim, 1, 1), "gamma")?
        } else {
            vb.get((dim, 1, 1, 1), "gamma")?
        };
        let scale = (gamma.to_dtype(DType::F32)?.reshape((dim, 1, 1))? * (dim as f64).sqrt())?;
        Ok(Self { scale })
    }
}

impl RmsNorm {
    /// The norm followed by SiLU, in one pass on CPU inference.
    fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        kiln_kernels::candle_ops::channel_norm(x, &self.scale, true)
    }
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        // F.normalize divides by max(||x||, 1e-12); one pass on CPU inference, the
        // differentiable composite when training.
        kiln_kernels::candle_ops::channel_norm(x, &self.scale, false)
    }
}

/// diffusers' `WanResidualBlock`: two RMS-norm, SiLU, causal-conv stages plus a shortcut.
#[derive(Debug, Clone)]
struct ResidualBlock {
    norm1: RmsNorm,
    conv1: CausalConv3d,
    norm2: RmsNorm,
    conv2: CausalConv3d,
    conv_shortcut: Option<CausalConv3d>,
}

impl ResidualBlock {
    fn new(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let conv_shortcut = if in_dim != out_dim {
            Some(CausalConv3d::pointwise(
                in_dim,
                out_dim,
                vb.pp("conv_shortcut"),
            )?)
        } else {
            None
        };
        Ok(Self {
            norm1: RmsNorm::new(in_dim, false, vb.pp("norm1"))?,
            conv1: CausalConv3d::cube(in_dim, out_dim, vb.pp("conv1"))?,
            norm2: RmsNorm::new(out_dim, false, vb.pp("norm2"))?,
            conv2: CausalConv3d::cube(out_dim, out_dim, vb.pp("conv2"))?,
            conv_shortcut,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(x, None)?,
            None => x.clone(),
        };
        let h = self.norm1.forward_silu(x)?;
        let h = self.conv1.forward_cached(&h, cache.next_slot())?;
        let h = self.norm2.forward_silu(&h)?;
        // Dropout is the identity at inference.
        let h = self.conv2.forward_cached(&h, cache.next_slot())?;
        h + shortcut
    }
}

/// diffusers' `WanAttentionBlock`: single-head self-attention over the pixels of each frame.
#[derive(Debug, Clone)]
struct AttentionBlock {
    norm: RmsNorm,
    to_qkv: FrameConv,
    proj: FrameConv,
}

impl AttentionBlock {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: RmsNorm::new(dim, true, vb.pp("norm"))?,
            to_qkv: FrameConv::new(dim, 3 * dim, 1, 0, 1, vb.pp("to_qkv"))?,
            proj: FrameConv::new(dim, dim, 1, 0, 1, vb.pp("proj"))?,
        })
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

impl Module for AttentionBlock {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, t, c, h, w) = x.dims5()?;
        let frames = frames_as_batch(x)?;
        let qkv = self.to_qkv.forward(&self.norm.forward(&frames)?)?;
        // (N, 3C, HW) -> (N, HW, 3C): one token per pixel, q|k|v along channels.
        let qkv = qkv.reshape((b * t, 3 * c, h * w))?.transpose(1, 2)?;
        let q = qkv.narrow(2, 0, c)?.contiguous()?;
        let k = qkv.narrow(2, c, c)?.contiguous()?;
        let v = qkv.narrow(2, 2 * c, c)?.contiguous()?;
        let scores = (q.matmul(&k.t()?)? * (1.0 / (c as f64).sqrt()))?;
        let weights = softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(v.dtype())?;
        let out = weights.matmul(&v)?; // (N, HW, C)
        let out = out.transpose(1, 2)?.reshape((b * t, c, h, w))?;
        let out = self.proj.forward(&out)?;
        out.reshape((b, t, c, h, w))? + x
    }
}

/// diffusers' `WanMidBlock` with one attention layer: resnet, attention, resnet.
#[derive(Debug, Clone)]
struct MidBlock {
    resnets: [ResidualBlock; 2],
    attention: AttentionBlock,
}

impl MidBlock {
    fn new(dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            resnets: [
                ResidualBlock::new(dim, dim, vb.pp("resnets.0"))?,
                ResidualBlock::new(dim, dim, vb.pp("resnets.1"))?,
            ],
            attention: AttentionBlock::new(dim, vb.pp("attentions.0"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let x = self.resnets[0].forward(x, cache)?;
        let x = self.attention.forward(&x)?;
        self.resnets[1].forward(&x, cache)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ResampleMode {
    Upsample2d,
    Upsample3d,
    Downsample2d,
    Downsample3d,
}

/// diffusers' `WanResample`: 2x spatial resampling per frame, with a temporal convolution in
/// the 3d modes (upsample3d doubles the frames, downsample3d halves them).
#[derive(Debug, Clone)]
struct Resample {
    mode: ResampleMode,
    conv: ResampleConv,
    time_conv: Option<CausalConv3d>,
}

/// `resample.1`: 3x3, padding 1 when upsampling; stride 2 after a right/bottom zero pad
/// when downsampling.
#[derive(Debug, Clone)]
enum ResampleConv {
    /// As diffusers runs it (trainable weights, other devices, downsampling).
    Frame(FrameConv),
    /// Upsampling for inference: the convolution of the upsampled frame computed on the
    /// frame itself, a 2x2 kernel per output phase
    /// (`kiln_kernels::candle_ops::nearest_upsample_phase_weights`).
    UpsamplePhases {
        /// `(4·out, 2·2·in)` in the model dtype.
        weight: Tensor,
        /// `(4·out)` f32.
        bias: Tensor,
    },
}

impl ResampleConv {
    fn upsample(in_dim: usize, out_dim: usize, vb: VarBuilder) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, 3, 3), "weight")?;
        let bias = vb.get(out_dim, "bias")?;
        let taps = weight
            .permute((0, 2, 3, 1))?
            .reshape((out_dim, 9 * in_dim))?;
        // bf16 only: f32 convolutions of these sizes take F(4x4) Winograd, which needs
        // 2.25 multiplies per output pixel to the phase form's 4, and the two measured
        // about even on the 1.3B decode.
        let inference = weight.device().is_cpu() && !weight.track_op() && !bias.track_op();
        if weight.dtype() == DType::BF16 && inference {
            return Self::upsample_phases(&taps, &bias);
        }
        Ok(Self::Frame(FrameConv::new(in_dim, out_dim, 3, 1, 1, vb)?))
    }

    /// The phase form of the upsampling convolution with `taps` `(out, 3·3·in)`, in their
    /// dtype.
    fn upsample_phases(taps: &Tensor, bias: &Tensor) -> Result<Self> {
        Ok(Self::UpsamplePhases {
            weight: kiln_kernels::candle_ops::nearest_upsample_phase_weights(taps, taps.dtype())?,
            bias: bias.to_dtype(DType::F32)?.repeat(4)?,
        })
    }

    /// `frames` `(N, C, H, W)` upsampled then convolved, or padded and convolved with
    /// stride 2.
    fn forward(&self, frames: &Tensor, upsample: bool) -> Result<Tensor> {
        let (n, c, h, w) = frames.dims4()?;
        match self {
            Self::UpsamplePhases { weight, bias } => {
                let x = frames.reshape((1, n, c, h, w))?.to_dtype(weight.dtype())?;
                let y = kiln_kernels::candle_ops::conv3d(&x, weight, bias, (1, 2, 2), 1)?;
                let (_, _, c4, h1, w1) = y.dims5()?;
                kiln_kernels::candle_ops::interleave_phases(&y.reshape((n, c4, h1, w1))?)?
                    .to_dtype(frames.dtype())
            }
            // nearest-exact at scale 2 repeats each pixel 2x2.
            Self::Frame(conv) if upsample => {
                conv.forward(&frames.upsample_nearest2d(2 * h, 2 * w)?)
            }
            Self::Frame(conv) => {
                conv.forward(&frames.pad_with_zeros(3, 0, 1)?.pad_with_zeros(2, 0, 1)?)
            }
        }
    }
}

impl Resample {
    fn new(dim: usize, mode: ResampleMode, vb: VarBuilder) -> Result<Self> {
        let (conv, time_conv) = match mode {
            ResampleMode::Upsample2d | ResampleMode::Upsample3d => {
                let conv = ResampleConv::upsample(dim, dim / 2, vb.pp("resample.1"))?;
                let time_conv = if mode == ResampleMode::Upsample3d {
                    let tc = vb.pp("time_conv");
                    Some(CausalConv3d::new(dim, 2 * dim, (3, 1, 1), 1, (1, 0), tc)?)
                } else {
                    None
                };
                (conv, time_conv)
            }
            ResampleMode::Downsample2d | ResampleMode::Downsample3d => {
                let conv =
                    ResampleConv::Frame(FrameConv::new(dim, dim, 3, 0, 2, vb.pp("resample.1"))?);
                let time_conv = if mode == ResampleMode::Downsample3d {
                    let tc = vb.pp("time_conv");
                    Some(CausalConv3d::new(dim, dim, (3, 1, 1), 2, (0, 0), tc)?)
                } else {
                    None
                };
                (conv, time_conv)
            }
        };
        Ok(Self {
            mode,
            conv,
            time_conv,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let mut x = x.clone();
        if let (ResampleMode::Upsample3d, Some(time_conv)) = (self.mode, &self.time_conv) {
            x = upsample_time(time_conv, &x, cache.next_slot())?;
        }
        let (b, t, c, h, w) = x.dims5()?;
        let frames = x.reshape((b * t, c, h, w))?;
        let upsample = matches!(
            self.mode,
            ResampleMode::Upsample2d | ResampleMode::Upsample3d
        );
        let frames = self.conv.forward(&frames, upsample)?;
        let (_, c, h, w) = frames.dims4()?;
        let x = frames.reshape((b, t, c, h, w))?;
        match (self.mode, &self.time_conv) {
            (ResampleMode::Downsample3d, Some(time_conv)) => {
                downsample_time(time_conv, &x, cache.next_slot())
            }
            _ => Ok(x),
        }
    }
}

/// upsample3d's temporal step. The first chunk passes through unchanged; later chunks go
/// through the causal time conv, whose `2C` output channels are two frames per input frame.
fn upsample_time(time_conv: &CausalConv3d, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
    let (b, t, c, h, w) = x.dims5()?;
    let (previous, next) = match slot {
        CacheSlot::Empty => {
            *slot = CacheSlot::Repeat;
            return Ok(x.clone());
        }
        CacheSlot::Repeat => {
            let mut next = frames_to_cache(x, None)?;
            if next.dim(1)? < CACHE_T {
                next = Tensor::cat(&[&next.zeros_like()?, &next], 1)?;
            }
            (None, next)
        }
        CacheSlot::Frames(prev) => {
            let next = frames_to_cache(x, Some(prev))?;
            (Some(prev.clone()), next)
        }
    };
    let y = time_conv.forward(x, previous.as_ref())?;
    *slot = CacheSlot::Frames(next);
    // (B, T, 2C, H, W) -> (B, T, 2, C, H, W) -> (B, 2T, C, H, W): frame 2i+s is half s of i.
    y.reshape((b, 2 * t, c, h, w))
}

/// downsample3d's temporal step. The first chunk is only remembered; later chunks are
/// convolved (kernel 3, stride 2) with the previous chunk's last frame in front.
fn downsample_time(time_conv: &CausalConv3d, x: &Tensor, slot: &mut CacheSlot) -> Result<Tensor> {
    let t = x.dim(1)?;
    match slot {
        CacheSlot::Frames(prev) => {
            let last = prev.narrow(1, prev.dim(1)? - 1, 1)?;
            let y = time_conv.forward(&Tensor::cat(&[&last, x], 1)?, None)?;
            *slot = CacheSlot::Frames(x.narrow(1, t - 1, 1)?);
            Ok(y)
        }
        _ => {
            *slot = CacheSlot::Frames(x.clone());
            Ok(x.clone())
        }
    }
}

#[derive(Debug, Clone)]
enum DownLayer {
    Residual(ResidualBlock),
    Resample(Resample),
}

/// diffusers' `WanEncoder3d` (Wan 2.1 layout: a flat list of residual and resample layers).
#[derive(Debug, Clone)]
struct Encoder {
    conv_in: CausalConv3d,
    down_blocks: Vec<DownLayer>,
    mid_block: MidBlock,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Encoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.base_dim;
        let dims: Vec<usize> = std::iter::once(1)
            .chain(cfg.dim_mult.iter().copied())
            .map(|m| dim * m)
            .collect();
        let conv_in = CausalConv3d::cube(cfg.in_channels, dims[0], vb.pp("conv_in"))?;
        let levels = cfg.dim_mult.len();
        let mut down_blocks = Vec::new();
        let vb_down = vb.pp("down_blocks");
        for i in 0..levels {
            let mut in_dim = dims[i];
            let out_dim = dims[i + 1];
            for _ in 0..cfg.num_res_blocks {
                let vb = vb_down.pp(down_blocks.len());
                down_blocks.push(DownLayer::Residual(ResidualBlock::new(
                    in_dim, out_dim, vb,
                )?));
                in_dim = out_dim;
            }
            if i != levels - 1 {
                let mode = if cfg.temperal_downsample[i] {
                    ResampleMode::Downsample3d
                } else {
                    ResampleMode::Downsample2d
                };
                let vb = vb_down.pp(down_blocks.len());
                down_blocks.push(DownLayer::Resample(Resample::new(out_dim, mode, vb)?));
            }
        }
        let out_dim = dims[levels];
        Ok(Self {
            conv_in,
            down_blocks,
            mid_block: MidBlock::new(out_dim, vb.pp("mid_block"))?,
            norm_out: RmsNorm::new(out_dim, false, vb.pp("norm_out"))?,
            conv_out: CausalConv3d::cube(out_dim, 2 * cfg.z_dim, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let mut x = self.conv_in.forward_cached(x, cache.next_slot())?;
        for layer in &self.down_blocks {
            x = match layer {
                DownLayer::Residual(block) => block.forward(&x, cache)?,
                DownLayer::Resample(resample) => resample.forward(&x, cache)?,
            };
        }
        let x = self.mid_block.forward(&x, cache)?;
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward_cached(&x, cache.next_slot())
    }
}

/// diffusers' `WanUpBlock`: `num_res_blocks + 1` residual blocks, then an optional resample.
#[derive(Debug, Clone)]
struct UpBlock {
    resnets: Vec<ResidualBlock>,
    upsampler: Option<Resample>,
}

impl UpBlock {
    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let mut x = x.clone();
        for resnet in &self.resnets {
            x = resnet.forward(&x, cache)?;
        }
        match &self.upsampler {
            Some(up) => up.forward(&x, cache),
            None => Ok(x),
        }
    }
}

/// diffusers' `WanDecoder3d` (Wan 2.1 layout).
#[derive(Debug, Clone)]
struct Decoder {
    conv_in: CausalConv3d,
    mid_block: MidBlock,
    up_blocks: Vec<UpBlock>,
    norm_out: RmsNorm,
    conv_out: CausalConv3d,
}

impl Decoder {
    fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        let dim = cfg.decoder_dim();
        let levels = cfg.dim_mult.len();
        let dims: Vec<usize> = std::iter::once(cfg.dim_mult[levels - 1])
            .chain(cfg.dim_mult.iter().rev().copied())
            .map(|m| dim * m)
            .collect();
        // diffusers reverses the encoder's list: temperal_upsample = temperal_downsample[::-1].
        let temperal_upsample: Vec<bool> = cfg.temperal_downsample.iter().rev().copied().collect();
        let conv_in = CausalConv3d::cube(cfg.z_dim, dims[0], vb.pp("conv_in"))?;
        let mid_block = MidBlock::new(dims[0], vb.pp("mid_block"))?;
        let mut up_blocks = Vec::with_capacity(levels);
        for i in 0..levels {
            // Every block after the first receives the previous upsampler's dim / 2 channels.
            let mut in_dim = if i > 0 { dims[i] / 2 } else { dims[i] };
            let out_dim = dims[i + 1];
            let vb = vb.pp("up_blocks").pp(i);
            let mut resnets = Vec::with_capacity(cfg.num_res_blocks + 1);
            for j in 0..=cfg.num_res_blocks {
                resnets.push(ResidualBlock::new(in_dim, out_dim, vb.pp("resnets").pp(j))?);
                in_dim = out_dim;
            }
            let upsampler = if i != levels - 1 {
                let mode = if temperal_upsample[i] {
                    ResampleMode::Upsample3d
                } else {
                    ResampleMode::Upsample2d
                };
                Some(Resample::new(out_dim, mode, vb.pp("upsamplers.0"))?)
            } else {
                None
            };
            up_blocks.push(UpBlock { resnets, upsampler });
        }
        let out_dim = dims[levels];
        Ok(Self {
            conv_in,
            mid_block,
            up_blocks,
            norm_out: RmsNorm::new(out_dim, false, vb.pp("norm_out"))?,
            conv_out: CausalConv3d::cube(out_dim, cfg.out_channels, vb.pp("conv_out"))?,
        })
    }

    fn forward(&self, x: &Tensor, cache: &mut FeatureCache) -> Result<Tensor> {
        let x = self.conv_in.forward_cached(x, cache.next_slot())?;
        let mut x = self.mid_block.forward(&x, cache)?;
        for block in &self.up_blocks {
            x = block.forward(&x, cache)?;
        }
        let x = self.norm_out.forward_silu(&x)?;
        self.conv_out.forward_cached(&x, cache.next_slot())
    }
}

/// The Wan 2.1 VAE (diffusers `AutoencoderKLWan` with `is_residual=false`).
#[derive(Debug, Clone)]
pub struct WanVae {
    encoder: Encoder,
    quant_conv: CausalConv3d,
    post_quant_conv: CausalConv3d,
    decoder: Decoder,
    config: Config,
    dtype: DType,
}

impl WanVae {
    /// Builds the VAE from diffusers-layout weights (`encoder.*`, `decoder.*`, `quant_conv`,
    /// `post_quant_conv`), converted to the VarBuilder's dtype.
    pub fn new(cfg: &Config, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        let z = cfg.z_dim;
        Ok(Self {
            encoder: Encoder::new(cfg, vb.pp("encoder"))?,
            quant_conv: CausalConv3d::pointwise(2 * z, 2 * z, vb.pp("quant_conv"))?,
            post_quant_conv: CausalConv3d::pointwise(z, z, vb.pp("post_quant_conv"))?,
            decoder: Decoder::new(cfg, vb.pp("decoder"))?,
            config: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The dtype of the weights; `encode` and `decode` compute and return in it.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// `video`: `(B, 3, F, H, W)` in `[-1, 1]`. Returns the posterior mean
    /// `(B, z, 1 + (F - 1) / 4, H / 8, W / 8)`, not normalised. As in diffusers, frames past
    /// the last whole chunk of four are ignored.
    pub fn encode(&self, video: &Tensor) -> Result<Tensor> {
        let (_, c, f, _, _) = video.dims5()?;
        if c != self.config.in_channels || f == 0 {
            candle_core::bail!(
                "Wan VAE encode: expected (B, {}, F>=1, H, W), got {:?}",
                self.config.in_channels,
                video.dims()
            );
        }
        let x = video
            .to_dtype(self.dtype)?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?;
        let chunks = 1 + (f - 1) / ENCODE_CHUNK;
        let unused = (f - 1) % ENCODE_CHUNK;
        if unused > 0 {
            tracing::warn!(
                "Wan VAE encode: {f} frames is not 1 + 4k; the last {unused} are ignored"
            );
        }
        let mut cache = FeatureCache::new();
        let mut out = Vec::with_capacity(chunks);
        for i in 0..chunks {
            let chunk = if i == 0 {
                x.narrow(1, 0, 1)?
            } else {
                x.narrow(1, 1 + ENCODE_CHUNK * (i - 1), ENCODE_CHUNK)?
            };
            cache.start_chunk();
            out.push(self.encoder.forward(&chunk, &mut cache)?);
        }
        let moments = self.quant_conv.forward(&Tensor::cat(&out, 1)?, None)?;
        // The first z channels are the mean, the rest the log-variance.
        moments
            .narrow(2, 0, self.config.z_dim)?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()
    }

    /// `z`: `(B, z, F', h, w)`, not normalised. Returns `(B, 3, 1 + 4 (F' - 1), 8h, 8w)`
    /// clamped to `[-1, 1]`, decoding one latent frame at a time as diffusers does.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_unclamped(z)?.clamp(-1f32, 1f32)
    }

    /// [`decode`](Self::decode) without the final clamp: what training must compare with
    /// the target, since the clamp has no gradient where the output overshoots and such
    /// pixels would stay stuck at -1 or 1 whatever the target.
    pub fn decode_unclamped(&self, z: &Tensor) -> Result<Tensor> {
        let (_, c, f, _, _) = z.dims5()?;
        if c != self.config.z_dim || f == 0 {
            candle_core::bail!(
                "Wan VAE decode: expected (B, {}, F'>=1, h, w) latents, got {:?}",
                self.config.z_dim,
                z.dims()
            );
        }
        let z = z
            .to_dtype(self.dtype)?
            .permute((0, 2, 1, 3, 4))?
            .contiguous()?;
        let x = self.post_quant_conv.forward(&z, None)?;
        let mut cache = FeatureCache::new();
        let mut out = Vec::with_capacity(f);
        for i in 0..f {
            cache.start_chunk();
            out.push(self.decoder.forward(&x.narrow(1, i, 1)?, &mut cache)?);
        }
        Tensor::cat(&out, 1)?.permute((0, 2, 1, 3, 4))?.contiguous()
    }

    /// [`decode`](Self::decode) in overlapping spatial tiles of `tile.size` output pixels,
    /// `tile.stride` apart, each decoded over the whole clip with its own causal cache and
    /// blended linearly into its upper and left neighbours over the overlap: diffusers'
    /// `tiled_decode`. Peak memory follows the tile, not the frame; the output differs from
    /// an untiled decode near tile seams (the mid-block attention sees one tile). Frames no
    /// larger than one tile decode untiled.
    pub fn decode_tiled(&self, z: &Tensor, tile: DecodeTiling) -> Result<Tensor> {
        let (_, _, _, h, w) = z.dims5()?;
        let s = self.config.spatial_compression();
        let (tile_lat, stride_lat) = (tile.size / s, tile.stride / s);
        if tile_lat == 0 || stride_lat == 0 || tile.stride > tile.size {
            candle_core::bail!(
                "Wan VAE tiled decode: tile {} px with stride {} px; both must be at least {s} \
                 and the stride no larger than the tile",
                tile.size,
                tile.stride
            );
        }
        if h <= tile_lat && w <= tile_lat {
            return self.decode(z);
        }
        let blend = tile.size - tile.stride;
        let mut rows: Vec<Vec<Tensor>> = Vec::new();
        for i in (0..h).step_by(stride_lat) {
            let mut row: Vec<Tensor> = Vec::new();
            for j in (0..w).step_by(stride_lat) {
                let part =
                    z.narrow(3, i, tile_lat.min(h - i))?
                        .narrow(4, j, tile_lat.min(w - j))?;
                let mut t = self.decode_unclamped(&part)?.to_dtype(DType::F32)?;
                if let Some(above) = rows.last() {
                    t = blend_into(&above[row.len()], &t, 3, blend)?;
                }
                if let Some(left) = row.last() {
                    t = blend_into(left, &t, 4, blend)?;
                }
                row.push(t);
            }
            rows.push(row);
        }
        let stride_px = tile.stride;
        let mut bands = Vec::with_capacity(rows.len());
        for row in &rows {
            let parts = row
                .iter()
                .map(|t| {
                    let (th, tw) = (t.dim(3)?, t.dim(4)?);
                    t.narrow(3, 0, stride_px.min(th))?
                        .narrow(4, 0, stride_px.min(tw))
                })
                .collect::<Result<Vec<_>>>()?;
            bands.push(Tensor::cat(&parts, 4)?);
        }
        Tensor::cat(&bands, 3)?
            .narrow(3, 0, h * s)?
            .narrow(4, 0, w * s)?
            .clamp(-1f32, 1f32)?
            .to_dtype(self.dtype)
    }

    pub fn latents_mean(&self) -> Vec<f64> {
        self.config.latents_mean.clone()
    }

    pub fn latents_std(&self) -> Vec<f64> {
        self.config.latents_std.clone()
    }

    /// `(mean, 1 / std)` as `(1, z, 1, 1, 1)` tensors in `like`'s dtype, as the pipelines
    /// build them (the reciprocal taken in f32).
    fn mean_and_inv_std(&self, like: &Tensor) -> Result<(Tensor, Tensor)> {
        let z = self.config.z_dim;
        let mean: Vec<f32> = self.config.latents_mean.iter().map(|&m| m as f32).collect();
        let inv: Vec<f32> = self
            .config
            .latents_std
            .iter()
            .map(|&s| 1.0 / s as f32)
            .collect();
        let shape = (1, z, 1, 1, 1);
        let mean = Tensor::from_vec(mean, shape, like.device())?.to_dtype(like.dtype())?;
        let inv = Tensor::from_vec(inv, shape, like.device())?.to_dtype(like.dtype())?;
        Ok((mean, inv))
    }

    /// Encoder latents to the transformer's scale: `(z - mean) * (1 / std)`, as the i2v
    /// pipeline normalises its conditioning.
    pub fn normalize(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, inv) = self.mean_and_inv_std(z)?;
        z.broadcast_sub(&mean)?.broadcast_mul(&inv)
    }

    /// Transformer latents back to the decoder's scale: `z / (1 / std) + mean`, as
    /// `WanPipeline` does before `vae.decode`.
    pub fn denormalize(&self, z: &Tensor) -> Result<Tensor> {
        let (mean, inv) = self.mean_and_inv_std(z)?;
        z.broadcast_div(&inv)?.broadcast_add(&mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values spread over about ±1.7: `sin(phase + 0.77 i)·√3`.
    fn pseudo_random<S: Into<candle_core::Shape>>(shape: S, phase: f64) -> Result<Tensor> {
        let shape = shape.into();
        let values: Vec<f32> = (0..shape.elem_count())
            .map(|i| ((phase + 0.77 * i as f64).sin() * 3f64.sqrt()) as f32)
            .collect();
        Tensor::from_vec(values, shape, &candle_core::Device::Cpu)
    }

    /// The loaded stride-1 convolution (Winograd), the im2col matmul (stride 2, training)
    /// and the per-tap conv2d fallback (large inputs) are the same convolution.
    #[test]
    fn conv_paths_agree() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        // Fixed values: the Winograd path's rounding error depends on them, so random ones
        // would make the bound below hold only most of the time.
        let weight = pseudo_random((5, 3, 3, 3, 3), 1.0)?;
        let plain = weight.permute((0, 2, 3, 4, 1))?.reshape((5, 27 * 3))?;
        let mut tensors = std::collections::HashMap::new();
        tensors.insert("weight".to_string(), weight);
        tensors.insert("bias".to_string(), pseudo_random(5, 2.0)?);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &dev);
        let x = pseudo_random((2, 6, 3, 7, 9), 3.0)?;
        for stride_t in [1, 2] {
            let conv = CausalConv3d::new(3, 5, (3, 3, 3), stride_t, (1, 1), vb.clone())?;
            assert_eq!(
                matches!(conv.weight, ConvWeight::Winograd(_)),
                stride_t == 1,
                "stride {stride_t}"
            );
            let by_matmul = conv.forward(&x, None)?;
            let padded = x.pad_with_zeros(1, 2, 0)?;
            let t_out = (padded.dim(1)? - 3) / stride_t + 1;
            let by_taps = conv
                .forward_by_taps(&padded, &plain, t_out)?
                .broadcast_add(&conv.bias)?;
            assert_eq!(by_matmul.dims(), by_taps.dims());
            let diff = (by_matmul - by_taps)?
                .abs()?
                .max_all()?
                .to_scalar::<f32>()?;
            assert!(diff < 1e-4, "stride {stride_t}: paths differ by {diff}");
        }
        Ok(())
    }

    /// Training (weights that record gradients) on one frame with no cache: the last
    /// temporal tap alone gives the output and gradients of the whole padded convolution.
    #[test]
    fn single_frame_training_conv_uses_the_last_tap_exactly() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let varmap = candle_nn::VarMap::new();
        // Built once to create the variables, set, then built again to read them.
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        CausalConv3d::new(3, 4, (3, 3, 3), 1, (1, 1), vb)?;
        for var in varmap.all_vars() {
            let dims = var.dims().to_vec();
            var.set(&pseudo_random(dims.as_slice(), 0.7)?)?;
        }
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &dev);
        let conv = CausalConv3d::new(3, 4, (3, 3, 3), 1, (1, 1), vb)?;
        let ConvWeight::Plain(weight) = &conv.weight else {
            panic!("trainable weights stay plain");
        };
        let x = candle_core::Var::from_tensor(&pseudo_random((2, 1, 3, 5, 6), 1.9)?)?;
        let shortcut = conv.forward(x.as_tensor(), None)?;
        let padded = x
            .as_tensor()
            .pad_with_zeros(1, 2, 0)?
            .pad_with_zeros(3, 1, 1)?
            .pad_with_zeros(4, 1, 1)?;
        let full = conv_as_matmul(&padded, weight, (3, 3, 3), (1, 1))?.broadcast_add(&conv.bias)?;
        let diff = (&shortcut - &full)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "outputs differ by {diff}");
        let probe = pseudo_random(full.dims(), 1.1)?;
        let g_short = (&shortcut * &probe)?.sum_all()?.backward()?;
        let g_full = (&full * &probe)?.sum_all()?.backward()?;
        for var in varmap.all_vars().iter().chain([&x]) {
            let (Some(a), Some(b)) = (g_short.get(var), g_full.get(var)) else {
                panic!("a variable without a gradient");
            };
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "gradients differ by {diff}");
        }
        Ok(())
    }

    /// The phase form of an upsampling convolution (what bf16 models load; f32 ones keep
    /// the plain form) equals upsampling then convolving,
    /// within the rounding of the F(4×4) transforms (f32) or of the bf16 transformed values.
    #[test]
    fn upsample_phases_equal_upsampled_convolution() -> Result<()> {
        let dev = candle_core::Device::Cpu;
        let (c, o) = (6, 5);
        let mut tensors = std::collections::HashMap::new();
        tensors.insert("weight".to_string(), pseudo_random((o, c, 3, 3), 0.3)?);
        tensors.insert("bias".to_string(), pseudo_random(o, 1.3)?);
        let x = pseudo_random((3, c, 7, 10), 2.1)?;
        // The plain path in f32: the reference both forms are held to.
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, &dev);
        let reference =
            ResampleConv::Frame(FrameConv::new(c, o, 3, 1, 1, vb)?).forward(&x, true)?;
        let scale = reference.abs()?.max_all()?.to_scalar::<f32>()?;
        for dtype in [DType::F32, DType::BF16] {
            let vb = VarBuilder::from_tensors(tensors.clone(), dtype, &dev);
            let loaded = ResampleConv::upsample(c, o, vb.clone())?;
            let is_phases = matches!(loaded, ResampleConv::UpsamplePhases { .. });
            assert_eq!(is_phases, dtype == DType::BF16, "{dtype:?}");
            let taps = tensors["weight"]
                .permute((0, 2, 3, 1))?
                .reshape((o, 9 * c))?;
            let phases = ResampleConv::upsample_phases(&taps.to_dtype(dtype)?, &tensors["bias"])?;
            let plain = ResampleConv::Frame(FrameConv::new(c, o, 3, 1, 1, vb)?);
            let x = x.to_dtype(dtype)?;
            let (got, plain) = (phases.forward(&x, true)?, plain.forward(&x, true)?);
            assert_eq!(got.dims(), &[3, o, 14, 20]);
            let error = |y: Tensor| -> Result<(f32, f32)> {
                let d = (y.to_dtype(DType::F32)? - &reference)?.abs()?;
                Ok((
                    d.max_all()?.to_scalar::<f32>()? / scale,
                    d.mean_all()?.to_scalar::<f32>()? / scale,
                ))
            };
            let ((got_max, got_mean), (plain_max, plain_mean)) = (error(got)?, error(plain)?);
            let what = format!(
                "{dtype:?}: phases max/mean {got_max:.2e}/{got_mean:.2e}, \
                 upsampled {plain_max:.2e}/{plain_mean:.2e} (of the scale)"
            );
            println!("{what}");
            match dtype {
                DType::F32 => assert!(got_max <= 1e-4, "{what}"),
                _ => assert!(got_max <= 6e-2 && got_mean <= 1.5 * plain_mean, "{what}"),
            }
        }
        Ok(())
    }

    #[test]
    fn config_defaults_are_wan21() {
        let cfg: Config = serde_json::from_str(r#"{"_class_name": "AutoencoderKLWan"}"#).unwrap();
        assert_eq!(cfg, Config::default());
        cfg.validate().unwrap();
        assert_eq!(cfg.spatial_compression(), 8);
        assert_eq!(cfg.temporal_compression(), 4);
    }

    #[test]
    fn wan22_config_is_refused() {
        let cfg: Config = serde_json::from_str(
            r#"{"base_dim": 160, "decoder_base_dim": 256, "z_dim": 48, "is_residual": true,
                "in_channels": 12, "out_channels": 12, "patch_size": 2,
                "latents_mean": [], "latents_std": []}"#,
        )
        .unwrap();
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("Wan 2.2 VAE is not supported yet"), "{err}");
    }

    #[test]
    fn normalize_inverts_denormalize() -> Result<()> {
        let cfg = Config {
            base_dim: 4,
            z_dim: 2,
            dim_mult: vec![1],
            num_res_blocks: 1,
            latents_mean: vec![0.5, -1.0],
            latents_std: vec![2.0, 0.25],
            ..Config::default()
        };
        let vb = VarBuilder::zeros(DType::F32, &candle_core::Device::Cpu);
        let vae = WanVae::new(&cfg, vb)?;
        let z = Tensor::new(&[1f32, 2.0], &candle_core::Device::Cpu)?.reshape((1, 2, 1, 1, 1))?;
        let n = vae.normalize(&z)?;
        assert_eq!(n.flatten_all()?.to_vec1::<f32>()?, vec![0.25, 12.0]);
        let back = vae.denormalize(&n)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(back, vec![1.0, 2.0]);
        Ok(())
    }

    #[test]
    fn decode_frame_counts_follow_the_causal_chunks() -> Result<()> {
        let cfg = Config {
            base_dim: 4,
            z_dim: 2,
            dim_mult: vec![1, 1, 1],
            num_res_blocks: 1,
            temperal_downsample: vec![true, true],
            latents_mean: vec![0.0; 2],
            latents_std: vec![1.0; 2],
            ..Config::default()
        };
        let dev = candle_core::Device::Cpu;
        let vae = WanVae::new(&cfg, VarBuilder::zeros(DType::F32, &dev))?;
        let z = Tensor::zeros((1, 2, 3, 2, 2), DType::F32, &dev)?;
        assert_eq!(vae.decode(&z)?.dims(), &[1, 3, 9, 8, 8]);
        let video = Tensor::zeros((1, 3, 9, 8, 8), DType::F32, &dev)?;
        assert_eq!(vae.encode(&video)?.dims(), &[1, 2, 3, 2, 2]);
        Ok(())
    }
}
