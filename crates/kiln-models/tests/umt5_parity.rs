//! The UMT5 encoder against transformers' `UMT5EncoderModel` on the reference fixtures
//! (tests/fixtures/wan/<case>/), in f32 and in half precision, and through the
//! single-file key layouts.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use kiln_models::umt5::{key_map_for, Config, UMT5EncoderModel};
use kiln_models::{component_files, read_config, WeightSource};

/// Components within 1e-4 of max |reference| (tests/fixtures/README.md).
const F32_TOLERANCE: f32 = 1e-4;

fn fixtures_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan")
}

/// Every case folder that holds a reference; fails when there is none.
fn cases() -> Result<Vec<PathBuf>> {
    let root = fixtures_root();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("{} is missing; generate the fixtures", root.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("reference.safetensors").is_file())
        .collect();
    cases.sort();
    if cases.is_empty() {
        bail!(
            "no case with reference.safetensors under {}",
            root.display()
        );
    }
    Ok(cases)
}

fn case_name(case: &Path) -> String {
    case.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn load_reference(case: &Path) -> Result<HashMap<String, Tensor>> {
    let path = case.join("reference.safetensors");
    candle_core::safetensors::load(&path, &Device::Cpu)
        .with_context(|| format!("reading {}", path.display()))
}

fn get<'a>(reference: &'a HashMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    reference
        .get(name)
        .with_context(|| format!("reference has no `{name}`"))
}

fn text_encoder_config(case: &Path) -> Result<Config> {
    let path = case.join("model/text_encoder/config.json");
    Ok(read_config(&path, "text encoder config")?)
}

/// The diffusers-layout text encoder of `case`, in `dtype`.
fn load_model(case: &Path, dtype: DType) -> Result<UMT5EncoderModel> {
    let cfg = text_encoder_config(case)?;
    let files = component_files(&case.join("model/text_encoder"))?;
    let vb = WeightSource::open(&files, None, "regenerate the fixtures")?
        .into_var_builder(dtype, &Device::Cpu);
    Ok(UMT5EncoderModel::new(&cfg, vb)?)
}

/// A single-file text encoder, read through the key map its keys call for.
fn load_single_file(case: &Path, file: &Path) -> Result<UMT5EncoderModel> {
    let cfg = text_encoder_config(case)?;
    let files = vec![file.to_path_buf()];
    let stored = WeightSource::open(&files, None, "")?.stored_keys();
    let vb = WeightSource::open(&files, key_map_for(&stored), "regenerate the fixtures")?
        .into_var_builder(DType::F32, &Device::Cpu);
    Ok(UMT5EncoderModel::new(&cfg, vb)?)
}

fn max_abs(t: &Tensor) -> Result<f32> {
    Ok(t.to_dtype(DType::F32)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar()?)
}

/// max |out - reference| / max |reference|.
fn relative_error(out: &Tensor, reference: &Tensor) -> Result<f32> {
    if out.dims() != reference.dims() {
        bail!("shape {:?}, reference {:?}", out.dims(), reference.dims());
    }
    let diff = max_abs(&(out.to_dtype(DType::F32)? - reference.to_dtype(DType::F32)?)?)?;
    Ok(diff / max_abs(reference)?.max(f32::MIN_POSITIVE))
}

/// Number of real tokens in each row of a (B, L) mask.
fn lengths(mask: &Tensor) -> Result<Vec<usize>> {
    let m = mask.to_dtype(DType::I64)?.to_vec2::<i64>()?;
    Ok(m.iter()
        .map(|row| row.iter().filter(|&&v| v != 0).count())
        .collect())
}

/// The pipeline's embeddings: rows past each prompt's length set to zero.
fn zero_padding(hidden: &Tensor, lengths: &[usize]) -> Result<Tensor> {
    let (b, l, _) = hidden.dims3()?;
    let keep: Vec<f32> = (0..b)
        .flat_map(|i| (0..l).map(move |j| if j < lengths[i] { 1.0 } else { 0.0 }))
        .collect();
    let keep = Tensor::from_vec(keep, (b, l, 1), hidden.device())?.to_dtype(hidden.dtype())?;
    Ok(hidden.broadcast_mul(&keep)?)
}

