//! Times a whole text-to-video generation with a random-weight Wan2.1-1.3B-shaped
//! transformer and the Wan2.1 VAE: the sampler loop of `WanPipeline::generate` (UniPC from
//! the bundled model's `scheduler_config.json`, the prompt and negative prompt as one
//! transformer pass over a batch of two per step for classifier-free guidance, as the
//! pipeline runs them) and the VAE decode to frames. `scripts/bench/wan_forward.py`
//! runs it beside diffusers' `WanPipeline` on the same shapes.
//!
//! The text encoder is skipped: the prompt and negative-prompt embeddings are random
//! (1, 512, 4096) tensors, as diffusers is given `prompt_embeds`/`negative_prompt_embeds`.
//! `WanPipeline` only takes prompts (it loads a checkpoint with its UMT5 encoder), so the
//! loop below mirrors `WanPipeline::generate` for a text-to-video transformer (no
//! conditioning channels, no camera) from the embeddings on, step for step.
//!
//! One JSON line per dtype. `peak_rss_bytes` is the process's VmHWM (Linux): with several
//! dtypes in one process it is the peak over all of them so far, so run one dtype per
//! process (`--dtypes f32`, then `--dtypes bf16`) for a per-dtype peak.
//!
//! cargo run --release -p kiln-pipeline --example bench_generate -- [--frames 17 --size 128 --steps 4 --guidance 5.0 --repeats 1 --dtypes f32]

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use kiln_models::wan::transformer::{self, WanTransformer};
use kiln_models::wan::vae::{self, WanVae};
use kiln_models::RandomWeights;
use kiln_pipeline::noise;
use kiln_sampling::{classifier_free_guidance, Scheduler, SchedulerConfig};

#[path = "../../kiln-models/examples/support/mod.rs"]
mod support;
use support::{arg, parse_dtype, peak_rss_bytes};

const TRANSFORMER_1_3B: &str =
    include_str!("../../kiln-models/examples/configs/wan2.1_t2v_1.3b_transformer.json");

const VAE_2_1: &str = include_str!("../../kiln-models/examples/configs/wan2.1_vae.json");

/// kiln's default scheduler: the bundled model's (UniPC, flow sigmas, flow_shift 3.0, as
/// Wan2.1-T2V-1.3B-Diffusers). The python side reads the same file.
const SCHEDULER: &str =
    include_str!("../../../models/kiln-bundled/scheduler/scheduler_config.json");

struct Run<'a> {
    transformer: &'a WanTransformer,
    vae: &'a WanVae,
    scheduler: &'a SchedulerConfig,
    dtype: DType,
    steps: usize,
    guidance: f64,
    seed: u64,
    /// (1, z, F', H/8, W/8), as `GenerateRequest::latent_shape`.
    latent_shape: (usize, usize, usize, usize, usize),
}

/// `WanPipeline::generate` from the prompt embeddings on (text-to-video transformer, no
/// conditioning, no camera): returns the frames and the denoise and decode seconds.
fn generate(r: &Run, cond: &Tensor, uncond: &Tensor) -> Result<(Tensor, f64, f64)> {
    let dev = cond.device();
    let use_cfg = r.guidance > 1.0;
    let cond = cond.to_dtype(r.dtype)?;
    let uncond = if use_cfg {
        Some(uncond.to_dtype(r.dtype)?)
    } else {
        None
    };

    let t1 = Instant::now();
    let mut scheduler =
        Scheduler::from_config(r.scheduler.clone()).map_err(candle_core::Error::wrap)?;
    scheduler.set_timesteps(r.steps);
    let mut latents = noise::torch_randn(r.seed, r.latent_shape, dev)?;
    let timesteps: Vec<f64> = scheduler.timesteps().to_vec();
    for &t in &timesteps {
        let model_in = latents.to_dtype(r.dtype)?;
        let pred = match &uncond {
            Some(uncond) => {
                let both = r.transformer.forward_with_camera(
                    &Tensor::cat(&[&model_in, &model_in], 0)?,
                    &Tensor::new(&[t as f32, t as f32], dev)?,
                    &Tensor::cat(&[&cond, uncond], 0)?,
                    None,
                )?;
                classifier_free_guidance(
                    &both.narrow(0, 1, 1)?,
                    &both.narrow(0, 0, 1)?,
                    r.guidance,
                )?
            }
            None => r.transformer.forward_with_camera(
                &model_in,
                &Tensor::new(&[t as f32], dev)?,
                &cond,
                None,
            )?,
        };
        latents = scheduler.step(&pred.to_dtype(DType::F32)?, &latents)?;
    }
    let denoise = t1.elapsed().as_secs_f64();

    let t2 = Instant::now();
    let z = r.vae.denormalize(&latents.to_dtype(r.dtype)?)?;
    let video = r.vae.decode(&z)?;
    let frames = to_frames(&video)?;
    Ok((frames, denoise, t2.elapsed().as_secs_f64()))
}

