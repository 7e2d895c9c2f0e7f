//! Conditioning in the Wan image-to-video input form: per clip a pixel mask of what is
//! known (first frame, last frame, a static region, the pixels of one object along its
//! track), the condition video (known pixels, 0 elsewhere, as the reference pipeline fills
//! unknown frames), and the four mask channels at latent resolution that Wan concatenates
//! after the noise: latent frame i, channel j is pixel frame max(0, 4i + j - 3) (the first
//! frame repeated four times, then groups of four).

use candle_core::{Device, Tensor};
use kiln_world::SplitMix64;
use serde::{Deserialize, Serialize};

use crate::data::ClipBatch;
use crate::error::Result;

/// How often each kind of conditioning is given during DiT training.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConditionRates {
    pub first_frame: f32,
    pub last_frame: f32,
    /// Only drawn for clips with a still camera (otherwise nothing is static).
    pub static_region: f32,
    pub object_track: f32,
    /// Caption replaced by the empty prompt (classifier-free guidance).
    pub drop_text: f32,
    /// Camera vector replaced by zeros ("no camera control").
    pub drop_camera: f32,
    /// Share of clips given no frame condition at all, before the four draws above (which
    /// leave about a quarter text-only by themselves): the text alone must then place,
    /// colour and move the objects. 0 in states written before it existed.
    #[serde(default)]
    pub text_only: f32,
}

impl Default for ConditionRates {
    fn default() -> Self {
        Self {
            first_frame: 0.5,
            last_frame: 0.3,
            static_region: 0.2,
            object_track: 0.2,
            drop_text: 0.1,
            drop_camera: 0.2,
            text_only: 0.0,
        }
    }
}

/// What the conditioning of one batch is, before the VAE sees it.
pub struct ConditionBatch {
    /// (B, 3, F, H, W): known pixels, 0 elsewhere.
    pub video: Tensor,
    /// (B, 4, F', h, w) in {0, 1}.
    pub mask_channels: Tensor,
    /// Whether any clip has a known pixel; when none has, `video` is all zeros.
    pub any_known: bool,
}

/// Draws each clip's conditioning. `spatial` and `temporal` are the VAE's factors.
pub fn sample_conditioning(
    batch: &ClipBatch,
    rates: &ConditionRates,
    rng: &mut SplitMix64,
    spatial: usize,
    temporal: usize,
    device: &Device,
) -> Result<ConditionBatch> {
    let (f, h, w) = (batch.frames, batch.height, batch.width);
    let b = batch.captions.len();
    let plane = f * h * w;
    let video: Vec<f32> = batch.video.flatten_all()?.to_vec1()?;
    let mut cond_video = vec![0f32; video.len()];
    let (lh, lw) = (h / spatial, w / spatial);
    let latent_frames = 1 + (f - 1) / temporal;
    let mut channels = vec![0f32; b * temporal * latent_frames * lh * lw];
    let mut any_known = false;
    for n in 0..b {
        let mut known = vec![false; plane];
        // The text-only draw is made only when asked for, so runs without it keep their
        // conditioning stream; a text-only clip's `known` stays empty.
        let text_only = rates.text_only > 0.0 && rng.chance(rates.text_only);
        if !text_only {
            draw_known(&mut known, batch, n, rates, rng);
        }
        any_known |= known.iter().any(|&k| k);
        for c in 0..3 {
            let base = (n * 3 + c) * plane;
            for p in 0..plane {
                if known[p] {
                    cond_video[base + p] = video[base + p];
                }
            }
        }
        // Latent-resolution mask: a cell is known when at least half its pixels are.
        let cells: Vec<f32> = (0..f)
            .flat_map(|t| (0..lh).flat_map(move |cy| (0..lw).map(move |cx| (t, cy, cx))))
            .map(|(t, cy, cx)| {
                let mut count = 0;
                for y in cy * spatial..(cy + 1) * spatial {
                    for x in cx * spatial..(cx + 1) * spatial {
                        count += usize::from(known[t * h * w + y * w + x]);
                    }
                }
                if 2 * count >= spatial * spatial {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        for i in 0..latent_frames {
            for j in 0..temporal {
                let t = (temporal * i + j).saturating_sub(temporal - 1);
                let dst = (((n * temporal + j) * latent_frames + i) * lh) * lw;
                channels[dst..dst + lh * lw]
                    .copy_from_slice(&cells[t * lh * lw..(t + 1) * lh * lw]);
            }
        }
    }
    Ok(ConditionBatch {
        video: Tensor::from_vec(cond_video, (b, 3, f, h, w), device)?,
        mask_channels: Tensor::from_vec(channels, (b, temporal, latent_frames, lh, lw), device)?,
        any_known,
    })
}

/// The four kinds of known pixels of clip `n`, each drawn at its rate, in a fixed order.
fn draw_known(
    known: &mut [bool],
    batch: &ClipBatch,
    n: usize,
    rates: &ConditionRates,
    rng: &mut SplitMix64,
) {
    let (f, h, w) = (batch.frames, batch.height, batch.width);
    if rng.chance(rates.first_frame) {
        known[..h * w].iter_mut().for_each(|k| *k = true);
    }
    if f > 1 && rng.chance(rates.last_frame) {
        known[(f - 1) * h * w..].iter_mut().for_each(|k| *k = true);
    }
    let ids = &batch.object_ids[n];
    if batch.camera_static[n] && rng.chance(rates.static_region) {
        let still = kiln_world::still_region(ids, w, h, f, rng);
        for (p, _) in still.iter().enumerate().filter(|(_, s)| **s) {
            (0..f).for_each(|t| known[t * h * w + p] = true);
        }
    }
    if batch.object_count[n] > 0 && rng.chance(rates.object_track) {
        let object = 1 + rng.below(batch.object_count[n] as u64) as u8;
        for (k, &id) in known.iter_mut().zip(ids) {
            *k |= id == object;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{clip_batch, rng_for, Stream};
    use crate::sizes::ClipGeometry;

    fn rates(text_only: f32) -> ConditionRates {
        ConditionRates {
            first_frame: 1.0,
            last_frame: 1.0,
            static_region: 1.0,
            object_track: 1.0,
            text_only,
            ..ConditionRates::default()
        }
    }

    #[test]
    fn text_only_clips_know_no_pixel() {
        let device = Device::Cpu;
        let batch = clip_batch(&ClipGeometry::tiny(), 0, 0, 3, Stream::Scenes, &device).unwrap();
        let draw = |r: &ConditionRates| {
            let mut rng = rng_for(0, 0, Stream::Conditioning);
            sample_conditioning(&batch, r, &mut rng, 8, 4, &device).unwrap()
        };
        let all = draw(&rates(1.0));
        assert!(!all.any_known);
        assert_eq!(
            all.video
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );
        assert_eq!(
            all.mask_channels
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap(),
            0.0
        );

        let none = draw(&rates(0.0));
        assert!(none.any_known);
        // Every clip knows its first frame, so every mask has ones.
        let per_clip = none.mask_channels.flatten_from(1).unwrap().max(1).unwrap();
        assert_eq!(per_clip.to_vec1::<f32>().unwrap(), [1.0; 3]);
    }
}
