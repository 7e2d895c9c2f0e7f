//! Encode benchmark: 121 synthetic frames (a 5 s clip at 24 fps) per format, size and
//! quality; prints seconds, bytes and the speed relative to real time.
//!
//! cargo run --release -p kiln-media --example video_bench -- \
//!     [--formats mp4,mov,webm] [--sizes 1280x704,1920x1080] [--qualities 30,90] [--frames 121]

use std::time::Instant;

use kiln_media::video_out::{encode_video, EncodeOptions, VideoFormat};

const FPS: u32 = 24;

/// Smooth gradient + two moving soft shapes + a little texture: stands in for model output.
fn synthetic_clip(frames: usize, width: usize, height: usize) -> Vec<u8> {
    let mut data = Vec::with_capacity(frames * width * height * 3);
    for t in 0..frames {
        let phase = t as f32 / frames as f32;
        let (disc_x, disc_y) = (width as f32 * (0.2 + 0.6 * phase), height as f32 * 0.4);
        let radius = width.min(height) as f32 * 0.2;
        let (square_x, square_y) = (width as f32 * 0.7, height as f32 * (0.15 + 0.6 * phase));
        let half = width.min(height) as f32 * 0.12;
        for y in 0..height {
            for x in 0..width {
                let (u, v) = (x as f32 / width as f32, y as f32 / height as f32);
                let ripple =
                    12.0 * ((x as f32 * 0.05 + phase * 9.0).sin() * (y as f32 * 0.07).cos());
                let mut rgb = [
                    40.0 + 150.0 * u + ripple,
                    60.0 + 120.0 * v + 30.0 * (phase * 6.0).sin(),
                    180.0 - 100.0 * u * v - ripple,
                ];
                let d = ((x as f32 - disc_x).powi(2) + (y as f32 - disc_y).powi(2)).sqrt();
                let disc = ((radius - d) / 3.0).clamp(0.0, 1.0);
                let edge = (x as f32 - square_x).abs().max((y as f32 - square_y).abs());
                let square = ((half - edge) / 3.0).clamp(0.0, 1.0);
                for (channel, (disc_colour, square_colour)) in
                    rgb.iter_mut()
                        .zip([(230.0, 30.0), (200.0, 90.0), (40.0, 220.0)])
                {
                    *channel += (disc_colour - *channel) * disc;
                    *channel += (square_colour - *channel) * square;
                }
                data.extend(rgb.map(|c| c.clamp(0.0, 255.0) as u8));
            }
        }
    }
    data
}

fn list_arg(args: &[String], flag: &str, default: &str) -> Vec<String> {
    let value = args
        .iter()
        .position(|arg| arg == flag)
        .and_then(|i| args.get(i + 1))
        .map_or(default, String::as_str);
    value.split(',').map(str::to_string).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let formats = list_arg(&args, "--formats", "mp4,mov,webm")
        .iter()
        .map(|name| VideoFormat::from_name(name))
        .collect::<Result<Vec<_>, _>>()?;
    let sizes = list_arg(&args, "--sizes", "1280x704,1920x1080");
    let qualities = list_arg(&args, "--qualities", "30,90");
    let frames: usize = list_arg(&args, "--frames", "121")[0].parse()?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("video_bench: {frames} frames at {FPS} fps, {threads} hardware threads");
    println!(
        "{:<6} {:>10} {:>8} {:>9} {:>12} {:>10}",
        "format", "size", "quality", "seconds", "bytes", "x realtime"
    );
    for size in &sizes {
        let (width, height) = size.split_once('x').ok_or("sizes look like 1280x704")?;
        let (width, height): (usize, usize) = (width.parse()?, height.parse()?);
        let clip = synthetic_clip(frames, width, height);
        for &format in &formats {
            for quality in &qualities {
                let options = EncodeOptions {
                    format,
                    fps: FPS,
                    quality: quality.parse()?,
                };
                let start = Instant::now();
                let bytes = encode_video(&clip, frames, width, height, &options)?;
                let seconds = start.elapsed().as_secs_f64();
                let realtime = frames as f64 / f64::from(FPS) / seconds;
                println!(
                    "{:<6} {:>10} {:>8} {:>9.2} {:>12} {:>10.2}",
                    format.extension(),
                    size,
                    quality,
                    seconds,
                    bytes.len(),
                    realtime
                );
            }
        }
    }
    Ok(())
}
