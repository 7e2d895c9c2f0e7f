//! Video output: RGB frames in, a finished MP4, MOV or WEBM file (plus a JPEG poster) out.
//!
//! * MP4 and MOV carry H.264 (OpenH264, constant QP, High profile with CABAC, no B-frames)
//!   in an ISO-BMFF / QuickTime file written by [`isobmff`], with `moov` before `mdat` so
//!   browsers start playing before the whole file has arrived.
//! * WEBM carries AV1 (rav1e, constant quantiser) in a Matroska/WebM file written by
//!   [`matroska`], with the cues in front of the clusters for the same reason.
//!
//! Pixels: RGB8 is converted to 8-bit YUV 4:2:0 with the BT.709 matrix in limited (TV)
//! range, and every file says so (H.264 VUI + `colr` box, AV1 sequence header + Matroska
//! `Colour`), so ffmpeg and browsers decode the same colours back.
//!
//! Odd sizes: 4:2:0 needs even dimensions, so a clip with an odd width or height is padded
//! by one column/row that repeats the last one (edge replication). Nothing of the picture is
//! lost; the file is at most one pixel wider/taller than the frames given (33×17 → 34×18).
//! OpenH264 and rav1e also refuse pictures under 16 pixels a side, so tiny clips are padded
//! up to 16 the same way (2×2 → 16×16).
//!
//! Timing: every sample lasts exactly `1/fps` s, the last one included, so N frames report a
//! duration of N/fps (121 frames at 24 fps: 5.041667 s).
//!
//! Quality 20–99 maps linearly and monotonically onto the encoder's quantiser; see
//! [`h264_qp_for_quality`] and [`av1_quantizer_for_quality`].

mod av1;
mod h264;
mod isobmff;
mod matroska;
mod yuv;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Lowest accepted `quality`.
pub const MIN_QUALITY: u8 = 20;
/// Highest accepted `quality`.
pub const MAX_QUALITY: u8 = 99;
/// Default `quality` (the seeds' `outputQuality` default).
pub const DEFAULT_QUALITY: u8 = 95;
/// Largest accepted frame side; H.264 level 6.2 and AV1 level 6.3 stop at 8192.
pub const MAX_SIDE: usize = 8192;
/// Smallest encoded side (both encoders' minimum); smaller clips are padded up to it.
pub const MIN_CODED_SIDE: usize = 16;
/// Largest H.264 picture in 16×16 macroblocks (level 5.2, the highest OpenH264 knows).
pub const H264_MAX_MACROBLOCKS: usize = 36_864;
/// Highest accepted frame rate.
pub const MAX_FPS: u32 = 240;

/// Container + codec of an output file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoFormat {
    /// ISO-BMFF MP4 with H.264 (`video/mp4`).
    Mp4,
    /// QuickTime MOV with H.264 (`video/quicktime`).
    Mov,
    /// WebM with AV1 (`video/webm`).
    Webm,
}

impl VideoFormat {
    /// All formats, in the order they are documented.
    pub const ALL: [VideoFormat; 3] = [VideoFormat::Mp4, VideoFormat::Mov, VideoFormat::Webm];

    /// Parses a format name (`mp4`, `mov`, `webm`, case-insensitive, an optional leading dot).
    pub fn from_name(name: &str) -> Result<Self, VideoError> {
        let trimmed = name.trim();
        let bare = trimmed.strip_prefix('.').unwrap_or(trimmed);
        match bare.to_ascii_lowercase().as_str() {
            "mp4" | "m4v" => Ok(VideoFormat::Mp4),
            "mov" | "qt" | "quicktime" => Ok(VideoFormat::Mov),
            "webm" => Ok(VideoFormat::Webm),
            _ => Err(VideoError::UnknownFormat {
                name: name.to_string(),
            }),
        }
    }

    /// Picks the format from a file name's extension.
    pub fn from_path(path: &Path) -> Result<Self, VideoError> {
        path.extension()
            .and_then(|ext| ext.to_str())
            .and_then(|ext| VideoFormat::from_name(ext).ok())
            .ok_or_else(|| VideoError::UnknownExtension {
                path: path.to_path_buf(),
            })
    }

