//! H.264 through OpenH264's raw API.
//!
//! The safe `openh264` wrapper always runs a bitrate controller and ignores a fixed QP, so
//! this module drives the C++ encoder directly: rate control off and adaptive quantisation
//! off, which makes every frame use exactly the QP given (`iDLayerQp`). High profile with
//! CABAC, one reference frame stream with no B-frames (decode order = display order), an
//! IDR every two seconds, and BT.709 limited-range colour signalled in the SPS VUI.

use std::ffi::c_void;
use std::ptr;

use openh264_sys2 as sys;

use super::yuv::{rgb_to_yuv420, Yuv420};
use super::{RgbClip, VideoError};

/// The encoded stream: parameter sets for the `avcC` box and one access unit per frame.
pub(super) struct H264Stream {
    pub width: usize,
    pub height: usize,
    pub sps: Vec<u8>,
    pub pps: Vec<u8>,
    pub samples: Vec<Sample>,
}

/// One frame: NAL units, each preceded by its 4-byte big-endian length (the `avcC` layout).
pub(super) struct Sample {
    pub data: Vec<u8>,
    pub keyframe: bool,
}

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;

fn encoder_error(detail: impl Into<String>) -> VideoError {
    VideoError::Encoder {
        codec: "H.264 (OpenH264)",
        detail: detail.into(),
    }
}

/// Owns an `ISVCEncoder` and releases it on drop.
struct Encoder {
    raw: *mut sys::ISVCEncoder,
    vtable: sys::ISVCEncoderVtbl,
}

impl Encoder {
    fn create() -> Result<Self, VideoError> {
        let mut raw: *mut sys::ISVCEncoder = ptr::null_mut();
        // SAFETY: WelsCreateSVCEncoder writes a new encoder pointer (or leaves it null).
        let rc = unsafe { sys::source::APILoader::WelsCreateSVCEncoder(&mut raw) };
        if rc != 0 || raw.is_null() {
            return Err(encoder_error(format!("WelsCreateSVCEncoder returned {rc}")));
        }
        // SAFETY: a non-null encoder points at a valid vtable pointer for its whole life.
        let vtable = unsafe { **raw };
        Ok(Encoder { raw, vtable })
    }

    fn call<T>(&self, name: &str, f: Option<T>) -> Result<T, VideoError> {
        f.ok_or_else(|| encoder_error(format!("the encoder has no {name} entry")))
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        // SAFETY: `raw` came from WelsCreateSVCEncoder and is released exactly once.
        unsafe {
            if let Some(uninitialize) = self.vtable.Uninitialize {
                uninitialize(self.raw);
            }
            sys::source::APILoader::WelsDestroySVCEncoder(self.raw);
        }
    }
}

