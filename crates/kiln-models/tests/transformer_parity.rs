//! The Wan transformer against diffusers' `WanTransformer3DModel` on the tiny fixtures
//! (tests/fixtures/wan/<case>/), its single-file layouts, a bf16 run, and load errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use kiln_models::wan::transformer::{Config, WanTransformer};
use kiln_models::wan::transformer_keys::key_map_for;
use kiln_models::{component_files, read_config, KeyMap, WeightSource};

/// Components within this fraction of max |reference| (tests/fixtures/README.md).
const F32_TOLERANCE: f32 = 1e-4;
/// bf16 weights and activations against the f32 reference: bf16 keeps 8 mantissa bits
/// (relative rounding 2^-9 ≈ 2e-3 per op), so a few tenths of a percent per layer is expected.
const BF16_TOLERANCE: f32 = 2e-2;

const CASES: [&str; 3] = ["tiny_cfg", "tiny_nocfg", "tiny_euler"];

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/wan")
        .join(case)
}

fn reference(case: &str) -> Result<HashMap<String, Tensor>> {
    let path = case_dir(case).join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("fixture {} is missing or unreadable", path.display()))
}

fn tensor<'a>(reference: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    reference
        .get(name)
        .with_context(|| format!("reference.safetensors has no `{name}`"))
}

fn config(case: &str) -> Result<Config> {
    let path = case_dir(case).join("model/transformer/config.json");
    Ok(read_config(&path, "Wan transformer config")?)
}

fn load(
    cfg: &Config,
    files: &[PathBuf],
    key_map: Option<KeyMap>,
    dtype: DType,
) -> Result<WanTransformer> {
    let source = WeightSource::open(
        files,
        key_map,
        "use the transformer weights that match config.json",
    )?;
    let vb = source.into_var_builder(dtype, &Device::Cpu);
    Ok(WanTransformer::new(cfg, vb)?)
}

/// Loads a single file through the key map its keys call for.
fn load_single_file(cfg: &Config, file: &Path) -> Result<WanTransformer> {
    let files = [file.to_path_buf()];
    let keys = WeightSource::open(&files, None, "")?.stored_keys();
    let map = key_map_for(&keys).context("original Wan layout not detected")?;
    load(cfg, &files, Some(map), DType::F32)
}

fn diffusers_files(case: &str) -> Result<Vec<PathBuf>> {
    Ok(component_files(&case_dir(case).join("model/transformer"))?)
}

/// The fixture's transformer call: forward(latents, timestep, prompt_embeds), as f32.
fn run(model: &WanTransformer, reference: &HashMap<String, Tensor>) -> Result<Tensor> {
    let out = model.forward(
        tensor(reference, "transformer_in_latents")?,
        tensor(reference, "transformer_in_timestep")?,
        tensor(reference, "prompt_embeds")?,
    )?;
    Ok(out.to_dtype(DType::F32)?)
}

