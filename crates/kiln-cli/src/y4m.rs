//! YUV4MPEG2 (.y4m) writing: an uncompressed video stream that ffmpeg and mpv play, used
//! until kiln's encoder library provides MP4, MOV and WEBM.

use std::io::Write;

/// Writes (F, H, W, 3) frames in [0, 1] as 4:4:4 Y'CbCr (BT.601 full range).
pub fn write(
    path: &std::path::Path,
    frames: &[f32],
    f: usize,
    h: usize,
    w: usize,
    fps: u32,
) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(
        out,
        "YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C444 XCOLORRANGE=FULL"
    )?;
    let mut planes = vec![0u8; 3 * h * w];
    for frame in frames.chunks_exact(h * w * 3).take(f) {
        for (i, px) in frame.chunks_exact(3).enumerate() {
            let (r, g, b) = (px[0] * 255.0, px[1] * 255.0, px[2] * 255.0);
            let y = 0.299 * r + 0.587 * g + 0.114 * b;
            let cb = 128.0 - 0.168_736 * r - 0.331_264 * g + 0.5 * b;
            let cr = 128.0 + 0.5 * r - 0.418_688 * g - 0.081_312 * b;
            planes[i] = y.round().clamp(0.0, 255.0) as u8;
            planes[h * w + i] = cb.round().clamp(0.0, 255.0) as u8;
            planes[2 * h * w + i] = cr.round().clamp(0.0, 255.0) as u8;
        }
        out.write_all(b"FRAME\n")?;
        out.write_all(&planes)?;
    }
    out.flush()
}
