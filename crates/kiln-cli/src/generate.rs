//! `kiln generate`: flags → `GenerateRequest` → `WanPipeline` → files.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_media::image_in::FetchLimits;
use kiln_media::video_out::{
    clip_frame, encode_poster_jpeg, write_atomically, write_video_file, EncodeOptions, VideoFormat,
};
use kiln_pipeline::conditioning::{camera_preset, CAMERA_AXES, CAMERA_PRESETS};
use kiln_pipeline::{
    CheckpointPaths, GenerateRequest, ModelDefaults, Progress, VideoConditions, WanPipeline,
};
use kiln_server::{load_conditions, ConditionInput, ConditionSources};

/// Where the bundled model lives in the repository.
pub const BUNDLED_MODEL: &str = "models/kiln-bundled";

#[derive(Clone, Copy, ValueEnum)]
pub enum ComputeDtype {
    /// bf16 on CPUs with AVX512-BF16, f32 elsewhere.
    Auto,
    F32,
    Bf16,
    F16,
}

impl ComputeDtype {
    pub fn resolve(self) -> DType {
        match self {
            ComputeDtype::Auto => kiln_models::default_cpu_dtype(),
            ComputeDtype::F32 => DType::F32,
            ComputeDtype::Bf16 => DType::BF16,
            ComputeDtype::F16 => DType::F16,
        }
    }
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
    /// Checkpoint folder in the diffusers layout (model_index.json, tokenizer/, text_encoder/, transformer/, vae/, scheduler/) [default: the bundled model, models/kiln-bundled].
    #[arg(long)]
    model: Option<PathBuf>,
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
    /// What to avoid [default: the model's; Wan's "blur, distort, and low quality", none for the bundled model].
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Frame count, of the form 4n+1 [default: 5 s at the model's frame rate].
    #[arg(long, conflicts_with = "duration")]
    frames: Option<usize>,
    /// Clip length in seconds at the model's frame rate (Wan 16 fps: 5 → 81 frames; bundled 8 fps: 5 → 41, 10 → 81).
    #[arg(long)]
    duration: Option<f64>,
    #[arg(long, requires = "height", conflicts_with = "aspect_ratio")]
    width: Option<usize>,
    #[arg(long, requires = "width", conflicts_with = "aspect_ratio")]
    height: Option<usize>,
    /// The model's size for this aspect (Wan: 16:9 → 832×480, 9:16 → 480×832, 1:1 → 624×624; bundled: 112×64, 64×112, 64×64) [default: 16:9].
    #[arg(long, value_enum)]
    aspect_ratio: Option<AspectRatio>,
    /// Denoising steps [default: the model's; 50 for Wan].
    #[arg(long)]
    steps: Option<usize>,
    /// Classifier-free guidance scale; 1 or less turns guidance off [default: the model's; 5.0 for Wan].
    #[arg(long, conflicts_with = "cfg_scale")]
    guidance: Option<f64>,
    /// The hosted APIs' 0–1 CFG scale: guidance = 1 + 8 × cfg_scale (0.5 → 5.0).
    #[arg(long)]
    cfg_scale: Option<f64>,
    /// First frame: an image file (PNG, JPEG, WebP, GIF) or http(s) URL, cropped to the clip's aspect and resized.
    #[arg(long)]
    image: Option<String>,
    /// Last frame, as --image.
    #[arg(long)]
    image_tail: Option<String>,
    /// Camera motion: a preset (down_back, forward_up, right_turn_forward, left_turn_forward), axes as name=value (e.g. pan=5,zoom=-3; horizontal, vertical, pan, tilt, roll, zoom, each -10..10), or six comma-separated numbers in that order.
    #[arg(long, allow_hyphen_values = true)]
    camera: Option<String>,
    /// Mask image over --image: white marks the region that stays still in every frame.
    #[arg(long, requires = "image")]
    static_mask: Option<String>,
    /// Mask image over --image: white marks a subject to move along the matching --trajectory (repeatable, paired in order).
    #[arg(long, requires = "image")]
    dynamic_mask: Vec<String>,
    /// Path for the matching --dynamic-mask: points "x,y;x,y;..." in pixels of the --image file (origin top left), spread evenly over the clip.
    #[arg(long)]
    trajectory: Vec<String>,
    /// Random seed [default: drawn at random and reported].
    #[arg(long)]
    seed: Option<u64>,
    /// Compute dtype; auto is bf16 on CPUs with AVX512-BF16 and f32 elsewhere.
    #[arg(long, value_enum, default_value = "auto")]
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

fn frames_for(args: &GenerateArgs, d: &ModelDefaults) -> Result<usize> {
    match (args.frames, args.duration) {
        (Some(f), _) => Ok(f),
        (None, Some(s)) => {
            if !(s.is_finite() && s > 0.0 && s <= 60.0) {
                bail!("--duration {s}: expected seconds from 0 to 60, e.g. 5 or 10");
            }
            Ok(d.frames_for_seconds(s))
        }
        (None, None) => Ok(d.frames_for_seconds(f64::from(d.seconds))),
    }
}

fn size_for(args: &GenerateArgs, d: &ModelDefaults) -> (usize, usize) {
    let [w, h] = match (args.width, args.height, args.aspect_ratio) {
        (Some(w), Some(h), _) => [w, h],
        (_, _, Some(AspectRatio::Portrait)) => d.sizes.portrait,
        (_, _, Some(AspectRatio::Square)) => d.sizes.square,
        _ => d.sizes.landscape,
    };
    (w, h)
}

fn guidance_for(args: &GenerateArgs, d: &ModelDefaults) -> Result<f64> {
    match (args.guidance, args.cfg_scale) {
        (Some(g), _) => Ok(g),
        (None, Some(c)) => kiln_sampling_guidance(c),
        (None, None) => Ok(d.guidance_scale),
    }
}

/// `--model`, or the bundled model: beside the working directory, beside the binary
/// (`target/release/kiln` → the repository's `models/`), or where this binary was built.
pub fn model_dir(model: Option<&PathBuf>) -> Result<PathBuf> {
    if let Some(m) = model {
        return Ok(m.clone());
    }
    let mut candidates = vec![PathBuf::from(BUNDLED_MODEL)];
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join("../..").join(BUNDLED_MODEL));
            candidates.push(dir.join(BUNDLED_MODEL));
        }
    }
    candidates.push(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .join(BUNDLED_MODEL),
    );
    candidates
        .into_iter()
        .find(|c| c.join("model_index.json").is_file())
        .with_context(|| {
            format!("no --model given and the bundled model ({BUNDLED_MODEL}) is not beside the working directory or the binary; run from the kiln repository or pass --model DIR")
        })
}

