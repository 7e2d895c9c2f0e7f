//! A minimal WebM (Matroska subset) writer for one AV1 video track.
//!
//! Layout: EBML header, then a Segment holding Info, Tracks, Cues and Clusters. The whole
//! file is built in memory, so every size is known and the cues can precede the clusters
//! (playback and seeking start without reading to the end). Timestamps are in milliseconds
//! (the standard 1 ms timestamp scale); `DefaultDuration` gives every frame, the last one
//! included, exactly `1/fps` s, and `Duration` is the exact float `frames * 1000 / fps`.
//! A cluster starts at every key frame, so each cue points at a cluster that begins with
//! one.

use super::av1::Av1Stream;
use super::VideoError;

const EBML: u32 = 0x1A45_DFA3;
const EBML_VERSION: u32 = 0x4286;
const EBML_READ_VERSION: u32 = 0x42F7;
const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
const DOC_TYPE: u32 = 0x4282;
const DOC_TYPE_VERSION: u32 = 0x4287;
const DOC_TYPE_READ_VERSION: u32 = 0x4285;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
const DURATION: u32 = 0x4489;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const CODEC_ID: u32 = 0x86;
const LANGUAGE: u32 = 0x22_B59C;
const CODEC_PRIVATE: u32 = 0x63A2;
const DEFAULT_DURATION: u32 = 0x23_E383;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const COLOUR: u32 = 0x55B0;
const MATRIX_COEFFICIENTS: u32 = 0x55B1;
const RANGE: u32 = 0x55B9;
const TRANSFER_CHARACTERISTICS: u32 = 0x55BA;
const PRIMARIES: u32 = 0x55BB;
const CUES: u32 = 0x1C53_BB6B;
const CUE_POINT: u32 = 0xBB;
const CUE_TIME: u32 = 0xB3;
const CUE_TRACK_POSITIONS: u32 = 0xB7;
const CUE_TRACK: u32 = 0xF7;
const CUE_CLUSTER_POSITION: u32 = 0xF1;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMESTAMP: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;

const NANOS_PER_TICK: u64 = 1_000_000;
/// Block timestamps are signed 16-bit offsets from their cluster's timestamp.
const MAX_CLUSTER_SPAN_MS: u64 = 30_000;
const TRACK: u64 = 1;
/// Matroska `Range` 1: broadcast (limited) range; colour codes as in ISO 23091-2.
const RANGE_BROADCAST: u64 = 1;
const BT709: u64 = 1;

/// Appends EBML elements; master elements get an 8-byte size patched on close.
struct EbmlWriter {
    buf: Vec<u8>,
}

impl EbmlWriter {
    fn new() -> Self {
        EbmlWriter { buf: Vec::new() }
    }

    fn id(&mut self, id: u32) {
        let bytes = id.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        self.buf.extend_from_slice(&bytes[skip..]);
    }

    fn size(&mut self, size: u64) {
        // Shortest vint that can hold `size` (all-ones values are reserved for "unknown").
        let mut len = 1;
        while len < 8 && size >= (1u64 << (7 * len)) - 1 {
            len += 1;
        }
        let marked = size | (1u64 << (7 * len));
        self.buf.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
    }

