//! Conditioning images in: PNG, JPEG, WebP and the first frame of a GIF, read from a path,
//! an http(s) URL, a `data:` URI or bare base64 (the forms the hosted APIs accept), decoded
//! with EXIF orientation applied, and fitted to the output size.
//!
//! Every failure is an [`ImageError`] whose one-line message names the cause and the fix;
//! nothing here panics on user input (the decoder is fuzzed, see `fuzz/`).
//!
//! Transparency is dropped, not composited (the colour under a transparent pixel is kept),
//! which is what the reference Python pipelines do with `Image.convert("RGB")`.

mod decode;
mod fetch;
mod fit;

use std::fmt;
use std::io::Read;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use decode::{decode_image, sniff_format, DecodeLimits, SniffedFormat};
pub use fit::{fit_image, size_for_aspect, AspectRatio, Fit, SizeTier};

/// The formats this module decodes, as named in error messages.
pub const ACCEPTED_FORMATS: &str = "PNG, JPEG, WebP or GIF";

/// A decoded image: 8-bit RGB, rows top to bottom, `width * height * 3` bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub pixels: Vec<u8>,
}

impl fmt::Debug for RgbImage {
    // The pixel dump is megabytes; tests only need the size in failure messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RgbImage({}x{})", self.width, self.height)
    }
}

impl RgbImage {
    /// The pixel at (x, y); `None` outside the image.
    pub fn pixel(&self, x: u32, y: u32) -> Option<[u8; 3]> {
        if x >= self.width || y >= self.height {
            return None;
        }
        let i = (y as usize * self.width as usize + x as usize) * 3;
        match self.pixels.get(i..i + 3)? {
            [r, g, b] => Some([*r, *g, *b]),
            _ => None,
        }
    }

    pub(crate) fn from_buffer(buffer: image::RgbImage) -> Self {
        let (width, height) = buffer.dimensions();
        RgbImage {
            width,
            height,
            pixels: buffer.into_raw(),
        }
    }

    pub(crate) fn to_buffer(&self) -> Result<image::RgbImage, ImageError> {
        image::RgbImage::from_raw(self.width, self.height, self.pixels.clone()).ok_or(
            ImageError::BadPixelBuffer {
                width: self.width,
                height: self.height,
                len: self.pixels.len(),
            },
        )
    }
}

/// Where an image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    Path(PathBuf),
    /// An `http://` or `https://` URL.
    Url(String),
    /// `data:[<media type>];base64,<data>`.
    DataUri(String),
    /// Base64 of the file's bytes, without a `data:` prefix (Runware accepts this form).
    Base64(String),
}