/// As the pipeline's `to_frames`: (1, 3, F, H, W) in [-1, 1] → (F, H, W, 3) in [0, 1], f32.
fn to_frames(video: &Tensor) -> Result<Tensor> {
    let v = video.to_dtype(DType::F32)?.squeeze(0)?;
    ((v / 2.0)? + 0.5)?
        .clamp(0f32, 1f32)?
        .permute((1, 2, 3, 0))?
        .contiguous()
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames: usize = arg(&args, "--frames", "17").parse().unwrap_or(17);
    let size: usize = arg(&args, "--size", "128").parse().unwrap_or(128);
    let steps: usize = arg(&args, "--steps", "4").parse().unwrap_or(4);
    let guidance: f64 = arg(&args, "--guidance", "5.0").parse().unwrap_or(5.0);
    let repeats: usize = arg(&args, "--repeats", "1").parse().unwrap_or(1);
    let dtypes = arg(&args, "--dtypes", "f32");
    let dev = Device::Cpu;
    let scheduler = SchedulerConfig::from_json(SCHEDULER).map_err(candle_core::Error::wrap)?;
    let flow_shift = match &scheduler {
        SchedulerConfig::UniPc(c) => c.flow_shift,
        SchedulerConfig::Euler(c) => c.shift,
    };
    let latent_shape = (1, 16, (frames - 1) / 4 + 1, size / 8, size / 8);
    for name in dtypes.split(',') {
        let dtype = parse_dtype(name)?;
        let random = RandomWeights::new(0.02);
        let weights = || random.var_builder(dtype, &dev);
        let tr_cfg: transformer::Config =
            serde_json::from_str(TRANSFORMER_1_3B).map_err(candle_core::Error::wrap)?;
        let transformer = WanTransformer::new(&tr_cfg, weights())?;
        let vae_cfg: vae::Config =
            serde_json::from_str(VAE_2_1).map_err(candle_core::Error::wrap)?;
        let vae = WanVae::new(&vae_cfg, weights())?;
        // Random prompt and negative-prompt embeddings in place of the text encoder.
        let cond = Tensor::randn(0f32, 1.0, (1, 512, 4096), &dev)?;
        let uncond = Tensor::randn(0f32, 1.0, (1, 512, 4096), &dev)?;
        let run = Run {
            transformer: &transformer,
            vae: &vae,
            scheduler: &scheduler,
            dtype,
            steps,
            guidance,
            seed: 0,
            latent_shape,
        };
        let mut best = (f64::INFINITY, 0.0, 0.0);
        for _ in 0..repeats {
            let t = Instant::now();
            let (frames, denoise, decode) = generate(&run, &cond, &uncond)?;
            frames.flatten_all()?.sum(0)?.to_scalar::<f32>()?;
            let secs = t.elapsed().as_secs_f64();
            if secs < best.0 {
                best = (secs, denoise, decode);
            }
        }
        let (secs, denoise, decode) = best;
        println!(
            "{{\"what\":\"generation\",\"dtype\":\"{name}\",\"seconds\":{secs},\
             \"denoise_seconds\":{denoise},\"decode_seconds\":{decode},\
             \"peak_rss_bytes\":{},\"weights_bytes\":{},\"steps\":{steps},\
             \"guidance\":{guidance},\"flow_shift\":{flow_shift},\
             \"text_encoder\":\"skipped: random (1, 512, 4096) prompt and negative-prompt embeddings\"}}",
            peak_rss_bytes(),
            random.bytes_given(),
        );
    }
    Ok(())
}