/// Encodes the clip at a constant `qp` (0–51) with up to `threads` slice threads.
pub(super) fn encode(
    clip: &RgbClip<'_>,
    fps: u32,
    qp: u8,
    threads: usize,
) -> Result<H264Stream, VideoError> {
    let (width, height) = clip.coded_size();
    let encoder = Encoder::create()?;

    // SAFETY: SEncParamExt is a plain C struct; GetDefaultParams fills every field.
    let mut params: sys::SEncParamExt = unsafe { std::mem::zeroed() };
    let get_default_params = encoder.call("GetDefaultParams", encoder.vtable.GetDefaultParams)?;
    // SAFETY: valid encoder and a writable params struct.
    let rc = unsafe { get_default_params(encoder.raw, &mut params) };
    if rc != 0 {
        return Err(encoder_error(format!("GetDefaultParams returned {rc}")));
    }

    params.iUsageType = sys::CAMERA_VIDEO_REAL_TIME;
    params.iPicWidth = width as i32;
    params.iPicHeight = height as i32;
    params.fMaxFrameRate = fps as f32;
    params.iRCMode = sys::RC_OFF_MODE;
    // Ignored with rate control off, but validated: keep them plausible.
    params.iTargetBitrate = 50_000_000;
    params.iMaxBitrate = sys::UNSPECIFIED_BIT_RATE as i32;
    params.bEnableFrameSkip = false;
    params.bEnableAdaptiveQuant = false;
    params.bEnableBackgroundDetection = false;
    params.bEnableDenoise = false;
    params.bEnableSceneChangeDetect = true;
    params.iMinQp = i32::from(qp);
    params.iMaxQp = i32::from(qp);
    params.iTemporalLayerNum = 1;
    params.iSpatialLayerNum = 1;
    params.uiIntraPeriod = fps * 2;
    params.iNumRefFrame = 1;
    // One SPS/PPS for the whole clip, so the `avcC` box holds the only copy.
    params.eSpsPpsIdStrategy = sys::CONSTANT_ID;
    params.bPrefixNalAddingCtrl = false;
    params.bEnableSSEI = false;
    params.iEntropyCodingModeFlag = 1;
    params.iComplexityMode = sys::MEDIUM_COMPLEXITY;
    params.iMultipleThreadIdc = threads.clamp(1, 4) as u16;
    // Load balancing moves slice boundaries by measured timing: output would vary per run.
    params.bUseLoadBalancing = false;

    let layer = &mut params.sSpatialLayers[0];
    layer.iVideoWidth = width as i32;
    layer.iVideoHeight = height as i32;
    layer.fFrameRate = fps as f32;
    layer.iSpatialBitrate = params.iTargetBitrate;
    layer.iMaxSpatialBitrate = sys::UNSPECIFIED_BIT_RATE as i32;
    layer.uiProfileIdc = sys::PRO_HIGH;
    layer.uiLevelIdc = sys::LEVEL_UNKNOWN;
    layer.iDLayerQp = i32::from(qp);
    // One slice per thread (at most one per two macroblock rows) so threads have work.
    let mb_rows = height.div_ceil(16);
    let slices = threads.clamp(1, 4).min(mb_rows.div_ceil(2)).max(1);
    if slices > 1 {
        layer.sSliceArgument.uiSliceMode = sys::SM_FIXEDSLCNUM_SLICE;
        layer.sSliceArgument.uiSliceNum = slices as u32;
    } else {
        layer.sSliceArgument.uiSliceMode = sys::SM_SINGLE_SLICE;
        layer.sSliceArgument.uiSliceNum = 1;
        params.iMultipleThreadIdc = 1;
    }
    layer.bVideoSignalTypePresent = true;
    layer.uiVideoFormat = sys::VF_UNDEF as u8;
    layer.bFullRange = false;
    layer.bColorDescriptionPresent = true;
    layer.uiColorPrimaries = sys::CP_BT709 as u8;
    layer.uiTransferCharacteristics = sys::TRC_BT709 as u8;
    layer.uiColorMatrix = sys::CM_BT709 as u8;

    let set_option = encoder.call("SetOption", encoder.vtable.SetOption)?;
    let mut trace_level: i32 = sys::WELS_LOG_QUIET;
    // SAFETY: TRACE_LEVEL reads one int through the pointer.
    unsafe {
        set_option(
            encoder.raw,
            sys::ENCODER_OPTION_TRACE_LEVEL,
            (&mut trace_level as *mut i32).cast::<c_void>(),
        )
    };
    let initialize_ext = encoder.call("InitializeExt", encoder.vtable.InitializeExt)?;
    // SAFETY: valid encoder and fully initialised params.
    let rc = unsafe { initialize_ext(encoder.raw, &params) };
    if rc != 0 {
        return Err(encoder_error(format!(
            "InitializeExt returned {rc} for {width}x{height} at {fps} fps"
        )));
    }
    let mut data_format: i32 = sys::videoFormatI420;
    // SAFETY: DATAFORMAT reads one int through the pointer.
    unsafe {
        set_option(
            encoder.raw,
            sys::ENCODER_OPTION_DATAFORMAT,
            (&mut data_format as *mut i32).cast::<c_void>(),
        )
    };

    let encode_frame = encoder.call("EncodeFrame", encoder.vtable.EncodeFrame)?;
    let mut picture = Yuv420::new(width, height);
    let mut stream = H264Stream {
        width,
        height,
        sps: Vec::new(),
        pps: Vec::new(),
        samples: Vec::with_capacity(clip.frames),
    };
    for index in 0..clip.frames {
        rgb_to_yuv420(clip.frame(index), clip.width, clip.height, &mut picture);
        // SAFETY: SSourcePicture is a plain C struct; all fields used are set below.
        let mut source: sys::SSourcePicture = unsafe { std::mem::zeroed() };
        source.iColorFormat = sys::videoFormatI420;
        source.iPicWidth = width as i32;
        source.iPicHeight = height as i32;
        source.iStride[0] = width as i32;
        source.iStride[1] = picture.chroma_width() as i32;
        source.iStride[2] = picture.chroma_width() as i32;
        // OpenH264 only reads the input planes despite the mutable pointers.
        source.pData[0] = picture.y.as_mut_ptr();
        source.pData[1] = picture.u.as_mut_ptr();
        source.pData[2] = picture.v.as_mut_ptr();
        source.uiTimeStamp = (index as i64 * 1000) / i64::from(fps);
        let mut info = sys::SFrameBSInfo::default();
        // SAFETY: the planes outlive the call and match the declared size and strides.
        let rc = unsafe { encode_frame(encoder.raw, &source, &mut info) };
        if rc != 0 {
            return Err(encoder_error(format!(
                "EncodeFrame returned {rc} on frame {index}"
            )));
        }
        if info.eFrameType == sys::videoFrameTypeSkip
            || info.eFrameType == sys::videoFrameTypeInvalid
        {
            return Err(encoder_error(format!("frame {index} was skipped")));
        }
        let sample = collect_access_unit(&info, &mut stream)?;
        stream.samples.push(sample);
    }
    if stream.sps.is_empty() || stream.pps.is_empty() {
        return Err(encoder_error("no SPS/PPS in the first access unit"));
    }
    Ok(stream)
}

