//! Bytes → oriented RGB8, refusing unsupported formats and decompression bombs before the
//! pixel buffer is allocated.

use std::io::Cursor;

use image::metadata::Orientation;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};

use super::{ImageError, RgbImage};

/// Pixel limits applied after the header is read and before any pixel is decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Longest allowed side, in pixels (after orientation either side may be the width).
    pub max_side: u32,
    /// Most pixels allowed in the whole image.
    pub max_pixels: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            max_side: 8192,
            max_pixels: 40_000_000,
        }
    }
}

/// What the first bytes of a file say it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SniffedFormat {
    /// A format this module decodes.
    Supported(ImageFormat),
    /// A real image format that kiln does not accept; the name is for messages.
    Unsupported(&'static str),
    /// Something that is not an image at all; the description is for messages.
    NotAnImage(&'static str),
    /// Nothing recognisable.
    Unknown,
}

/// Identifies the format from magic bytes, not from a file name or a declared media type
/// (both lie: URLs often have no extension, data URIs say `application/octet-stream`).
pub fn sniff_format(bytes: &[u8]) -> SniffedFormat {
    use SniffedFormat::*;
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if bytes.is_empty() {
        return NotAnImage("it is empty");
    }
    if starts(b"\x89PNG\r\n\x1a\n") {
        return Supported(ImageFormat::Png);
    }
    if starts(b"\xFF\xD8\xFF") {
        return Supported(ImageFormat::Jpeg);
    }
    if starts(b"GIF87a") || starts(b"GIF89a") {
        return Supported(ImageFormat::Gif);
    }
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        return Supported(ImageFormat::WebP);
    }
    if bytes.len() >= 12 && &bytes[4..8] == b"ftyp" {
        return match &bytes[8..12] {
            b"avif" | b"avis" => Unsupported("AVIF"),
            b"heic" | b"heix" | b"heim" | b"heis" | b"hevc" | b"hevx" | b"mif1" | b"msf1" => {
                Unsupported("HEIC/HEIF")
            }
            b"crx " => Unsupported("Canon RAW"),
            _ => NotAnImage("an MP4/QuickTime video"),
        };
    }
    let unsupported: [(&[u8], &'static str); 13] = [
        (b"BM", "BMP"),
        (b"II*\0", "TIFF"),
        (b"MM\0*", "TIFF"),
        (b"\xFF\x0A", "JPEG XL"),
        (b"\0\0\0\x0CJXL \r\n\x87\n", "JPEG XL"),
        (b"\0\0\0\x0CjP  \r\n\x87\n", "JPEG 2000"),
        (b"\0\0\x01\0", "ICO"),
        (b"8BPS", "Photoshop PSD"),
        (b"qoif", "QOI"),
        (b"\x76\x2F\x31\x01", "OpenEXR"),
        (b"DDS ", "DDS"),
        (b"farbfeld", "Farbfeld"),
        (b"#?RADIANCE", "Radiance HDR"),
    ];
    if let Some((_, name)) = unsupported.iter().find(|(magic, _)| starts(magic)) {
        return Unsupported(name);
    }
    if starts(b"%PDF") {
        return NotAnImage("a PDF document");
    }
    if starts(b"\x1A\x45\xDF\xA3") {
        return NotAnImage("a Matroska/WebM video");
    }
    let text_start = trimmed_text_start(bytes);
    if text_start.starts_with(b"<svg") || contains_svg_tag(&text_start) {
        return Unsupported("SVG");
    }
    if text_start.starts_with(b"<!doctype html") || text_start.starts_with(b"<html") {
        return NotAnImage("an HTML page");
    }
    if text_start.starts_with(b"{") || text_start.starts_with(b"[") {
        return NotAnImage("JSON text");
    }
    if text_start.starts_with(b"<") {
        return NotAnImage("XML or HTML text");
    }
    Unknown
}

/// The first bytes after a UTF-8 BOM and whitespace, lower-cased, for text sniffing.
fn trimmed_text_start(bytes: &[u8]) -> Vec<u8> {
    let without_bom = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let start = without_bom
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(without_bom.len());
    without_bom[start..]
        .iter()
        .take(1024)
        .map(|b| b.to_ascii_lowercase())
        .collect()
}

/// SVG files often start with an XML declaration or doctype before the `<svg` tag.
fn contains_svg_tag(text_start: &[u8]) -> bool {
    text_start.starts_with(b"<?xml") && text_start.windows(4).any(|w| w == b"<svg")
        || text_start.starts_with(b"<!doctype svg")
}

fn format_name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Gif => "GIF",
        ImageFormat::WebP => "WebP",
        _ => "image",
    }
}

