//! UniPC (Zhao et al. 2023, "UniPC: A Unified Predictor-Corrector Framework") for flow matching,
//! as diffusers 0.42.1's `UniPCMultistepScheduler` runs it for Wan 2.1: `flow_prediction`,
//! `use_flow_sigmas`, x0 form (`predict_x0`), B(h) variants bh1/bh2.
//!
//! In flow matching `x_t = (1 - sigma) x0 + sigma noise`, so alpha = 1 - sigma and the
//! log-SNR is lambda = ln(1 - sigma) - ln(sigma). Each step first corrects the current sample
//! with the new model output (UniC), then predicts the next one (UniP) from the last
//! `order` x0 predictions.

use crate::config::{
    linspace, shift_sigma, stretch_to_terminal, FinalSigmasType, SolverType, UniPcConfig,
};
use candle_core::{DType, Result, Tensor};
use std::collections::VecDeque;

#[derive(Debug, Clone)]
pub struct FlowUniPc {
    config: UniPcConfig,
    /// Integers, as diffusers casts them to int64 before they reach the model.
    timesteps: Vec<f64>,
    /// float32 values (diffusers stores them as a float32 tensor), widened to f64.
    sigmas: Vec<f64>,
    step_index: usize,
    /// x0 predictions of the last `solver_order` steps, oldest first.
    x0_history: VecDeque<Tensor>,
    lower_order_nums: usize,
    last_sample: Option<Tensor>,
    /// Order used by the previous predictor; the corrector reuses it.
    this_order: usize,
}

/// Log-SNR of a flow sigma.
fn lambda(sigma: f64) -> f64 {
    (1.0 - sigma).ln() - sigma.ln()
}

impl FlowUniPc {
    /// Expects a validated config (see `SchedulerConfig::validate`).
    pub fn new(config: UniPcConfig) -> Self {
        Self {
            config,
            timesteps: Vec::new(),
            sigmas: Vec::new(),
            step_index: 0,
            x0_history: VecDeque::new(),
            lower_order_nums: 0,
            last_sample: None,
            this_order: 0,
        }
    }

    pub fn config(&self) -> &UniPcConfig {
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

    /// `set_timesteps(n)`: shifted flow sigmas from 1 down to 1/num_train_timesteps, computed
    /// in f64 like numpy, then stored as float32.
    pub fn set_timesteps(&mut self, num_inference_steps: usize) {
        let c = &self.config;
        let train = c.num_train_timesteps as f64;
        let mut sigmas = linspace(1.0, 1.0 / train, num_inference_steps + 1);
        sigmas.pop();
        for s in sigmas.iter_mut() {
            *s = shift_sigma(c.flow_shift, *s);
        }
        if let Some(terminal) = c.shift_terminal.filter(|&t| t != 0.0) {
            stretch_to_terminal(&mut sigmas, terminal);
        }
        // Keeps ln(sigma) finite in the first update.
        if let Some(first) = sigmas.first_mut() {
            if (*first - 1.0).abs() < 1e-6 {
                *first -= 1e-6;
            }
        }
        self.timesteps = sigmas.iter().map(|s| (s * train).trunc()).collect();
        let last = match c.final_sigmas_type {
            FinalSigmasType::Zero => 0.0,
            FinalSigmasType::SigmaMin => sigmas.last().copied().unwrap_or(0.0),
        };
        sigmas.push(last);
        self.sigmas = sigmas.iter().map(|&s| s as f32 as f64).collect();
        self.step_index = 0;
        self.x0_history.clear();
        self.lower_order_nums = 0;
        self.last_sample = None;
        self.this_order = 0;
    }

    /// One sampling step; `model_output` is the flow (velocity) prediction at the current
    /// timestep. The math runs in f32; the result has `sample`'s dtype.
    pub fn step(&mut self, model_output: &Tensor, sample: &Tensor) -> Result<Tensor> {
        let k = self.step_index;
        let n = self.timesteps.len();
        if k >= n {
            candle_core::bail!(
                "UniPC step {k} requested but the schedule has {n} steps; call set_timesteps first"
            )
        }
        let out_dtype = sample.dtype();
        let sample = sample.to_dtype(DType::F32)?;
        let x0 = (&sample
            - model_output
                .to_dtype(DType::F32)?
                .affine(self.sigmas[k], 0.0)?)?;

        let use_corrector = k > 0 && !self.config.disable_corrector.contains(&(k - 1));
        let sample = match (&self.last_sample, use_corrector) {
            (Some(last), true) => self.update(k - 1, last, self.this_order, Some(&x0))?,
            _ => sample,
        };

        self.x0_history.push_back(x0);
        if self.x0_history.len() > self.config.solver_order {
            self.x0_history.pop_front();
        }
        let order = match self.config.lower_order_final {
            true => self.config.solver_order.min(n - k),
            false => self.config.solver_order,
        };
        // Warm-up: the multistep order grows with the available history.
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.update(k, &sample, self.this_order, None)?;
        self.last_sample = Some(sample);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.config.solver_order);
        self.step_index += 1;
        prev.to_dtype(out_dtype)
    }