/// Turns OpenH264's Annex B layers into one length-prefixed access unit, moving the
/// parameter sets into the stream header.
fn collect_access_unit(
    info: &sys::SFrameBSInfo,
    stream: &mut H264Stream,
) -> Result<Sample, VideoError> {
    let mut data = Vec::new();
    let mut keyframe = false;
    let layer_count = usize::try_from(info.iLayerNum)
        .unwrap_or(0)
        .min(info.sLayerInfo.len());
    for layer in &info.sLayerInfo[..layer_count] {
        let nal_count = usize::try_from(layer.iNalCount).unwrap_or(0);
        if nal_count == 0 || layer.pBsBuf.is_null() || layer.pNalLengthInByte.is_null() {
            continue;
        }
        // SAFETY: OpenH264 reports `iNalCount` lengths for a buffer it owns until the next call.
        let lengths = unsafe { std::slice::from_raw_parts(layer.pNalLengthInByte, nal_count) };
        let total: usize = lengths
            .iter()
            .map(|&len| usize::try_from(len).unwrap_or(0))
            .sum();
        // SAFETY: the layer's NAL units are stored back to back in `pBsBuf`.
        let mut bytes = unsafe { std::slice::from_raw_parts(layer.pBsBuf, total) };
        for &len in lengths {
            let (nal_with_start_code, rest) = bytes.split_at(usize::try_from(len).unwrap_or(0));
            bytes = rest;
            let nal = strip_start_code(nal_with_start_code);
            let Some(&header) = nal.first() else { continue };
            match header & 0x1f {
                NAL_SPS if stream.sps.is_empty() => stream.sps = nal.to_vec(),
                NAL_PPS if stream.pps.is_empty() => stream.pps = nal.to_vec(),
                // Repeats at later IDRs are identical (constant ids); the header has them.
                NAL_SPS if stream.sps == nal => {}
                NAL_PPS if stream.pps == nal => {}
                kind => {
                    keyframe |= kind == NAL_IDR;
                    let len = u32::try_from(nal.len()).map_err(|_| VideoError::TooLarge)?;
                    data.extend_from_slice(&len.to_be_bytes());
                    data.extend_from_slice(nal);
                }
            }
        }
    }
    if data.is_empty() {
        return Err(encoder_error("an access unit held no picture data"));
    }
    Ok(Sample { data, keyframe })
}

fn strip_start_code(nal: &[u8]) -> &[u8] {
    if let Some(rest) = nal.strip_prefix(&[0, 0, 0, 1]) {
        rest
    } else if let Some(rest) = nal.strip_prefix(&[0, 0, 1]) {
        rest
    } else {
        nal
    }
}