/// Decodes an encoded PNG, JPEG, WebP or GIF (its first frame) into RGB8 with the EXIF
/// orientation applied. The header's dimensions are checked against `limits` before the
/// pixel buffer is allocated, so a small file declaring a huge image costs nothing.
pub fn decode_image(bytes: &[u8], limits: &DecodeLimits) -> Result<RgbImage, ImageError> {
    let format = match sniff_format(bytes) {
        SniffedFormat::Supported(format) => format,
        SniffedFormat::Unsupported(name) => {
            return Err(ImageError::UnsupportedFormat {
                format: name.to_string(),
            })
        }
        SniffedFormat::NotAnImage(what) => {
            return Err(ImageError::NotAnImage {
                what: what.to_string(),
            })
        }
        SniffedFormat::Unknown => {
            return Err(ImageError::NotAnImage {
                what: format!("unrecognised data starting with {}", hex_prefix(bytes)),
            })
        }
    };
    let name = format_name(format);
    let to_error = |e: image::ImageError| map_decode_error(name, e);
    // The JPEG decoder fills a cut-off scan with grey instead of failing; a picture with a
    // missing bottom is worse than an error, so the end marker is required.
    if format == ImageFormat::Jpeg && !jpeg_has_end_after_scan(bytes) {
        return Err(ImageError::Corrupt {
            format: name.to_string(),
            detail: "the data ends before the end-of-image marker".to_string(),
        });
    }

    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    // Backstop for decoders' own allocations (GIF frames may exceed the logical screen):
    // RGBA16 of the largest allowed image plus headroom.
    let mut backstop = image::Limits::default();
    backstop.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(64 << 20));
    reader.limits(backstop);
    let mut decoder = reader.into_decoder().map_err(to_error)?;

    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Empty { width, height });
    }
    if width > limits.max_side
        || height > limits.max_side
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(ImageError::TooManyPixels {
            width,
            height,
            max_side: limits.max_side,
            max_pixels: limits.max_pixels,
        });
    }
    // A broken EXIF block should not reject an otherwise good picture.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder).map_err(to_error)?;
    image.apply_orientation(orientation);
    let rgb = match image {
        DynamicImage::ImageRgb8(buffer) => buffer,
        other => other.to_rgb8(),
    };
    Ok(RgbImage::from_buffer(rgb))
}

/// Walks the JPEG's marker segments to the first start-of-scan and looks for the
/// end-of-image marker (FF D9) after it. Inside entropy-coded data every FF is followed by
/// 00 or a restart marker, so FF D9 there is the real end; segments before the scan
/// (an EXIF thumbnail has its own FF D9) are skipped by their lengths.
fn jpeg_has_end_after_scan(bytes: &[u8]) -> bool {
    let mut pos = 2; // after SOI
    while pos + 4 <= bytes.len() {
        if bytes[pos] != 0xFF {
            return false;
        }
        let marker = bytes[pos + 1];
        match marker {
            // Fill bytes before a marker.
            0xFF => pos += 1,
            // Standalone markers carry no length.
            0x01 | 0xD0..=0xD7 => pos += 2,
            0xD9 => return false, // end before any scan
            _ => {
                let length = usize::from(u16::from_be_bytes([bytes[pos + 2], bytes[pos + 3]]));
                let segment_end = pos + 2 + length;
                if marker == 0xDA {
                    return bytes
                        .get(segment_end..)
                        .is_some_and(|scan| scan.windows(2).any(|w| w == [0xFF, 0xD9]));
                }
                pos = segment_end;
            }
        }
    }
    false
}

fn map_decode_error(format: &str, error: image::ImageError) -> ImageError {
    match error {
        image::ImageError::Unsupported(e) => ImageError::UnsupportedVariant {
            format: format.to_string(),
            detail: e.to_string(),
        },
        // Only the allocation backstop can trip here: dimensions were checked already.
        image::ImageError::Limits(e) => ImageError::Corrupt {
            format: format.to_string(),
            detail: format!("decoding would exceed the memory limit: {e}"),
        },
        image::ImageError::IoError(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
            ImageError::Corrupt {
                format: format.to_string(),
                detail: "the data ends early".to_string(),
            }
        }
        other => ImageError::Corrupt {
            format: format.to_string(),
            detail: other.to_string(),
        },
    }
}

fn hex_prefix(bytes: &[u8]) -> String {
    let shown: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("0x{}", shown.join(""))
}
