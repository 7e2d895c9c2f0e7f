//! Flow-matching schedulers and guidance. This crate owns the sampling schedule (UniPC and
//! Euler, numerically as diffusers 0.42.1 runs them for Wan 2.1) and classifier-free
//! guidance. It works on tensors and configs only: it must not load weights or know model
//! architectures.
//!
//! A run: `Scheduler::from_config_file(".../scheduler/scheduler_config.json")`, then
//! `set_timesteps(n)`; for each `t` in `timesteps()` evaluate the model at `t`, combine the
//! passes with [`classifier_free_guidance`], and call `step(&velocity, &latents)`.

mod config;
mod error;
mod euler;
mod guidance;
mod unipc;

pub use config::{
    EulerConfig, FinalSigmasType, PredictionType, SchedulerConfig, SolverType, TimestepSpacing,
    UniPcConfig,
};
pub use error::{Result, SamplingError};
pub use euler::FlowEuler;
pub use guidance::{classifier_free_guidance, guidance_from_cfg_scale};
pub use unipc::FlowUniPc;

use candle_core::Tensor;
use std::path::Path;

/// The schedulers a Wan checkpoint's `scheduler_config.json` can name.
#[derive(Debug, Clone)]
pub enum Scheduler {
    UniPc(FlowUniPc),
    Euler(FlowEuler),
}

impl Scheduler {
    /// Reads `scheduler/scheduler_config.json`; refuses configurations kiln does not implement
    /// with an error that names the file, the field and the fix.
    pub fn from_config_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| SamplingError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let config = SchedulerConfig::from_json(&text).map_err(|source| SamplingError::Parse {
            path: path.to_path_buf(),
            source,
        })?;
        Self::build(config, &path.display().to_string())
    }

    /// From a config built in code; errors name it "scheduler config".
    pub fn from_config(config: SchedulerConfig) -> Result<Self> {
        Self::build(config, "scheduler config")
    }

    fn build(config: SchedulerConfig, origin: &str) -> Result<Self> {
        config.validate(origin)?;
        Ok(match config {
            SchedulerConfig::UniPc(c) => Self::UniPc(FlowUniPc::new(c)),
            SchedulerConfig::Euler(c) => Self::Euler(FlowEuler::new(c)),
        })
    }

    /// Prepares a schedule of `num_inference_steps` steps and resets the step counter and
    /// multistep history.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) {
        match self {
            Self::UniPc(s) => s.set_timesteps(num_inference_steps),
            Self::Euler(s) => s.set_timesteps(num_inference_steps),
        }
    }

    /// The timestep the model receives at each step (UniPC: integers; Euler: float32 values).
    pub fn timesteps(&self) -> &[f64] {
        match self {
            Self::UniPc(s) => s.timesteps(),
            Self::Euler(s) => s.timesteps(),
        }
    }

    /// Noise levels, one more than `timesteps()` (the last is the target of the final step).
    pub fn sigmas(&self) -> &[f64] {
        match self {
            Self::UniPc(s) => s.sigmas(),
            Self::Euler(s) => s.sigmas(),
        }
    }

    /// Index of the next step to run.
    pub fn step_index(&self) -> usize {
        match self {
            Self::UniPc(s) => s.step_index(),
            Self::Euler(s) => s.step_index(),
        }
    }

    /// Advances one step from `sample` given the model's flow prediction at
    /// `timesteps()[step_index()]`, and returns the next sample.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::UniPc(s) => s.step(model_output, sample),
            Self::Euler(s) => s.step(model_output, sample),
        }
    }

    /// diffusers' `scheduler.order`: model evaluations per step, 1 for both (UniPC's
    /// multistep order is its config's `solver_order`, which needs no extra evaluations).
    pub fn order(&self) -> usize {
        1
    }
}
