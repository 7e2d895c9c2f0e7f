//! The two training stages and their shared loop.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{DType, Device, Tensor, D};
use candle_nn::{VarBuilder, VarMap};
use kiln_models::umt5::UMT5EncoderModel;
use kiln_models::wan::transformer::WanTransformer;
use kiln_models::wan::vae::{self, WanVae};
use serde_json::json;

use crate::checkpoint::{
    commit_staged, copy_model_dir, create_dir, model_index_json, read_json, save_varmap,
    scheduler_config_json, write_json, LossLog, TrainState, STAGING_DIR,
};
use crate::conditioning::{sample_conditioning, ConditionRates};
use crate::data::{clip_batch, gaussian, rng_for, ClipBatch, Stream};
use crate::error::{io_err, Result, TrainError};
use crate::init::initialise;
use crate::optim::{AdamW, AdamWConfig, LrScale};
use crate::sizes::{ClipGeometry, ModelSizes, CAMERA_DIM};
use crate::tokenizer::{tokenizer_config_json, CaptionTokenizer};

/// Shift of the flow-matching sigmas, in training and in the exported scheduler config.
pub const FLOW_SHIFT: f64 = 3.0;
/// Threads that make the DiT stage's inputs ahead of the trainer (see `train_dit`).
const INPUT_THREADS: usize = 2;

/// Weight of the latent L2 penalty that keeps the autoencoder's latents bounded.
const LATENT_PENALTY: f64 = 1e-4;
/// Clips encoded to measure the latent statistics written into `vae/config.json`.
const STATISTICS_BATCHES: u64 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Vae,
    Dit,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Vae => "vae",
            Stage::Dit => "dit",
        }
    }
}

#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// Run folder: `<stage>-train/` holds checkpoints and `loss.jsonl`; `model/` is the
    /// diffusers-layout checkpoint (the VAE stage writes `model/vae/`, the DiT stage reads
    /// it and writes the rest).
    pub out: PathBuf,
    /// Total optimizer steps of the run (a resumed run continues up to this).
    pub steps: u64,
    pub seed: u64,
    pub batch: usize,
    pub optimizer: AdamWConfig,
    pub resume: bool,
    pub sizes: ModelSizes,
    pub geometry: ClipGeometry,
    pub rates: ConditionRates,
    /// Save a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: u64,
    /// VAE stage only: train the decoder alone, the encoder (and so the latents a DiT
    /// stage already trains on, and their exported statistics) staying as they are.
    pub freeze_encoder: bool,
    /// A new run starts from this exported model's weights (its `model/`-layout folder,
    /// e.g. `models/kiln-bundled`) instead of seeded initialisation. The folder is copied to
    /// `out/model/` when that does not exist yet, so the DiT stage finds its frozen VAE and
    /// a decoder-only VAE stage keeps its latent statistics.
    pub init_from: Option<PathBuf>,
    /// Weight of objects in the loss against 1 for the background (1 = the plain mean).
    /// VAE stage: the pixels on and next to objects in the reconstruction loss; DiT stage:
    /// the latent cells whose pixel block holds part of an object, in the flow-matching
    /// loss. Objects are a few percent of a clip but all of what `kiln eval`'s detector
    /// reads.
    pub object_weight: f64,
}

impl TrainOptions {
    /// The bundled model's settings.
    pub fn bundled(out: PathBuf, steps: u64, seed: u64) -> Self {
        Self {
            out,
            steps,
            seed,
            batch: 2,
            optimizer: AdamWConfig::with_lr(2e-4),
            resume: false,
            sizes: ModelSizes::bundled(),
            geometry: ClipGeometry::bundled(),
            rates: ConditionRates::default(),
            checkpoint_every: 100,
            freeze_encoder: false,
            init_from: None,
            object_weight: 1.0,
        }
    }