impl ImageSource {
    /// Decides the form of a user- or API-given image reference:
    /// `data:` → data URI; `http(s)://` (or any other `scheme://`, refused when loaded)
    /// → URL; an existing file → path; a string that looks
    /// like base64 of a PNG/JPEG/GIF/WebP/BMP/TIFF (by its first characters) or is at least
    /// 64 characters of the base64 alphabet → base64; anything else → path (so a missing
    /// file reports "cannot read image file").
    pub fn parse(text: &str) -> ImageSource {
        let text = text.trim();
        let lower_prefix: String = text
            .chars()
            .take(8)
            .collect::<String>()
            .to_ascii_lowercase();
        if lower_prefix.starts_with("data:") {
            return ImageSource::DataUri(text.to_string());
        }
        if lower_prefix.starts_with("http://") || lower_prefix.starts_with("https://") {
            return ImageSource::Url(text.to_string());
        }
        // Other schemes (ftp://, s3://) are URLs too, so the error says "not http(s)"
        // rather than "no such file".
        if let Some((scheme, _)) = text.split_once("://") {
            let is_scheme = scheme.len() >= 2
                && scheme.starts_with(|c: char| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
            if is_scheme {
                return ImageSource::Url(text.to_string());
            }
        }
        if Path::new(text).exists() {
            return ImageSource::Path(PathBuf::from(text));
        }
        if looks_like_base64_image(text) {
            return ImageSource::Base64(text.to_string());
        }
        ImageSource::Path(PathBuf::from(text))
    }

    /// A short description for messages; never the whole base64 payload.
    pub fn describe(&self) -> String {
        match self {
            ImageSource::Path(p) => format!("file {}", p.display()),
            ImageSource::Url(u) => format!("URL {u}"),
            ImageSource::DataUri(d) => format!("data URI ({} characters)", d.len()),
            ImageSource::Base64(b) => format!("base64 data ({} characters)", b.len()),
        }
    }
}

/// Base64 of the magic bytes of image formats: PNG, JPEG, GIF, RIFF (WebP), BMP, TIFF.
const BASE64_IMAGE_PREFIXES: [&str; 7] = [
    "iVBORw0KGgo",
    "/9j/",
    "R0lGOD",
    "UklGR",
    "Qk",
    "SUkq",
    "TU0AK",
];

fn looks_like_base64_image(text: &str) -> bool {
    let is_base64_char = |c: char| {
        c.is_ascii_alphanumeric()
            || matches!(c, '+' | '/' | '-' | '_' | '=')
            || c.is_ascii_whitespace()
    };
    if !text.chars().all(is_base64_char) {
        return false;
    }
    BASE64_IMAGE_PREFIXES
        .iter()
        .any(|p| text.starts_with(p) && text.len() >= 16)
        || text.len() >= 64
}

/// Decides, for each address a URL's host resolved to, whether kiln may connect to it.
/// Called on every connection, redirects included, with the host and the resolved
/// addresses, so a server can refuse private ranges without DNS-rebinding holes.
/// Return `Err(reason)` to refuse.
pub type AddressPolicy = Arc<dyn Fn(&str, &[IpAddr]) -> Result<(), String> + Send + Sync>;

/// Limits for reading an image from any source and decoding it.
#[derive(Clone)]
pub struct FetchLimits {
    /// Time to open the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response headers, and for any single read of the body.
    pub read_timeout: Duration,
    /// Cap on the whole download, so a slow-drip server cannot hold a request forever.
    pub total_timeout: Duration,
    /// Cap on the encoded image bytes from any source (file, URL, data URI, base64).
    pub max_bytes: u64,
    /// Redirects followed before giving up.
    pub max_redirects: u32,
    /// `None` allows every address (the CLI reads what its user asks for).
    pub address_policy: Option<AddressPolicy>,
    pub decode: DecodeLimits,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(300),
            max_bytes: 50 * 1000 * 1000,
            max_redirects: 5,
            address_policy: None,
            decode: DecodeLimits::default(),
        }
    }
}

impl fmt::Debug for FetchLimits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchLimits")
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("total_timeout", &self.total_timeout)
            .field("max_bytes", &self.max_bytes)
            .field("max_redirects", &self.max_redirects)
            .field(
                "address_policy",
                &self.address_policy.as_ref().map(|_| "custom"),
            )
            .field("decode", &self.decode)
            .finish()
    }
}

/// Why an image could not be read, decoded or fitted. Each message names the cause and a fix.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot read image file {path}: {source}; check the path and its permissions")]
    ReadFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin} is over the {limit}-byte cap; give an image under {} MB", limit / 1_000_000)]
    TooLarge { origin: String, limit: u64 },
    #[error("invalid image URL {url}: {reason}; give an absolute http:// or https:// URL")]
    BadUrl { url: String, reason: String },
    #[error("cannot reach image URL {url}: {reason}; check the address and that the host is up")]
    Unreachable { url: String, reason: String },
    #[error("image URL {url} timed out ({phase}); try again, or host the image somewhere faster")]
    Timeout { url: String, phase: String },
    #[error("image URL {url} answered HTTP {status}{}; check that the URL serves the image itself",
        if reason.is_empty() { String::new() } else { format!(" {reason}") })]
    HttpStatus {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("image URL {url} redirected more than {max} times; give the image's final address")]
    TooManyRedirects { url: String, max: u32 },
    #[error("image URL {url} is not allowed: {reason}; use a publicly reachable address")]
    AddressRefused { url: String, reason: String },
    #[error("invalid data URI: {reason}; use data:image/png;base64,<data> (or jpeg, webp, gif)")]
    BadDataUri { reason: String },
    #[error("invalid base64 image data: {reason}; give the file's bytes in standard base64")]
    BadBase64 { reason: String },
    #[error("{format} images are not supported; give a {ACCEPTED_FORMATS} image")]
    UnsupportedFormat { format: String },
    #[error("the input is not an image ({what}); give a {ACCEPTED_FORMATS} image")]
    NotAnImage { what: String },
    #[error("the {format} image uses a feature kiln cannot decode ({detail}); re-save it as an 8-bit PNG or baseline JPEG")]
    UnsupportedVariant { format: String, detail: String },
    #[error("the {format} image is truncated or corrupt ({detail}); re-export or re-download it")]
    Corrupt { format: String, detail: String },
    #[error("the image is {width}x{height}, over the limit of {max_side} px a side and {} megapixels; downscale it first",
        max_pixels / 1_000_000)]
    TooManyPixels {
        width: u32,
        height: u32,
        max_side: u32,
        max_pixels: u64,
    },
    #[error("the image has no pixels ({width}x{height}); give a non-empty image")]
    Empty { width: u32, height: u32 },
    #[error("cannot fit an image to {width}x{height}; the target size must be at least 1x1")]
    BadTargetSize { width: u32, height: u32 },
    #[error(
        "RGB buffer of {len} bytes does not match {width}x{height}x3; this is a bug in the caller"
    )]
    BadPixelBuffer { width: u32, height: u32, len: usize },
}

