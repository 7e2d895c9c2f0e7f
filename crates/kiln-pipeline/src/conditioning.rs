//! The Wan image-to-video input form and kiln's camera control, as kiln's bundled model is
//! trained (docs/bundled-model.md, `kiln-train`'s `conditioning.rs` and `data.rs`).
//!
//! Such a transformer takes `2·z + 4` input channels: the noise latents, four mask channels
//! at latent resolution (1 = known) and the normalised VAE encoding of the condition video
//! (known pixels, 0 = mid-grey elsewhere). With nothing given — text-to-video — every mask
//! channel is 0 and the condition video is all 0, exactly as training builds the ≈ 25 % of
//! clips that draw no conditioning.

use candle_core::{DType, Device, Tensor};
use kiln_models::wan::vae::WanVae;

/// Mask channels of the Wan image-to-video input (one per pixel frame of a temporal group).
pub const MASK_CHANNELS: usize = 4;
/// Width of the camera-control vector: the six axes / 10, then a "camera given" flag.
pub const CAMERA_DIM: usize = 7;
/// Names of the six camera axes, in the order of `GenerateRequest::camera`.
pub const CAMERA_AXES: [&str; 6] = ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];
/// Each axis runs from −`CAMERA_LIMIT` to `CAMERA_LIMIT`, as Kling's camera_control.
pub const CAMERA_LIMIT: f64 = 10.0;

/// The camera-control vector the bundled model was trained with: each axis / 10, then 1
/// ("camera given"). Computed as kiln-train's `camera_vector` does (in f32), so integer
/// axes give bit for bit the training values.
pub fn camera_vector(axes: [f64; 6]) -> [f32; CAMERA_DIM] {
    let mut v = [0f32; CAMERA_DIM];
    for (slot, a) in v.iter_mut().zip(axes) {
        *slot = a as f32 / 10.0;
    }
    v[CAMERA_DIM - 1] = 1.0;
    v
}

/// Mask channels and condition latents, (1, 4 + z, F', H/8, W/8) in `dtype`, for a clip
/// of which nothing is known: zero masks and the normalised encoding of an all-0 video.
pub(crate) fn nothing_given(
    vae: &WanVae,
    frames: usize,
    height: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    given(
        vae,
        &VideoConditions::default(),
        frames,
        height,
        width,
        dtype,
        device,
    )
}

/// Pixels of the first frame carried along a path: Kling's `dynamic_masks` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicMask {
    /// `height · width`, true on the first frame's pixels that move.
    pub mask: Vec<bool>,
    /// Positions in pixels of the clip (x to the right, y down), spread evenly over the
    /// clip; the masked pixels are displaced by `point − first point`.
    pub trajectory: Vec<[f32; 2]>,
}

/// What is known of the clip before it is generated, at the clip's size. Images are RGB8
/// `height · width · 3`; masks `height · width`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VideoConditions {
    pub first_frame: Option<Vec<u8>>,
    pub last_frame: Option<Vec<u8>>,
    /// The first frame's pixels under the mask stay as they are in every frame.
    pub static_mask: Option<Vec<bool>>,
    pub dynamic_masks: Vec<DynamicMask>,
}

impl VideoConditions {
    pub fn is_empty(&self) -> bool {
        self.first_frame.is_none()
            && self.last_frame.is_none()
            && self.static_mask.is_none()
            && self.dynamic_masks.is_empty()
    }

    /// Checks sizes and dependencies; the message names the input and the fix.
    pub fn validate(&self, height: usize, width: usize) -> Result<(), String> {
        let pixels = height * width;
        for (name, image) in [
            ("--image", &self.first_frame),
            ("--image-tail", &self.last_frame),
        ] {
            if let Some(image) = image {
                if image.len() != pixels * 3 {
                    return Err(format!(
                        "{name}: {} bytes, expected a {width}x{height} RGB image ({} bytes); resize it to the clip",
                        image.len(),
                        pixels * 3
                    ));
                }
            }
        }
        let masks = self.static_mask.iter().map(|m| ("--static-mask", m)).chain(
            self.dynamic_masks
                .iter()
                .map(|d| ("--dynamic-mask", &d.mask)),
        );
        for (name, mask) in masks {
            if mask.len() != pixels {
                return Err(format!(
                    "{name}: {} pixels, expected {width}x{height}; give a mask of the clip's size",
                    mask.len()
                ));
            }
            if self.first_frame.is_none() {
                return Err(format!(
                    "{name} marks pixels of the first frame, but no first frame is given; add --image"
                ));
            }
            if !mask.iter().any(|&m| m) {
                return Err(format!(
                    "{name} is empty (no pixel marked); mark the region in white"
                ));
            }
        }
        for d in &self.dynamic_masks {
            if d.trajectory.len() < 2 {
                return Err(format!(
                    "--dynamic-mask needs a trajectory of at least 2 points, got {}; add points as x,y;x,y",
                    d.trajectory.len()
                ));
            }
            if let Some(p) = d.trajectory.iter().find(|p| {
                !(p[0].is_finite() && p[1].is_finite())
                    || p[0] < 0.0
                    || p[1] < 0.0
                    || p[0] > width as f32
                    || p[1] > height as f32
            }) {
                return Err(format!(
                    "--dynamic-mask trajectory point ({}, {}) lies outside the {width}x{height} clip; keep points inside it",
                    p[0], p[1]
                ));
            }
        }
        Ok(())
    }

