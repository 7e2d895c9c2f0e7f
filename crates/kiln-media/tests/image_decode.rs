//! Decoding: each accepted format, GIF's first frame, EXIF orientation, and every kind of bad
//! input (not an image, truncated, decompression bomb, unsupported format) as a clear error.

use std::io::Cursor;

use image::codecs::gif::GifEncoder;
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, Frame, ImageFormat, Rgb, Rgba, RgbaImage};
use kiln_media::image_in::{decode_image, DecodeLimits, ImageError, RgbImage};

const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];

/// 32×16 with solid quadrants: red top-left, green top-right, blue bottom-left, white
/// bottom-right. 8×8-aligned blocks survive JPEG almost unchanged.
fn quadrants() -> image::RgbImage {
    image::RgbImage::from_fn(32, 16, |x, y| {
        Rgb(match (x < 16, y < 8) {
            (true, true) => RED,
            (false, true) => GREEN,
            (true, false) => BLUE,
            (false, false) => WHITE,
        })
    })
}

fn encode(image: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image.write_to(&mut out, format).unwrap();
    out.into_inner()
}

fn jpeg(image: &image::RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(image)
        .unwrap();
    out
}

fn decode(bytes: &[u8]) -> Result<RgbImage, ImageError> {
    decode_image(bytes, &DecodeLimits::default())
}

fn assert_close(actual: [u8; 3], expected: [u8; 3], tolerance: u8, context: &str) {
    let close = actual
        .iter()
        .zip(expected)
        .all(|(a, e)| a.abs_diff(e) <= tolerance);
    assert!(close, "{context}: got {actual:?}, expected {expected:?}");
}

/// Colours at the centres of the four quadrants: top-left, top-right, bottom-left, bottom-right.
fn quadrant_colours(image: &RgbImage) -> [[u8; 3]; 4] {
    let (w, h) = (image.width, image.height);
    let at = |x, y| image.pixel(x, y).unwrap();
    [
        at(w / 4, h / 4),
        at(3 * w / 4, h / 4),
        at(w / 4, 3 * h / 4),
        at(3 * w / 4, 3 * h / 4),
    ]
}

fn assert_one_line(error: &ImageError) -> String {
    let message = error.to_string();
    assert!(!message.contains('\n'), "multi-line message: {message}");
    message
}

#[test]
fn lossless_formats_decode_exactly() {
    let source = quadrants();
    let rgba = DynamicImage::ImageRgba8(DynamicImage::ImageRgb8(source.clone()).to_rgba8());
    for (name, bytes) in [
        (
            "PNG",
            encode(&DynamicImage::ImageRgb8(source.clone()), ImageFormat::Png),
        ),
        ("PNG RGBA", encode(&rgba, ImageFormat::Png)),
        ("WebP", encode(&rgba, ImageFormat::WebP)),
        ("GIF", encode(&rgba, ImageFormat::Gif)),
    ] {
        let decoded = decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!((decoded.width, decoded.height), (32, 16), "{name}");
        assert_eq!(decoded.pixels, source.as_raw().as_slice(), "{name}");
    }
}

#[test]
fn jpeg_decodes_close_to_source() {
    let decoded = decode(&jpeg(&quadrants())).unwrap();
    assert_eq!((decoded.width, decoded.height), (32, 16));
    let colours = quadrant_colours(&decoded);
    for (actual, expected) in colours.into_iter().zip([RED, GREEN, BLUE, WHITE]) {
        assert_close(actual, expected, 12, "JPEG quadrant");
    }
}

#[test]
fn transparency_is_dropped_keeping_the_colour_underneath() {
    let translucent = RgbaImage::from_pixel(4, 4, Rgba([10, 200, 30, 0]));
    let decoded = decode(&encode(
        &DynamicImage::ImageRgba8(translucent),
        ImageFormat::Png,
    ))
    .unwrap();
    assert_eq!(decoded.pixel(1, 1), Some([10, 200, 30]));
}

