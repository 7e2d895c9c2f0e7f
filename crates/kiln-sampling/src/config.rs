//! `scheduler/scheduler_config.json` as diffusers writes it. `_class_name` picks the scheduler;
//! every field has diffusers' default, and fields that only matter for configurations kiln
//! refuses are kept just so that they can be refused by name.

use crate::error::{Result, SamplingError};
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "_class_name")]
pub enum SchedulerConfig {
    #[serde(rename = "UniPCMultistepScheduler")]
    UniPc(UniPcConfig),
    #[serde(rename = "FlowMatchEulerDiscreteScheduler")]
    Euler(EulerConfig),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    Epsilon,
    Sample,
    VPrediction,
    FlowPrediction,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SolverType {
    #[serde(rename = "bh1")]
    Bh1,
    // diffusers re-registers the DPM-Solver names as bh2.
    #[serde(rename = "bh2", alias = "midpoint", alias = "heun", alias = "logrho")]
    Bh2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalSigmasType {
    Zero,
    SigmaMin,
}

/// Read and validated, but without effect under flow sigmas (diffusers overwrites the spaced
/// timesteps with `sigma * num_train_timesteps`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

/// `UniPCMultistepScheduler` (diffusers 0.42.1) fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct UniPcConfig {
    pub num_train_timesteps: usize,
    pub solver_order: usize,
    pub prediction_type: PredictionType,
    pub thresholding: bool,
    pub predict_x0: bool,
    pub solver_type: SolverType,
    pub lower_order_final: bool,
    pub disable_corrector: Vec<usize>,
    pub solver_p: Option<serde_json::Value>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub use_flow_sigmas: bool,
    pub flow_shift: f64,
    pub timestep_spacing: TimestepSpacing,
    pub steps_offset: i64,
    pub final_sigmas_type: FinalSigmasType,
    pub use_dynamic_shifting: bool,
    pub shift_terminal: Option<f64>,
}

impl Default for UniPcConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            solver_order: 2,
            prediction_type: PredictionType::Epsilon,
            thresholding: false,
            predict_x0: true,
            solver_type: SolverType::Bh2,
            lower_order_final: true,
            disable_corrector: Vec::new(),
            solver_p: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            timestep_spacing: TimestepSpacing::Linspace,
            steps_offset: 0,
            final_sigmas_type: FinalSigmasType::Zero,
            use_dynamic_shifting: false,
            shift_terminal: None,
        }
    }
}

/// `FlowMatchEulerDiscreteScheduler` (diffusers 0.42.1) fields.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct EulerConfig {
    pub num_train_timesteps: usize,
    pub shift: f64,
    pub use_dynamic_shifting: bool,
    pub invert_sigmas: bool,
    pub shift_terminal: Option<f64>,
    pub use_karras_sigmas: bool,
    pub use_exponential_sigmas: bool,
    pub use_beta_sigmas: bool,
    pub stochastic_sampling: bool,
}

impl Default for EulerConfig {
    fn default() -> Self {
        Self {
            num_train_timesteps: 1000,
            shift: 1.0,
            use_dynamic_shifting: false,
            invert_sigmas: false,
            shift_terminal: None,
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            stochastic_sampling: false,
        }
    }
}

#[derive(Deserialize)]
struct ClassName {
    #[serde(rename = "_class_name")]
    class_name: Option<String>,
}