    /// The known pixels (`F·H·W`) and the condition video (`3·F·H·W`, channel-major, in
    /// [−1, 1], 0 where unknown), as training builds them.
    pub fn known_pixels(
        &self,
        frames: usize,
        height: usize,
        width: usize,
    ) -> (Vec<bool>, Vec<f32>) {
        let plane = height * width;
        let mut known = vec![false; frames * plane];
        let mut video = vec![0f32; 3 * frames * plane];
        let mut set = |t: usize, p: usize, rgb: &[u8]| {
            known[t * plane + p] = true;
            for (c, &v) in rgb.iter().enumerate() {
                video[(c * frames + t) * plane + p] = f32::from(v) / 127.5 - 1.0;
            }
        };
        if let Some(first) = &self.first_frame {
            (0..plane).for_each(|p| set(0, p, &first[3 * p..3 * p + 3]));
            if let Some(mask) = &self.static_mask {
                for t in 1..frames {
                    for p in (0..plane).filter(|&p| mask[p]) {
                        set(t, p, &first[3 * p..3 * p + 3]);
                    }
                }
            }
            for d in &self.dynamic_masks {
                let path = spread_over(&d.trajectory, frames);
                let start = path[0];
                for (t, at) in path.iter().enumerate() {
                    let (dx, dy) = ((at[0] - start[0]).round(), (at[1] - start[1]).round());
                    for p in (0..plane).filter(|&p| d.mask[p]) {
                        let x = (p % width) as f32 + dx;
                        let y = (p / width) as f32 + dy;
                        if x >= 0.0 && y >= 0.0 && (x as usize) < width && (y as usize) < height {
                            set(t, y as usize * width + x as usize, &first[3 * p..3 * p + 3]);
                        }
                    }
                }
            }
        }
        if let (Some(last), true) = (&self.last_frame, frames > 1) {
            (0..plane).for_each(|p| set(frames - 1, p, &last[3 * p..3 * p + 3]));
        }
        (known, video)
    }
}

/// One point per frame from points spread evenly over the clip, by linear interpolation.
fn spread_over(points: &[[f32; 2]], frames: usize) -> Vec<[f32; 2]> {
    if points.len() < 2 || frames < 2 {
        return vec![points.first().copied().unwrap_or([0.0, 0.0]); frames];
    }
    (0..frames)
        .map(|f| {
            let pos = f as f32 / (frames - 1) as f32 * (points.len() - 1) as f32;
            let i = (pos.floor() as usize).min(points.len() - 2);
            let u = pos - i as f32;
            let (a, b) = (points[i], points[i + 1]);
            [a[0] + (b[0] - a[0]) * u, a[1] + (b[1] - a[1]) * u]
        })
        .collect()
}

/// The four mask channels at latent resolution, `(4, F', H/s, W/s)` flattened: a latent
/// cell is known when at least half its pixels are; latent frame `i`, channel `j` is pixel
/// frame `max(0, 4i + j − 3)` (diffusers' `WanImageToVideoPipeline` grouping).
pub fn mask_channels(
    known: &[bool],
    frames: usize,
    height: usize,
    width: usize,
    spatial: usize,
    temporal: usize,
) -> Vec<f32> {
    let (lh, lw) = (height / spatial, width / spatial);
    let latent_frames = 1 + (frames - 1) / temporal;
    let cell = |t: usize, cy: usize, cx: usize| {
        let mut count = 0;
        for y in cy * spatial..(cy + 1) * spatial {
            for x in cx * spatial..(cx + 1) * spatial {
                count += usize::from(known[(t * height + y) * width + x]);
            }
        }
        if 2 * count >= spatial * spatial {
            1.0
        } else {
            0.0
        }
    };
    let mut out = Vec::with_capacity(temporal * latent_frames * lh * lw);
    for j in 0..temporal {
        for i in 0..latent_frames {
            let t = (temporal * i + j).saturating_sub(temporal - 1);
            for cy in 0..lh {
                for cx in 0..lw {
                    out.push(cell(t, cy, cx));
                }
            }
        }
    }
    out
}

/// Mask channels and condition latents, `(1, 4 + z, F', H/8, W/8)` in `dtype`, for what
/// `conditions` gives.
pub(crate) fn given(
    vae: &WanVae,
    conditions: &VideoConditions,
    frames: usize,
    height: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let (known, video) = conditions.known_pixels(frames, height, width);
    let video = Tensor::from_vec(video, (1, 3, frames, height, width), device)?;
    let latents = vae.normalize(&vae.encode(&video)?)?;
    let (_, _, f, h, w) = latents.dims5()?;
    let cfg = vae.config();
    let channels = mask_channels(
        &known,
        frames,
        height,
        width,
        cfg.spatial_compression(),
        cfg.temporal_compression(),
    );
    let mask = Tensor::from_vec(channels, (1, MASK_CHANNELS, f, h, w), device)?;
    Tensor::cat(&[&mask.to_dtype(latents.dtype())?, &latents], 1)?.to_dtype(dtype)
}

/// Axis strength of the camera presets (kiln-world renders them with the same value).
pub const PRESET_STRENGTH: f64 = 6.0;

/// The six axes of one of Kling's camera presets, by its API name.
pub fn camera_preset(name: &str) -> Option<[f64; 6]> {
    let s = PRESET_STRENGTH;
    // [horizontal, vertical, pan, tilt, roll, zoom]
    match name {
        "down_back" => Some([0.0, 0.0, 0.0, -s, 0.0, -s]),
        "forward_up" => Some([0.0, 0.0, 0.0, s, 0.0, s]),
        "right_turn_forward" => Some([0.0, 0.0, s, 0.0, 0.0, s]),
        "left_turn_forward" => Some([0.0, 0.0, -s, 0.0, 0.0, s]),
        _ => None,
    }
}

/// Preset names [`camera_preset`] knows.
pub const CAMERA_PRESETS: [&str; 4] = [
    "down_back",
    "forward_up",
    "right_turn_forward",
    "left_turn_forward",
];
