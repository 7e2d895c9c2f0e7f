//! `kiln eval`: held-out adherence of a model (kiln-eval), printed as a table and
//! optionally written as JSON; `--check` fails when a target is missed.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use kiln_eval::{prepare_sample, run_sample, summarise, EvalOptions, SampleResult, Targets};
use kiln_media::video_out::{write_video_file, EncodeOptions, VideoFormat};
use kiln_pipeline::{CheckpointPaths, WanPipeline};

#[derive(Args)]
pub struct EvalArgs {
    /// Checkpoint folder [default: the bundled model, models/kiln-bundled].
    #[arg(long)]
    model: Option<PathBuf>,
    /// Held-out samples to generate (they cycle through text only, first frame, first and last frame, static mask, dynamic mask).
    #[arg(long, default_value_t = 200)]
    samples: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Denoising steps [default: the model's].
    #[arg(long)]
    steps: Option<usize>,
    /// Guidance scale [default: the model's].
    #[arg(long)]
    guidance: Option<f64>,
    /// Frame count [default: the model's 5 s clip].
    #[arg(long)]
    frames: Option<usize>,
    /// Loosen the targets by this many points (accuracies in percentage points, other measures in percent).
    #[arg(long, default_value_t = 0.0)]
    loosen: f64,
    /// Exit with status 1 when a target is missed.
    #[arg(long)]
    check: bool,
    /// Write the per-sample results and the summary here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write each sample's clip here as an MP4, the generated clip on the left and the
    /// held-out scene's render on the right (NNN-kind.mp4, NNN the sample's index).
    #[arg(long)]
    videos: Option<PathBuf>,
}

pub fn run(args: EvalArgs) -> Result<()> {
    if args.samples == 0 {
        bail!("--samples 0: give at least 1 (200 for the issue's table, 20 in CI)");
    }
    if !(0.0..=50.0).contains(&args.loosen) {
        bail!("--loosen {}: expected 0 to 50 points", args.loosen);
    }
    if let Some(dir) = &args.videos {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create the video folder", dir.display()))?;
    }
    let paths = CheckpointPaths {
        model: crate::generate::model_dir(args.model.as_ref())?,
        ..Default::default()
    };
    let pipeline = WanPipeline::load(&paths, DType::F32, &Device::Cpu)?;
    let mut opts = EvalOptions::for_pipeline(&pipeline, args.samples, args.seed);
    if let Some(s) = args.steps {
        opts.steps = s;
    }
    if let Some(g) = args.guidance {
        opts.guidance_scale = g;
    }
    if let Some(f) = args.frames {
        opts.frames = f;
    }
    let bar = ProgressBar::new(args.samples as u64);
    bar.set_style(
        ProgressStyle::with_template("eval [{bar:30}] {pos}/{len} {elapsed_precise} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut results = Vec::with_capacity(args.samples);
    for i in 0..args.samples {
        let sample = prepare_sample(&opts, i)?;
        let (r, rgb) = run_sample(&pipeline, &opts, i, &sample).with_context(|| {
            format!("sample {i} ({:?}): {}", sample.kind, sample.request.prompt)
        })?;
        if let Some(dir) = &args.videos {
            write_side_by_side(dir, &r, &rgb, &sample.truth.frames, opts.fps)?;
        }
        bar.set_message(format!("{:.1} s/sample", r.seconds));
        bar.inc(1);
        results.push(r);
    }
    bar.finish_and_clear();
    let summary = summarise(&results);
    let targets = Targets::default().loosened(args.loosen);
    let rows = targets.check(&summary);
    println!(
        "kiln eval: {} held-out samples, seed {}, {} frames, {} steps, guidance {}, {:.2} s/sample",
        summary.samples,
        args.seed,
        opts.frames,
        opts.steps,
        opts.guidance_scale,
        summary.seconds_per_sample
    );
    println!("| measure | measured | target | met |");
    println!("|---|---|---|---|");
    for (name, value, target, met) in &rows {
        let shown = match value {
            Some(v) if name.contains("accuracy") => format!("{:.1}%", v * 100.0),
            Some(v) => format!("{v:.3}"),
            None => "n/a".into(),
        };
        println!(
            "| {name} | {shown} | {target} | {} |",
            if *met { "yes" } else { "no" }
        );
    }
    if let Some(path) = &args.json {
        let doc = serde_json::json!({
            "options": opts,
            "targets": targets,
            "summary": summary,
            "samples": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("{}: cannot write the results", path.display()))?;
    }
    let missed: Vec<&str> = rows.iter().filter(|r| !r.3).map(|r| r.0).collect();
    if args.check && !missed.is_empty() {
        bail!("targets missed: {}", missed.join(", "));
    }
    Ok(())
}

/// The generated clip beside the scene's render, one MP4 per sample.
fn write_side_by_side(
    dir: &Path,
    r: &SampleResult,
    generated: &[u8],
    truth: &[u8],
    fps: u32,
) -> Result<()> {
    let row = r.width * 3;
    let mut both = Vec::with_capacity(2 * generated.len());
    for (g, t) in generated.chunks_exact(row).zip(truth.chunks_exact(row)) {
        both.extend_from_slice(g);
        both.extend_from_slice(t);
    }
    let frames = generated.len() / (row * r.height);
    let kind = serde_json::to_value(r.kind)?;
    let path = dir.join(format!(
        "{:03}-{}.mp4",
        r.index,
        kind.as_str().unwrap_or("sample")
    ));
    let opts = EncodeOptions {
        format: VideoFormat::Mp4,
        fps,
        ..Default::default()
    };
    write_video_file(&path, &both, frames, 2 * r.width, r.height, &opts)
        .with_context(|| format!("{}: cannot write the clip", path.display()))?;
    Ok(())
}