/// `--camera`: a preset name, `axis=value` pairs, or six numbers.
pub fn parse_camera(text: &str) -> Result<[f64; 6]> {
    let text = text.trim();
    if let Some(axes) = camera_preset(text) {
        return Ok(axes);
    }
    let usage = || {
        format!(
            "--camera {text:?}: expected a preset ({}), axes as name=value (names: {}), or six comma-separated numbers",
            CAMERA_PRESETS.join(", "),
            CAMERA_AXES.join(", ")
        )
    };
    let mut axes = [0.0; 6];
    if text.contains('=') {
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').with_context(usage)?;
            let i = CAMERA_AXES
                .iter()
                .position(|a| *a == name.trim())
                .with_context(|| {
                    format!("--camera: unknown axis {:?}; {}", name.trim(), usage())
                })?;
            axes[i] = value.trim().parse().with_context(usage)?;
        }
    } else {
        let values: Vec<f64> = text
            .split(',')
            .map(|v| v.trim().parse::<f64>())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| anyhow::anyhow!(usage()))?;
        if values.len() != 6 {
            bail!("{}", usage());
        }
        axes.copy_from_slice(&values);
    }
    Ok(axes)
}

/// `--trajectory "x,y;x,y"`.
fn parse_trajectory(text: &str) -> Result<Vec<[f32; 2]>> {
    text.split(';')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (x, y) = p.split_once(',').with_context(|| {
                format!("--trajectory: point {p:?} is not x,y; write points as \"x,y;x,y\"")
            })?;
            let x: f32 = x
                .trim()
                .parse()
                .with_context(|| format!("--trajectory: {x:?} is not a number"))?;
            let y: f32 = y
                .trim()
                .parse()
                .with_context(|| format!("--trajectory: {y:?} is not a number"))?;
            Ok([x, y])
        })
        .collect()
}

