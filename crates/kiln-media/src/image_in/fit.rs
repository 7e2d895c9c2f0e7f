//! Choosing an output size that follows the input's aspect, and fitting an image to a size.

use image::imageops::{self, FilterType};

use super::{ImageError, RgbImage};

/// Resampling filter for every resize: sharp on downscales, no ringing worth noticing on
/// photos, and what PIL's `LANCZOS` (used by the reference pipelines) computes.
const FILTER: FilterType = FilterType::Lanczos3;

/// The aspect ratios kiln generates, as in the hosted APIs' `aspect_ratio`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AspectRatio {
    /// 16:9.
    Landscape,
    /// 9:16.
    Portrait,
    /// 1:1.
    Square,
}

impl AspectRatio {
    /// The ratio closest to `width:height` on a log scale, so 2:1 and 1:2 are equally far
    /// from 1:1. The boundaries are 4:3 and 3:4 (the geometric means of 16:9 and 1:1); a
    /// 4:3 image, exactly on the boundary, goes to 16:9, a 3:4 one to 9:16. An empty size
    /// gives 1:1.
    pub fn closest_to(width: u32, height: u32) -> AspectRatio {
        let (w, h) = (u128::from(width), u128::from(height));
        if w == 0 || h == 0 {
            return AspectRatio::Square;
        }
        // (w/h)^2 >= 16/9  <=>  9 w^2 >= 16 h^2, in integers to keep the boundary exact.
        if 9 * w * w >= 16 * h * h {
            AspectRatio::Landscape
        } else if 9 * h * h >= 16 * w * w {
            AspectRatio::Portrait
        } else {
            AspectRatio::Square
        }
    }

    /// `"16:9"`, `"9:16"` or `"1:1"`.
    pub fn name(self) -> &'static str {
        match self {
            AspectRatio::Landscape => "16:9",
            AspectRatio::Portrait => "9:16",
            AspectRatio::Square => "1:1",
        }
    }

    /// The width and height kiln generates at this ratio and tier; both multiples of 16.
    pub fn size_at(self, tier: SizeTier) -> (u32, u32) {
        match (tier, self) {
            (SizeTier::P480, AspectRatio::Landscape) => (832, 480),
            (SizeTier::P480, AspectRatio::Portrait) => (480, 832),
            (SizeTier::P480, AspectRatio::Square) => (624, 624),
            (SizeTier::P720, AspectRatio::Landscape) => (1280, 720),
            (SizeTier::P720, AspectRatio::Portrait) => (720, 1280),
            (SizeTier::P720, AspectRatio::Square) => (960, 960),
        }
    }
}

/// Output resolution tiers. The sizes are Wan 2.1's: 832×480 at 480p (the CLI's default)
/// and 1280×720 at 720p; the square size keeps about the same pixel count as the 16:9 one
/// (624² ≈ 832×480, 960² ≈ 1280×720), rounded to a multiple of 16.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SizeTier {
    P480,
    P720,
}

/// The output size for an image-to-video request without an explicit size: the closest of
/// 16:9, 9:16 and 1:1 to the image's aspect (see [`AspectRatio::closest_to`]) at `tier`.
pub fn size_for_aspect(image_width: u32, image_height: u32, tier: SizeTier) -> (u32, u32) {
    AspectRatio::closest_to(image_width, image_height).size_at(tier)
}

/// How an image whose aspect differs from the target's is made to fit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Scale to cover the target, then cut the overflow equally from both sides.
    CropCenter,
    /// Scale to fit inside the target, then fill the bars equally on both sides.
    Pad { colour: [u8; 3] },
}

impl Fit {
    /// Padding with black bars.
    pub const PAD_BLACK: Fit = Fit::Pad { colour: [0, 0, 0] };

    /// `"crop"` → [`Fit::CropCenter`], `"pad"` → black [`Fit::Pad`].
    pub fn from_name(name: &str) -> Option<Fit> {
        match name.to_ascii_lowercase().as_str() {
            "crop" | "crop-center" | "cover" => Some(Fit::CropCenter),
            "pad" | "contain" => Some(Fit::PAD_BLACK),
            _ => None,
        }
    }
}

/// Resizes `image` to exactly `width`×`height` with `fit`. When the aspect already matches
/// both fits give the same plain resize; an image already at the size is returned as is.
pub fn fit_image(
    image: &RgbImage,
    width: u32,
    height: u32,
    fit: Fit,
) -> Result<RgbImage, ImageError> {
    if width == 0 || height == 0 {
        return Err(ImageError::BadTargetSize { width, height });
    }
    let source = image.to_buffer()?;
    if source.width() == 0 || source.height() == 0 {
        return Err(ImageError::Empty {
            width: source.width(),
            height: source.height(),
        });
    }
    let fitted = match fit {
        Fit::CropCenter => crop_center(&source, width, height),
        Fit::Pad { colour } => pad(&source, width, height, colour),
    };
    Ok(RgbImage::from_buffer(fitted))
}

fn resize_to(source: &image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    if source.dimensions() == (width, height) {
        return source.clone();
    }
    imageops::resize(source, width, height, FILTER)
}

/// `value * numerator / denominator`, rounded to nearest, clamped to `1..=max`.
fn scale_rounded(value: u32, numerator: u32, denominator: u32, max: u32) -> u32 {
    let exact = u64::from(value) * u64::from(numerator);
    let rounded = (exact + u64::from(denominator) / 2) / u64::from(denominator);
    rounded.clamp(1, u64::from(max)) as u32
}

/// Crops the source to the target's aspect first (centred), then resizes once: one
/// resampling pass and an exact output size.
fn crop_center(source: &image::RgbImage, width: u32, height: u32) -> image::RgbImage {
    let (src_w, src_h) = source.dimensions();
    let source_is_wider =
        u64::from(src_w) * u64::from(height) > u64::from(src_h) * u64::from(width);
    let (crop_w, crop_h) = if source_is_wider {
        (scale_rounded(src_h, width, height, src_w), src_h)
    } else {
        (src_w, scale_rounded(src_w, height, width, src_h))
    };
    let x = (src_w - crop_w) / 2;
    let y = (src_h - crop_h) / 2;
    let cropped = imageops::crop_imm(source, x, y, crop_w, crop_h).to_image();
    resize_to(&cropped, width, height)
}

fn pad(source: &image::RgbImage, width: u32, height: u32, colour: [u8; 3]) -> image::RgbImage {
    let (src_w, src_h) = source.dimensions();
    let source_is_wider =
        u64::from(src_w) * u64::from(height) >= u64::from(src_h) * u64::from(width);
    let (inner_w, inner_h) = if source_is_wider {
        (width, scale_rounded(src_h, width, src_w, height))
    } else {
        (scale_rounded(src_w, height, src_h, width), height)
    };
    let inner = resize_to(source, inner_w, inner_h);
    let mut canvas = image::RgbImage::from_pixel(width, height, image::Rgb(colour));
    let x = (width - inner_w) / 2;
    let y = (height - inner_h) / 2;
    imageops::replace(&mut canvas, &inner, i64::from(x), i64::from(y));
    canvas
}
