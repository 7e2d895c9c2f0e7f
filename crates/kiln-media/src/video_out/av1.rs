//! AV1 through rav1e at a constant base quantiser.
//!
//! rav1e returns one packet per shown frame (a temporal unit, possibly carrying hidden
//! frames decoded before it), in display order, so container timestamps are simply
//! `frame / fps`. Speed preset 10 (the fastest) with one tile per thread: pure-Rust rav1e
//! without its nasm assembly is slow, and at preset 10 it still meets the quality target.

use rav1e::prelude::*;

use super::yuv::{rgb_to_yuv420, Yuv420};
use super::{RgbClip, VideoError};

/// rav1e speed preset (0 slowest/best … 10 fastest).
pub(super) const SPEED_PRESET: u8 = 10;

pub(super) struct Av1Stream {
    pub width: usize,
    pub height: usize,
    /// The `av1C` record (ISO/Matroska AV1 codec configuration) with the sequence header.
    pub codec_config: Vec<u8>,
    pub frames: Vec<Av1Frame>,
}

pub(super) struct Av1Frame {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

fn encoder_error(detail: impl Into<String>) -> VideoError {
    VideoError::Encoder {
        codec: "AV1 (rav1e)",
        detail: detail.into(),
    }
}

/// Encodes the clip with base quantiser `quantizer` (0–255) on up to `threads` threads.
pub(super) fn encode(
    clip: &RgbClip<'_>,
    fps: u32,
    quantizer: u8,
    threads: usize,
) -> Result<Av1Stream, VideoError> {
    let (width, height) = clip.coded_size();
    let mut enc = EncoderConfig::with_speed_preset(SPEED_PRESET);
    enc.width = width;
    enc.height = height;
    enc.time_base = Rational::new(1, u64::from(fps));
    enc.bit_depth = 8;
    enc.chroma_sampling = ChromaSampling::Cs420;
    enc.pixel_range = PixelRange::Limited;
    enc.color_description = Some(ColorDescription {
        color_primaries: ColorPrimaries::BT709,
        transfer_characteristics: TransferCharacteristics::BT709,
        matrix_coefficients: MatrixCoefficients::BT709,
    });
    enc.quantizer = usize::from(quantizer);
    enc.min_quantizer = 0;
    enc.bitrate = 0;
    // A key frame every two seconds, as for H.264, so players can seek.
    enc.set_key_frame_interval(1, u64::from(fps) * 2);
    enc.tiles = threads.max(1);
    let config = Config::new()
        .with_encoder_config(enc)
        .with_threads(threads.max(1));
    let mut ctx: Context<u8> = config
        .new_context()
        .map_err(|err| encoder_error(format!("invalid configuration: {err}")))?;

    let mut picture = Yuv420::new(width, height);
    let mut frames = Vec::with_capacity(clip.frames);
    let mut sequence_header: Option<Vec<u8>> = None;
    let mut collect =
        |ctx: &mut Context<u8>, frames: &mut Vec<Av1Frame>| -> Result<bool, VideoError> {
            match ctx.receive_packet() {
                Ok(packet) => {
                    if sequence_header.is_none() {
                        sequence_header = find_sequence_header(&packet.data).map(<[u8]>::to_vec);
                    }
                    frames.push(Av1Frame {
                        keyframe: packet.frame_type == FrameType::KEY,
                        data: packet.data,
                    });
                    Ok(true)
                }
                Err(EncoderStatus::Encoded) => Ok(true),
                Err(EncoderStatus::NeedMoreData) | Err(EncoderStatus::LimitReached) => Ok(false),
                Err(status) => Err(encoder_error(format!("receive_packet: {status}"))),
            }
        };

    for index in 0..clip.frames {
        rgb_to_yuv420(clip.frame(index), clip.width, clip.height, &mut picture);
        let mut frame = ctx.new_frame();
        let chroma_width = picture.chroma_width();
        frame.planes[0].copy_from_raw_u8(&picture.y, width, 1);
        frame.planes[1].copy_from_raw_u8(&picture.u, chroma_width, 1);
        frame.planes[2].copy_from_raw_u8(&picture.v, chroma_width, 1);
        match ctx.send_frame(frame) {
            Ok(()) => {}
            Err(status) => return Err(encoder_error(format!("send_frame {index}: {status}"))),
        }
        while collect(&mut ctx, &mut frames)? {}
    }
    ctx.flush();
    while collect(&mut ctx, &mut frames)? {}
    if frames.len() != clip.frames {
        return Err(encoder_error(format!(
            "{} packets for {} frames",
            frames.len(),
            clip.frames
        )));
    }
    let mut codec_config = ctx.container_sequence_header();
    // Matroska's AV1 mapping wants the sequence header OBU in CodecPrivate too.
    if let Some(header) = sequence_header {
        codec_config.extend_from_slice(&header);
    }
    Ok(Av1Stream {
        width,
        height,
        codec_config,
        frames,
    })
}

/// The first sequence header OBU (with its header and size field) in a temporal unit.
fn find_sequence_header(mut data: &[u8]) -> Option<&[u8]> {
    const OBU_SEQUENCE_HEADER: u8 = 1;
    while let Some(&header) = data.first() {
        let obu_type = (header >> 3) & 0x0f;
        let has_extension = header & 0x04 != 0;
        let has_size = header & 0x02 != 0;
        if !has_size {
            return None;
        }
        let header_len = 1 + usize::from(has_extension);
        let (payload_len, leb_len) = read_leb128(data.get(header_len..)?)?;
        let total = header_len + leb_len + payload_len;
        let obu = data.get(..total)?;
        if obu_type == OBU_SEQUENCE_HEADER {
            return Some(obu);
        }
        data = &data[total..];
    }
    None
}

/// Reads an unsigned LEB128 value; returns it and the number of bytes used.
fn read_leb128(data: &[u8]) -> Option<(usize, usize)> {
    let mut value: usize = 0;
    for (index, &byte) in data.iter().take(8).enumerate() {
        value |= usize::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, index + 1));
        }
    }
    None
}