/// The negative prompt's mask: stored when the fixture has it, else every non-pad id
/// (the tokenizer pads on the right with `pad_token_id` and never emits it otherwise).
fn negative_mask(reference: &HashMap<String, Tensor>, cfg: &Config) -> Result<Tensor> {
    if let Some(mask) = reference.get("negative_attention_mask") {
        return Ok(mask.clone());
    }
    let ids = get(reference, "negative_input_ids")?;
    let pad = cfg.pad_token_id.unwrap_or(0) as i64;
    Ok(ids.to_dtype(DType::I64)?.ne(pad)?.to_dtype(DType::I64)?)
}

struct Errors {
    /// Raw encoder output, padded rows included, against `prompt_encoder_out`.
    prompt_raw: f32,
    /// Zero-padded output against the pipeline's `prompt_embeds`.
    prompt_embeds: f32,
    /// Zero-padded negative output against `negative_embeds`, when the case has one.
    negative_embeds: Option<f32>,
}

fn errors(case: &Path, model: &UMT5EncoderModel) -> Result<Errors> {
    let reference = load_reference(case)?;
    let cfg = text_encoder_config(case)?;
    let ids = get(&reference, "prompt_input_ids")?;
    let mask = get(&reference, "prompt_attention_mask")?;
    let out = model.forward(ids, mask)?;
    let prompt_raw = relative_error(&out, get(&reference, "prompt_encoder_out")?)?;
    let prompt_embeds = relative_error(
        &zero_padding(&out, &lengths(mask)?)?,
        get(&reference, "prompt_embeds")?,
    )?;
    let negative_embeds = match reference.get("negative_input_ids") {
        None => None,
        Some(ids) => {
            let mask = negative_mask(&reference, &cfg)?;
            let out = zero_padding(&model.forward(ids, &mask)?, &lengths(&mask)?)?;
            Some(relative_error(&out, get(&reference, "negative_embeds")?)?)
        }
    };
    Ok(Errors {
        prompt_raw,
        prompt_embeds,
        negative_embeds,
    })
}

