//! Fuzzes the image-decoding entry point: any bytes must give an image within the limits
//! or an error, never a panic, an abort or an out-of-memory.
#![no_main]

use kiln_media::image_in::{decode_image, DecodeLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // Smaller than the production limits so libFuzzer's 2 GB RSS cap still catches real
    // over-allocation rather than legitimately large images.
    let limits = DecodeLimits {
        max_side: 4096,
        max_pixels: 4_000_000,
    };
    if let Ok(image) = decode_image(bytes, &limits) {
        assert!(image.width >= 1 && image.height >= 1);
        assert!(image.width <= limits.max_side && image.height <= limits.max_side);
        assert!(u64::from(image.width) * u64::from(image.height) <= limits.max_pixels);
        assert_eq!(
            image.pixels.len(),
            image.width as usize * image.height as usize * 3
        );
    }
});
