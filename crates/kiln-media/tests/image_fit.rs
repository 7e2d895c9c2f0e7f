//! Output size from the input's aspect, and fitting by centre crop or padding: exact sizes,
//! centred content, symmetric bars.

use kiln_media::image_in::{
    fit_image, size_for_aspect, AspectRatio, Fit, ImageError, RgbImage, SizeTier,
};

const GREY: [u8; 3] = [128, 128, 128];
const RED: [u8; 3] = [255, 0, 0];
const BLUE: [u8; 3] = [0, 0, 255];

/// Grey `width`×`height` with a red square of side `marker` in the exact centre and blue
/// bands `band` pixels wide along the left and right edges (or top and bottom when tall).
fn marked(width: u32, height: u32, marker: u32, band: u32) -> RgbImage {
    let wide = width >= height;
    let mut pixels = Vec::with_capacity((width * height * 3) as usize);
    for y in 0..height {
        for x in 0..width {
            // |2x + 1 - width| < marker keeps the square symmetric about the pixel centre.
            let in_marker =
                (2 * x + 1).abs_diff(width) < marker && (2 * y + 1).abs_diff(height) < marker;
            let along = if wide { x } else { y };
            let length = if wide { width } else { height };
            let in_band = along < band || along >= length - band;
            pixels.extend_from_slice(if in_marker {
                &RED
            } else if in_band {
                &BLUE
            } else {
                &GREY
            });
        }
    }
    RgbImage {
        width,
        height,
        pixels,
    }
}

fn is_red(p: [u8; 3]) -> bool {
    p[0] > 200 && p[1] < 60 && p[2] < 60
}

fn is_blue(p: [u8; 3]) -> bool {
    p[2] > 200 && p[0] < 60 && p[1] < 60
}

/// Centroid of the pixels matching `predicate`.
fn centroid(image: &RgbImage, predicate: fn([u8; 3]) -> bool) -> (f64, f64) {
    let (mut sx, mut sy, mut n) = (0.0, 0.0, 0.0);
    for y in 0..image.height {
        for x in 0..image.width {
            if predicate(image.pixel(x, y).unwrap()) {
                sx += f64::from(x);
                sy += f64::from(y);
                n += 1.0;
            }
        }
    }
    assert!(n > 0.0, "no matching pixels");
    (sx / n, sy / n)
}

fn assert_centred(image: &RgbImage) {
    let (cx, cy) = centroid(image, is_red);
    let (ex, ey) = (
        f64::from(image.width - 1) / 2.0,
        f64::from(image.height - 1) / 2.0,
    );
    assert!(
        (cx - ex).abs() <= 1.0 && (cy - ey).abs() <= 1.0,
        "marker centroid ({cx:.2}, {cy:.2}), image centre ({ex:.1}, {ey:.1}) in {image:?}"
    );
}

#[test]
fn aspect_picks_the_closest_of_three_ratios() {
    let cases = [
        ((1920, 1080), AspectRatio::Landscape),
        ((1080, 1920), AspectRatio::Portrait),
        ((1000, 1000), AspectRatio::Square),
        ((3000, 1000), AspectRatio::Landscape),
        ((1000, 3000), AspectRatio::Portrait),
        // The boundaries are 4:3 and 3:4, which go to the non-square ratio.
        ((1024, 768), AspectRatio::Landscape),
        ((768, 1024), AspectRatio::Portrait),
        ((1023, 768), AspectRatio::Square),
        ((768, 1023), AspectRatio::Square),
        ((1250, 1000), AspectRatio::Square),
        ((0, 100), AspectRatio::Square),
    ];
    for ((w, h), expected) in cases {
        assert_eq!(AspectRatio::closest_to(w, h), expected, "{w}x{h}");
    }
    assert_eq!(AspectRatio::Portrait.name(), "9:16");
}

#[test]
fn size_for_aspect_gives_the_tier_sizes_in_multiples_of_16() {
    assert_eq!(size_for_aspect(1920, 1080, SizeTier::P480), (832, 480));
    assert_eq!(size_for_aspect(1080, 1920, SizeTier::P480), (480, 832));
    assert_eq!(size_for_aspect(640, 640, SizeTier::P480), (624, 624));
    assert_eq!(size_for_aspect(4000, 3000, SizeTier::P720), (1280, 720));
    assert_eq!(size_for_aspect(3000, 4000, SizeTier::P720), (720, 1280));
    assert_eq!(size_for_aspect(900, 1000, SizeTier::P720), (960, 960));
    for tier in [SizeTier::P480, SizeTier::P720] {
        for ratio in [
            AspectRatio::Landscape,
            AspectRatio::Portrait,
            AspectRatio::Square,
        ] {
            let (w, h) = ratio.size_at(tier);
            assert!(
                w.is_multiple_of(16) && h.is_multiple_of(16),
                "{ratio:?} at {tier:?}: {w}x{h}"
            );
        }
    }
}