    /// The usual file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            VideoFormat::Mp4 => "mp4",
            VideoFormat::Mov => "mov",
            VideoFormat::Webm => "webm",
        }
    }

    /// The MIME type to serve the file with.
    pub fn mime_type(self) -> &'static str {
        match self {
            VideoFormat::Mp4 => "video/mp4",
            VideoFormat::Mov => "video/quicktime",
            VideoFormat::Webm => "video/webm",
        }
    }

    /// The video codec inside, as ffprobe names it.
    pub fn codec_name(self) -> &'static str {
        match self {
            VideoFormat::Mp4 | VideoFormat::Mov => "h264",
            VideoFormat::Webm => "av1",
        }
    }
}

impl std::fmt::Display for VideoFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.extension())
    }
}

/// How to encode a clip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Container and codec.
    pub format: VideoFormat,
    /// Frames per second (1–240); every frame lasts exactly `1/fps` s.
    pub fps: u32,
    /// 20 (smallest file) to 99 (best picture); default 95.
    pub quality: u8,
}

impl Default for EncodeOptions {
    /// MP4 at Wan's native 16 fps and quality 95.
    fn default() -> Self {
        EncodeOptions {
            format: VideoFormat::Mp4,
            fps: 16,
            quality: DEFAULT_QUALITY,
        }
    }
}

/// Why a clip or poster could not be written.
#[derive(Debug, thiserror::Error)]
pub enum VideoError {
    #[error("unknown video format '{name}'; use mp4, mov or webm")]
    UnknownFormat { name: String },
    #[error("cannot tell the video format from '{}'; name the file .mp4, .mov or .webm or pass a format", path.display())]
    UnknownExtension { path: PathBuf },
    #[error("quality {0} is outside {MIN_QUALITY}-{MAX_QUALITY}; pass a value from {MIN_QUALITY} to {MAX_QUALITY}")]
    QualityOutOfRange(u8),
    #[error("poster quality {0} is outside 1-100; pass a JPEG quality from 1 to 100")]
    PosterQualityOutOfRange(u8),
    #[error("frame rate {0} fps is outside 1-{MAX_FPS}; pass a frame rate from 1 to {MAX_FPS}")]
    FpsOutOfRange(u32),
    #[error("no frames to encode; pass at least one frame")]
    NoFrames,
    #[error("frame size {width}x{height} is not supported; width and height must be 1-{MAX_SIDE}")]
    BadSize { width: usize, height: usize },
    #[error("frame size {width}x{height} exceeds H.264's largest level (5.2: {H264_MAX_MACROBLOCKS} macroblocks, e.g. 4096x2304); use webm or a smaller size")]
    TooLargeForH264 { width: usize, height: usize },
    #[error("frame buffer holds {actual} bytes but {frames} RGB frames of {width}x{height} need {expected}; pass frames*height*width*3 bytes")]
    BufferSize {
        frames: usize,
        width: usize,
        height: usize,
        expected: usize,
        actual: usize,
    },
    #[error("frame index {index} is out of range for a clip of {frames} frames; pick 0-{}", frames.saturating_sub(1))]
    FrameIndex { index: usize, frames: usize },
    #[error("the encoded clip exceeds 4 GiB, which this writer does not support; encode fewer frames, a smaller size or a lower quality")]
    TooLarge,
    #[error("the {codec} encoder failed: {detail}; this is a bug in kiln, report it with the frame size and options")]
    Encoder { codec: &'static str, detail: String },
    #[error("cannot write '{}': {source}; check that the directory exists and is writable", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The H.264 QP used for a quality: a straight line from QP 42 at quality 20 to QP 16 at
/// quality 99, rounded (95 → 17, 90 → 19, 50 → 32, 30 → 39). Lower QP = finer quantiser =
/// bigger file, so a higher quality never gives a coarser quantiser.
pub fn h264_qp_for_quality(quality: u8) -> Result<u8, VideoError> {
    check_quality(quality)?;
    let steps = u32::from(quality - MIN_QUALITY); // 0..=79
    let span = u32::from(MAX_QUALITY - MIN_QUALITY); // 79
    Ok((42 - (steps * 26 + span / 2) / span) as u8)
}

/// The rav1e quantiser (AV1 base q-index, 0–255) used for a quality: a straight line from
/// 200 at quality 20 to 40 at quality 99, rounded (95 → 48, 90 → 58, 50 → 139, 30 → 180).
pub fn av1_quantizer_for_quality(quality: u8) -> Result<u8, VideoError> {
    check_quality(quality)?;
    let steps = u32::from(quality - MIN_QUALITY);
    let span = u32::from(MAX_QUALITY - MIN_QUALITY);
    Ok((200 - (steps * 160 + span / 2) / span) as u8)
}

fn check_quality(quality: u8) -> Result<(), VideoError> {
    if (MIN_QUALITY..=MAX_QUALITY).contains(&quality) {
        Ok(())
    } else {
        Err(VideoError::QualityOutOfRange(quality))
    }
}

/// A validated view of `frames_n` RGB8 frames of `width`×`height`, row-major, no padding.
#[derive(Clone, Copy)]
pub(crate) struct RgbClip<'a> {
    pub data: &'a [u8],
    pub frames: usize,
    pub width: usize,
    pub height: usize,
}

impl<'a> RgbClip<'a> {
    fn new(data: &'a [u8], frames: usize, width: usize, height: usize) -> Result<Self, VideoError> {
        if frames == 0 {
            return Err(VideoError::NoFrames);
        }
        if width == 0 || height == 0 || width > MAX_SIDE || height > MAX_SIDE {
            return Err(VideoError::BadSize { width, height });
        }
        let expected = frames
            .checked_mul(width * height * 3)
            .ok_or(VideoError::BadSize { width, height })?;
        if data.len() != expected {
            return Err(VideoError::BufferSize {
                frames,
                width,
                height,
                expected,
                actual: data.len(),
            });
        }
        Ok(RgbClip {
            data,
            frames,
            width,
            height,
        })
    }