fn check_all_cases(dtype: DType, tolerance: f32) -> Result<()> {
    let mut failures = Vec::new();
    for case in cases()? {
        let name = case_name(&case);
        let e = errors(&case, &load_model(&case, dtype)?)?;
        println!(
            "{name} {dtype:?}: prompt raw {:.3e}, prompt embeds {:.3e}, negative embeds {}",
            e.prompt_raw,
            e.prompt_embeds,
            e.negative_embeds
                .map(|v| format!("{v:.3e}"))
                .unwrap_or_else(|| "-".into())
        );
        let checks = [
            ("prompt_encoder_out", Some(e.prompt_raw)),
            ("prompt_embeds", Some(e.prompt_embeds)),
            ("negative_embeds", e.negative_embeds),
        ];
        for (what, err) in checks {
            if let Some(err) = err {
                if err.is_nan() || err > tolerance {
                    failures.push(format!("{name}/{what}: {err:.3e} > {tolerance:.0e}"));
                }
            }
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

#[test]
fn f32_matches_transformers() -> Result<()> {
    check_all_cases(DType::F32, F32_TOLERANCE)
}

/// bf16 rounds every weight and activation to 8 mantissa bits (relative step 2^-8 ≈ 4e-3),
/// which compounds over the layers: measured 1.3e-2 of max |reference| on the fixtures, the
/// same as transformers' own bf16 run against its f32 one (1.1e-2 to 1.3e-2).
#[test]
fn bf16_is_close_to_transformers_f32() -> Result<()> {
    check_all_cases(DType::BF16, 3e-2)
}

/// f16 keeps `wo` and the residual stream in f32 like transformers, so it lands nearer to
/// f32 (10 mantissa bits): measured 1.5e-3, transformers' own f16 run 1.2e-3.
#[test]
fn f16_is_close_to_transformers_f32() -> Result<()> {
    check_all_cases(DType::F16, 5e-3)
}

fn tiny_cfg() -> Result<PathBuf> {
    let case = fixtures_root().join("tiny_cfg");
    if !case.join("reference.safetensors").is_file() {
        bail!("{} has no reference; generate the fixtures", case.display());
    }
    Ok(case)
}

fn prompt_output(case: &Path, model: &UMT5EncoderModel) -> Result<Tensor> {
    let reference = load_reference(case)?;
    Ok(model.forward(
        get(&reference, "prompt_input_ids")?,
        get(&reference, "prompt_attention_mask")?,
    )?)
}

#[test]
fn single_file_hf_layout_gives_identical_output() -> Result<()> {
    let case = tiny_cfg()?;
    let file = case.join("single_file/umt5_encoder.safetensors");
    let expected = prompt_output(&case, &load_model(&case, DType::F32)?)?;
    let got = prompt_output(&case, &load_single_file(&case, &file)?)?;
    let diff = max_abs(&(got - &expected)?)?;
    assert_eq!(diff, 0.0, "single-file output differs by {diff}");
    Ok(())
}

/// The Hugging Face name of a key in the original Wan release layout (the inverse of the
/// key map, written out independently so the test checks the map).
fn hf_to_wan_release(name: &str) -> Option<String> {
    let renames = [
        (
            ".layer.0.SelfAttention.relative_attention_bias.",
            ".pos_embedding.embedding.",
        ),
        (".layer.0.SelfAttention.", ".attn."),
        (".layer.0.layer_norm.", ".norm1."),
        (".layer.1.layer_norm.", ".norm2."),
        (".layer.1.DenseReluDense.wi_0.", ".ffn.gate.0."),
        (".layer.1.DenseReluDense.wi_1.", ".ffn.fc1."),
        (".layer.1.DenseReluDense.wo.", ".ffn.fc2."),
    ];
    match name {
        "shared.weight" => return Some("token_embedding.weight".into()),
        "encoder.embed_tokens.weight" => return None,
        "encoder.final_layer_norm.weight" => return Some("norm.weight".into()),
        _ => {}
    }
    let rest = name.strip_prefix("encoder.block.")?;
    let mut wan = format!("blocks.{rest}");
    for (hf, release) in renames {
        if wan.contains(hf) {
            wan = wan.replacen(hf, release, 1);
            return Some(wan);
        }
    }
    None
}

/// Rewrites the fixture's encoder in the Wan release layout, with a prefix, and reads it back.
#[test]
fn wan_release_layout_gives_identical_output() -> Result<()> {
    let case = tiny_cfg()?;
    let files = component_files(&case.join("model/text_encoder"))?;
    let mut renamed = HashMap::new();
    for file in &files {
        for (name, tensor) in candle_core::safetensors::load(file, &Device::Cpu)? {
            if let Some(wan) = hf_to_wan_release(&name) {
                renamed.insert(format!("text_encoder.{wan}"), tensor);
            }
        }
    }
    let path =
        std::env::temp_dir().join(format!("kiln-umt5-wan-{}.safetensors", std::process::id()));
    candle_core::safetensors::save(&renamed, &path)?;
    let got = load_single_file(&case, &path).and_then(|m| prompt_output(&case, &m));
    std::fs::remove_file(&path).ok();
    let expected = prompt_output(&case, &load_model(&case, DType::F32)?)?;
    let diff = max_abs(&(got? - &expected)?)?;
    assert_eq!(diff, 0.0, "Wan-layout output differs by {diff}");
    Ok(())
}

/// Padded positions must not change real rows: the same prompt without padding gives the
/// same real rows.
#[test]
fn padding_does_not_change_real_rows() -> Result<()> {
    let case = tiny_cfg()?;
    let reference = load_reference(&case)?;
    let model = load_model(&case, DType::F32)?;
    let ids = get(&reference, "prompt_input_ids")?;
    let mask = get(&reference, "prompt_attention_mask")?;
    let n = lengths(mask)?[0];
    let padded = model.forward(ids, mask)?.narrow(1, 0, n)?;
    let short = model.forward(&ids.narrow(1, 0, n)?, &mask.narrow(1, 0, n)?)?;
    let err = relative_error(&short, &padded)?;
    assert!(err < 1e-5, "real rows change with padding: {err:.3e}");
    Ok(())
}
