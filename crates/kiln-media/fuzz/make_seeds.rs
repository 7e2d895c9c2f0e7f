//! Writes a small seed corpus for `decode_image`: each accepted format in several colour
//! types, a JPEG with an EXIF orientation, an animated GIF, and a few unsupported formats'
//! headers, so the fuzzer starts inside every decoder instead of guessing magic bytes.

use std::io::Cursor;
use std::path::PathBuf;

use image::codecs::gif::{GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, Frame, ImageFormat, Rgba, RgbaImage};

fn gradient(width: u32, height: u32) -> RgbaImage {
    RgbaImage::from_fn(width, height, |x, y| {
        Rgba([
            (x * 40) as u8,
            (y * 40) as u8,
            ((x + y) * 20) as u8,
            (255 - x * 30) as u8,
        ])
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, format)
        .expect("encoding a small image");
    out.into_inner()
}

/// Inserts an EXIF APP1 segment with one Orientation tag right after the JPEG's SOI.
fn with_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\0\x2A\0\0\0\x08"); // big-endian TIFF, IFD0 at offset 8
    tiff.extend_from_slice(&1u16.to_be_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
    tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
    tiff.extend_from_slice(&1u32.to_be_bytes()); // count
    tiff.extend_from_slice(&orientation.to_be_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding
    tiff.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    let mut segment = b"Exif\0\0".to_vec();
    segment.extend_from_slice(&tiff);
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((segment.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or("corpus/decode_image".into()),
    );
    std::fs::create_dir_all(&dir).expect("creating the corpus folder");
    let rgba = DynamicImage::ImageRgba8(gradient(7, 5));
    let mut seeds: Vec<(String, Vec<u8>)> = vec![
        ("rgba.png".into(), encode(&rgba, ImageFormat::Png)),
        (
            "rgb.png".into(),
            encode(&DynamicImage::ImageRgb8(rgba.to_rgb8()), ImageFormat::Png),
        ),
        (
            "gray16.png".into(),
            encode(
                &DynamicImage::ImageLuma16(rgba.to_luma16()),
                ImageFormat::Png,
            ),
        ),
        (
            "gray.png".into(),
            encode(&DynamicImage::ImageLuma8(rgba.to_luma8()), ImageFormat::Png),
        ),
        ("lossless.webp".into(), encode(&rgba, ImageFormat::WebP)),
        ("still.gif".into(), encode(&rgba, ImageFormat::Gif)),
    ];
    let mut jpeg = Vec::new();
    JpegEncoder::new_with_quality(&mut jpeg, 80)
        .encode_image(&rgba.to_rgb8())
        .expect("encoding a JPEG");
    seeds.push(("exif6.jpg".into(), with_exif_orientation(&jpeg, 6)));
    seeds.push((
        "gray.jpg".into(),
        encode(
            &DynamicImage::ImageLuma8(rgba.to_luma8()),
            ImageFormat::Jpeg,
        ),
    ));
    seeds.push(("plain.jpg".into(), jpeg));
    let mut gif = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut gif);
        encoder.set_repeat(Repeat::Infinite).expect("gif repeat");
        for shift in 0..3u32 {
            let frame = RgbaImage::from_fn(6, 4, |x, y| {
                Rgba([(x * 40 + shift * 50) as u8, (y * 60) as u8, 0, 255])
            });
            encoder.encode_frame(Frame::new(frame)).expect("gif frame");
        }
    }
    seeds.push(("animated.gif".into(), gif));
    seeds.push((
        "bmp_header.bin".into(),
        b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0".to_vec(),
    ));
    seeds.push((
        "svg.bin".into(),
        b"<?xml version=\"1.0\"?><svg xmlns=\"http://www.w3.org/2000/svg\"/>".to_vec(),
    ));
    for (name, bytes) in &seeds {
        std::fs::write(dir.join(name), bytes).expect("writing a seed");
    }
    println!("wrote {} seeds to {}", seeds.len(), dir.display());
}