fn max_abs(t: &Tensor) -> Result<f32> {
    Ok(t.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// max |got - want| / max |want|
fn relative_error(got: &Tensor, want: &Tensor) -> Result<f32> {
    ensure!(
        got.dims() == want.dims(),
        "shape {:?}, reference {:?}",
        got.dims(),
        want.dims()
    );
    Ok(max_abs(&(got - want)?)? / max_abs(want)?)
}

fn check_case(case: &str) -> Result<()> {
    let reference = reference(case)?;
    let cfg = config(case)?;
    let model = load(&cfg, &diffusers_files(case)?, None, DType::F32)?;
    let err = relative_error(
        &run(&model, &reference)?,
        tensor(&reference, "transformer_out")?,
    )?;
    println!("{case}: transformer f32 relative error {err:.3e}");
    ensure!(
        err <= F32_TOLERANCE,
        "{case}: relative error {err:.3e} > {F32_TOLERANCE:e}"
    );
    Ok(())
}

#[test]
fn tiny_cfg_matches_diffusers() -> Result<()> {
    check_case(CASES[0])
}

#[test]
fn tiny_nocfg_matches_diffusers() -> Result<()> {
    check_case(CASES[1])
}

#[test]
fn tiny_euler_matches_diffusers() -> Result<()> {
    check_case(CASES[2])
}

#[test]
fn single_file_layouts_match_diffusers_layout() -> Result<()> {
    let case = "tiny_cfg";
    let reference = reference(case)?;
    let cfg = config(case)?;
    let diffusers_files = diffusers_files(case)?;
    let want = run(&load(&cfg, &diffusers_files, None, DType::F32)?, &reference)?;
    let diffusers_keys = WeightSource::open(&diffusers_files, None, "")?.stored_keys();
    ensure!(
        key_map_for(&diffusers_keys).is_none(),
        "diffusers layout taken for the original one"
    );

    for file in [
        "wan_transformer.safetensors",
        "comfy_transformer.safetensors",
    ] {
        let path = case_dir(case).join("single_file").join(file);
        // Every diffusers key lands on a distinct stored key, and nothing stored is left over.
        let stored = WeightSource::open(std::slice::from_ref(&path), None, "")?.stored_keys();
        let map = key_map_for(&stored).context("original Wan layout not detected")?;
        let mut mapped: Vec<String> = diffusers_keys.iter().map(|k| map(k)).collect();
        let mut stored_sorted = stored.clone();
        mapped.sort();
        stored_sorted.sort();
        ensure!(
            mapped == stored_sorted,
            "{file}: key map is not a bijection onto the stored keys"
        );

        let got = run(&load_single_file(&cfg, &path)?, &reference)?;
        let diff = max_abs(&(&got - &want)?)?;
        println!("{file}: max |single-file - diffusers layout| = {diff:e}");
        ensure!(
            diff <= 1e-6,
            "{file}: output differs from the diffusers-layout load by {diff:e}"
        );
    }
    Ok(())
}

#[test]
fn bf16_run_stays_close() -> Result<()> {
    for case in CASES {
        let reference = reference(case)?;
        let cfg = config(case)?;
        let model = load(&cfg, &diffusers_files(case)?, None, DType::BF16)?;
        let out = model.forward(
            tensor(&reference, "transformer_in_latents")?,
            tensor(&reference, "transformer_in_timestep")?,
            tensor(&reference, "prompt_embeds")?,
        )?;
        ensure!(
            out.dtype() == DType::BF16,
            "bf16 model returned {:?}",
            out.dtype()
        );
        let err = relative_error(
            &out.to_dtype(DType::F32)?,
            tensor(&reference, "transformer_out")?,
        )?;
        println!("{case}: transformer bf16 relative error {err:.3e}");
        ensure!(
            err <= BF16_TOLERANCE,
            "{case}: bf16 relative error {err:.3e} > {BF16_TOLERANCE:e}"
        );
    }
    Ok(())
}

#[test]
fn wrong_shape_is_reported_with_its_key() -> Result<()> {
    let case = "tiny_cfg";
    let cfg = config(case)?;
    let original = case_dir(case).join("single_file/wan_transformer.safetensors");
    let dir = std::env::temp_dir().join(format!("kiln-transformer-shape-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let _cleanup = TempDirGuard(&dir);

    // The diffusers layout, with one projection a column short.
    let key = "blocks.1.attn1.to_q.weight";
    let mut tensors =
        candle_core::safetensors::load(diffusers_files(case)?[0].as_path(), &Device::Cpu)?;
    let bad = tensor(&tensors, key)?.narrow(1, 0, cfg.inner_dim() - 1)?;
    tensors.insert(key.to_string(), bad.clone());
    let path = dir.join("diffusion_pytorch_model.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    let err = match load(&cfg, &[path], None, DType::F32) {
        Ok(_) => anyhow::bail!("a wrongly shaped `{key}` was accepted"),
        Err(e) => e.to_string(),
    };
    println!("{err}");
    ensure!(err.contains(key), "error does not name `{key}`: {err}");

    // The same through the original layout: the error names the key as stored.
    let stored_key = "blocks.1.self_attn.q.weight";
    let mut tensors = candle_core::safetensors::load(&original, &Device::Cpu)?;
    tensors.insert(stored_key.to_string(), bad);
    let path = dir.join("wan_transformer.safetensors");
    candle_core::safetensors::save(&tensors, &path)?;
    let err = match load_single_file(&cfg, &path) {
        Ok(_) => anyhow::bail!("a wrongly shaped `{stored_key}` was accepted"),
        Err(e) => e.to_string(),
    };
    println!("{err}");
    ensure!(
        err.contains(stored_key),
        "error does not name `{stored_key}`: {err}"
    );
    Ok(())
}

#[test]
fn image_to_video_config_is_refused() -> Result<()> {
    let mut cfg = config("tiny_cfg")?;
    cfg.image_dim = Some(1280);
    cfg.added_kv_proj_dim = Some(cfg.inner_dim());
    let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
    let err = match WanTransformer::new(&cfg, vb) {
        Ok(_) => anyhow::bail!("an image-to-video config was accepted"),
        Err(e) => e.to_string(),
    };
    ensure!(
        err.contains("image-to-video transformers are not supported yet"),
        "{err}"
    );
    Ok(())
}

/// Removes a temporary directory when dropped, also when a check fails.
struct TempDirGuard<'a>(&'a Path);

impl Drop for TempDirGuard<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(self.0);
    }
}

/// Guidance runs the prompt and the negative prompt as one batch of two; each item of the
/// batch must be exactly its own forward (rows never mix, and no kernel's order of sums
/// depends on the batch size).
#[test]
fn batch_of_two_equals_two_forwards() -> Result<()> {
    let case = "tiny_cfg";
    let reference = reference(case)?;
    let cfg = config(case)?;
    for dtype in [DType::F32, DType::BF16] {
        let model = load(&cfg, &diffusers_files(case)?, None, dtype)?;
        let x = tensor(&reference, "transformer_in_latents")?;
        let t = tensor(&reference, "transformer_in_timestep")?.to_dtype(DType::F32)?;
        let cond = tensor(&reference, "prompt_embeds")?;
        let uncond = (cond.affine(-0.5, 0.25))?;
        let one = |text: &Tensor| model.forward(x, &t, text)?.to_dtype(DType::F32);
        let both = model
            .forward(
                &Tensor::cat(&[x, x], 0)?,
                &Tensor::cat(&[&t, &t], 0)?,
                &Tensor::cat(&[cond, &uncond], 0)?,
            )?
            .to_dtype(DType::F32)?;
        for (i, text) in [cond, &uncond].into_iter().enumerate() {
            let diff = max_abs(&(both.narrow(0, i, 1)? - one(text)?)?)?;
            ensure!(diff == 0.0, "{dtype:?} item {i}: differs by {diff}");
        }
    }
    Ok(())
}
