//! Schedulers against diffusers 0.42.1: the Wan fixtures' scheduler chains
//! (tests/fixtures/wan/<case>/reference.safetensors, `sched_*`) and extra configurations
//! (tests/fixtures/sched/unipc_extra.safetensors, from scripts/reference/unipc_extra.py).
//! Schedules must agree to 1e-6 absolute; every step of a chain to 1e-5 of max |reference|.

use anyhow::{anyhow, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use kiln_sampling::{Scheduler, SchedulerConfig};
use std::collections::HashMap;
use std::path::PathBuf;

const SCHEDULE_TOL: f64 = 1e-6;
const CHAIN_TOL: f64 = 1e-5;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

fn load(path: PathBuf) -> Result<HashMap<String, Tensor>> {
    ensure!(
        path.exists(),
        "missing fixture {}; run scripts/reference/make_fixtures.sh (Wan cases) \
         or scripts/reference/unipc_extra.py",
        path.display()
    );
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))
}

fn get<'a>(tensors: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    tensors
        .get(name)
        .ok_or_else(|| anyhow!("fixture has no tensor {name}"))
}

fn to_f64s(t: &Tensor) -> Result<Vec<f64>> {
    Ok(t.to_dtype(DType::F64)?.to_vec1()?)
}

/// Max |a - b| / max |b|.
fn relative_error(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_dtype(DType::F64)?.flatten_all()?;
    let b = b.to_dtype(DType::F64)?.flatten_all()?;
    let diff = (&a - &b)?.abs()?.max(0)?.to_scalar::<f64>()?;
    let scale = b.abs()?.max(0)?.to_scalar::<f64>()?;
    Ok(diff / scale.max(f64::MIN_POSITIVE))
}

/// Runs a scheduler over the reference chain `{prefix}sample_0`, `{prefix}model_output_{i}`
/// and checks its schedule and every `{prefix}prev_{i}`. Returns the worst step error.
fn check_chain(
    mut sched: Scheduler,
    tensors: &HashMap<String, Tensor>,
    prefix: &str,
) -> Result<f64> {
    let ref_timesteps = to_f64s(get(tensors, &format!("{prefix}timesteps"))?)?;
    let ref_sigmas = to_f64s(get(tensors, &format!("{prefix}sigmas"))?)?;
    sched.set_timesteps(ref_timesteps.len());
    for (what, ours, theirs) in [
        ("timesteps", sched.timesteps(), &ref_timesteps),
        ("sigmas", sched.sigmas(), &ref_sigmas),
    ] {
        ensure!(
            ours.len() == theirs.len(),
            "{prefix}{what}: {} values, reference {}",
            ours.len(),
            theirs.len()
        );
        for (i, (a, b)) in ours.iter().zip(theirs.iter()).enumerate() {
            ensure!(
                (a - b).abs() <= SCHEDULE_TOL,
                "{prefix}{what}[{i}] = {a}, reference {b}\nours {ours:?}\nreference {theirs:?}"
            );
        }
    }
    let mut sample = get(tensors, &format!("{prefix}sample_0"))?.clone();
    let mut worst = 0f64;
    for i in 0..ref_timesteps.len() {
        let model_output = get(tensors, &format!("{prefix}model_output_{i}"))?;
        sample = sched.step(model_output, &sample)?;
        let err = relative_error(&sample, get(tensors, &format!("{prefix}prev_{i}"))?)?;
        ensure!(
            err <= CHAIN_TOL,
            "{prefix}step {i}: relative error {err:e} > {CHAIN_TOL:e}"
        );
        worst = worst.max(err);
    }
    ensure!(
        sched
            .step(get(tensors, &format!("{prefix}model_output_0"))?, &sample)
            .is_err(),
        "a step past the schedule must fail"
    );
    Ok(worst)
}