impl SchedulerConfig {
    /// Parses the JSON text of a `scheduler_config.json`. The class is read first so that a field
    /// error points at its line and column in the file.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        let ClassName { class_name } = serde_json::from_str(text)?;
        match class_name.as_deref() {
            Some("UniPCMultistepScheduler") => serde_json::from_str(text).map(Self::UniPc),
            Some("FlowMatchEulerDiscreteScheduler") => serde_json::from_str(text).map(Self::Euler),
            // Let serde word the error: unknown variant or missing `_class_name`.
            _ => serde_json::from_str(text),
        }
    }

    /// Refuses what kiln does not implement. `origin` names the file (or says the config was
    /// built in code) in the error.
    pub fn validate(&self, origin: &str) -> Result<()> {
        const SIGMAS_OFF: &str =
            "set it to false; only the plain (shifted) flow schedule is implemented";
        const SHIFT: &str = "use a positive shift (Wan: 3.0 for 480p, 5.0 for 720p)";
        let bad_shift = |s: f64| !(s.is_finite() && s > 0.0);
        let bad_terminal = |t: Option<f64>| !t.is_none_or(|t| t.is_finite() && t < 1.0);
        // (refused?, field, value, fix); the first refusal is reported.
        let rules: Vec<(bool, &'static str, String, &str)> = match self {
            Self::UniPc(c) => vec![
                (
                    c.prediction_type != PredictionType::FlowPrediction,
                    "prediction_type",
                    format!("{:?}", c.prediction_type),
                    "set \"flow_prediction\" (Wan); only flow matching is implemented",
                ),
                (
                    !c.use_flow_sigmas,
                    "use_flow_sigmas",
                    "false".into(),
                    "set it to true (Wan); only flow sigmas are implemented",
                ),
                (
                    !c.predict_x0,
                    "predict_x0",
                    "false".into(),
                    "set it to true; flow_prediction requires the x0 form",
                ),
                (
                    c.thresholding,
                    "thresholding",
                    "true".into(),
                    "set it to false; dynamic thresholding is not implemented",
                ),
                (
                    c.solver_p.as_ref().is_some_and(|p| !p.is_null()),
                    "solver_p",
                    "a scheduler".into(),
                    "set it to null; an external predictor is not implemented",
                ),
                (
                    c.use_karras_sigmas,
                    "use_karras_sigmas",
                    "true".into(),
                    SIGMAS_OFF,
                ),
                (
                    c.use_exponential_sigmas,
                    "use_exponential_sigmas",
                    "true".into(),
                    SIGMAS_OFF,
                ),
                (
                    c.use_beta_sigmas,
                    "use_beta_sigmas",
                    "true".into(),
                    SIGMAS_OFF,
                ),
                (
                    c.use_dynamic_shifting,
                    "use_dynamic_shifting",
                    "true".into(),
                    "set it to false and use flow_shift; \
                     resolution-dependent shifting is not implemented",
                ),
                (
                    c.solver_order == 0,
                    "solver_order",
                    "0".into(),
                    "use 1 or more (Wan uses 2)",
                ),
                (
                    c.num_train_timesteps == 0,
                    "num_train_timesteps",
                    "0".into(),
                    "use the training value (1000)",
                ),
                (
                    bad_shift(c.flow_shift),
                    "flow_shift",
                    c.flow_shift.to_string(),
                    SHIFT,
                ),
                (
                    bad_terminal(c.shift_terminal),
                    "shift_terminal",
                    format!("{:?}", c.shift_terminal),
                    "use null or a value below 1",
                ),
                // The last step goes to sigma 0 (zero) or repeats the last sigma (sigma_min);
                // diffusers then multiplies B(h) = -inf by 0 (bh1 with zero), or divides by a
                // zero step in a multistep update (no lower_order_final): NaN or inf samples.
                (
                    c.final_sigmas_type == FinalSigmasType::Zero
                        && c.solver_type == SolverType::Bh1,
                    "solver_type",
                    "bh1 with final_sigmas_type zero".into(),
                    "use bh2, or final_sigmas_type \"sigma_min\" \
                     (diffusers returns NaN on the last step)",
                ),
                (
                    !c.lower_order_final && c.solver_order > 1,
                    "lower_order_final",
                    "false with solver_order > 1".into(),
                    "set it to true (diffusers returns inf/NaN on the last step)",
                ),
            ],
            Self::Euler(c) => vec![
                (
                    c.use_dynamic_shifting,
                    "use_dynamic_shifting",
                    "true".into(),
                    "set it to false and use shift; \
                     resolution-dependent shifting is not implemented",
                ),
                (
                    c.invert_sigmas,
                    "invert_sigmas",
                    "true".into(),
                    "set it to false; inverted sigmas (Mochi) are not implemented",
                ),
                (
                    c.stochastic_sampling,
                    "stochastic_sampling",
                    "true".into(),
                    "set it to false; only the deterministic Euler step is implemented",
                ),
                (
                    c.use_karras_sigmas,
                    "use_karras_sigmas",
                    "true".into(),
                    SIGMAS_OFF,
                ),
                (
                    c.use_exponential_sigmas,
                    "use_exponential_sigmas",
                    "true".into(),
                    SIGMAS_OFF,
                ),
                (
                    c.use_beta_sigmas,
                    "use_beta_sigmas",
                    "true".into(),
                    SIGMAS_OFF,
                ),
                (
                    c.num_train_timesteps == 0,
                    "num_train_timesteps",
                    "0".into(),
                    "use the training value (1000)",
                ),
                (bad_shift(c.shift), "shift", c.shift.to_string(), SHIFT),
                (
                    bad_terminal(c.shift_terminal),
                    "shift_terminal",
                    format!("{:?}", c.shift_terminal),
                    "use null or a value below 1",
                ),
            ],
        };
        match rules.into_iter().find(|rule| rule.0) {
            Some((_, field, value, fix)) => Err(SamplingError::Unsupported {
                origin: origin.to_string(),
                field,
                value,
                fix: fix.to_string(),
            }),
            None => Ok(()),
        }
    }
}

/// `t -> shift * t / (1 + (shift - 1) * t)`, in f64 as numpy evaluates it.
pub(crate) fn shift_sigma(shift: f64, sigma: f64) -> f64 {
    shift * sigma / (1.0 + (shift - 1.0) * sigma)
}

/// Stretches a decreasing schedule so that its last value becomes `terminal` (LTX-Video).
pub(crate) fn stretch_to_terminal(sigmas: &mut [f64], terminal: f64) {
    let Some(&last) = sigmas.last() else { return };
    let scale = (1.0 - last) / (1.0 - terminal);
    for s in sigmas.iter_mut() {
        *s = 1.0 - (1.0 - *s) / scale;
    }
}

