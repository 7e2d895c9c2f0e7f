//! A minimal ISO-BMFF (MP4) / QuickTime (MOV) writer for one H.264 video track.
//!
//! Layout: `ftyp`, `moov`, `mdat` ("faststart": the index comes first so playback can
//! begin while the file downloads). All samples sit in one chunk. The media timescale is
//! `fps * 1000` and every sample lasts exactly 1000 ticks, the last one included, so the
//! track duration is exactly `frames / fps`; an edit list maps the whole media 1:1 (no
//! B-frames, so no composition offsets are needed). MP4 and MOV differ only in the brand,
//! the handler boxes, the data reference and the colour box flavour (`nclx` vs `nclc`).

use super::h264::H264Stream;
use super::VideoError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Brand {
    Mp4,
    QuickTime,
}

/// Ticks per frame; the timescale is `fps * TICKS_PER_FRAME`.
const TICKS_PER_FRAME: u32 = 1000;

/// BT.709 primaries, transfer and matrix (the codes shared by H.264 VUI and ISO 23091-2).
const COLOUR_BT709: u16 = 1;

/// Appends boxes to a byte buffer, patching each box's size when it is closed.
struct BoxWriter {
    buf: Vec<u8>,
}

impl BoxWriter {
    fn new() -> Self {
        BoxWriter { buf: Vec::new() }
    }

    fn open(&mut self, kind: &[u8; 4]) -> usize {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.buf.extend_from_slice(kind);
        start
    }

    fn open_full(&mut self, kind: &[u8; 4], version: u8, flags: u32) -> usize {
        let start = self.open(kind);
        self.u32((u32::from(version) << 24) | (flags & 0x00ff_ffff));
        start
    }

    fn close(&mut self, start: usize) -> Result<(), VideoError> {
        let size = u32::try_from(self.buf.len() - start).map_err(|_| VideoError::TooLarge)?;
        self.buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
        Ok(())
    }

    fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }
    fn u16(&mut self, value: u16) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }
    fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }
    fn bytes(&mut self, value: &[u8]) {
        self.buf.extend_from_slice(value);
    }
    fn zeros(&mut self, count: usize) {
        self.buf.resize(self.buf.len() + count, 0);
    }
    /// The identity transformation matrix of `mvhd`/`tkhd`.
    fn unity_matrix(&mut self) {
        for value in [0x0001_0000, 0, 0, 0, 0x0001_0000, 0, 0, 0, 0x4000_0000u32] {
            self.u32(value);
        }
    }
}

/// Writes a complete MP4 or MOV file holding `stream` at `fps` frames per second.
pub(super) fn write_h264_movie(
    brand: Brand,
    stream: &H264Stream,
    fps: u32,
) -> Result<Vec<u8>, VideoError> {
    let ftyp = build_ftyp(brand);
    let payload: usize = stream.samples.iter().map(|sample| sample.data.len()).sum();
    // The chunk offset depends on the size of `moov`, which does not depend on the offset
    // value: build once to measure, then again with the real offset.
    let probe = build_moov(brand, stream, fps, 0)?;
    let mdat_header = 8;
    let data_offset = ftyp.len() + probe.len() + mdat_header;
    let data_offset_u32 = u32::try_from(data_offset).map_err(|_| VideoError::TooLarge)?;
    let moov = build_moov(brand, stream, fps, data_offset_u32)?;
    debug_assert_eq!(moov.len(), probe.len());
    let mdat_size = u32::try_from(payload + mdat_header).map_err(|_| VideoError::TooLarge)?;
    u32::try_from(data_offset + payload).map_err(|_| VideoError::TooLarge)?;

    let mut file = Vec::with_capacity(data_offset + payload);
    file.extend_from_slice(&ftyp);
    file.extend_from_slice(&moov);
    file.extend_from_slice(&mdat_size.to_be_bytes());
    file.extend_from_slice(b"mdat");
    for sample in &stream.samples {
        file.extend_from_slice(&sample.data);
    }
    Ok(file)
}

fn build_ftyp(brand: Brand) -> Vec<u8> {
    let mut w = BoxWriter::new();
    let start = w.open(b"ftyp");
    match brand {
        Brand::Mp4 => {
            w.bytes(b"isom");
            w.u32(0x200);
            for compatible in [b"isom", b"iso2", b"avc1", b"mp41"] {
                w.bytes(compatible);
            }
        }
        Brand::QuickTime => {
            w.bytes(b"qt  ");
            w.u32(0x0000_0200);
            w.bytes(b"qt  ");
        }
    }
    w.close(start).expect("ftyp is tiny");
    w.buf
}