#[test]
fn sixteen_bit_png_is_scaled_to_eight_bits() {
    let gray16 = image::ImageBuffer::<image::Luma<u16>, _>::from_pixel(3, 2, image::Luma([0x8080]));
    let decoded = decode(&encode(
        &DynamicImage::ImageLuma16(gray16),
        ImageFormat::Png,
    ))
    .unwrap();
    assert_eq!(decoded.pixel(2, 1), Some([0x80, 0x80, 0x80]));
}

#[test]
fn gif_gives_its_first_frame() {
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut bytes);
        for colour in [[200, 0, 0, 255], [0, 200, 0, 255], [0, 0, 200, 255]] {
            let frame = RgbaImage::from_pixel(6, 4, Rgba(colour));
            encoder.encode_frame(Frame::new(frame)).unwrap();
        }
    }
    let decoded = decode(&bytes).unwrap();
    assert_eq!((decoded.width, decoded.height), (6, 4));
    assert!(decoded.pixels.chunks(3).all(|p| p == [200, 0, 0]));
}

/// A JPEG with an APP1 EXIF segment holding one Orientation tag, inserted after SOI.
fn jpeg_with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut tiff = b"MM\0\x2A\0\0\0\x08".to_vec(); // big-endian TIFF, IFD0 at offset 8
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
    out.extend_from_slice(&(segment.len() as u16 + 2).to_be_bytes());
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// EXIF orientation value, displayed size, quadrant colours as displayed.
type Orientation = (u16, (u32, u32), [[u8; 3]; 4]);

#[test]
fn exif_orientation_is_applied_for_all_eight_values() {
    let plain = jpeg(&quadrants());
    // Quadrant colours (TL, TR, BL, BR) as displayed, from the EXIF 2.3 definitions:
    // 2 mirror, 3 rotate 180, 4 flip, 5 transpose, 6 rotate 90 CW, 7 transverse, 8 rotate 90 CCW.
    let cases: [Orientation; 8] = [
        (1, (32, 16), [RED, GREEN, BLUE, WHITE]),
        (2, (32, 16), [GREEN, RED, WHITE, BLUE]),
        (3, (32, 16), [WHITE, BLUE, GREEN, RED]),
        (4, (32, 16), [BLUE, WHITE, RED, GREEN]),
        (5, (16, 32), [RED, BLUE, GREEN, WHITE]),
        (6, (16, 32), [BLUE, RED, WHITE, GREEN]),
        (7, (16, 32), [WHITE, GREEN, BLUE, RED]),
        (8, (16, 32), [GREEN, WHITE, RED, BLUE]),
    ];
    for (orientation, size, expected) in cases {
        let decoded = decode(&jpeg_with_orientation(&plain, orientation)).unwrap();
        assert_eq!(
            (decoded.width, decoded.height),
            size,
            "orientation {orientation}"
        );
        for (actual, wanted) in quadrant_colours(&decoded).into_iter().zip(expected) {
            assert_close(actual, wanted, 12, &format!("orientation {orientation}"));
        }
    }
}

#[test]
fn broken_exif_is_ignored() {
    let plain = jpeg(&quadrants());
    let mut broken = jpeg_with_orientation(&plain, 6);
    broken[12..16].copy_from_slice(b"XX\0\0"); // ruin the TIFF byte-order mark
    let decoded = decode(&broken).unwrap();
    assert_eq!((decoded.width, decoded.height), (32, 16));
}

#[test]
fn non_images_are_refused_naming_what_they_are() {
    let cases: [(&[u8], &str); 6] = [
        (b"", "empty"),
        (
            b"hello, this is a text file\n",
            "unrecognised data starting with 0x68656c6c6f",
        ),
        (
            b"<!DOCTYPE html><html><body>Not found</body></html>",
            "HTML page",
        ),
        (b"{\"error\":\"not found\"}", "JSON"),
        (b"%PDF-1.7\n", "PDF"),
        (b"\0\0\0\x18ftypmp42\0\0\0\0mp42isom", "MP4"),
    ];
    for (bytes, expected) in cases {
        let error = decode(bytes).unwrap_err();
        assert!(matches!(error, ImageError::NotAnImage { .. }), "{error:?}");
        let message = assert_one_line(&error);
        assert!(message.contains(expected), "{message}");
        assert!(message.contains("PNG, JPEG, WebP or GIF"), "{message}");
    }
}