fn wan_case(case: &str) -> Result<()> {
    let dir = fixtures().join("wan").join(case);
    let tensors = load(dir.join("reference.safetensors"))?;
    let sched = Scheduler::from_config_file(dir.join("model/scheduler/scheduler_config.json"))?;
    let worst = check_chain(sched, &tensors, "sched_")?;
    println!("{case}: worst step relative error {worst:e}");
    Ok(())
}

#[test]
fn tiny_cfg_scheduler_chain() -> Result<()> {
    wan_case("tiny_cfg")
}

#[test]
fn tiny_nocfg_scheduler_chain() -> Result<()> {
    wan_case("tiny_nocfg")
}

#[test]
fn tiny_euler_scheduler_chain() -> Result<()> {
    wan_case("tiny_euler")
}

/// Each case in the extra fixture carries its config as JSON bytes (`<case>_config`).
#[test]
fn extra_configs_match_diffusers() -> Result<()> {
    let tensors = load(fixtures().join("sched/unipc_extra.safetensors"))?;
    let mut cases: Vec<&str> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix("_config"))
        .collect();
    cases.sort();
    for expected in [
        "order3_bh1",
        "order3_bh2_disable",
        "order4_bh1",
        "euler_terminal",
    ] {
        ensure!(
            cases.contains(&expected),
            "extra fixture lacks case {expected}: {cases:?}"
        );
    }
    for case in cases {
        let bytes: Vec<u8> = get(&tensors, &format!("{case}_config"))?.to_vec1()?;
        let config = SchedulerConfig::from_json(std::str::from_utf8(&bytes)?)?;
        let worst = check_chain(
            Scheduler::from_config(config)?,
            &tensors,
            &format!("{case}_"),
        )
        .with_context(|| format!("case {case}"))?;
        println!("{case}: worst step relative error {worst:e}");
    }
    Ok(())
}

/// A bf16 chain runs and stays near the f32 one (the math is done in f32 either way).
#[test]
fn half_precision_inputs_run() -> Result<()> {
    let dir = fixtures().join("wan/tiny_cfg");
    let tensors = load(dir.join("reference.safetensors"))?;
    let config_path = dir.join("model/scheduler/scheduler_config.json");
    let mut sched = Scheduler::from_config_file(&config_path)?;
    let n = get(&tensors, "sched_timesteps")?.dim(0)?;
    sched.set_timesteps(n);
    let mut sample = get(&tensors, "sched_sample_0")?.to_dtype(DType::BF16)?;
    for i in 0..n {
        let v = get(&tensors, &format!("sched_model_output_{i}"))?.to_dtype(DType::BF16)?;
        sample = sched.step(&v, &sample)?;
        ensure!(
            sample.dtype() == DType::BF16,
            "step {i} returned {:?}",
            sample.dtype()
        );
    }
    let err = relative_error(&sample, get(&tensors, &format!("sched_prev_{}", n - 1))?)?;
    ensure!(err < 2e-2, "bf16 chain drifted: {err:e}");
    Ok(())
}

#[test]
fn refusal_names_file_field_and_fix() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("kiln-sampling-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("scheduler_config.json");
    std::fs::write(
        &path,
        r#"{"_class_name": "UniPCMultistepScheduler", "prediction_type": "flow_prediction",
            "use_flow_sigmas": true, "use_karras_sigmas": true}"#,
    )?;
    let err = Scheduler::from_config_file(&path)
        .expect_err("karras sigmas are refused")
        .to_string();
    std::fs::remove_dir_all(&dir)?;
    ensure!(
        err.contains("scheduler_config.json")
            && err.contains("use_karras_sigmas")
            && err.contains("set it to false"),
        "{err}"
    );
    ensure!(!err.contains('\n'), "{err}");
    let missing = Scheduler::from_config_file(dir.join("nope.json"))
        .expect_err("missing file")
        .to_string();
    ensure!(missing.contains("nope.json"), "{missing}");
    Ok(())
}