    fn open(&mut self, id: u32) -> usize {
        self.id(id);
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0x01, 0, 0, 0, 0, 0, 0, 0]);
        start
    }

    fn close(&mut self, start: usize) {
        let size = (self.buf.len() - start - 8) as u64;
        let mut bytes = size.to_be_bytes();
        bytes[0] = 0x01;
        self.buf[start..start + 8].copy_from_slice(&bytes);
    }

    fn uint(&mut self, id: u32, value: u64) {
        let bytes = value.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count().min(7);
        self.id(id);
        self.size((8 - skip) as u64);
        self.buf.extend_from_slice(&bytes[skip..]);
    }

    /// An unsigned integer always stored in 8 bytes, so its element size is fixed.
    fn uint_fixed(&mut self, id: u32, value: u64) {
        self.id(id);
        self.size(8);
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    fn float(&mut self, id: u32, value: f64) {
        self.id(id);
        self.size(8);
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    fn binary(&mut self, id: u32, value: &[u8]) {
        self.id(id);
        self.size(value.len() as u64);
        self.buf.extend_from_slice(value);
    }
}

/// The timestamp of frame `index` in milliseconds (rounded to the nearest).
fn frame_millis(index: usize, fps: u32) -> u64 {
    (index as u64 * 1000 + u64::from(fps) / 2) / u64::from(fps)
}

/// Writes a complete WebM file holding `stream` at `fps` frames per second.
pub(super) fn write_av1_webm(stream: &Av1Stream, fps: u32) -> Result<Vec<u8>, VideoError> {
    // Clusters first, into their own buffer, remembering where each starts.
    let mut clusters = EbmlWriter::new();
    let mut cue_points: Vec<(u64, usize)> = Vec::new();
    let mut open_cluster: Option<(usize, u64)> = None;
    for (index, frame) in stream.frames.iter().enumerate() {
        let time = frame_millis(index, fps);
        let needs_new = match open_cluster {
            None => true,
            Some((_, start_time)) => frame.keyframe || time - start_time > MAX_CLUSTER_SPAN_MS,
        };
        if needs_new {
            if let Some((start, _)) = open_cluster.take() {
                clusters.close(start);
            }
            let position = clusters.buf.len();
            if frame.keyframe {
                cue_points.push((time, position));
            }
            let start = clusters.open(CLUSTER);
            clusters.uint(CLUSTER_TIMESTAMP, time);
            open_cluster = Some((start, time));
        }
        let cluster_time = open_cluster.map_or(0, |(_, start_time)| start_time);
        let relative = i16::try_from(time - cluster_time).map_err(|_| VideoError::TooLarge)?;
        clusters.id(SIMPLE_BLOCK);
        clusters.size(4 + frame.data.len() as u64);
        clusters.buf.push(0x80 | TRACK as u8); // track number as a 1-byte vint
        clusters.buf.extend_from_slice(&relative.to_be_bytes());
        clusters.buf.push(if frame.keyframe { 0x80 } else { 0x00 });
        clusters.buf.extend_from_slice(&frame.data);
    }
    if let Some((start, _)) = open_cluster {
        clusters.close(start);
    }

    let mut head = EbmlWriter::new();
    let info = head.open(INFO);
    head.uint(TIMESTAMP_SCALE, NANOS_PER_TICK);
    head.float(
        DURATION,
        stream.frames.len() as f64 * 1000.0 / f64::from(fps),
    );
    head.binary(MUXING_APP, b"kiln");
    head.binary(WRITING_APP, b"kiln");
    head.close(info);

    let tracks = head.open(TRACKS);
    let entry = head.open(TRACK_ENTRY);
    head.uint(TRACK_NUMBER, TRACK);
    head.uint(TRACK_UID, TRACK);
    head.uint(TRACK_TYPE, 1); // video
    head.uint(FLAG_LACING, 0);
    head.binary(LANGUAGE, b"und"); // Matroska's default would claim English
    head.binary(CODEC_ID, b"V_AV1");
    head.binary(CODEC_PRIVATE, &stream.codec_config);
    head.uint(
        DEFAULT_DURATION,
        (1_000_000_000 + u64::from(fps) / 2) / u64::from(fps),
    );
    let video = head.open(VIDEO);
    head.uint(PIXEL_WIDTH, stream.width as u64);
    head.uint(PIXEL_HEIGHT, stream.height as u64);
    let colour = head.open(COLOUR);
    head.uint(MATRIX_COEFFICIENTS, BT709);
    head.uint(RANGE, RANGE_BROADCAST);
    head.uint(TRANSFER_CHARACTERISTICS, BT709);
    head.uint(PRIMARIES, BT709);
    head.close(colour);
    head.close(video);
    head.close(entry);
    head.close(tracks);

    // Cue positions are relative to the segment's payload; every element here has a fixed
    // size, so the cues' own size is known before the positions are.
    let mut cues = EbmlWriter::new();
    let write_cues = |cues: &mut EbmlWriter, clusters_offset: usize| {
        cues.buf.clear();
        let cues_start = cues.open(CUES);
        for &(time, position) in &cue_points {
            let point = cues.open(CUE_POINT);
            cues.uint_fixed(CUE_TIME, time);
            let positions = cues.open(CUE_TRACK_POSITIONS);
            cues.uint_fixed(CUE_TRACK, TRACK);
            cues.uint_fixed(CUE_CLUSTER_POSITION, (clusters_offset + position) as u64);
            cues.close(positions);
            cues.close(point);
        }
        cues.close(cues_start);
    };
    write_cues(&mut cues, 0);
    let clusters_offset = head.buf.len() + cues.buf.len();
    write_cues(&mut cues, clusters_offset);

    let mut file = EbmlWriter::new();
    let header = file.open(EBML);
    file.uint(EBML_VERSION, 1);
    file.uint(EBML_READ_VERSION, 1);
    file.uint(EBML_MAX_ID_LENGTH, 4);
    file.uint(EBML_MAX_SIZE_LENGTH, 8);
    file.binary(DOC_TYPE, b"webm");
    file.uint(DOC_TYPE_VERSION, 4);
    file.uint(DOC_TYPE_READ_VERSION, 2);
    file.close(header);
    let segment = file.open(SEGMENT);
    file.buf.extend_from_slice(&head.buf);
    file.buf.extend_from_slice(&cues.buf);
    file.buf.extend_from_slice(&clusters.buf);
    file.close(segment);
    Ok(file.buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_use_the_shortest_vint() {
        let mut w = EbmlWriter::new();
        w.size(0);
        w.size(126);
        w.size(127); // 0x7f alone would mean "unknown size"
        w.size(300);
        assert_eq!(w.buf, vec![0x80, 0xfe, 0x40, 0x7f, 0x41, 0x2c]);
    }

    #[test]
    fn frame_times_round_to_the_nearest_millisecond() {
        assert_eq!(frame_millis(0, 24), 0);
        assert_eq!(frame_millis(1, 24), 42);
        assert_eq!(frame_millis(2, 24), 83);
        assert_eq!(frame_millis(120, 24), 5000);
    }
}
