//! RGB8 → 8-bit YUV 4:2:0, BT.709 matrix, limited (TV) range: Y 16–235, Cb/Cr 16–240.
//!
//! The coefficients are the BT.709 ones (Kr 0.2126, Kb 0.0722) scaled by 219/255 (luma) and
//! 224/255 (chroma) and stored as 16.16 fixed point. Each chroma sample is the mean of
//! its 2×2 block (centre sited), which is what ffmpeg's swscale and Chromium's converters
//! assume when they upsample 4:2:0. Sizes are padded up to even by repeating the last
//! column/row.

/// One planar 4:2:0 picture with tightly packed planes.
pub(super) struct Yuv420 {
    pub width: usize,
    pub height: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

impl Yuv420 {
    /// A picture of even `width`×`height`.
    pub fn new(width: usize, height: usize) -> Self {
        debug_assert!((width | height) & 1 == 0, "4:2:0 needs even sides");
        Yuv420 {
            width,
            height,
            y: vec![0; width * height],
            u: vec![0; width * height / 4],
            v: vec![0; width * height / 4],
        }
    }

    pub fn chroma_width(&self) -> usize {
        self.width / 2
    }
}

const Y_R: i32 = 11966;
const Y_G: i32 = 40254;
const Y_B: i32 = 4064;
const CB_R: i32 = -6596;
const CB_G: i32 = -22189;
const CB_B: i32 = 28785;
const CR_R: i32 = 28784;
const CR_G: i32 = -26145;
const CR_B: i32 = -2639;

/// Converts one RGB8 frame of `src_width`×`src_height` into `out`, whose size is the source
/// size rounded up to even; the extra column/row repeats the source's last one.
pub(super) fn rgb_to_yuv420(src: &[u8], src_width: usize, src_height: usize, out: &mut Yuv420) {
    let (width, height) = (out.width, out.height);
    let chroma_width = width / 2;
    let last_x = src_width - 1;
    let last_y = src_height - 1;
    let pixel = |x: usize, y: usize| -> [i32; 3] {
        let offset = (y.min(last_y) * src_width + x.min(last_x)) * 3;
        [
            i32::from(src[offset]),
            i32::from(src[offset + 1]),
            i32::from(src[offset + 2]),
        ]
    };
    let luma = |[r, g, b]: [i32; 3]| -> u8 {
        ((Y_R * r + Y_G * g + Y_B * b + (16 << 16) + (1 << 15)) >> 16) as u8
    };
    for cy in 0..height / 2 {
        for cx in 0..chroma_width {
            let (x0, y0) = (cx * 2, cy * 2);
            let block = [
                pixel(x0, y0),
                pixel(x0 + 1, y0),
                pixel(x0, y0 + 1),
                pixel(x0 + 1, y0 + 1),
            ];
            out.y[y0 * width + x0] = luma(block[0]);
            out.y[y0 * width + x0 + 1] = luma(block[1]);
            out.y[(y0 + 1) * width + x0] = luma(block[2]);
            out.y[(y0 + 1) * width + x0 + 1] = luma(block[3]);
            let [r, g, b] = block.iter().fold([0; 3], |acc, p| {
                [acc[0] + p[0], acc[1] + p[1], acc[2] + p[2]]
            });
            // Sums of four pixels: divide by 4 × 65536 with rounding.
            let cb = (CB_R * r + CB_G * g + CB_B * b + (128 << 18) + (1 << 17)) >> 18;
            let cr = (CR_R * r + CR_G * g + CR_B * b + (128 << 18) + (1 << 17)) >> 18;
            out.u[cy * chroma_width + cx] = cb.clamp(0, 255) as u8;
            out.v[cy * chroma_width + cx] = cr.clamp(0, 255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert_flat(rgb: [u8; 3]) -> (u8, u8, u8) {
        let src: Vec<u8> = rgb.iter().copied().cycle().take(2 * 2 * 3).collect();
        let mut out = Yuv420::new(2, 2);
        rgb_to_yuv420(&src, 2, 2, &mut out);
        (out.y[0], out.u[0], out.v[0])
    }

    #[test]
    fn bt709_limited_range_reference_colours() {
        assert_eq!(convert_flat([0, 0, 0]), (16, 128, 128));
        assert_eq!(convert_flat([255, 255, 255]), (235, 128, 128));
        // BT.709 limited red, green and blue (ITU-R BT.709 table values).
        assert_eq!(convert_flat([255, 0, 0]), (63, 102, 240));
        assert_eq!(convert_flat([0, 255, 0]), (173, 42, 26));
        assert_eq!(convert_flat([0, 0, 255]), (32, 240, 118));
    }

    #[test]
    fn odd_sizes_repeat_the_last_column_and_row() {
        // 3×1: pixels black, black, white → padded to 4×2 with white repeated.
        let src = [0, 0, 0, 0, 0, 0, 255, 255, 255];
        let mut out = Yuv420::new(4, 2);
        rgb_to_yuv420(&src, 3, 1, &mut out);
        assert_eq!(out.y, vec![16, 16, 235, 235, 16, 16, 235, 235]);
    }
}
