//! `kiln generate`: flags → `GenerateRequest` → `WanPipeline` → files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_media::video_out::{
    clip_frame, encode_poster_jpeg, write_atomically, write_video_file, EncodeOptions, VideoFormat,
};
use kiln_pipeline::{
    CheckpointPaths, GenerateRequest, Progress, WanPipeline, DEFAULT_NEGATIVE_PROMPT,
};

/// Wan 2.1 renders at 16 frames per second.
const FPS: u32 = 16;

#[derive(Clone, Copy, ValueEnum)]
enum ComputeDtype {
    F32,
    Bf16,
    F16,
}

#[derive(Clone, Copy, ValueEnum)]
enum AspectRatio {
    #[value(name = "16:9")]
    Landscape,
    #[value(name = "9:16")]
    Portrait,
    #[value(name = "1:1")]
    Square,
}

#[derive(Args)]
pub struct GenerateArgs {
    /// Checkpoint folder in the diffusers layout (model_index.json, tokenizer/, text_encoder/, transformer/, vae/, scheduler/).
    #[arg(long)]
    model: PathBuf,
    /// Transformer weights as one file (diffusers, original Wan or ComfyUI key names).
    #[arg(long)]
    transformer: Option<PathBuf>,
    /// VAE weights as one file (diffusers or original Wan key names).
    #[arg(long)]
    vae: Option<PathBuf>,
    /// Text-encoder weights as one file (Hugging Face T5 or original Wan key names).
    #[arg(long)]
    text_encoder: Option<PathBuf>,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = DEFAULT_NEGATIVE_PROMPT)]
    negative_prompt: String,
    /// Frame count, of the form 4n+1 [default: 81].
    #[arg(long, conflicts_with = "duration")]
    frames: Option<usize>,
    /// Clip length in seconds at 16 fps (5 → 81 frames, 10 → 161).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, requires = "height", conflicts_with = "aspect_ratio")]
    width: Option<usize>,
    #[arg(long, requires = "width", conflicts_with = "aspect_ratio")]
    height: Option<usize>,
    /// 16:9 → 832×480, 9:16 → 480×832, 1:1 → 624×624 [default: 16:9].
    #[arg(long, value_enum)]
    aspect_ratio: Option<AspectRatio>,
    #[arg(long, default_value_t = 50)]
    steps: usize,
    /// Classifier-free guidance scale; 1 or less turns guidance off [default: 5.0].
    #[arg(long, conflicts_with = "cfg_scale")]
    guidance: Option<f64>,
    /// The hosted APIs' 0–1 CFG scale: guidance = 1 + 8 × cfg_scale (0.5 → 5.0).
    #[arg(long)]
    cfg_scale: Option<f64>,
    /// Random seed [default: drawn at random and reported].
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, value_enum, default_value = "f32")]
    dtype: ComputeDtype,
    /// Video file to write: .mp4 or .mov (H.264), .webm (AV1), or .y4m (uncompressed).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Container when the file name does not say: mp4, mov, webm.
    #[arg(long)]
    format: Option<String>,
    /// Encoder quality from 20 (smallest file) to 99 (best picture).
    #[arg(long, default_value_t = 95)]
    quality: u8,
    /// JPEG poster of the clip [default: beside --output, with a .jpg extension].
    #[arg(long)]
    poster: Option<PathBuf>,
    /// Which frame the poster shows (0 = first).
    #[arg(long, default_value_t = 0)]
    poster_frame: usize,
    /// safetensors file with tensor `latents` (1, C, (F-1)/4+1, H/8, W/8), f32, used instead of seeded noise.
    #[arg(long)]
    init_latents: Option<PathBuf>,
    /// Writes tensor `video` (F, H, W, 3), f32 in [0, 1], to this safetensors file.
    #[arg(long)]
    output_tensor: Option<PathBuf>,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
}

fn frames_for(args: &GenerateArgs) -> Result<usize> {
    match (args.frames, args.duration) {
        (Some(f), _) => Ok(f),
        (None, Some(s)) => {
            if !(s.is_finite() && s > 0.0 && s <= 60.0) {
                bail!("--duration {s}: expected seconds from 0 to 60, e.g. 5 or 10");
            }
            Ok((s * FPS as f64).round() as usize + 1)
        }
        (None, None) => Ok(81),
    }
}

fn size_for(args: &GenerateArgs) -> (usize, usize) {
    match (args.width, args.height, args.aspect_ratio) {
        (Some(w), Some(h), _) => (w, h),
        (_, _, Some(AspectRatio::Portrait)) => (480, 832),
        (_, _, Some(AspectRatio::Square)) => (624, 624),
        _ => (832, 480),
    }
}

fn guidance_for(args: &GenerateArgs) -> Result<f64> {
    match (args.guidance, args.cfg_scale) {
        (Some(g), _) => Ok(g),
        (None, Some(c)) => kiln_sampling_guidance(c),
        (None, None) => Ok(5.0),
    }
}

fn kiln_sampling_guidance(c: f64) -> Result<f64> {
    kiln_pipeline::guidance_from_cfg_scale(c).map_err(|e| anyhow::anyhow!("--cfg-scale: {e}"))
}

fn load_init_latents(path: &PathBuf) -> Result<Tensor> {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).with_context(|| {
        format!(
            "{}: cannot read safetensors; write it with a tensor named `latents`",
            path.display()
        )
    })?;
    tensors.remove("latents").with_context(|| {
        format!(
            "{}: no tensor named `latents`; save the latents under that name",
            path.display()
        )
    })
}

/// Peak resident memory of this process, from the kernel's high-water mark.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// What `--output` will be written as: a container via kiln-media, or raw .y4m.
enum OutputKind {
    Encoded(VideoFormat),
    Y4m,
}