    /// B(h) update of `x` from sigma index `s0` to `s0 + 1` using the x0 history whose newest
    /// entry belongs to `s0`. Predictor (UniP) when `corrector_x0` is None; corrector (UniC)
    /// when it holds the model's x0 at `s0 + 1`, the point being corrected.
    fn update(
        &self,
        s0: usize,
        x: &Tensor,
        order: usize,
        corrector_x0: Option<&Tensor>,
    ) -> Result<Tensor> {
        let (sigma_t, sigma_s0) = (self.sigmas[s0 + 1], self.sigmas[s0]);
        let alpha_t = 1.0 - sigma_t;
        let h = lambda(sigma_t) - lambda(sigma_s0);
        let newest = self.x0_history.len() - 1;
        let m0 = &self.x0_history[newest];

        // Divided differences of the older x0 predictions, at ratios r_i of the step size.
        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order);
        for i in 1..order {
            let rk = (lambda(self.sigmas[s0 - i]) - lambda(sigma_s0)) / h;
            d1s.push(((&self.x0_history[newest - i] - m0)? / rk)?);
            rks.push(rk);
        }
        rks.push(1.0);

        // x0 form: hh = -h; phi_k recursions give the right-hand side b.
        let hh = -h;
        let h_phi_1 = hh.exp_m1();
        let b_h = match self.config.solver_type {
            SolverType::Bh1 => hh,
            SolverType::Bh2 => hh.exp_m1(),
        };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1.0;
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            b.push(h_phi_k * factorial / b_h);
            factorial *= (i + 1) as f64;
            h_phi_k = h_phi_k / hh - 1.0 / factorial;
        }
        // R[i][j] = r_j^i; the predictor drops the last row and column (the unknown point).
        let rhos = match (corrector_x0, order) {
            (None, 1) => vec![],
            (None, 2) => vec![0.5],
            (None, _) => solve(&rks[..order - 1], &b[..order - 1])?,
            (Some(_), 1) => vec![0.5],
            (Some(_), _) => solve(&rks, &b)?,
        };

        let x_t = (x.affine(sigma_t / sigma_s0, 0.0)? - m0.affine(alpha_t * h_phi_1, 0.0)?)?;
        let mut terms: Vec<Tensor> = d1s
            .iter()
            .zip(&rhos)
            .map(|(d, &rho)| d.affine(rho, 0.0))
            .collect::<Result<_>>()?;
        if let (Some(model_t), Some(&rho_t)) = (corrector_x0, rhos.last()) {
            terms.push((model_t - m0)?.affine(rho_t, 0.0)?);
        }
        let mut terms = terms.into_iter();
        let Some(mut res) = terms.next() else {
            return Ok(x_t);
        };
        for term in terms {
            res = (res + term)?;
        }
        x_t - res.affine(alpha_t * b_h, 0.0)?
    }
}

/// Solves `R rho = b` with `R[i][j] = r_j^i` (a Vandermonde system), by Gaussian elimination
/// with partial pivoting in f64.
fn solve(rks: &[f64], b: &[f64]) -> Result<Vec<f64>> {
    let n = rks.len();
    let mut a: Vec<Vec<f64>> = (0..n)
        .map(|i| {
            let mut row: Vec<f64> = rks.iter().map(|r| r.powi(i as i32)).collect();
            row.push(b[i]);
            row
        })
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&p, &q| a[p][col].abs().total_cmp(&a[q][col].abs()))
            .unwrap_or(col);
        let p = a[pivot][col].abs();
        if p == 0.0 || p.is_nan() {
            candle_core::bail!(
                "UniPC: singular order conditions (repeated sigmas in the schedule?)"
            )
        }
        a.swap(col, pivot);
        let (done, rest) = a.split_at_mut(col + 1);
        let pivot_row = &done[col];
        for row in rest {
            let f = row[col] / pivot_row[col];
            for (x, p) in row.iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
        }
    }
    let mut rho = vec![0.0; n];
    for i in (0..n).rev() {
        let s: f64 = (i + 1..n).map(|j| a[i][j] * rho[j]).sum();
        rho[i] = (a[i][n] - s) / a[i][i];
    }
    Ok(rho)
}
