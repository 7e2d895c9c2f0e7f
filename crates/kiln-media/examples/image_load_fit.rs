//! Prints how long it takes to decode a large photo-sized JPEG/PNG and fit it to the
//! image-to-video sizes, so input preparation can be compared with generation time.
//!
//! `cargo run -p kiln-media --example image_load_fit [--release]`

use std::io::Cursor;
use std::time::Instant;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageFormat, Rgb};
use kiln_media::image_in::{decode_image, fit_image, size_for_aspect, DecodeLimits, Fit, SizeTier};

fn main() {
    let (width, height) = (4000u32, 3000u32);
    let photo = image::RgbImage::from_fn(width, height, |x, y| {
        Rgb([(x % 251) as u8, (y % 241) as u8, ((x ^ y) % 256) as u8])
    });
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 90)
        .encode_image(&photo)
        .unwrap();
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(photo)
        .write_to(&mut png, ImageFormat::Png)
        .unwrap();

    for (name, bytes) in [("JPEG", jpeg), ("PNG", png.into_inner())] {
        let start = Instant::now();
        let decoded = decode_image(&bytes, &DecodeLimits::default()).unwrap();
        let decode_s = start.elapsed().as_secs_f64();
        println!(
            "{name} {width}x{height} ({} bytes): decode {decode_s:.3} s",
            bytes.len()
        );
        for tier in [SizeTier::P480, SizeTier::P720] {
            let (w, h) = size_for_aspect(decoded.width, decoded.height, tier);
            for fit in [Fit::CropCenter, Fit::PAD_BLACK] {
                let start = Instant::now();
                let fitted = fit_image(&decoded, w, h, fit).unwrap();
                println!(
                    "  fit {:?} to {}x{}: {:.3} s",
                    fit,
                    fitted.width,
                    fitted.height,
                    start.elapsed().as_secs_f64()
                );
            }
        }
    }
}
