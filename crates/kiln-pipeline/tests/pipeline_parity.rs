//! The whole pipeline against diffusers' WanPipeline on the tiny fixture checkpoints.

use std::collections::HashMap;
use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use kiln_pipeline::{CheckpointPaths, GenerateRequest, WanPipeline};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan")
}

struct Case {
    dir: PathBuf,
    params: serde_json::Value,
    reference: HashMap<String, Tensor>,
}

fn case(name: &str) -> Case {
    let dir = fixtures().join(name);
    let params: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("case.json"))
            .expect("fixture case.json (run scripts/reference/make_fixtures.sh)"),
    )
    .expect("case.json parses");
    let reference = candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu)
        .expect("fixture reference.safetensors");
    Case {
        dir,
        params,
        reference,
    }
}

/// max |a - b| / max |b|
fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shape");
    let a = a.to_dtype(DType::F32).unwrap();
    let b = b.to_dtype(DType::F32).unwrap();
    let diff = (a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap();
    let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
    diff.to_scalar::<f32>().unwrap() / scale.to_scalar::<f32>().unwrap().max(1e-12)
}

fn request(c: &Case) -> GenerateRequest {
    let p = &c.params;
    GenerateRequest {
        prompt: p["prompt"].as_str().unwrap().to_string(),
        negative_prompt: p["negative_prompt"].as_str().unwrap_or("").to_string(),
        num_frames: p["num_frames"].as_u64().unwrap() as usize,
        height: p["height"].as_u64().unwrap() as usize,
        width: p["width"].as_u64().unwrap() as usize,
        steps: p["num_inference_steps"].as_u64().unwrap() as usize,
        guidance_scale: p["guidance_scale"].as_f64().unwrap(),
        seed: 0,
        init_latents: Some(c.reference["pipeline_init_latents"].clone()),
        camera: None,
        conditions: Default::default(),
    }
}

fn load(c: &Case, dtype: DType) -> WanPipeline {
    let paths = CheckpointPaths {
        model: c.dir.join("model"),
        ..Default::default()
    };
    WanPipeline::load(&paths, dtype, &Device::Cpu).expect("fixture checkpoint loads")
}

fn check_case(name: &str) {
    let c = case(name);
    let pipe = load(&c, DType::F32);
    let req = request(&c);

    let embeds = pipe.encode_prompt(&req.prompt).unwrap();
    let e = rel_err(&embeds, &c.reference["prompt_embeds"]);
    println!("{name}: prompt embeds rel err {e:.2e}");
    assert!(e <= 1e-4, "{name}: prompt embeds rel err {e}");

    let mut steps_seen = 0;
    let out = pipe
        .generate(&req, &mut |p| {
            if let kiln_pipeline::Progress::Denoising { .. } = p {
                steps_seen += 1;
            }
            true
        })
        .unwrap();
    assert_eq!(steps_seen, req.steps);
    let e = rel_err(&out.video, &c.reference["pipeline_video"]);
    println!("{name}: pipeline video rel err {e:.2e}");
    assert!(e <= 2e-3, "{name}: pipeline video rel err {e}");
}

#[test]
fn tiny_cfg_matches_diffusers() {
    check_case("tiny_cfg");
}

#[test]
fn tiny_nocfg_matches_diffusers() {
    check_case("tiny_nocfg");
}

#[test]
fn tiny_euler_matches_diffusers() {
    check_case("tiny_euler");
}

#[test]
fn tokenizer_matches_the_reference_ids() {
    for name in ["tiny_cfg", "tiny_nocfg", "tiny_euler"] {
        let c = case(name);
        let tok = kiln_pipeline::prompt::PromptTokenizer::from_file(
            &c.dir.join("model/tokenizer/tokenizer.json"),
            512,
        )
        .unwrap();
        let t = tok
            .encode(c.params["prompt"].as_str().unwrap(), &Device::Cpu)
            .unwrap();
        let ids: Vec<u32> = t.input_ids.flatten_all().unwrap().to_vec1().unwrap();
        let want: Vec<i64> = c.reference["prompt_input_ids"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let want: Vec<u32> = want.into_iter().map(|v| v as u32).collect();
        assert_eq!(ids, want, "{name}: token ids");
        let mask: Vec<u32> = t.attention_mask.flatten_all().unwrap().to_vec1().unwrap();
        let want_mask: Vec<i64> = c.reference["prompt_attention_mask"]
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(
            mask,
            want_mask.into_iter().map(|v| v as u32).collect::<Vec<_>>(),
            "{name}: mask"
        );
    }
}

#[test]
fn single_file_layouts_give_the_same_video() {
    let c = case("tiny_cfg");
    let sf = c.dir.join("single_file");
    let base = load(&c, DType::F32);
    let mut req = request(&c);
    req.steps = 2;
    let want = base.generate(&req, &mut |_| true).unwrap().video;
    for transformer in [
        "wan_transformer.safetensors",
        "comfy_transformer.safetensors",
    ] {
        let paths = CheckpointPaths {
            model: c.dir.join("model"),
            transformer: Some(sf.join(transformer)),
            vae: Some(sf.join("wan_vae.safetensors")),
            text_encoder: Some(sf.join("umt5_encoder.safetensors")),
        };
        let pipe = WanPipeline::load(&paths, DType::F32, &Device::Cpu).expect("single files load");
        let got = pipe.generate(&req, &mut |_| true).unwrap().video;
        let e = rel_err(&got, &want);
        assert!(
            e == 0.0,
            "{transformer}: differs from the diffusers layout by {e}"
        );
    }
}

#[test]
fn bf16_stays_close_to_the_f32_reference() {
    let c = case("tiny_cfg");
    let pipe = load(&c, DType::BF16);
    let out = pipe.generate(&request(&c), &mut |_| true).unwrap();
    let e = rel_err(&out.video, &c.reference["pipeline_video"]);
    println!("tiny_cfg bf16 video rel err {e:.2e}");
    // Stated bf16 tolerance: diffusers' own bf16 run of this case is 9.0e-2 off its f32
    // video (guidance 5 amplifies rounding); kiln must do no worse than 0.12.
    assert!(e <= 0.12, "bf16 video rel err {e}");
}

#[test]
fn cancel_stops_at_the_next_step() {
    let c = case("tiny_cfg");
    let pipe = load(&c, DType::F32);
    let mut seen = 0;
    let r = pipe.generate(&request(&c), &mut |p| {
        if let kiln_pipeline::Progress::Denoising { .. } = p {
            seen += 1;
            return seen < 2;
        }
        true
    });
    assert!(matches!(r, Err(kiln_pipeline::PipelineError::Cancelled)));
    assert_eq!(seen, 2);
}