/// The images and masks of the request, fitted to the clip (kiln-server's
/// `load_conditions`, shared with the API's workers); errors name the flag and its value.
fn conditions_for(args: &GenerateArgs, width: usize, height: usize) -> Result<VideoConditions> {
    if args.dynamic_mask.len() != args.trajectory.len() {
        bail!(
            "{} --dynamic-mask and {} --trajectory given; give one --trajectory per --dynamic-mask, in the same order",
            args.dynamic_mask.len(),
            args.trajectory.len()
        );
    }
    let trajectories = args
        .trajectory
        .iter()
        .map(|t| parse_trajectory(t))
        .collect::<Result<Vec<_>>>()?;
    let sources = ConditionSources {
        first_frame: args.image.as_deref(),
        last_frame: args.image_tail.as_deref(),
        static_mask: args.static_mask.as_deref(),
        dynamic_masks: args
            .dynamic_mask
            .iter()
            .zip(&trajectories)
            .map(|(m, t)| (m.as_str(), t.as_slice()))
            .collect(),
    };
    load_conditions(&sources, width, height, &FetchLimits::default()).map_err(|e| {
        let (flag, value) = match e.input {
            ConditionInput::FirstFrame => ("--image", args.image.as_deref()),
            ConditionInput::LastFrame => ("--image-tail", args.image_tail.as_deref()),
            ConditionInput::StaticMask => ("--static-mask", args.static_mask.as_deref()),
            ConditionInput::DynamicMask(i) => (
                "--dynamic-mask",
                args.dynamic_mask.get(i).map(String::as_str),
            ),
        };
        anyhow::anyhow!("{flag} {}: {}", value.unwrap_or_default(), e.message)
    })
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
    let output_kind = args
        .output
        .as_deref()
        .map(|p| output_kind(p, args.format.as_deref()))
        .transpose()?;
    if !(20..=99).contains(&args.quality) {
        bail!(
            "--quality {}: expected 20 to 99 (95 is the default)",
            args.quality
        );
    }
    let camera = args.camera.as_deref().map(parse_camera).transpose()?;
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
    let dtype = args.dtype.resolve();

    let bar = ProgressBar::new_spinner();
    if args.json {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_message("loading model");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let t_load = Instant::now();
    let device = Device::Cpu;
    let paths = CheckpointPaths {
        model: model_dir(args.model.as_ref())?,
        transformer: args.transformer.clone(),
        vae: args.vae.clone(),
        text_encoder: args.text_encoder.clone(),
    };
    let pipeline = WanPipeline::load(&paths, dtype, &device)?;
    let load_seconds = t_load.elapsed().as_secs_f64();
    let defaults = pipeline.defaults().clone();
    let fps = defaults.fps;

    let num_frames = frames_for(&args, &defaults)?;
    let (width, height) = size_for(&args, &defaults);
    let guidance_scale = guidance_for(&args, &defaults)?;
    if args.output.is_some() && args.poster_frame >= num_frames {
        bail!(
            "--poster-frame {}: the clip has {num_frames} frames; pick 0-{}",
            args.poster_frame,
            num_frames.saturating_sub(1)
        );
    }
    let conditions = conditions_for(&args, width, height)?;
    let request = GenerateRequest {
        prompt: args.prompt.clone(),
        negative_prompt: args
            .negative_prompt
            .clone()
            .unwrap_or_else(|| defaults.negative_prompt.clone()),
        num_frames,
        height,
        width,
        steps: args.steps.unwrap_or(defaults.steps),
        guidance_scale,
        seed,
        init_latents,
        camera,
        conditions,
    };

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
            OutputKind::Y4m => crate::y4m::write(path, &data, f, h, w, fps)
                .with_context(|| format!("{}: cannot write the video", path.display()))?,
            OutputKind::Encoded(format) => {
                let rgb = to_rgb8(&data);
                let opts = EncodeOptions {
                    format: *format,
                    fps,
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
        "fps": fps,
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