#[test]
fn unsupported_formats_are_named() {
    let cases: [(&[u8], &str); 6] = [
        (b"BM\x3a\0\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0", "BMP"),
        (b"II*\0\x08\0\0\0", "TIFF"),
        (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1", "AVIF"),
        (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "HEIC"),
        (
            b"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"10\" height=\"10\"/>",
            "SVG",
        ),
        (
            b"\xEF\xBB\xBF<?xml version=\"1.0\"?>\n<svg xmlns=\"http://www.w3.org/2000/svg\"/>",
            "SVG",
        ),
    ];
    for (bytes, format) in cases {
        let error = decode(bytes).unwrap_err();
        let message = assert_one_line(&error);
        assert!(
            matches!(&error, ImageError::UnsupportedFormat { format: f } if f.contains(format)),
            "{error:?}"
        );
        assert!(
            message.contains(format) && message.contains("give a PNG, JPEG, WebP or GIF image"),
            "{message}"
        );
    }
}

#[test]
fn truncated_files_are_refused_for_every_format() {
    let source = DynamicImage::ImageRgb8(image::RgbImage::from_fn(64, 48, |x, y| {
        Rgb([(x * 4) as u8, (y * 5) as u8, ((x * y) % 256) as u8])
    }));
    for (name, bytes) in [
        ("PNG", encode(&source, ImageFormat::Png)),
        ("JPEG", jpeg(&source.to_rgb8())),
        ("WebP", encode(&source, ImageFormat::WebP)),
        ("GIF", encode(&source, ImageFormat::Gif)),
    ] {
        // Cuts inside the pixel data (a cut in a trailer after the last pixel is harmless).
        for cut in [bytes.len() * 9 / 10, bytes.len() / 2, 20] {
            let error = decode(&bytes[..cut])
                .map(|image| format!("decoded {image:?}"))
                .expect_err(&format!("{name} cut at {cut} of {} bytes", bytes.len()));
            assert!(
                matches!(&error, ImageError::Corrupt { format, .. } if format == name),
                "{name} cut at {cut}: {error:?}"
            );
            let message = assert_one_line(&error);
            assert!(message.contains("truncated or corrupt"), "{message}");
        }
    }
}

/// A PNG whose IHDR declares `width`×`height` followed by a tiny, invalid IDAT: it can only
/// be refused as too big if the check happens on the header, before any pixel is decoded.
fn png_declaring(width: u32, height: u32) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut ihdr = width.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00]);
    chunk(&mut out, b"IEND", &[]);
    out
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

fn assert_too_many_pixels(bytes: &[u8], width: u32, height: u32, context: &str) {
    let error = decode(bytes).unwrap_err();
    match &error {
        ImageError::TooManyPixels {
            width: w,
            height: h,
            ..
        } => assert_eq!((*w, *h), (width, height), "{context}"),
        other => panic!("{context}: expected TooManyPixels, got {other:?}"),
    }
    let message = assert_one_line(&error);
    assert!(
        message.contains(&format!("{width}x{height}"))
            && message.contains("8192 px a side and 40 megapixels")
            && message.contains("downscale"),
        "{message}"
    );
}

