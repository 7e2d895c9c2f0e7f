//! Shared helpers for the video tests: natural-looking synthetic clips and ffprobe/ffmpeg.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

/// `frames` RGB8 frames of `width`×`height`: a slowly shifting colour gradient with a soft
/// disc moving right and a soft square moving down, the kind of smooth content a video
/// model produces (noise would measure the encoder, not the pipeline).
pub fn synthetic_clip(frames: usize, width: usize, height: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(frames * width * height * 3);
    for t in 0..frames {
        let phase = t as f32 / frames.max(1) as f32;
        let disc_x = width as f32 * (0.2 + 0.6 * phase);
        let disc_y = height as f32 * 0.4;
        let radius = (width.min(height) as f32 * 0.25).max(2.0);
        let square_x = width as f32 * 0.65;
        let square_y = height as f32 * (0.15 + 0.5 * phase);
        let half = (width.min(height) as f32 * 0.15).max(1.5);
        for y in 0..height {
            for x in 0..width {
                let u = x as f32 / width.max(2) as f32;
                let v = y as f32 / height.max(2) as f32;
                let mut r = 40.0 + 150.0 * u + 30.0 * (phase * 6.0).sin();
                let mut g = 60.0 + 120.0 * v;
                let mut b = 180.0 - 100.0 * u * v + 20.0 * phase;
                let d = ((x as f32 - disc_x).powi(2) + (y as f32 - disc_y).powi(2)).sqrt();
                let disc = (radius - d).clamp(0.0, 3.0) / 3.0;
                r += (230.0 - r) * disc;
                g += (200.0 - g) * disc;
                b += (40.0 - b) * disc;
                let sq = (half - (x as f32 - square_x).abs().max((y as f32 - square_y).abs()))
                    .clamp(0.0, 3.0)
                    / 3.0;
                r += (30.0 - r) * sq;
                g += (90.0 - g) * sq;
                b += (220.0 - b) * sq;
                data.extend_from_slice(&[r as u8, g as u8, b as u8]);
            }
        }
    }
    data
}

/// A fresh scratch directory under the target dir, removed first if it exists.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Fails with the install hint when a Debian tool is missing (CI installs them).
pub fn require_tool(tool: &str, package: &str) {
    let found = Command::new(tool)
        .arg("-version")
        .output()
        .map(|out| out.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "'{tool}' is not installed; run 'apt-get install -y {package}'"
    );
}

/// ffprobe's view of the first video stream and the format, with decoded frames counted.
pub struct Probe {
    pub stream: serde_json::Value,
    pub format: serde_json::Value,
}

impl Probe {
    pub fn str(&self, key: &str) -> String {
        self.stream[key].as_str().unwrap_or_default().to_string()
    }
    pub fn int(&self, key: &str) -> i64 {
        match &self.stream[key] {
            serde_json::Value::Number(n) => n.as_i64().unwrap(),
            serde_json::Value::String(s) => s.parse().unwrap_or(-1),
            _ => -1,
        }
    }
    pub fn format_duration(&self) -> f64 {
        self.format["duration"]
            .as_str()
            .unwrap_or("nan")
            .parse()
            .unwrap_or(f64::NAN)
    }
    pub fn stream_duration(&self) -> f64 {
        self.stream["duration"]
            .as_str()
            .unwrap_or("nan")
            .parse()
            .unwrap_or(f64::NAN)
    }
}

pub fn ffprobe(path: &Path) -> Probe {
    require_tool("ffprobe", "ffmpeg");
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_streams", "-show_format", "-of", "json"])
        .arg(path)
        .output()
        .expect("run ffprobe");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "ffprobe reported problems with {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ffprobe JSON");
    Probe {
        stream: json["streams"][0].clone(),
        format: json["format"].clone(),
    }
}

/// Decodes a file to packed RGB24 frames with ffmpeg, letting ffmpeg pick the YUV→RGB
/// conversion from the file's own colour tags.
pub fn decode_rgb(path: &Path) -> Vec<u8> {
    require_tool("ffmpeg", "ffmpeg");
    let out = Command::new("ffmpeg")
        // Accurate rounding and full chroma interpolation: measure the encoder, not a
        // fast-path converter.
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-sws_flags", "accurate_rnd+full_chroma_int+bitexact"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .expect("run ffmpeg");
    assert!(
        out.status.success(),
        "ffmpeg could not decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// PSNR in dB between two equally long 8-bit buffers.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "decoded size differs from the input");
    let sse: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| {
            let d = f64::from(x) - f64::from(y);
            d * d
        })
        .sum();
    let mse = sse / a.len() as f64;
    if mse == 0.0 {
        return f64::INFINITY;
    }
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

/// Top-level ISO-BMFF boxes in file order.
pub fn top_level_boxes(bytes: &[u8]) -> Vec<String> {
    let mut boxes = Vec::new();
    let mut pos = 0usize;
    while pos + 8 <= bytes.len() {
        let size = u32::from_be_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        boxes.push(String::from_utf8_lossy(&bytes[pos + 4..pos + 8]).into_owned());
        if size < 8 {
            break;
        }
        pos += size;
    }
    boxes
}
