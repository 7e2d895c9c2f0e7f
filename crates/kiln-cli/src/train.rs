//! `kiln train`: flags → `kiln_train::TrainOptions` → the VAE or DiT stage, with a progress
//! bar (or plain log lines with `--quiet` or off a terminal) and a closing summary.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use kiln_train::{train_dit, train_vae, ClipGeometry, ModelSizes, StepReport, TrainOptions};

#[derive(Clone, Copy, ValueEnum)]
enum StageArg {
    /// Stage 1: the VAE as an autoencoder of rendered clips; writes OUT/model/vae/.
    Vae,
    /// Stage 2: text encoder and transformer by flow matching; needs OUT/model/vae/.
    Dit,
}

#[derive(Clone, Copy, ValueEnum)]
enum SizeArg {
    /// The bundled model (docs/bundled-model.md).
    Bundled,
    /// A tiny model for smoke runs.
    Tiny,
}

#[derive(Args)]
pub struct TrainArgs {
    #[arg(long, value_enum)]
    stage: StageArg,
    /// Run folder: checkpoints in OUT/<stage>-train/, the loadable model in OUT/model/.
    #[arg(long)]
    out: PathBuf,
    /// Total optimizer steps of the run (with --resume, continues up to this many).
    #[arg(long)]
    steps: u64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Continue the run saved in OUT from its last checkpoint.
    #[arg(long)]
    resume: bool,
    /// Clips per step.
    #[arg(long, default_value_t = 2)]
    batch: usize,
    /// Peak learning rate (AdamW, linear warm-up).
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    #[arg(long, default_value_t = 20)]
    warmup_steps: u64,
    /// Save a checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 100)]
    checkpoint_every: u64,
    #[arg(long, value_enum, default_value = "bundled")]
    size: SizeArg,
    /// Clip frame counts to train on, each 4k+1 (comma-separated) [default: 41].
    #[arg(long, value_delimiter = ',')]
    frames: Option<Vec<usize>>,
    /// Draw scenes from this many fixed seeds (an over-fitting check, not for real runs).
    #[arg(long)]
    scene_pool: Option<u64>,
    /// At most this many objects a scene, 1 to 3 [default: 3]: a curriculum starts with
    /// one object and resumes with more.
    #[arg(long)]
    max_objects: Option<usize>,
    /// Print a log line every this many steps instead of drawing a progress bar.
    #[arg(long)]
    log_every: Option<u64>,
    /// Compute threads (candle's and rayon's pools). The bundled model's tensors are too
    /// small to split: one thread trains as fast as two here, and the DiT stage prepares
    /// the next steps' inputs on two threads of their own beside it.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// VAE stage: train the decoder only. The encoder, so the latents (and their exported
    /// statistics) that a DiT stage trains on, stays as it is.
    #[arg(long)]
    freeze_encoder: bool,
    /// Start a new run from an exported model's weights (e.g. models/kiln-bundled) instead
    /// of seeded initialisation; the folder is copied to OUT/model/ first (so the DiT stage
    /// finds its VAE). The optimizer starts afresh, with its warm-up.
    #[arg(long)]
    init_from: Option<PathBuf>,
    /// Loss weight of objects against 1 for the background; 1 weighs all alike. VAE stage:
    /// object pixels and a 1-pixel ring around them; DiT stage: the latent cells whose
    /// pixel block holds part of an object.
    #[arg(long, default_value_t = 1.0)]
    object_weight: f64,
    /// DiT stage: factor on the learning rate of the conditioning paths (the text encoder,
    /// and the transformer's text and camera embedders); 1 trains them at --lr.
    #[arg(long, default_value_t = 1.0)]
    conditioning_lr_scale: f64,
    /// Rows the prompt embeddings are padded to, written into the exported model for the
    /// pipeline to use (default: the size's own, 64 for the bundled model; Wan uses 512).
    #[arg(long)]
    text_len: Option<usize>,
    /// DiT stage: share of clips trained with no frame condition at all (text, and camera,
    /// only), on top of the quarter the other conditioning draws leave so; 0 by default.
    #[arg(long, default_value_t = 0.0)]
    text_only: f32,
}

