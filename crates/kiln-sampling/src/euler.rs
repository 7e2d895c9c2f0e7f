//! Euler for flow matching, as diffusers 0.42.1's `FlowMatchEulerDiscreteScheduler` runs it
//! (deterministic, static shift): `x_next = x + (sigma_next - sigma) * v`.

use crate::config::{linspace, shift_sigma, stretch_to_terminal, EulerConfig};
use candle_core::{DType, Result, Tensor};

#[derive(Debug, Clone)]
pub struct FlowEuler {
    config: EulerConfig,
    /// Ends of the training schedule, shifted once at construction in float32 (diffusers
    /// computes them with torch float32 tensors).
    sigma_max: f32,
    sigma_min: f32,
    /// float32 values widened to f64: `sigma * num_train_timesteps` rounded in float32.
    timesteps: Vec<f64>,
    /// float32 values widened to f64, ending with 0.
    sigmas: Vec<f64>,
    step_index: usize,
}

impl FlowEuler {
    /// Expects a validated config (see `SchedulerConfig::validate`).
    pub fn new(config: EulerConfig) -> Self {
        let train = config.num_train_timesteps as f32;
        // torch casts the Python scalars to float32 before each elementwise op.
        let shift32 = |s: f32| (config.shift as f32 * s) / (1.0 + (config.shift - 1.0) as f32 * s);
        Self {
            // Training timesteps N..1 over N: the ends are exactly 1 and 1/N.
            sigma_max: shift32(1.0),
            sigma_min: shift32(1.0 / train),
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
        }
    }

    pub fn config(&self) -> &EulerConfig {
        &self.config
    }

    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    pub fn step_index(&self) -> usize {
        self.step_index
    }

    /// `set_timesteps(n)` as the Wan pipeline calls it. As in diffusers, the shift is applied
    /// again to the already shifted ends of the training schedule.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) {
        let c = &self.config;
        let train = c.num_train_timesteps as f64;
        let t_max = self.sigma_max as f64 * train;
        let t_min = self.sigma_min as f64 * train;
        let mut sigmas: Vec<f64> = linspace(t_max, t_min, num_inference_steps)
            .into_iter()
            .map(|t| shift_sigma(c.shift, t / train))
            .collect();
        if let Some(terminal) = c.shift_terminal.filter(|&t| t != 0.0) {
            stretch_to_terminal(&mut sigmas, terminal);
        }
        let sigmas32: Vec<f32> = sigmas.iter().map(|&s| s as f32).collect();
        self.timesteps = sigmas32
            .iter()
            .map(|&s| (s * c.num_train_timesteps as f32) as f64)
            .collect();
        self.sigmas = sigmas32.iter().map(|&s| s as f64).chain([0.0]).collect();
        self.step_index = 0;
    }

    /// One Euler step; `model_output` is the flow (velocity) prediction. The math runs in f32;
    /// the result has `model_output`'s dtype, as in diffusers.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let k = self.step_index;
        let n = self.timesteps.len();
        if k >= n {
            candle_core::bail!(
                "Euler step {k} requested but the schedule has {n} steps; call set_timesteps first"
            )
        }
        let dt = self.sigmas[k + 1] as f32 - self.sigmas[k] as f32;
        let v = model_output.to_dtype(DType::F32)?;
        let prev = (sample.to_dtype(DType::F32)? + v.affine(dt as f64, 0.0)?)?;
        self.step_index += 1;
        prev.to_dtype(model_output.dtype())
    }
}