    pub fn frame(&self, index: usize) -> &'a [u8] {
        let size = self.width * self.height * 3;
        &self.data[index * size..(index + 1) * size]
    }

    /// The encoded size: at least [`MIN_CODED_SIDE`] and even (for 4:2:0); the added
    /// columns/rows repeat the last ones.
    pub fn coded_size(&self) -> (usize, usize) {
        let side = |n: usize| n.max(MIN_CODED_SIDE).next_multiple_of(2);
        (side(self.width), side(self.height))
    }
}

/// Encodes `frames_n` RGB8 frames (`frames` holds `frames_n * height * width * 3` bytes,
/// frame after frame, row-major) into a complete file in memory.
pub fn encode_video(
    frames: &[u8],
    frames_n: usize,
    width: usize,
    height: usize,
    opts: &EncodeOptions,
) -> Result<Vec<u8>, VideoError> {
    check_quality(opts.quality)?;
    if opts.fps == 0 || opts.fps > MAX_FPS {
        return Err(VideoError::FpsOutOfRange(opts.fps));
    }
    let clip = RgbClip::new(frames, frames_n, width, height)?;
    let threads = encoder_threads();
    match opts.format {
        VideoFormat::Mp4 | VideoFormat::Mov => {
            let (coded_width, coded_height) = clip.coded_size();
            if coded_width.div_ceil(16) * coded_height.div_ceil(16) > H264_MAX_MACROBLOCKS {
                return Err(VideoError::TooLargeForH264 { width, height });
            }
            let qp = h264_qp_for_quality(opts.quality)?;
            let stream = h264::encode(&clip, opts.fps, qp, threads)?;
            let brand = if opts.format == VideoFormat::Mp4 {
                isobmff::Brand::Mp4
            } else {
                isobmff::Brand::QuickTime
            };
            isobmff::write_h264_movie(brand, &stream, opts.fps)
        }
        VideoFormat::Webm => {
            let quantizer = av1_quantizer_for_quality(opts.quality)?;
            let stream = av1::encode(&clip, opts.fps, quantizer, threads)?;
            matroska::write_av1_webm(&stream, opts.fps)
        }
    }
}

/// Encodes like [`encode_video`] and writes the file to `path` (through a temporary file in
/// the same directory, so a reader never sees half a clip). Returns the file size in bytes.
pub fn write_video_file(
    path: &Path,
    frames: &[u8],
    frames_n: usize,
    width: usize,
    height: usize,
    opts: &EncodeOptions,
) -> Result<u64, VideoError> {
    let bytes = encode_video(frames, frames_n, width, height, opts)?;
    write_atomically(path, &bytes)?;
    Ok(bytes.len() as u64)
}

