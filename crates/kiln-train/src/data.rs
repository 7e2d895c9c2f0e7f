//! The training data stream: scenes of the training split rendered on the fly. A batch is
//! a pure function of (seed, step), so a resumed run sees exactly the batches an
//! uninterrupted one would, and no data set is stored anywhere.

use candle_core::{Device, Tensor};
use kiln_world::{
    caption, render, sample_scene_with, CameraMotion, Split, SplitMix64, MAX_OBJECTS,
};

use crate::error::Result;
use crate::sizes::{ClipGeometry, CAMERA_DIM};

/// Independent random streams derived from one seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Scenes = 1,
    Conditioning = 2,
    Noise = 3,
    Initialisation = 4,
    LatentStatistics = 5,
}

/// The generator for `stream` at `step` of a run seeded with `seed`.
pub fn rng_for(seed: u64, step: u64, stream: Stream) -> SplitMix64 {
    // Three rounds of SplitMix64 finalisation keep nearby (seed, step) pairs unrelated.
    let mut mix = SplitMix64::new(seed);
    let a = mix.next_u64();
    let mut mix = SplitMix64::new(a ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
    let b = mix.next_u64();
    SplitMix64::new(b ^ (stream as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// One step's clips, all of one size and length.
pub struct ClipBatch {
    /// (B, 3, F, H, W) f32 in [-1, 1]
    pub video: Tensor,
    pub width: usize,
    pub height: usize,
    pub frames: usize,
    pub captions: Vec<String>,
    /// Per clip: F*H*W object ids (0 background, i+1 object i).
    pub object_ids: Vec<Vec<u8>>,
    /// Per clip: the camera as [horizontal, vertical, pan, tilt, roll, zoom] / 10 and a
    /// final 1 meaning "camera given" (see docs/bundled-model.md).
    pub camera: Vec<[f32; CAMERA_DIM]>,
    pub camera_static: Vec<bool>,
    pub object_count: Vec<usize>,
}

/// The camera-control vector of a camera motion.
pub fn camera_vector(camera: CameraMotion) -> [f32; CAMERA_DIM] {
    let axes = camera.axes().to_array();
    let mut v = [0f32; CAMERA_DIM];
    for (slot, a) in v.iter_mut().zip(axes) {
        *slot = f32::from(a) / 10.0;
    }
    v[CAMERA_DIM - 1] = 1.0;
    v
}

/// RGB8 frames (F*H*W*3) to (3, F, H, W) f32 in [-1, 1].
pub fn frames_to_chw(frames: &[u8], frame_count: usize, height: usize, width: usize) -> Vec<f32> {
    let plane = frame_count * height * width;
    let mut out = vec![0f32; 3 * plane];
    for (p, px) in frames.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * plane + p] = f32::from(px[c]) / 127.5 - 1.0;
        }
    }
    out
}

/// The batch of `step`: `batch` training-split scenes, one size and frame count drawn
/// for the whole batch.
pub fn clip_batch(
    geometry: &ClipGeometry,
    seed: u64,
    step: u64,
    batch: usize,
    stream: Stream,
    device: &Device,
) -> Result<ClipBatch> {
    let mut rng = rng_for(seed, step, stream);
    let (width, height) = geometry.sizes[rng.below(geometry.sizes.len() as u64) as usize];
    let frames = geometry.frame_counts[rng.below(geometry.frame_counts.len() as u64) as usize];
    let (w, h) = (width as usize, height as usize);
    let mut video = Vec::with_capacity(batch * 3 * frames * h * w);
    let mut out = ClipBatch {
        video: Tensor::zeros(1, candle_core::DType::F32, device)?,
        width: w,
        height: h,
        frames,
        captions: Vec::with_capacity(batch),
        object_ids: Vec::with_capacity(batch),
        camera: Vec::with_capacity(batch),
        camera_static: Vec::with_capacity(batch),
        object_count: Vec::with_capacity(batch),
    };
    let max_objects = geometry.max_objects.unwrap_or(MAX_OBJECTS);
    for _ in 0..batch {
        let scene_seed = match geometry.scene_pool {
            Some(pool) => rng.below(pool),
            None => rng.next_u64(),
        };
        let spec = sample_scene_with(scene_seed, Split::Train, max_objects);
        let clip = render(&spec, width, height, frames, geometry.fps)?;
        video.extend(frames_to_chw(&clip.frames, frames, h, w));
        out.captions.push(caption(&spec, &mut rng));
        out.object_ids.push(clip.object_ids);
        out.camera.push(camera_vector(spec.camera));
        out.camera_static.push(spec.camera.axes().is_zero());
        out.object_count.push(spec.objects.len());
    }
    out.video = Tensor::from_vec(video, (batch, 3, frames, h, w), device)?;
    Ok(out)
}

/// `n` standard normal values from `rng`.
pub fn gaussian(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.gaussian()).collect()
}