#[test]
fn crop_center_cuts_the_sides_of_a_wide_image() {
    let source = marked(400, 100, 20, 30);
    for (w, h) in [(100, 100), (64, 80), (33, 47), (624, 624)] {
        let fitted = fit_image(&source, w, h, Fit::CropCenter).unwrap();
        assert_eq!((fitted.width, fitted.height), (w, h));
        assert_eq!(fitted.pixels.len(), (w * h * 3) as usize);
        assert_centred(&fitted);
        // The blue edge bands lie outside the centred crop.
        assert!(
            !fitted.pixels.chunks(3).any(|p| is_blue([p[0], p[1], p[2]])),
            "{w}x{h}"
        );
    }
}

#[test]
fn crop_center_cuts_top_and_bottom_of_a_tall_image() {
    let source = marked(90, 300, 20, 40);
    let fitted = fit_image(&source, 480, 832, Fit::CropCenter).unwrap();
    // 90x300 is narrower than 9:16: the crop keeps the full width, 156 rows of the middle.
    assert_eq!((fitted.width, fitted.height), (480, 832));
    assert_centred(&fitted);
    assert!(!fitted.pixels.chunks(3).any(|p| is_blue([p[0], p[1], p[2]])));
}

#[test]
fn pad_keeps_everything_with_symmetric_bars() {
    let colour = [10, 20, 30];
    let source = marked(400, 100, 20, 30);
    let fitted = fit_image(&source, 200, 200, Fit::Pad { colour }).unwrap();
    assert_eq!((fitted.width, fitted.height), (200, 200));
    assert_centred(&fitted);
    // 400x100 into 200x200 scales to 200x50: 75 rows of bars above and below.
    let row_is_bar = |y: u32| (0..200).all(|x| fitted.pixel(x, y) == Some(colour));
    let bars_above = (0..200).take_while(|&y| row_is_bar(y)).count();
    let bars_below = (0..200).rev().take_while(|&y| row_is_bar(y)).count();
    assert_eq!((bars_above, bars_below), (75, 75));
    // The blue bands survive at both edges of the content.
    assert!(is_blue(fitted.pixel(2, 100).unwrap()) && is_blue(fitted.pixel(197, 100).unwrap()));

    // Tall source into a wide target: bars left and right, odd remainder split 1 px apart.
    let tall = marked(100, 300, 20, 10);
    let fitted = fit_image(&tall, 301, 150, Fit::PAD_BLACK).unwrap();
    assert_eq!((fitted.width, fitted.height), (301, 150));
    assert_centred(&fitted);
    let column_is_bar = |x: u32| (0..150).all(|y| fitted.pixel(x, y) == Some([0, 0, 0]));
    let left = (0..301).take_while(|&x| column_is_bar(x)).count();
    let right = (0..301).rev().take_while(|&x| column_is_bar(x)).count();
    assert_eq!(left + right, 301 - 50);
    assert!(left.abs_diff(right) <= 1, "{left} vs {right}");
}

#[test]
fn matching_aspect_is_a_plain_resize_for_both_fits() {
    let source = marked(320, 180, 40, 8);
    let cropped = fit_image(&source, 832, 468, Fit::CropCenter).unwrap();
    let padded = fit_image(&source, 832, 468, Fit::PAD_BLACK).unwrap();
    assert_eq!(cropped, padded);
    // Nothing cut: the blue bands are still at both edges.
    assert!(is_blue(cropped.pixel(1, 234).unwrap()) && is_blue(cropped.pixel(830, 234).unwrap()));
    // Same size in, same image out.
    assert_eq!(
        fit_image(&source, 320, 180, Fit::CropCenter).unwrap(),
        source
    );
}

#[test]
fn degenerate_sizes_are_errors_not_panics() {
    let source = marked(10, 10, 2, 1);
    let error = fit_image(&source, 0, 480, Fit::CropCenter).unwrap_err();
    assert!(matches!(
        error,
        ImageError::BadTargetSize {
            width: 0,
            height: 480
        }
    ));
    let bad_buffer = RgbImage {
        width: 10,
        height: 10,
        pixels: vec![0; 7],
    };
    assert!(matches!(
        fit_image(&bad_buffer, 4, 4, Fit::PAD_BLACK),
        Err(ImageError::BadPixelBuffer { .. })
    ));
    assert_eq!(bad_buffer.pixel(5, 5), None);
    // A 1-pixel-wide source into a wide target still fills it (crop) or pads it (pad).
    let sliver = marked(1, 500, 0, 0);
    let fitted = fit_image(&sliver, 832, 480, Fit::CropCenter).unwrap();
    assert_eq!((fitted.width, fitted.height), (832, 480));
    let fitted = fit_image(&sliver, 832, 480, Fit::PAD_BLACK).unwrap();
    assert_eq!((fitted.width, fitted.height), (832, 480));
    assert_eq!(Fit::from_name("crop"), Some(Fit::CropCenter));
    assert_eq!(Fit::from_name("PAD"), Some(Fit::PAD_BLACK));
    assert_eq!(Fit::from_name("stretch"), None);
}