/// The RGB8 bytes of frame `index` of a clip laid out as for [`encode_video`]; use it to
/// pick the poster frame.
pub fn clip_frame(
    frames: &[u8],
    frames_n: usize,
    width: usize,
    height: usize,
    index: usize,
) -> Result<&[u8], VideoError> {
    let clip = RgbClip::new(frames, frames_n, width, height)?;
    if index >= frames_n {
        return Err(VideoError::FrameIndex {
            index,
            frames: frames_n,
        });
    }
    Ok(clip.frame(index))
}

/// Encodes one RGB8 frame as a baseline JPEG (quality 1–100; 90 is a good poster).
pub fn encode_poster_jpeg(
    frame_rgb: &[u8],
    width: usize,
    height: usize,
    quality: u8,
) -> Result<Vec<u8>, VideoError> {
    if !(1..=100).contains(&quality) {
        return Err(VideoError::PosterQualityOutOfRange(quality));
    }
    // JPEG stores sides as u16.
    if width == 0 || height == 0 || width > usize::from(u16::MAX) || height > usize::from(u16::MAX)
    {
        return Err(VideoError::BadSize { width, height });
    }
    RgbClip::new(frame_rgb, 1, width, height)?;
    let mut out = Vec::new();
    let encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality);
    image::ImageEncoder::write_image(
        encoder,
        frame_rgb,
        width as u32,
        height as u32,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|err| VideoError::Encoder {
        codec: "jpeg",
        detail: err.to_string(),
    })?;
    Ok(out)
}

/// Writes `bytes` to `path` via a sibling temporary file and a rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), VideoError> {
    let io_err = |source| VideoError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| io_err(std::io::Error::other("the path names no file")))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(format!(".{}.partial", std::process::id()));
    let tmp_path = path.with_file_name(tmp_name);
    let result = std::fs::File::create(&tmp_path)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&tmp_path, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp_path);
    }
    result.map_err(io_err)
}

/// Encoder threads: the machine's cores, at most 8 (more brings little at these sizes).
fn encoder_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quality_maps_monotonically_onto_quantisers() {
        let mut previous = (u8::MAX, u8::MAX);
        for quality in MIN_QUALITY..=MAX_QUALITY {
            let qp = h264_qp_for_quality(quality).unwrap();
            let q = av1_quantizer_for_quality(quality).unwrap();
            assert!(qp <= previous.0 && q <= previous.1, "quality {quality}");
            previous = (qp, q);
        }
        assert_eq!(h264_qp_for_quality(20).unwrap(), 42);
        assert_eq!(h264_qp_for_quality(95).unwrap(), 17);
        assert_eq!(h264_qp_for_quality(99).unwrap(), 16);
        assert_eq!(av1_quantizer_for_quality(20).unwrap(), 200);
        assert_eq!(av1_quantizer_for_quality(95).unwrap(), 48);
        assert_eq!(av1_quantizer_for_quality(99).unwrap(), 40);
        assert!(h264_qp_for_quality(19).is_err());
        assert!(av1_quantizer_for_quality(100).is_err());
    }

    #[test]
    fn formats_parse_from_names_and_paths() {
        assert_eq!(VideoFormat::from_name("MP4").unwrap(), VideoFormat::Mp4);
        assert_eq!(VideoFormat::from_name(".mov").unwrap(), VideoFormat::Mov);
        assert_eq!(VideoFormat::from_name("webm").unwrap(), VideoFormat::Webm);
        assert!(VideoFormat::from_name("avi").is_err());
        let path = Path::new("/tmp/clip.WebM");
        assert_eq!(VideoFormat::from_path(path).unwrap(), VideoFormat::Webm);
        let err = VideoFormat::from_path(Path::new("clip")).unwrap_err();
        assert!(err.to_string().contains(".mp4, .mov or .webm"), "{err}");
        for format in VideoFormat::ALL {
            assert_eq!(VideoFormat::from_name(format.extension()).unwrap(), format);
        }
    }
}