fn build_moov(
    brand: Brand,
    stream: &H264Stream,
    fps: u32,
    data_offset: u32,
) -> Result<Vec<u8>, VideoError> {
    let timescale = fps * TICKS_PER_FRAME;
    let frames = u32::try_from(stream.samples.len()).map_err(|_| VideoError::TooLarge)?;
    let duration = frames
        .checked_mul(TICKS_PER_FRAME)
        .ok_or(VideoError::TooLarge)?;
    let width = u16::try_from(stream.width).map_err(|_| VideoError::TooLarge)?;
    let height = u16::try_from(stream.height).map_err(|_| VideoError::TooLarge)?;

    let mut w = BoxWriter::new();
    let moov = w.open(b"moov");

    let mvhd = w.open_full(b"mvhd", 0, 0);
    w.u32(0); // creation time: left unset so identical input gives identical files
    w.u32(0); // modification time
    w.u32(timescale);
    w.u32(duration);
    w.u32(0x0001_0000); // rate 1.0
    w.u16(0x0100); // volume 1.0
    w.zeros(10);
    w.unity_matrix();
    w.zeros(24); // pre-defined (MP4) / preview, poster, selection, current time (MOV)
    w.u32(2); // next track id
    w.close(mvhd)?;

    let trak = w.open(b"trak");
    let tkhd = w.open_full(b"tkhd", 0, 0x3); // enabled, in movie
    w.u32(0);
    w.u32(0);
    w.u32(1); // track id
    w.u32(0);
    w.u32(duration); // in the movie timescale, which equals the media timescale
    w.zeros(8);
    w.u16(0); // layer
    w.u16(0); // alternate group
    w.u16(0); // volume: 0 for video
    w.u16(0);
    w.unity_matrix();
    w.u32(u32::from(width) << 16);
    w.u32(u32::from(height) << 16);
    w.close(tkhd)?;

    let edts = w.open(b"edts");
    let elst = w.open_full(b"elst", 0, 0);
    w.u32(1);
    w.u32(duration); // segment duration (movie timescale)
    w.u32(0); // media time: start of the media
    w.u32(0x0001_0000); // rate 1.0
    w.close(elst)?;
    w.close(edts)?;

    let mdia = w.open(b"mdia");
    let mdhd = w.open_full(b"mdhd", 0, 0);
    w.u32(0);
    w.u32(0);
    w.u32(timescale);
    w.u32(duration);
    w.u16(0x55c4); // ISO 639-2 "und", packed
    w.u16(0);
    w.close(mdhd)?;
    write_hdlr(&mut w, brand, b"mhlr", b"vide", "VideoHandler")?;

    let minf = w.open(b"minf");
    let vmhd = w.open_full(b"vmhd", 0, 1);
    w.zeros(8); // graphics mode + opcolor
    w.close(vmhd)?;
    if brand == Brand::QuickTime {
        // QuickTime names the data handler too.
        write_hdlr(&mut w, brand, b"dhlr", b"alis", "DataHandler")?;
    }
    let dinf = w.open(b"dinf");
    let dref = w.open_full(b"dref", 0, 0);
    w.u32(1);
    let entry = if brand == Brand::QuickTime {
        b"alis"
    } else {
        b"url "
    };
    let url = w.open_full(entry, 0, 1); // flag 1: the media is in this file
    w.close(url)?;
    w.close(dref)?;
    w.close(dinf)?;

    let stbl = w.open(b"stbl");
    write_stsd(&mut w, brand, stream, width, height)?;

    let stts = w.open_full(b"stts", 0, 0);
    w.u32(1);
    w.u32(frames);
    w.u32(TICKS_PER_FRAME);
    w.close(stts)?;

    let stss = w.open_full(b"stss", 0, 0);
    let sync: Vec<u32> = (1..=frames)
        .zip(&stream.samples)
        .filter(|(_, sample)| sample.keyframe)
        .map(|(number, _)| number)
        .collect();
    w.u32(sync.len() as u32);
    for number in sync {
        w.u32(number);
    }
    w.close(stss)?;

    let stsc = w.open_full(b"stsc", 0, 0);
    w.u32(1);
    w.u32(1); // first chunk
    w.u32(frames); // samples per chunk: all in one
    w.u32(1); // sample description index
    w.close(stsc)?;

    let stsz = w.open_full(b"stsz", 0, 0);
    w.u32(0); // sizes differ: one entry each
    w.u32(frames);
    for sample in &stream.samples {
        w.u32(u32::try_from(sample.data.len()).map_err(|_| VideoError::TooLarge)?);
    }
    w.close(stsz)?;

    let stco = w.open_full(b"stco", 0, 0);
    w.u32(1);
    w.u32(data_offset);
    w.close(stco)?;

    w.close(stbl)?;
    w.close(minf)?;
    w.close(mdia)?;
    w.close(trak)?;
    w.close(moov)?;
    Ok(w.buf)
}