    /// DiT stage: the learning rate of the conditioning paths — the text encoder and the
    /// transformer's text and camera embedders — times `factor` (1 clears it).
    pub fn set_conditioning_lr_scale(&mut self, factor: f64) {
        self.optimizer.lr_scales = if factor == 1.0 {
            Vec::new()
        } else {
            ["text_encoder.", "camera_embedder.", "text_embedder."]
                .into_iter()
                .map(|contains| LrScale {
                    contains: contains.into(),
                    factor,
                })
                .collect()
        };
    }

    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.out.join(format!("{}-train", stage.name()))
    }

    pub fn model_dir(&self) -> PathBuf {
        self.out.join("model")
    }

    fn validate(&self) -> Result<()> {
        self.geometry.validate()?;
        if self.batch == 0 {
            return Err(TrainError::Options("--batch must be at least 1".into()));
        }
        if !(self.optimizer.lr > 0.0 && self.optimizer.lr.is_finite()) {
            return Err(TrainError::Options(format!(
                "--lr {} must be a positive number",
                self.optimizer.lr
            )));
        }
        if let Some(bad) = self
            .optimizer
            .lr_scales
            .iter()
            .find(|s| !(s.factor > 0.0 && s.factor.is_finite()))
        {
            return Err(TrainError::Options(format!(
                "--conditioning-lr-scale {} must be a positive number",
                bad.factor
            )));
        }
        if !(0.0..=1.0).contains(&self.rates.text_only) {
            return Err(TrainError::Options(format!(
                "--text-only {} must be a share between 0 and 1",
                self.rates.text_only
            )));
        }
        if self.sizes.text_len == 0 {
            return Err(TrainError::Options(
                "--text-len must be at least 1 (the bundled model uses 64)".into(),
            ));
        }
        if !(self.object_weight >= 1.0 && self.object_weight.is_finite()) {
            return Err(TrainError::Options(format!(
                "--object-weight {} must be a number of at least 1 (1 weighs every pixel alike)",
                self.object_weight
            )));
        }
        if let Some(dir) = &self.init_from {
            if self.resume {
                return Err(TrainError::Options(
                    "--init-from starts a new run and --resume continues a saved one: pass only one of them".into(),
                ));
            }
            if !dir.join("model_index.json").is_file() && !dir.join("vae/config.json").is_file() {
                return Err(TrainError::Options(format!(
                    "--init-from {}: not an exported model folder (no model_index.json or vae/config.json); point it at a folder such as models/kiln-bundled",
                    dir.display()
                )));
            }
        }
        if self.checkpoint_every == 0 {
            return Err(TrainError::Options(
                "checkpoint interval must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

/// One step, for progress bars and logs.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    pub stage: Stage,
    /// 1-based step just finished.
    pub step: u64,
    pub steps: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub seconds: f64,
}

#[derive(Debug, Clone)]
pub struct TrainSummary {
    pub first_step: u64,
    pub final_step: u64,
    /// Loss of every step run in this session, in order.
    pub losses: Vec<f64>,
    pub wall_seconds: f64,
    pub model_dir: PathBuf,
}

/// Creates the variables of a model in `map` (by building it once) and initialises them,
/// or loads them from `weights`.
fn prepare_vars<M>(
    map: &mut VarMap,
    weights: Option<&Path>,
    rng: &mut kiln_world::SplitMix64,
    device: &Device,
    build: impl Fn(VarBuilder<'static>) -> candle_core::Result<M>,
) -> Result<()> {
    build(VarBuilder::from_varmap(map, DType::F32, device))?;
    match weights {
        Some(path) => map.load(path)?,
        None => initialise(map, rng)?,
    }
    Ok(())
}

/// The model over the current values of `map`. Built afresh every step: some layers
/// precompute tensors from their weights at construction (the VAE's norm scales, conv
/// taps), which would otherwise keep the values of the first step while the optimizer
/// updates the variables underneath.
fn build_from<M>(
    map: &VarMap,
    device: &Device,
    build: impl Fn(VarBuilder<'static>) -> candle_core::Result<M>,
) -> Result<M> {
    Ok(build(VarBuilder::from_varmap(map, DType::F32, device))?)
}

/// Where a stage's variables start: the run's checkpoint when resuming, the `--init-from`
/// model's exported file `exported` for a new run from it (whose folder is first copied
/// to `out/model/` unless that exists), or seeded initialisation (`None`).
fn starting_weights(
    opts: &TrainOptions,
    run: &Run,
    checkpoint: &Path,
    exported: &str,
) -> Result<Option<PathBuf>> {
    if run.resumed {
        return Ok(Some(checkpoint.to_path_buf()));
    }
    let Some(from) = &opts.init_from else {
        return Ok(None);
    };
    let path = from.join(exported);
    if !path.is_file() {
        return Err(TrainError::Options(format!(
            "--init-from {}: {exported} is missing; the folder must hold the weights of the stage it starts",
            from.display()
        )));
    }
    if !opts.model_dir().exists() {
        copy_model_dir(from, &opts.model_dir())?;
    }
    Ok(Some(path))
}

fn mse(a: &Tensor, b: &Tensor) -> candle_core::Result<Tensor> {
    (a - b)?.sqr()?.mean_all()
}

/// Resume bookkeeping shared by both stages.
struct Run {
    state: TrainState,
    dir: PathBuf,
    log: LossLog,
    resumed: bool,
}

fn open_run(stage: Stage, opts: &TrainOptions) -> Result<Run> {
    opts.validate()?;
    let dir = opts.stage_dir(stage);
    create_dir(&dir)?;
    let state_path = dir.join("state.json");
    let fresh = TrainState {
        stage: stage.name().into(),
        step: 0,
        seed: opts.seed,
        batch: opts.batch,
        optimizer: opts.optimizer.clone(),
        sizes: opts.sizes.clone(),
        geometry: opts.geometry.clone(),
        rates: opts.rates.clone(),
        object_weight: opts.object_weight,
        freeze_encoder: opts.freeze_encoder,
        init_from: opts.init_from.clone(),
        rng: "SplitMix64 streams derived from (seed, step); nothing else to restore".into(),
        last_loss: None,
        wall_seconds: 0.0,
    };
    let (state, resumed) = if opts.resume && state_path.is_file() {
        let mut saved: TrainState = read_json(&state_path, "training state")?;
        // Clip lengths may change on resume (short clips first, longer ones later); sizes,
        // frame rate and the scene stream may not.
        let same_geometry = ClipGeometry {
            frame_counts: fresh.geometry.frame_counts.clone(),
            max_objects: fresh.geometry.max_objects,
            ..saved.geometry.clone()
        } == fresh.geometry;
        // What differs, named with the flag that sets it, so the error says what to pass.
        let mut differs = Vec::new();
        if saved.seed != fresh.seed {
            differs.push(format!("--seed {} (asked {})", saved.seed, fresh.seed));
        }
        if saved.batch != fresh.batch {
            differs.push(format!("--batch {} (asked {})", saved.batch, fresh.batch));
        }
        if saved.sizes.text_len != fresh.sizes.text_len {
            differs.push(format!(
                "--text-len {} (asked {})",
                saved.sizes.text_len, fresh.sizes.text_len
            ));
        }
        let saved_sizes = ModelSizes {
            text_len: fresh.sizes.text_len,
            ..saved.sizes.clone()
        };
        if saved_sizes != fresh.sizes {
            differs.push("the model sizes (--size)".into());
        }
        if !same_geometry {
            differs.push("the clip sizes, frame rate or scene pool".into());
        }
        if saved.stage != fresh.stage {
            differs.push(format!("stage {} (asked {})", saved.stage, fresh.stage));
        }
        let same_run = differs.is_empty();
        if same_run && saved.geometry.frame_counts != fresh.geometry.frame_counts {
            tracing::info!(
                from = ?saved.geometry.frame_counts,
                to = ?fresh.geometry.frame_counts,
                step = saved.step,
                "resuming with other clip lengths"
            );
            saved.geometry.frame_counts = fresh.geometry.frame_counts.clone();
        }
        // So may the object limit (a curriculum: one object first, then the whole world).
        saved.geometry.max_objects = fresh.geometry.max_objects;
        // The loss and optimizer settings may change between sessions; the state records
        // the latest.
        saved.optimizer = fresh.optimizer.clone();
        saved.object_weight = fresh.object_weight;
        saved.rates.text_only = fresh.rates.text_only;
        saved.freeze_encoder = fresh.freeze_encoder;
        if !same_run {
            return Err(TrainError::Options(format!(
                "{}: the saved run has other settings: {}; resume with those (only --frames, --max-objects and the optimizer and loss options may change), or choose another --out",
                state_path.display(),
                differs.join(", ")
            )));
        }
        (saved, true)
    } else if state_path.is_file() {
        return Err(TrainError::Options(format!(
            "{}: a run already exists here; pass --resume to continue it or choose another --out",
            state_path.display()
        )));
    } else {
        (fresh, false)
    };
    let log = LossLog::open(&dir.join("loss.jsonl"), state.step)?;
    Ok(Run {
        state,
        dir,
        log,
        resumed,
    })
}

/// The shared loop: `step_loss(step)` builds the graph and returns the loss; backward,
/// update, logging and checkpoints happen here.
fn run_loop(
    stage: Stage,
    opts: &TrainOptions,
    run: &mut Run,
    optimizer: &mut AdamW,
    mut step_loss: impl FnMut(u64) -> Result<Tensor>,
    mut save: impl FnMut(&Path, &AdamW) -> Result<()>,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary> {
    let session = Instant::now();
    let first_step = run.state.step;
    let wall_before = run.state.wall_seconds;
    let mut losses = Vec::new();
    while run.state.step < opts.steps {
        let step = run.state.step;
        let t0 = Instant::now();
        let loss = step_loss(step)?;
        let loss_value = f64::from(loss.to_scalar::<f32>()?);
        if !loss_value.is_finite() {
            return Err(TrainError::Options(format!(
                "loss became {loss_value} at step {step}; lower --lr and resume from the last checkpoint"
            )));
        }
        let grads = loss.backward()?;
        let update = optimizer.update(&grads)?;
        run.state.step += 1;
        run.state.last_loss = Some(loss_value);
        let seconds = t0.elapsed().as_secs_f64();
        run.log.append(&json!({
            "step": step, "loss": loss_value, "lr": update.lr,
            "grad_norm": update.grad_norm, "seconds": seconds,
        }))?;
        losses.push(loss_value);
        let report = StepReport {
            stage,
            step: run.state.step,
            steps: opts.steps,
            loss: loss_value,
            lr: update.lr,
            grad_norm: update.grad_norm,
            seconds,
        };
        tracing::debug!(
            stage = stage.name(),
            step = report.step,
            loss = loss_value,
            "step"
        );
        on_step(&report);
        if run.state.step.is_multiple_of(opts.checkpoint_every) || run.state.step == opts.steps {
            run.state.wall_seconds = wall_before + session.elapsed().as_secs_f64();
            let staging = run.dir.join(STAGING_DIR);
            std::fs::create_dir_all(&staging).map_err(io_err(&staging))?;
            save(&staging, optimizer)?;
            optimizer.save(&staging.join("optimizer.safetensors"))?;
            write_json(&staging.join("state.json"), &run.state)?;
            commit_staged(&staging, &run.dir)?;
            tracing::info!(
                stage = stage.name(),
                step = run.state.step,
                loss = loss_value,
                "checkpoint saved"
            );
        }
    }
    Ok(TrainSummary {
        first_step,
        final_step: run.state.step,
        losses,
        wall_seconds: session.elapsed().as_secs_f64(),
        model_dir: opts.model_dir(),
    })
}

/// Stage 1: the Wan VAE as an autoencoder of rendered clips (L1 + L2 reconstruction and a
/// small latent L2 penalty). Exports `model/vae/` with measured latent statistics.
pub fn train_vae(
    opts: &TrainOptions,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary> {
    let device = Device::Cpu;
    let mut run = open_run(Stage::Vae, opts)?;
    let z = opts.sizes.vae_z_dim;
    let cfg = opts.sizes.vae_config(&vec![0.0; z], &vec![1.0; z])?;
    let weights_path = starting_weights(
        opts,
        &run,
        &run.dir.join("vae.safetensors"),
        "vae/diffusion_pytorch_model.safetensors",
    )?;
    let mut map = VarMap::new();
    let mut init_rng = rng_for(opts.seed, 0, Stream::Initialisation);
    let build_vae = |vb| WanVae::new(&cfg, vb);
    prepare_vars(
        &mut map,
        weights_path.as_deref(),
        &mut init_rng,
        &device,
        build_vae,
    )?;
    let mut optimizer = AdamW::new(&[("vae", &map)], opts.optimizer.clone())?;
    if run.resumed {
        optimizer.load(&run.dir.join("optimizer.safetensors"))?;
    }
    tracing::info!(
        step = run.state.step,
        steps = opts.steps,
        resumed = run.resumed,
        "VAE stage"
    );
    let summary = run_loop(
        Stage::Vae,
        opts,
        &mut run,
        &mut optimizer,
        |step| {
            let model = build_from(&map, &device, build_vae)?;
            let batch = clip_batch(
                &opts.geometry,
                opts.seed,
                step,
                opts.batch,
                Stream::Scenes,
                &device,
            )?;
            let latents = model.encode(&batch.video)?;
            // A detached encoding gives the encoder's variables no gradient, and AdamW
            // leaves variables without one untouched.
            let latents = if opts.freeze_encoder {
                latents.detach()
            } else {
                latents
            };
            let recon = model.decode_unclamped(&latents)?;
            let diff = (&recon - &batch.video)?;
            let pixel_error = (diff.abs()? + diff.sqr()?)?;
            let reconstruction = if opts.object_weight > 1.0 {
                let weights = object_weights(&batch, opts.object_weight, &device)?;
                weighted_mean(&pixel_error, &weights)?
            } else {
                pixel_error.mean_all()?
            };
            let loss = (reconstruction + (latents.sqr()?.mean_all()? * LATENT_PENALTY)?)?;
            Ok(loss)
        },
        |dir, _| save_varmap(&map, &dir.join("vae.safetensors")),
        on_step,
    )?;
    export_vae(opts, &build_from(&map, &device, build_vae)?, &map, &device)?;
    Ok(summary)
}

/// (B, 1, F, H, W) loss weights: `weight` on object pixels and their 1-pixel ring (edges
/// make the shape), 1 elsewhere.
fn object_weights(batch: &ClipBatch, weight: f64, device: &Device) -> Result<Tensor> {
    let (w, h): (usize, usize) = (batch.width, batch.height);
    let mut out = Vec::with_capacity(batch.object_ids.len() * batch.frames * h * w);
    for ids in &batch.object_ids {
        for frame in ids.chunks_exact(w * h) {
            for y in 0..h {
                for x in 0..w {
                    let near = (y.saturating_sub(1)..(y + 2).min(h)).any(|yy| {
                        (x.saturating_sub(1)..(x + 2).min(w)).any(|xx| frame[yy * w + xx] != 0)
                    });
                    out.push(if near { weight as f32 } else { 1.0 });
                }
            }
        }
    }
    Ok(Tensor::from_vec(
        out,
        (batch.object_ids.len(), 1, batch.frames, h, w),
        device,
    )?)
}

/// Per-channel mean and std of the encoder's latents over a fixed set of clips, written
/// with the weights into `model/vae/`.
fn export_vae(opts: &TrainOptions, model: &WanVae, map: &VarMap, device: &Device) -> Result<()> {
    let dir = opts.model_dir().join("vae");
    let config_path = dir.join("config.json");
    if opts.freeze_encoder && config_path.is_file() {
        // The encoder did not change, and a DiT stage may already train on latents
        // normalised by these statistics: keep the config as it is, whatever clips this
        // session drew.
        save_varmap(map, &dir.join("diffusion_pytorch_model.safetensors"))?;
        tracing::info!(dir = %dir.display(), "VAE decoder exported; latent statistics kept");
        return Ok(());
    }
    let z = opts.sizes.vae_z_dim;
    let mut sum = vec![0f64; z];
    let mut sum_sq = vec![0f64; z];
    let mut count = 0f64;
    for i in 0..STATISTICS_BATCHES {
        let batch = clip_batch(
            &opts.geometry,
            opts.seed,
            i,
            opts.batch,
            Stream::LatentStatistics,
            device,
        )?;
        let latents = model.encode(&batch.video)?.detach();
        // (B, z, F, h, w) -> (z, rest)
        let per_channel = latents.transpose(0, 1)?.flatten_from(1)?;
        let s: Vec<f32> = per_channel.sum(D::Minus1)?.to_vec1()?;
        let s2: Vec<f32> = per_channel.sqr()?.sum(D::Minus1)?.to_vec1()?;
        for c in 0..z {
            sum[c] += f64::from(s[c]);
            sum_sq[c] += f64::from(s2[c]);
        }
        count += per_channel.dim(1)? as f64;
    }
    let mean: Vec<f64> = sum.iter().map(|s| s / count).collect();
    let std: Vec<f64> = sum_sq
        .iter()
        .zip(&mean)
        .map(|(s2, m)| (s2 / count - m * m).max(1e-8).sqrt())
        .collect();
    create_dir(&dir)?;
    write_json(&config_path, &opts.sizes.vae_config_json(&mean, &std))?;
    save_varmap(map, &dir.join("diffusion_pytorch_model.safetensors"))?;
    tracing::info!(dir = %dir.display(), ?mean, ?std, "VAE exported");
    Ok(())
}

/// The frozen VAE of stage 2, from `model/vae/`: plain tensors, no gradients.
fn load_frozen_vae(opts: &TrainOptions, device: &Device) -> Result<WanVae> {
    let dir = opts.model_dir().join("vae");
    let config_path = dir.join("config.json");
    if !config_path.is_file() {
        return Err(TrainError::Options(format!(
            "{}: missing; run `kiln train --stage vae --out {}` first",
            config_path.display(),
            opts.out.display()
        )));
    }
    let cfg: vae::Config = kiln_models::read_config(&config_path, "Wan VAE config")?;
    let tensors =
        candle_core::safetensors::load(dir.join("diffusion_pytorch_model.safetensors"), device)?;
    Ok(WanVae::new(
        &cfg,
        VarBuilder::from_tensors(tensors, DType::F32, device),
    )?)
}

/// Stage 2: the text encoder and the transformer, trained together by flow matching on
/// the frozen VAE's normalised latents with the i2v conditioning input and random
/// drop-outs of text, camera and every conditioning kind. Exports the rest of `model/`.
pub fn train_dit(
    opts: &TrainOptions,
    on_step: &mut dyn FnMut(&StepReport),
) -> Result<TrainSummary> {
    let device = Device::Cpu;
    let mut run = open_run(Stage::Dit, opts)?;
    let te_path = starting_weights(
        opts,
        &run,
        &run.dir.join("text_encoder.safetensors"),
        "text_encoder/model.safetensors",
    )?;
    let tr_path = starting_weights(
        opts,
        &run,
        &run.dir.join("transformer.safetensors"),
        "transformer/diffusion_pytorch_model.safetensors",
    )?;
    let vae = load_frozen_vae(opts, &device)?;
    let tokenizer = CaptionTokenizer::from_grammar()?;
    let te_cfg = opts.sizes.text_encoder_config(tokenizer.vocab_size())?;
    let tr_cfg = opts.sizes.transformer_config()?;
    let mut init_rng = rng_for(opts.seed, 0, Stream::Initialisation);
    let build_text_encoder = |vb| UMT5EncoderModel::new(&te_cfg, vb);
    let build_transformer = |vb| WanTransformer::new(&tr_cfg, vb);
    let mut te_map = VarMap::new();
    prepare_vars(
        &mut te_map,
        te_path.as_deref(),
        &mut init_rng,
        &device,
        build_text_encoder,
    )?;
    let mut tr_map = VarMap::new();
    prepare_vars(
        &mut tr_map,
        tr_path.as_deref(),
        &mut init_rng,
        &device,
        build_transformer,
    )?;
    let mut optimizer = AdamW::new(
        &[("text_encoder", &te_map), ("transformer", &tr_map)],
        opts.optimizer.clone(),
    )?;
    if run.resumed {
        optimizer.load(&run.dir.join("optimizer.safetensors"))?;
    }
    tracing::info!(
        step = run.state.step,
        steps = opts.steps,
        resumed = run.resumed,
        vocab = tokenizer.vocab_size(),
        "DiT stage"
    );
    let first_step = run.state.step;
    let summary = std::thread::scope(|scope| -> Result<TrainSummary> {
        // The inputs of the next steps are made on threads of their own (each with a
        // one-thread pool) while step s trains: they depend only on (seed, step) and the
        // frozen VAE, whose encodings take more time than the step's own training, so one
        // such thread left the trainer waiting. Thread `lane` makes every
        // `INPUT_THREADS`-th step.
        let vae = &vae;
        let device = &device;
        let receivers: Vec<_> = (0..INPUT_THREADS as u64)
            .map(|lane| {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Result<(u64, DitInputs)>>(1);
                scope.spawn(move || {
                    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
                    let mut blank = BlankConditions::default();
                    let steps = (first_step + lane..opts.steps).step_by(INPUT_THREADS);
                    for step in steps {
                        let mut make = || dit_inputs(opts, vae, step, &mut blank, device);
                        let inputs = match &pool {
                            Ok(pool) => pool.install(make),
                            Err(_) => make(),
                        };
                        let failed = inputs.is_err();
                        if tx.send(inputs.map(|i| (step, i))).is_err() || failed {
                            break;
                        }
                    }
                });
                rx
            })
            .collect();
        run_loop(
            Stage::Dit,
            opts,
            &mut run,
            &mut optimizer,
            |step| {
                let lane = ((step - first_step) % INPUT_THREADS as u64) as usize;
                let (made_for, inputs) = receivers[lane].recv().map_err(|_| {
                    TrainError::Options("the thread preparing training inputs stopped".into())
                })??;
                if made_for != step {
                    return Err(TrainError::Options(format!(
                        "inputs made for step {made_for} arrived at step {step}"
                    )));
                }
                let text_encoder = build_from(&te_map, device, build_text_encoder)?;
                let transformer = build_from(&tr_map, device, build_transformer)?;
                let text_len = opts.sizes.text_len;
                let text = encode_text(
                    &tokenizer,
                    &text_encoder,
                    &inputs.captions,
                    text_len,
                    device,
                )?;
                // The pipeline's zero padding to `text_len` rows, folded into one row.
                let pred = transformer.forward_with_text_padding(
                    &inputs.input,
                    &inputs.timesteps,
                    &text,
                    text_len,
                    Some(&inputs.camera),
                )?;
                // Wan's flow matching: the model predicts the velocity noise − x0.
                match &inputs.weights {
                    Some(w) => Ok(weighted_mean(&(pred - &inputs.velocity)?.sqr()?, w)?),
                    None => Ok(mse(&pred, &inputs.velocity)?),
                }
            },
            |dir, _| {
                save_varmap(&te_map, &dir.join("text_encoder.safetensors"))?;
                save_varmap(&tr_map, &dir.join("transformer.safetensors"))
            },
            on_step,
        )
    })?;
    export_dit(opts, &tokenizer, &te_map, &tr_map)?;
    Ok(summary)
}

/// What a stage-2 step needs besides the weights it trains: a pure function of (seed,
/// step) and the frozen VAE.
struct DitInputs {
    /// `[x_σ, mask channels, condition latents]` along channels.
    input: Tensor,
    timesteps: Tensor,
    /// The target velocity `ε − x₀`.
    velocity: Tensor,
    /// Captions after the text drop-out (empty when dropped).
    captions: Vec<String>,
    /// `(B, CAMERA_DIM)`, zero rows where the camera was dropped.
    camera: Tensor,
    /// `(B, 1, F', h, w)` loss weights of the latent cells when `--object-weight` > 1.
    weights: Option<Tensor>,
}

/// Condition latents of batches with no known pixel, by shape: the encoding of an all-zero
/// video, the same tensor every time it is asked for, so it is encoded once per shape
/// instead of once per such step (a condition encode is about half of a step's inputs).
#[derive(Default)]
struct BlankConditions(std::collections::HashMap<Vec<usize>, Tensor>);

impl BlankConditions {
    fn latents(&mut self, vae: &WanVae, video: &Tensor) -> Result<Tensor> {
        let key = video.dims().to_vec();
        if let Some(latents) = self.0.get(&key) {
            return Ok(latents.clone());
        }
        let latents = vae.normalize(&vae.encode(video)?)?.detach();
        self.0.insert(key, latents.clone());
        Ok(latents)
    }
}

/// The random draws of a step in a fixed order: scenes, conditioning, then the text and
/// camera drop-outs (one conditioning stream), then σ and the noise.
fn dit_inputs(
    opts: &TrainOptions,
    vae: &WanVae,
    step: u64,
    blank: &mut BlankConditions,
    device: &Device,
) -> Result<DitInputs> {
    let spatial = vae.config().spatial_compression();
    let temporal = vae.config().temporal_compression();
    let batch = clip_batch(
        &opts.geometry,
        opts.seed,
        step,
        opts.batch,
        Stream::Scenes,
        device,
    )?;
    let b = opts.batch;
    let x0 = vae.normalize(&vae.encode(&batch.video)?)?.detach();
    let mut cond_rng = rng_for(opts.seed, step, Stream::Conditioning);
    let cond = sample_conditioning(
        &batch,
        &opts.rates,
        &mut cond_rng,
        spatial,
        temporal,
        device,
    )?;
    let cond_latents = if cond.any_known {
        vae.normalize(&vae.encode(&cond.video)?)?.detach()
    } else {
        blank.latents(vae, &cond.video)?
    };
    let captions: Vec<String> = batch
        .captions
        .iter()
        .map(|c| {
            if cond_rng.chance(opts.rates.drop_text) {
                String::new()
            } else {
                c.clone()
            }
        })
        .collect();
    let camera: Vec<f32> = batch
        .camera
        .iter()
        .flat_map(|c| {
            if cond_rng.chance(opts.rates.drop_camera) {
                [0.0; CAMERA_DIM]
            } else {
                *c
            }
        })
        .collect();
    let camera = Tensor::from_vec(camera, (b, CAMERA_DIM), device)?;
    let mut noise_rng = rng_for(opts.seed, step, Stream::Noise);
    let sigmas: Vec<f32> = (0..b)
        .map(|_| {
            let u = f64::from(noise_rng.unit());
            (FLOW_SHIFT * u / (1.0 + (FLOW_SHIFT - 1.0) * u)) as f32
        })
        .collect();
    let timesteps: Vec<f32> = sigmas.iter().map(|s| s * 1000.0).collect();
    let noise = Tensor::from_vec(
        gaussian(&mut noise_rng, x0.elem_count()),
        x0.shape(),
        device,
    )?;
    let sigma = Tensor::from_vec(sigmas, (b, 1, 1, 1, 1), device)?;
    let one_minus = (1.0 - &sigma)?;
    let noisy = (x0.broadcast_mul(&one_minus)? + noise.broadcast_mul(&sigma)?)?;
    let weights = if opts.object_weight > 1.0 {
        Some(latent_object_weights(
            &batch,
            opts.object_weight,
            spatial,
            temporal,
            device,
        )?)
    } else {
        None
    };
    Ok(DitInputs {
        input: Tensor::cat(&[&noisy, &cond.mask_channels, &cond_latents], 1)?,
        timesteps: Tensor::from_vec(timesteps, b, device)?,
        velocity: (noise - &x0)?,
        captions,
        camera,
        weights,
    })
}

/// (B, 1, F', h, w) loss weights of latent cells: `weight` where the cell's pixel block
/// (its `spatial`² pixels over its frames: frame 0 for the first latent frame, then
/// `temporal` frames each, as the causal VAE groups them) holds an object pixel, 1
/// elsewhere.
pub fn latent_object_weights(
    batch: &ClipBatch,
    weight: f64,
    spatial: usize,
    temporal: usize,
    device: &Device,
) -> Result<Tensor> {
    let (w, h) = (batch.width, batch.height);
    let (lw, lh) = (w.div_ceil(spatial), h.div_ceil(spatial));
    let lf = 1 + batch.frames.saturating_sub(1).div_ceil(temporal);
    let mut out = vec![1f32; batch.object_ids.len() * lf * lh * lw];
    for (b, ids) in batch.object_ids.iter().enumerate() {
        for (f, frame) in ids.chunks_exact(w * h).enumerate() {
            let t = if f == 0 { 0 } else { (f - 1) / temporal + 1 };
            for (i, _) in frame.iter().enumerate().filter(|(_, &id)| id != 0) {
                let (y, x) = (i / w / spatial, i % w / spatial);
                out[((b * lf + t) * lh + y) * lw + x] = weight as f32;
            }
        }
    }
    Ok(Tensor::from_vec(
        out,
        (batch.object_ids.len(), 1, lf, lh, lw),
        device,
    )?)
}

/// Mean of a (B, C, …) `error` weighted by (B, 1, …) `weights`: the weighted sum over
/// the summed weights of every channel, so equal weights give the plain mean.
fn weighted_mean(error: &Tensor, weights: &Tensor) -> candle_core::Result<Tensor> {
    let channels = error.dim(1)? as f64;
    let total = weights.sum_all()?.to_scalar::<f32>()? as f64 * channels;
    error.broadcast_mul(weights)?.sum_all()? / total
}

/// Prompt embeddings as the pipeline makes them, without the zero rows that pad them to
/// `text_len` (`WanTransformer::forward_with_text_padding` takes those as a count):
/// encoder output of the real tokens, rows past each prompt zeroed, captions truncated to
/// `text_len` tokens as the pipeline's tokenizer truncates them. Running the encoder on
/// the batch's longest prompt only is exact: padded keys are masked out.
pub fn encode_text(
    tokenizer: &CaptionTokenizer,
    text_encoder: &UMT5EncoderModel,
    captions: &[String],
    text_len: usize,
    device: &Device,
) -> Result<Tensor> {
    let tokens = tokenizer.encode_batch(captions, text_len, device)?;
    let hidden = text_encoder.forward(&tokens.input_ids, &tokens.attention_mask)?;
    let keep = tokens.attention_mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    Ok(hidden.broadcast_mul(&keep)?)
}

fn export_dit(
    opts: &TrainOptions,
    tokenizer: &CaptionTokenizer,
    te_map: &VarMap,
    tr_map: &VarMap,
) -> Result<()> {
    let model = opts.model_dir();
    for sub in ["tokenizer", "text_encoder", "transformer", "scheduler"] {
        create_dir(&model.join(sub))?;
    }
    write_json(
        &model.join("model_index.json"),
        &model_index_json(opts.sizes.text_len),
    )?;
    write_json(&model.join("tokenizer/tokenizer.json"), tokenizer.json())?;
    write_json(
        &model.join("tokenizer/tokenizer_config.json"),
        &tokenizer_config_json(opts.sizes.text_len),
    )?;
    write_json(
        &model.join("text_encoder/config.json"),
        &opts.sizes.text_encoder_config_json(tokenizer.vocab_size()),
    )?;
    save_varmap(te_map, &model.join("text_encoder/model.safetensors"))?;
    write_json(
        &model.join("transformer/config.json"),
        &opts.sizes.transformer_config_json(),
    )?;
    save_varmap(
        tr_map,
        &model.join("transformer/diffusion_pytorch_model.safetensors"),
    )?;
    write_json(
        &model.join("scheduler/scheduler_config.json"),
        &scheduler_config_json(FLOW_SHIFT),
    )?;
    tracing::info!(dir = %model.display(), "model exported");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_weights_cover_objects_and_their_ring() {
        // One 5x4 frame with an object pixel at (1, 1) and another at (4, 3) (a corner).
        let mut ids = vec![0u8; 20];
        ids[5 + 1] = 1;
        ids[3 * 5 + 4] = 2;
        let batch = ClipBatch {
            video: Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
            width: 5,
            height: 4,
            frames: 1,
            captions: vec![String::new()],
            object_ids: vec![ids],
            camera: vec![[0.0; crate::CAMERA_DIM]],
            camera_static: vec![true],
            object_count: vec![2],
        };
        let w = object_weights(&batch, 8.0, &Device::Cpu).unwrap();
        assert_eq!(w.dims(), &[1, 1, 1, 4, 5]);
        let w: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
        #[rustfmt::skip]
        let expected = [
            8., 8., 8., 1., 1.,
            8., 8., 8., 1., 1.,
            8., 8., 8., 8., 8.,
            1., 1., 1., 8., 8.,
        ];
        assert_eq!(w, expected);
    }

    #[test]
    fn latent_object_weights_mark_the_blocks_holding_objects() {
        // 4x2 pixels, 6 frames -> latent 2x1, frames {0}, {1..4}, {5}. An object pixel at
        // (3, 1) in frame 0, one at (0, 0) in frame 2 and none in frame 5.
        let (w, h, frames) = (4, 2, 6);
        let mut ids = vec![0u8; w * h * frames];
        ids[w + 3] = 1;
        ids[2 * w * h] = 1;
        let batch = ClipBatch {
            video: Tensor::zeros(1, DType::F32, &Device::Cpu).unwrap(),
            width: w,
            height: h,
            frames,
            captions: vec![String::new()],
            object_ids: vec![ids],
            camera: vec![[0.0; crate::CAMERA_DIM]],
            camera_static: vec![true],
            object_count: vec![1],
        };
        let weights = latent_object_weights(&batch, 5.0, 2, 4, &Device::Cpu).unwrap();
        assert_eq!(weights.dims(), &[1, 1, 3, 1, 2]);
        let weights: Vec<f32> = weights.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(weights, [1., 5., 5., 1., 1., 1.]);
        // The weighted loss is the plain mean when every weight is equal.
        let a = Tensor::arange(0f32, 12., &Device::Cpu)
            .unwrap()
            .reshape((1, 2, 3, 1, 2))
            .unwrap();
        let b = Tensor::zeros_like(&a).unwrap();
        let ones = Tensor::ones((1, 1, 3, 1, 2), DType::F32, &Device::Cpu).unwrap();
        let plain = mse(&a, &b).unwrap().to_scalar::<f32>().unwrap();
        let weighted = weighted_mean(&(&a - &b).unwrap().sqr().unwrap(), &ones)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((plain - weighted).abs() < 1e-5);
        // And leans to the weighted cells otherwise: cell 1 of channel 0 is 1, of channel 1 is 7.
        let only_cell_1 = Tensor::new(&[0f32, 1., 0., 0., 0., 0.], &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 3, 1, 2))
            .unwrap();
        let cell = weighted_mean(&(&a - &b).unwrap().sqr().unwrap(), &only_cell_1)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((cell - (1. + 49.) / 2.).abs() < 1e-4);
    }
}