/// Reads, decodes and orients an image from any source, within `limits`.
pub fn load_image(source: &ImageSource, limits: &FetchLimits) -> Result<RgbImage, ImageError> {
    let bytes = read_source_bytes(source, limits)?;
    decode_image(&bytes, &limits.decode)
}

/// The encoded bytes of an image, from any source, capped at `limits.max_bytes`.
pub fn read_source_bytes(
    source: &ImageSource,
    limits: &FetchLimits,
) -> Result<Vec<u8>, ImageError> {
    match source {
        ImageSource::Path(path) => read_file_capped(path, limits.max_bytes),
        ImageSource::Url(url) => fetch::fetch_url(url, limits),
        ImageSource::DataUri(uri) => decode_data_uri(uri, limits.max_bytes),
        ImageSource::Base64(text) => {
            decode_base64(text, limits.max_bytes).map_err(|failure| match failure {
                Base64Failure::Syntax(reason) => ImageError::BadBase64 { reason },
                Base64Failure::TooLarge => ImageError::TooLarge {
                    origin: "the base64 image".to_string(),
                    limit: limits.max_bytes,
                },
            })
        }
    }
}

fn read_file_capped(path: &Path, max_bytes: u64) -> Result<Vec<u8>, ImageError> {
    let read_error = |source| ImageError::ReadFile {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    let mut bytes = Vec::new();
    // Reading one byte past the cap tells "exactly at the cap" from "over it" without
    // trusting the metadata (a FIFO or /dev/zero reports size 0).
    file.take(max_bytes + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > max_bytes {
        return Err(ImageError::TooLarge {
            origin: format!("image file {}", path.display()),
            limit: max_bytes,
        });
    }
    Ok(bytes)
}

fn decode_data_uri(uri: &str, max_bytes: u64) -> Result<Vec<u8>, ImageError> {
    let bad = |reason: &str| ImageError::BadDataUri {
        reason: reason.to_string(),
    };
    let rest = uri
        .get(..5)
        .filter(|prefix| prefix.eq_ignore_ascii_case("data:"))
        .map(|_| &uri[5..])
        .ok_or_else(|| bad("it does not start with data:"))?;
    let (header, payload) = rest
        .split_once(',')
        .ok_or_else(|| bad("there is no comma between the media type and the data"))?;
    // The media type is advisory: the bytes decide the format, as browsers do.
    let is_base64 = header
        .split(';')
        .skip(1)
        .any(|param| param.trim().eq_ignore_ascii_case("base64"));
    if !is_base64 {
        return Err(bad("only ;base64 data URIs are accepted"));
    }
    decode_base64(payload, max_bytes).map_err(|failure| match failure {
        Base64Failure::Syntax(reason) => ImageError::BadDataUri { reason },
        Base64Failure::TooLarge => ImageError::TooLarge {
            origin: "the data URI's image".to_string(),
            limit: max_bytes,
        },
    })
}

enum Base64Failure {
    Syntax(String),
    TooLarge,
}

/// Decodes standard or URL-safe base64, padded or not, ignoring whitespace (line-wrapped
/// output of `base64` tools).
fn decode_base64(text: &str, max_bytes: u64) -> Result<Vec<u8>, Base64Failure> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine;

    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(Base64Failure::Syntax("it is empty".to_string()));
    }
    // 4 characters carry 3 bytes; checking before decoding avoids a huge allocation.
    if (compact.len() as u64 / 4) * 3 > max_bytes + 3 {
        return Err(Base64Failure::TooLarge);
    }
    let alphabet = if compact.contains(['-', '_']) {
        &base64::alphabet::URL_SAFE
    } else {
        &base64::alphabet::STANDARD
    };
    let config =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    let bytes = GeneralPurpose::new(alphabet, config)
        .decode(compact.as_bytes())
        .map_err(|e| Base64Failure::Syntax(e.to_string().trim_end_matches('.').to_string()))?;
    if bytes.len() as u64 > max_bytes {
        return Err(Base64Failure::TooLarge);
    }
    Ok(bytes)
}