/// `hdlr`: MP4 uses the ISO layout with a C string; QuickTime names a component type and
/// uses a Pascal string.
fn write_hdlr(
    w: &mut BoxWriter,
    brand: Brand,
    component: &[u8; 4],
    handler: &[u8; 4],
    name: &str,
) -> Result<(), VideoError> {
    let hdlr = w.open_full(b"hdlr", 0, 0);
    match brand {
        Brand::Mp4 => {
            w.u32(0);
            w.bytes(handler);
            w.zeros(12);
            w.bytes(name.as_bytes());
            w.u8(0);
        }
        Brand::QuickTime => {
            w.bytes(component);
            w.bytes(handler);
            w.zeros(12); // manufacturer, flags, flags mask
            w.u8(name.len() as u8);
            w.bytes(name.as_bytes());
        }
    }
    w.close(hdlr)
}

fn write_stsd(
    w: &mut BoxWriter,
    brand: Brand,
    stream: &H264Stream,
    width: u16,
    height: u16,
) -> Result<(), VideoError> {
    let stsd = w.open_full(b"stsd", 0, 0);
    w.u32(1);
    let avc1 = w.open(b"avc1");
    w.zeros(6);
    w.u16(1); // data reference index
    w.zeros(16); // pre-defined / version, revision, vendor, temporal and spatial quality
    w.u16(width);
    w.u16(height);
    w.u32(0x0048_0000); // 72 dpi
    w.u32(0x0048_0000);
    w.u32(0);
    w.u16(1); // frames per sample
    let compressor = b"kiln H.264";
    w.u8(compressor.len() as u8);
    w.bytes(compressor);
    w.zeros(31 - compressor.len());
    w.u16(0x0018); // depth: colour, no alpha
    w.u16(0xffff); // pre-defined -1 (no colour table)

    let avcc = w.open(b"avcC");
    w.bytes(&avc_decoder_configuration(&stream.sps, &stream.pps)?);
    w.close(avcc)?;

    // Colour: the same BT.709 limited-range description as the SPS VUI. ffmpeg writes
    // `nclc` (no range flag) for MOV and `nclx` for MP4; players read both.
    let colr = w.open(b"colr");
    match brand {
        Brand::Mp4 => {
            w.bytes(b"nclx");
            w.u16(COLOUR_BT709);
            w.u16(COLOUR_BT709);
            w.u16(COLOUR_BT709);
            w.u8(0); // full_range_flag = 0: limited range
        }
        Brand::QuickTime => {
            w.bytes(b"nclc");
            w.u16(COLOUR_BT709);
            w.u16(COLOUR_BT709);
            w.u16(COLOUR_BT709);
        }
    }
    w.close(colr)?;

    let pasp = w.open(b"pasp");
    w.u32(1); // square pixels
    w.u32(1);
    w.close(pasp)?;

    w.close(avc1)?;
    w.close(stsd)
}

/// The `avcC` payload (ISO 14496-15 AVCDecoderConfigurationRecord) for one SPS and one PPS.
fn avc_decoder_configuration(sps: &[u8], pps: &[u8]) -> Result<Vec<u8>, VideoError> {
    if sps.len() < 4 {
        return Err(VideoError::Encoder {
            codec: "H.264 (OpenH264)",
            detail: format!("the SPS is {} bytes, too short", sps.len()),
        });
    }
    let mut record = vec![1, sps[1], sps[2], sps[3], 0xff, 0xe1];
    record.extend_from_slice(&(sps.len() as u16).to_be_bytes());
    record.extend_from_slice(sps);
    record.push(1);
    record.extend_from_slice(&(pps.len() as u16).to_be_bytes());
    record.extend_from_slice(pps);
    // High profiles add chroma format and bit depths: 4:2:0, 8-bit, no SPS extensions.
    if matches!(sps[1], 100 | 110 | 122 | 144) {
        record.extend_from_slice(&[0xfc | 1, 0xf8, 0xf8, 0]);
    }
    Ok(record)
}