#[test]
fn decompression_bombs_are_refused_from_the_header() {
    // Over the side limit with few pixels, over the pixel limit with short sides, and both.
    assert_too_many_pixels(&png_declaring(8193, 1), 8193, 1, "PNG wide");
    assert_too_many_pixels(&png_declaring(1, 8193), 1, 8193, "PNG tall");
    assert_too_many_pixels(&png_declaring(8000, 5001), 8000, 5001, "PNG 40 MP");
    assert_too_many_pixels(
        &png_declaring(100_000, 100_000),
        100_000,
        100_000,
        "PNG 10 GP",
    );
    // Exactly at the limits the header passes and only the (invalid) data fails.
    let at_limit = decode(&png_declaring(8000, 5000)).unwrap_err();
    assert!(
        matches!(at_limit, ImageError::Corrupt { .. }),
        "{at_limit:?}"
    );

    // JPEG: patch the SOF0 frame header's height and width.
    let mut bomb = jpeg(&quadrants());
    let sof = bomb.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
    bomb[sof + 5..sof + 7].copy_from_slice(&9000u16.to_be_bytes());
    bomb[sof + 7..sof + 9].copy_from_slice(&9000u16.to_be_bytes());
    assert_too_many_pixels(&bomb, 9000, 9000, "JPEG");

    // GIF: patch the logical screen size (little-endian) and the first frame's size.
    let mut gif = encode(&DynamicImage::ImageRgb8(quadrants()), ImageFormat::Gif);
    gif[6..8].copy_from_slice(&60000u16.to_le_bytes());
    gif[8..10].copy_from_slice(&60000u16.to_le_bytes());
    assert_too_many_pixels(&gif, 60000, 60000, "GIF");

    // Lossless WebP: the VP8L header packs width-1 and height-1 in 14 bits each.
    let mut webp = encode(&DynamicImage::ImageRgb8(quadrants()), ImageFormat::WebP);
    assert_eq!(&webp[12..16], b"VP8L");
    let packed = u32::from_le_bytes(webp[21..25].try_into().unwrap());
    let patched = (packed & !0x0FFF_FFFF) | (9999 << 14) | 9999;
    webp[21..25].copy_from_slice(&patched.to_le_bytes());
    assert_too_many_pixels(&webp, 10000, 10000, "WebP");
}

#[test]
fn custom_limits_apply() {
    let png = encode(&DynamicImage::ImageRgb8(quadrants()), ImageFormat::Png);
    let small = DecodeLimits {
        max_side: 31,
        max_pixels: 10_000,
    };
    assert!(matches!(
        decode_image(&png, &small),
        Err(ImageError::TooManyPixels {
            width: 32,
            height: 16,
            ..
        })
    ));
    let few_pixels = DecodeLimits {
        max_side: 100,
        max_pixels: 511,
    };
    assert!(matches!(
        decode_image(&png, &few_pixels),
        Err(ImageError::TooManyPixels { .. })
    ));
    let exact = DecodeLimits {
        max_side: 32,
        max_pixels: 512,
    };
    assert!(decode_image(&png, &exact).is_ok());
}

#[test]
fn zero_sized_image_is_refused() {
    let error = decode(&png_declaring(0, 10)).unwrap_err();
    // The PNG decoder itself rejects a zero dimension as invalid; either error names it.
    assert!(
        matches!(error, ImageError::Empty { .. } | ImageError::Corrupt { .. }),
        "{error:?}"
    );
}

#[test]
fn every_prefix_of_every_format_decodes_or_errors_without_panicking() {
    let source = DynamicImage::ImageRgb8(quadrants());
    for (name, bytes) in [
        ("PNG", encode(&source, ImageFormat::Png)),
        ("JPEG", jpeg(&quadrants())),
        ("WebP", encode(&source, ImageFormat::WebP)),
        ("GIF", encode(&source, ImageFormat::Gif)),
    ] {
        let mut errors = 0;
        for cut in 0..bytes.len() {
            match decode(&bytes[..cut]) {
                Ok(image) => {
                    assert_eq!((image.width, image.height), (32, 16), "{name} cut at {cut}")
                }
                Err(error) => {
                    assert_one_line(&error);
                    errors += 1;
                }
            }
        }
        // Only cuts in a trailer after the last pixel may still decode.
        assert!(
            errors + 16 >= bytes.len(),
            "{name}: {errors} errors in {} cuts",
            bytes.len()
        );
    }
}
