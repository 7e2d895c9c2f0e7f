//! `kiln generate` end to end: the real binary on the tiny fixture checkpoints, and every
//! kind of bad input answered with a one-line error and no panic.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use candle_core::{DType, Device, Tensor};

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .output()
        .expect("kiln runs")
}

fn reference(case: &str) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(
        fixtures().join(case).join("reference.safetensors"),
        &Device::Cpu,
    )
    .unwrap()
}

fn model(case: &str) -> String {
    fixtures().join(case).join("model").display().to_string()
}

/// Runs a command that must fail, returning its single error line.
fn fails(args: &[&str]) -> String {
    let out = kiln(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success(), "expected failure for {args:?}");
    assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        1,
        "{args:?}: expected one error line, got: {stderr}"
    );
    lines[0].to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

fn tiny_args<'a>(model: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "generate",
        "--model",
        model,
        "--prompt",
        "a red circle",
        "--frames",
        "5",
        "--width",
        "32",
        "--height",
        "32",
        "--steps",
        "1",
    ];
    v.extend_from_slice(extra);
    v
}

#[test]
fn generate_matches_the_reference_video() {
    let dir = scratch("parity");
    let r = reference("tiny_cfg");
    let case: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures().join("tiny_cfg/case.json")).unwrap(),
    )
    .unwrap();
    let latents = dir.join("latents.safetensors");
    r["pipeline_init_latents"]
        .save_safetensors("latents", &latents)
        .unwrap();
    let video = dir.join("video.safetensors");
    let y4m = dir.join("video.y4m");
    let m = model("tiny_cfg");
    let frames = case["num_frames"].to_string();
    let width = case["width"].to_string();
    let height = case["height"].to_string();
    let steps = case["num_inference_steps"].to_string();
    let guidance = case["guidance_scale"].to_string();
    let out = kiln(&[
        "generate",
        "--model",
        &m,
        "--prompt",
        case["prompt"].as_str().unwrap(),
        "--negative-prompt",
        case["negative_prompt"].as_str().unwrap(),
        "--frames",
        &frames,
        "--width",
        &width,
        "--height",
        &height,
        "--steps",
        &steps,
        "--guidance",
        &guidance,
        "--init-latents",
        latents.to_str().unwrap(),
        "--output-tensor",
        video.to_str().unwrap(),
        "--output",
        y4m.to_str().unwrap(),
        "--json",
        // The reference is f32; the default would be bf16 on AVX512-BF16 machines.
        "--dtype",
        "f32",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(summary["frames"], case["num_frames"]);
    assert!(summary["timings"]["denoise"].as_f64().unwrap() > 0.0);
    assert!(summary["peak_rss_bytes"].as_u64().unwrap() > 0);

    let got = candle_core::safetensors::load(&video, &Device::Cpu)
        .unwrap()
        .remove("video")
        .unwrap();
    let want = &r["pipeline_video"];
    assert_eq!(got.dims(), want.dims());
    assert_eq!(got.dtype(), DType::F32);
    let diff: f32 = (got - want)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar()
        .unwrap();
    assert!(diff <= 2e-3, "video differs by {diff}");

    let bytes = std::fs::read(&y4m).unwrap();
    let f = case["num_frames"].as_u64().unwrap() as usize;
    let (h, w) = (
        case["height"].as_u64().unwrap() as usize,
        case["width"].as_u64().unwrap() as usize,
    );
    assert!(bytes.starts_with(format!("YUV4MPEG2 W{w} H{h} F16:1").as_bytes()));
    let header = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
    assert_eq!(bytes.len(), header + f * (6 + 3 * h * w));
}

#[test]
fn default_dtype_follows_the_cpu() {
    let m = model("tiny_nocfg");
    let out = kiln(&tiny_args(&m, &["--seed", "1", "--json"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let want = format!("{:?}", kiln_models::default_cpu_dtype()).to_lowercase();
    assert_eq!(summary["dtype"], want.as_str());
}

#[test]
fn seeded_runs_repeat_and_differ_by_seed() {
    let dir = scratch("seed");
    let m = model("tiny_nocfg");
    let run = |seed: &str, name: &str| {
        let p = dir.join(name);
        let out = kiln(&tiny_args(
            &m,
            &[
                "--seed",
                seed,
                "--guidance",
                "1",
                "--output-tensor",
                p.to_str().unwrap(),
            ],
        ));
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        candle_core::safetensors::load(&p, &Device::Cpu)
            .unwrap()
            .remove("video")
            .unwrap()
    };
    let a: Vec<f32> = run("7", "a.safetensors")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = run("7", "b.safetensors")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let c: Vec<f32> = run("8", "c.safetensors")
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn bad_request_values_name_the_fix() {
    let m = model("tiny_cfg");
    let e = fails(&[
        "generate", "--model", &m, "--prompt", "x", "--frames", "10", "--width", "32", "--height",
        "32",
    ]);
    assert!(
        e.contains("4n+1") && e.contains("9") && e.contains("13"),
        "{e}"
    );
    let e = fails(&[
        "generate", "--model", &m, "--prompt", "x", "--frames", "5", "--width", "40", "--height",
        "32",
    ]);
    assert!(
        e.contains("width = 40")
            && e.contains("multiples of 16")
            && e.contains("32")
            && e.contains("48"),
        "{e}"
    );
    let e = fails(&[
        "generate", "--model", &m, "--prompt", "  ", "--frames", "5", "--width", "32", "--height",
        "32",
    ]);
    assert!(e.contains("prompt is empty"), "{e}");
    let long = "a".repeat(2501);
    let e = fails(&[
        "generate", "--model", &m, "--prompt", &long, "--frames", "5", "--width", "32", "--height",
        "32",
    ]);
    assert!(e.contains("2501") && e.contains("2500"), "{e}");
    let e = fails(&tiny_args(&m, &["--cfg-scale", "1.5"]));
    assert!(e.contains("cfg-scale") && e.contains("1.5"), "{e}");
    let e = fails(&tiny_args(&m, &["--output", "clip.avi"]));
    assert!(e.contains("clip.avi") && e.contains(".mp4"), "{e}");
    let e = fails(&tiny_args(&m, &["--output", "clip.mp4", "--quality", "10"]));
    assert!(e.contains("--quality 10") && e.contains("20 to 99"), "{e}");
    let e = fails(&tiny_args(&m, &["--output", "clip.bin", "--format", "avi"]));
    assert!(e.contains("avi") && e.contains("mp4, mov or webm"), "{e}");
}

#[test]
fn bad_init_latents_are_refused() {
    let dir = scratch("latents");
    let m = model("tiny_cfg");
    let wrong = dir.join("wrong.safetensors");
    Tensor::zeros((1, 16, 3, 4, 4), DType::F32, &Device::Cpu)
        .unwrap()
        .save_safetensors("latents", &wrong)
        .unwrap();
    let e = fails(&tiny_args(&m, &["--init-latents", wrong.to_str().unwrap()]));
    assert!(
        e.contains("[1, 16, 3, 4, 4]") && e.contains("[1, 16, 2, 4, 4]"),
        "{e}"
    );
    let unnamed = dir.join("unnamed.safetensors");
    Tensor::zeros((1, 16, 2, 4, 4), DType::F32, &Device::Cpu)
        .unwrap()
        .save_safetensors("noise", &unnamed)
        .unwrap();
    let e = fails(&tiny_args(
        &m,
        &["--init-latents", unnamed.to_str().unwrap()],
    ));
    assert!(e.contains("latents"), "{e}");
}

#[test]
fn broken_checkpoints_name_the_file_and_key() {
    let dir = scratch("broken");
    let m = dir.join("model");

    let e = fails(&tiny_args(m.to_str().unwrap(), &[]));
    assert!(e.contains("no such checkpoint folder"), "{e}");

    copy_dir(&fixtures().join("tiny_cfg/model"), &m);
    let weights = m.join("transformer/diffusion_pytorch_model.safetensors");
    let original = std::fs::read(&weights).unwrap();
    let ms = m.to_str().unwrap().to_string();

    // Truncated download.
    std::fs::write(&weights, &original[..original.len() / 2]).unwrap();
    let e = fails(&tiny_args(&ms, &[]));
    assert!(
        e.contains("diffusion_pytorch_model.safetensors") && e.contains("truncated"),
        "{e}"
    );

    let tensors = candle_core::safetensors::load_buffer(&original, &Device::Cpu).unwrap();
    let key = "blocks.0.attn1.to_q.weight";
    assert!(tensors.contains_key(key), "fixture layout changed");

    // Missing key.
    let mut missing = tensors.clone();
    missing.remove(key);
    candle_core::safetensors::save(&missing, &weights).unwrap();
    let e = fails(&tiny_args(&ms, &[]));
    assert!(e.contains(key) && e.contains("missing"), "{e}");

    // Wrong shape.
    let mut reshaped = tensors.clone();
    reshaped.insert(
        key.to_string(),
        Tensor::zeros((3, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&reshaped, &weights).unwrap();
    let e = fails(&tiny_args(&ms, &[]));
    assert!(
        e.contains(key) && e.contains("[3, 5]") && e.contains("expected"),
        "{e}"
    );

    // Wrong dtype.
    let mut retyped = tensors.clone();
    let shape = tensors[key].dims().to_vec();
    retyped.insert(
        key.to_string(),
        Tensor::zeros(shape, DType::I64, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&retyped, &weights).unwrap();
    let e = fails(&tiny_args(&ms, &[]));
    assert!(
        e.contains(key) && e.contains("I64") && e.contains("f32, bf16 or f16"),
        "{e}"
    );

    // Missing single-file override.
    std::fs::write(&weights, &original).unwrap();
    let e = fails(&tiny_args(
        &ms,
        &["--transformer", "/nonexistent/wan.safetensors"],
    ));
    assert!(
        e.contains("/nonexistent/wan.safetensors") && e.contains("--transformer"),
        "{e}"
    );

    // bf16 and f16 weight files load into f32 compute.
    let half: HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.to_dtype(DType::BF16).unwrap()))
        .collect();
    candle_core::safetensors::save(&half, &weights).unwrap();
    let out = kiln(&tiny_args(&ms, &["--seed", "1"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn generate_writes_each_container_and_a_poster() {
    let dir = scratch("containers");
    let m = model("tiny_cfg");
    for (name, magic_at_4) in [
        ("clip.mp4", &b"ftyp"[..]),
        ("clip.mov", &b"ftyp"[..]),
        ("clip.webm", &b""[..]),
    ] {
        let path = dir.join(name);
        let out = kiln(&tiny_args(
            &m,
            &[
                "--seed",
                "3",
                "--output",
                path.to_str().unwrap(),
                "--quality",
                "80",
            ],
        ));
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let bytes = std::fs::read(&path).unwrap();
        if magic_at_4.is_empty() {
            // EBML header of a Matroska/WebM file.
            assert_eq!(&bytes[..4], &[0x1a, 0x45, 0xdf, 0xa3], "{name}");
        } else {
            assert_eq!(&bytes[4..8], magic_at_4, "{name}");
        }
        let poster = std::fs::read(path.with_extension("jpg")).unwrap();
        assert_eq!(
            &poster[..3],
            &[0xff, 0xd8, 0xff],
            "{name}: poster is a JPEG"
        );
    }
    let poster = dir.join("cover.jpg");
    let out = kiln(&tiny_args(
        &m,
        &[
            "--output",
            dir.join("p.mp4").to_str().unwrap(),
            "--poster",
            poster.to_str().unwrap(),
            "--poster-frame",
            "4",
        ],
    ));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(poster.is_file());
    let e = fails(&tiny_args(
        &m,
        &[
            "--output",
            dir.join("q.mp4").to_str().unwrap(),
            "--poster-frame",
            "5",
        ],
    ));
    assert!(e.contains("--poster-frame 5") && e.contains("0-4"), "{e}");
}