pub fn run(args: TrainArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    if args.freeze_encoder && !matches!(args.stage, StageArg::Vae) {
        bail!("--freeze-encoder applies to --stage vae only (the DiT stage never trains the VAE)");
    }
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    // Read by candle and rayon when their pools start, which is after this point: no
    // other thread exists yet.
    std::env::set_var("RAYON_NUM_THREADS", args.threads.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", args.threads.to_string());
    let (mut sizes, mut geometry) = match args.size {
        SizeArg::Bundled => (ModelSizes::bundled(), ClipGeometry::bundled()),
        SizeArg::Tiny => (ModelSizes::tiny(), ClipGeometry::tiny()),
    };
    if let Some(text_len) = args.text_len {
        sizes.text_len = text_len;
    }
    if let Some(frames) = args.frames {
        geometry.frame_counts = frames;
    }
    geometry.scene_pool = args.scene_pool;
    geometry.max_objects = args.max_objects;
    let mut opts = TrainOptions::bundled(args.out.clone(), args.steps, args.seed);
    opts.batch = args.batch;
    opts.optimizer.lr = args.lr;
    opts.optimizer.warmup_steps = args.warmup_steps;
    opts.checkpoint_every = args.checkpoint_every;
    opts.freeze_encoder = args.freeze_encoder;
    opts.resume = args.resume;
    opts.init_from = args.init_from;
    opts.object_weight = args.object_weight;
    opts.rates.text_only = args.text_only;
    opts.set_conditioning_lr_scale(args.conditioning_lr_scale);
    opts.sizes = sizes;
    opts.geometry = geometry;

    let use_bar = args.log_every.is_none() && std::io::stderr().is_terminal();
    let log_every = args.log_every.unwrap_or(10).max(1);
    let bar = ProgressBar::new(args.steps);
    if use_bar {
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut on_step = |r: &StepReport| {
        if use_bar {
            bar.set_prefix(r.stage.name());
            bar.set_position(r.step);
            bar.set_message(format!("loss {:.4} ({:.2} s/step)", r.loss, r.seconds));
        } else if r.step.checked_rem(log_every) == Some(0) || r.step == r.steps {
            eprintln!(
                "{} step {}/{} loss {:.5} lr {:.2e} grad-norm {:.3} {:.2} s/step",
                r.stage.name(),
                r.step,
                r.steps,
                r.loss,
                r.lr,
                r.grad_norm,
                r.seconds
            );
        }
    };
    let summary = match args.stage {
        StageArg::Vae => train_vae(&opts, &mut on_step)?,
        StageArg::Dit => train_dit(&opts, &mut on_step)?,
    };
    bar.finish_and_clear();
    // Whenever the folder holds a whole model: the DiT stage writes one, and a VAE stage run
    // after it (`--freeze-encoder`) rewrites the VAE weights the cache is stamped with.
    if summary.model_dir.join("model_index.json").is_file() {
        write_condition_cache(&summary.model_dir, &opts)?;
    }
    let n = summary.losses.len();
    if n == 0 {
        eprintln!(
            "the run in {} is already at step {}; raise --steps to train further (model in {})",
            args.out.display(),
            summary.final_step,
            summary.model_dir.display()
        );
        return Ok(());
    }
    let window = n.clamp(1, 10);
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    eprintln!(
        "trained steps {}..{} in {:.1} s; mean loss first {window}: {:.5}, last {window}: {:.5}; model in {}",
        summary.first_step,
        summary.final_step,
        summary.wall_seconds,
        mean(&summary.losses[..window.min(n)]),
        mean(&summary.losses[n.saturating_sub(window)..]),
        summary.model_dir.display()
    );
    Ok(())
}

/// Ships the text-only condition of each trained clip size, for clips up to the longest the
/// model serves (10 s), so `kiln generate` skips its VAE encode.
fn write_condition_cache(model_dir: &std::path::Path, opts: &TrainOptions) -> Result<()> {
    let paths = kiln_pipeline::CheckpointPaths {
        model: model_dir.to_path_buf(),
        ..Default::default()
    };
    let pipeline = kiln_pipeline::WanPipeline::load(
        &paths,
        candle_core::DType::F32,
        &candle_core::Device::Cpu,
    )?;
    let d = pipeline.defaults();
    let frames = d.frames_for_seconds(10.0);
    let sizes: Vec<(usize, usize)> = opts
        .geometry
        .sizes
        .iter()
        .map(|&(w, h)| (w as usize, h as usize))
        .collect();
    let path = pipeline.write_condition_cache(model_dir, &sizes, frames)?;
    eprintln!(
        "text-only conditions for {sizes:?} up to {frames} frames in {}",
        path.display()
    );
    Ok(())
}
