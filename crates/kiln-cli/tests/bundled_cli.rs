//! `kiln generate` on the bundled model (models/kiln-bundled): used when --model is not
//! given, at its own defaults, with every control flag; and the flags' bad values answered
//! with one line that names the fix.

use std::path::PathBuf;
use std::process::{Command, Output};

use candle_core::Device;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-bundled-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        // From elsewhere than the repository: the binary must find the model itself.
        .current_dir(std::env::temp_dir())
        .output()
        .expect("kiln runs")
}

fn fails(args: &[&str]) -> String {
    let out = kiln(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
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

fn summary(out: &Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "kiln failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--json summary")
}

fn video(path: &PathBuf) -> Vec<f32> {
    let t = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    t["video"].flatten_all().unwrap().to_vec1().unwrap()
}

/// A 224×128 PNG: blue background, a red square at (40..80, 40..80).
fn write_image(path: &PathBuf) {
    let img = image::RgbImage::from_fn(224, 128, |x, y| {
        if (40..80).contains(&x) && (40..80).contains(&y) {
            image::Rgb([220, 30, 30])
        } else {
            image::Rgb([30, 60, 200])
        }
    });
    img.save(path).unwrap();
}

/// White over the red square.
fn write_mask(path: &PathBuf) {
    let img = image::GrayImage::from_fn(224, 128, |x, y| {
        let inside = (40..80).contains(&x) && (40..80).contains(&y);
        image::Luma([if inside { 255 } else { 0 }])
    });
    img.save(path).unwrap();
}

#[test]
fn bundled_model_is_the_default_with_its_own_clip_geometry() {
    let dir = scratch("default");
    let tensor = dir.join("v.safetensors");
    let t = tensor.display().to_string();
    let out = kiln(&[
        "generate",
        "--prompt",
        "a red circle moves right",
        "--steps",
        "1",
        "--seed",
        "3",
        "--output-tensor",
        &t,
        "--json",
    ]);
    let s = summary(&out);
    // 5 s at 8 fps, 16:9 at 64 px on the short side, no negative prompt.
    let geometry = |s: &serde_json::Value| {
        (
            s["frames"].as_u64(),
            s["width"].as_u64(),
            s["height"].as_u64(),
        )
    };
    assert_eq!(geometry(&s), (Some(41), Some(112), Some(64)));
    assert_eq!(s["fps"], 8);
    assert_eq!(s["negative_prompt"], "");
    assert_eq!(video(&tensor).len(), 41 * 64 * 112 * 3);

    for (aspect, w, h) in [("9:16", 64, 112), ("1:1", 64, 64)] {
        let s = summary(&kiln(&[
            "generate",
            "--prompt",
            "a blue square",
            "--steps",
            "1",
            "--aspect-ratio",
            aspect,
            "--duration",
            "10",
            "--json",
        ]));
        assert_eq!(geometry(&s), (Some(81), Some(w), Some(h)));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn control_flags_change_the_clip() {
    let dir = scratch("controls");
    let (img, mask) = (dir.join("first.png"), dir.join("mask.png"));
    write_image(&img);
    write_mask(&mask);
    let (img, mask) = (img.display().to_string(), mask.display().to_string());
    let run = |name: &str, extra: &[&str]| {
        let path = dir.join(format!("{name}.safetensors"));
        let p = path.display().to_string();
        let mut args = vec![
            "generate",
            "--prompt",
            "a red square moves right",
            "--steps",
            "2",
            "--seed",
            "5",
            "--output-tensor",
            &p,
            "--json",
        ];
        args.extend_from_slice(extra);
        summary(&kiln(&args));
        video(&path)
    };
    let plain = run("plain", &[]);
    let variants = [
        ("image", vec!["--image", img.as_str()]),
        ("tail", vec!["--image-tail", img.as_str()]),
        ("camera", vec!["--camera", "down_back"]),
        ("axes", vec!["--camera", "pan=5,zoom=-3"]),
        (
            "static",
            vec!["--image", img.as_str(), "--static-mask", mask.as_str()],
        ),
        (
            "dynamic",
            vec![
                "--image",
                img.as_str(),
                "--dynamic-mask",
                mask.as_str(),
                "--trajectory",
                "60,60;160,60",
            ],
        ),
    ];
    for (name, extra) in variants {
        let v = run(name, &extra);
        let d = v
            .iter()
            .zip(&plain)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(d > 1e-3, "{name}: the flag changed nothing (max diff {d})");
    }
    // Six numbers equal the same axes by name.
    let by_name = run("by-name", &["--camera", "pan=5,zoom=-3"]);
    let by_numbers = run("by-numbers", &["--camera", "0,0,5,0,0,-3"]);
    assert_eq!(by_name, by_numbers);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_control_flags_name_the_fix() {
    let dir = scratch("bad");
    let (img, mask) = (dir.join("first.png"), dir.join("mask.png"));
    write_image(&img);
    write_mask(&mask);
    let (img, mask) = (img.display().to_string(), mask.display().to_string());
    let base = ["generate", "--prompt", "a red square", "--steps", "1"];
    let with = |extra: &[&str]| {
        let mut a = base.to_vec();
        a.extend_from_slice(extra);
        fails(&a)
    };
    assert!(with(&["--camera", "sideways"]).contains("expected a preset"));
    assert!(with(&["--camera", "pan=11"]).contains("--camera pan = 11"));
    assert!(with(&["--camera", "spin=3"]).contains("unknown axis"));
    assert!(with(&["--camera", "1,2,3"]).contains("six comma-separated numbers"));
    assert!(with(&["--image", "/no/such/image.png"]).contains("--image /no/such/image.png"));
    let e = with(&["--image", &img, "--dynamic-mask", &mask]);
    assert!(
        e.contains("give one --trajectory per --dynamic-mask"),
        "{e}"
    );
    let e = with(&[
        "--image",
        &img,
        "--dynamic-mask",
        &mask,
        "--trajectory",
        "60,60",
    ]);
    assert!(e.contains("at least 2 points"), "{e}");
    let e = with(&[
        "--image",
        &img,
        "--dynamic-mask",
        &mask,
        "--trajectory",
        "60,60;nope",
    ]);
    assert!(e.contains("--trajectory"), "{e}");
    // A text-to-video checkpoint refuses images.
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/wan/tiny_cfg/model");
    let f = fixture.display().to_string();
    let e = with(&[
        "--model", &f, "--width", "32", "--height", "16", "--frames", "5", "--image", &img,
    ]);
    assert!(e.contains("this model takes text only"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