fn output_kind(path: &std::path::Path, format: Option<&str>) -> Result<OutputKind> {
    if let Some(name) = format {
        return Ok(OutputKind::Encoded(VideoFormat::from_name(name)?));
    }
    match path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("y4m") => Ok(OutputKind::Y4m),
        _ => Ok(OutputKind::Encoded(VideoFormat::from_path(path)?)),
    }
}

/// (F, H, W, 3) floats in [0, 1] → RGB8, rounding as image libraries do.
fn to_rgb8(video: &[f32]) -> Vec<u8> {
    video
        .iter()
        .map(|v| (v * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect()
}

pub fn run(args: GenerateArgs) -> Result<()> {
    let num_frames = frames_for(&args)?;
    let (width, height) = size_for(&args);
    let guidance_scale = guidance_for(&args)?;
    let output_kind = args
        .output
        .as_deref()
        .map(|p| output_kind(p, args.format.as_deref()))
        .transpose()?;
    if args.output.is_some() && args.poster_frame >= num_frames {
        bail!(
            "--poster-frame {}: the clip has {num_frames} frames; pick 0-{}",
            args.poster_frame,
            num_frames.saturating_sub(1)
        );
    }
    if !(20..=99).contains(&args.quality) {
        bail!(
            "--quality {}: expected 20 to 99 (95 is the default)",
            args.quality
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        nanos % 4_294_967_296
    });
    let init_latents = args
        .init_latents
        .as_ref()
        .map(load_init_latents)
        .transpose()?;
    let dtype = match args.dtype {
        ComputeDtype::F32 => DType::F32,
        ComputeDtype::Bf16 => DType::BF16,
        ComputeDtype::F16 => DType::F16,
    };
    let request = GenerateRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        num_frames,
        height,
        width,
        steps: args.steps,
        guidance_scale,
        seed,
        init_latents,
        camera: None,
        conditions: Default::default(),
    };

    let bar = ProgressBar::new_spinner();
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message("loading model");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let t_load = Instant::now();
    let device = Device::Cpu;
    let paths = CheckpointPaths {
        model: args.model.clone(),
        transformer: args.transformer.clone(),
        vae: args.vae.clone(),
        text_encoder: args.text_encoder.clone(),
    };
    let pipeline = WanPipeline::load(&paths, dtype, &device)?;
    let load_seconds = t_load.elapsed().as_secs_f64();

    let mut on_progress = |p: Progress| {
        match p {
            Progress::EncodingPrompt => bar.set_message("encoding prompt"),
            Progress::Denoising {
                step,
                steps,
                seconds,
            } => {
                if step == 1 {
                    bar.set_style(
                        ProgressStyle::with_template(
                            "{msg} [{bar:30}] {pos}/{len} {elapsed_precise}",
                        )
                        .unwrap_or_else(|_| ProgressStyle::default_bar()),
                    );
                    bar.set_length(steps as u64);
                }
                bar.set_position(step as u64);
                bar.set_message(format!("denoising {seconds:.2} s/step"));
            }
            Progress::Decoding => {
                bar.set_style(ProgressStyle::default_spinner());
                bar.set_message("decoding")
            }
        }
        true
    };
    let generated = pipeline.generate(&request, &mut on_progress)?;
    bar.finish_and_clear();

    let (f, h, w, _) = generated.video.dims4()?;
    if let Some(path) = &args.output_tensor {
        generated
            .video
            .save_safetensors("video", path)
            .with_context(|| format!("{}: cannot write the tensor file", path.display()))?;
    }
    let mut poster_path = None;
    if let (Some(path), Some(kind)) = (&args.output, &output_kind) {
        let data: Vec<f32> = generated.video.flatten_all()?.to_vec1()?;
        match kind {
            OutputKind::Y4m => crate::y4m::write(path, &data, f, h, w, FPS)
                .with_context(|| format!("{}: cannot write the video", path.display()))?,
            OutputKind::Encoded(format) => {
                let rgb = to_rgb8(&data);
                let opts = EncodeOptions {
                    format: *format,
                    fps: FPS,
                    quality: args.quality,
                };
                write_video_file(path, &rgb, f, w, h, &opts)?;
                let poster = args
                    .poster
                    .clone()
                    .unwrap_or_else(|| path.with_extension("jpg"));
                let frame = clip_frame(&rgb, f, w, h, args.poster_frame)?;
                write_atomically(&poster, &encode_poster_jpeg(frame, w, h, 90)?)?;
                poster_path = Some(poster);
            }
        }
    }
    let summary = serde_json::json!({
        "seed": seed,
        "prompt": request.prompt,
        "negative_prompt": request.negative_prompt,
        "frames": f,
        "width": w,
        "height": h,
        "fps": FPS,
        "steps": request.steps,
        "guidance_scale": guidance_scale,
        "dtype": format!("{dtype:?}").to_lowercase(),
        "timings": {
            "load": load_seconds,
            "encode_prompt": generated.timings.encode_prompt,
            "denoise": generated.timings.denoise,
            "decode": generated.timings.decode,
        },
        "peak_rss_bytes": peak_rss_bytes(),
        "output": args.output,
        "poster": poster_path,
        "output_tensor": args.output_tensor,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        let dest = args
            .output
            .as_ref()
            .or(args.output_tensor.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "nowhere (give --output or --output-tensor)".into());
        eprintln!(
            "generated {f} frames at {w}x{h} (seed {seed}) in {:.1} s → {dest}",
            generated.timings.encode_prompt + generated.timings.denoise + generated.timings.decode
        );
    }
    Ok(())
}