/// `np.linspace(start, stop, num)` with numpy's arithmetic: `i * step + start`, last = `stop`.
pub(crate) fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => return Vec::new(),
        1 => return vec![start],
        _ => {}
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut v: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = v.last_mut() {
        *last = stop;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Wan2.1-T2V-1.3B-Diffusers' scheduler_config.json.
    const WAN: &str = r#"{
      "_class_name": "UniPCMultistepScheduler", "_diffusers_version": "0.33.0.dev0",
      "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001,
      "disable_corrector": [], "dynamic_thresholding_ratio": 0.995, "final_sigmas_type": "zero",
      "flow_shift": 3.0, "lower_order_final": true, "num_train_timesteps": 1000,
      "predict_x0": true, "prediction_type": "flow_prediction", "rescale_betas_zero_snr": false,
      "sample_max_value": 1.0, "solver_order": 2, "solver_p": null, "solver_type": "bh2",
      "steps_offset": 0, "thresholding": false, "timestep_spacing": "linspace",
      "trained_betas": null, "use_beta_sigmas": false, "use_exponential_sigmas": false,
      "use_flow_sigmas": true, "use_karras_sigmas": false
    }"#;

    fn with(field: &str, value: &str) -> String {
        let mut v: serde_json::Value = serde_json::from_str(WAN).expect("valid json");
        v[field] = serde_json::from_str(value).expect("valid json");
        v.to_string()
    }

    fn refusal(text: &str) -> String {
        let cfg = SchedulerConfig::from_json(text).expect("parses");
        cfg.validate("scheduler_config.json")
            .expect_err("refused")
            .to_string()
    }

    #[test]
    fn parses_wan_config() {
        let cfg = SchedulerConfig::from_json(WAN).expect("parses");
        let SchedulerConfig::UniPc(c) = &cfg else {
            panic!("not UniPC: {cfg:?}")
        };
        assert_eq!(c.flow_shift, 3.0);
        assert_eq!(c.solver_type, SolverType::Bh2);
        assert!(cfg.validate("x").is_ok());
        // Defaults fill missing fields; DPM-Solver names map to bh2 as in diffusers.
        let euler = SchedulerConfig::from_json(
            r#"{"_class_name": "FlowMatchEulerDiscreteScheduler", "shift": 5}"#,
        )
        .expect("parses");
        assert_eq!(
            euler,
            SchedulerConfig::Euler(EulerConfig {
                shift: 5.0,
                ..Default::default()
            })
        );
        let SchedulerConfig::UniPc(c) =
            SchedulerConfig::from_json(&with("solver_type", "\"midpoint\"")).expect("parses")
        else {
            panic!()
        };
        assert_eq!(c.solver_type, SolverType::Bh2);
    }

    #[test]
    fn refuses_unimplemented_configs() {
        let cases = [
            ("use_flow_sigmas", "false"),
            ("prediction_type", "\"epsilon\""),
            ("predict_x0", "false"),
            ("thresholding", "true"),
            ("use_karras_sigmas", "true"),
            ("use_exponential_sigmas", "true"),
            ("use_beta_sigmas", "true"),
            ("use_dynamic_shifting", "true"),
            ("solver_order", "0"),
            ("flow_shift", "-1.0"),
            ("shift_terminal", "1.0"),
        ];
        for (field, value) in cases {
            let msg = refusal(&with(field, value));
            assert!(msg.starts_with("scheduler_config.json: "), "{msg}");
            assert!(msg.contains(field) && msg.contains("; "), "{field}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
        let msg = refusal(&with("solver_type", "\"bh1\""));
        assert!(
            msg.contains("solver_type") && msg.contains("sigma_min"),
            "{msg}"
        );
        let msg = refusal(&with("lower_order_final", "false"));
        assert!(msg.contains("lower_order_final"), "{msg}");
        for (field, value) in [
            ("use_dynamic_shifting", "true"),
            ("invert_sigmas", "true"),
            ("stochastic_sampling", "true"),
            ("use_karras_sigmas", "true"),
        ] {
            let text = format!(
                r#"{{"_class_name": "FlowMatchEulerDiscreteScheduler", "{field}": {value}}}"#
            );
            assert!(refusal(&text).contains(field));
        }
    }

    #[test]
    fn rejects_unknown_class_and_values() {
        let err =
            SchedulerConfig::from_json(r#"{"_class_name": "DDIMScheduler"}"#).expect_err("unknown");
        assert!(err.to_string().contains("DDIMScheduler"), "{err}");
        assert!(SchedulerConfig::from_json("{}").is_err());
        let err = SchedulerConfig::from_json(&with("final_sigmas_type", "\"last\""))
            .expect_err("bad value");
        assert!(err.to_string().contains("last"), "{err}");
    }

    #[test]
    fn linspace_matches_numpy() {
        assert_eq!(linspace(1.0, 0.001, 0), Vec::<f64>::new());
        assert_eq!(linspace(1.0, 0.001, 1), vec![1.0]);
        // np.linspace(1, 0.001, 4).tolist()
        assert_eq!(
            linspace(1.0, 0.001, 4),
            vec![1.0, 0.667, 0.33399999999999996, 0.001]
        );
    }
}
