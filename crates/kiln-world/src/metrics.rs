//! Adherence metrics (the list) and a degradation that imitates a generative
//! model's output, for calibrating the detector.

use serde::{Deserialize, Serialize};

use crate::caption::PromptIntent;
use crate::detect::Detection;
use crate::error::WorldError;
use crate::rng::SplitMix64;
use crate::scene::ObjectColour;

/// PSNR is capped here so identical images give a finite, serialisable number.
pub const MAX_PSNR_DB: f64 = 100.0;

/// PSNR in dB between two RGB8 images of the same length.
pub fn psnr(image: &[u8], target: &[u8]) -> Result<f64, WorldError> {
    if image.len() != target.len() || image.is_empty() {
        return Err(WorldError::LengthMismatch {
            expected: target.len(),
            actual: image.len(),
        });
    }
    let sq: f64 = image
        .iter()
        .zip(target)
        .map(|(a, b)| {
            let d = f64::from(*a) - f64::from(*b);
            d * d
        })
        .sum();
    let mse = sq / image.len() as f64;
    if mse <= 0.0 {
        return Ok(MAX_PSNR_DB);
    }
    Ok((10.0 * (255.0 * 255.0 / mse).log10()).min(MAX_PSNR_DB))
}

/// Mean absolute change of the masked pixels from the first frame, over all later
/// frames and the three channels, in 8-bit levels (3.0 means 3/255). `mask` is H*W.
pub fn static_region_drift(
    frames: &[u8],
    width: u32,
    height: u32,
    frame_count: usize,
    mask: &[bool],
) -> Result<f64, WorldError> {
    let n = width as usize * height as usize;
    if mask.len() != n {
        return Err(WorldError::LengthMismatch {
            expected: n,
            actual: mask.len(),
        });
    }
    if frames.len() != n * 3 * frame_count {
        return Err(WorldError::LengthMismatch {
            expected: n * 3 * frame_count,
            actual: frames.len(),
        });
    }
    let first = &frames[..n * 3];
    let (mut sum, mut count) = (0f64, 0f64);
    for f in 1..frame_count {
        let frame = &frames[f * n * 3..(f + 1) * n * 3];
        for (i, _) in mask.iter().enumerate().filter(|(_, m)| **m) {
            for c in 0..3 {
                sum += (f64::from(frame[i * 3 + c]) - f64::from(first[i * 3 + c])).abs();
                count += 1.0;
            }
        }
    }
    Ok(if count > 0.0 { sum / count } else { 0.0 })
}

/// A region that stays still in a clip: a random rectangle of at least a quarter of each
/// side, minus every pixel an object touches in any frame. `object_ids` is F·H·W (0 is
/// background). Training draws static-region conditioning with it and `kiln eval` its
/// static-mask samples, so both mean the same thing.
pub fn still_region(
    object_ids: &[u8],
    width: usize,
    height: usize,
    frame_count: usize,
    rng: &mut SplitMix64,
) -> Vec<bool> {
    let (w, h) = (width, height);
    let x0 = rng.below((w / 2) as u64) as usize;
    let y0 = rng.below((h / 2) as u64) as usize;
    let x1 = (x0 + w / 4 + rng.below((w - x0 - w / 4 + 1) as u64) as usize).min(w);
    let y1 = (y0 + h / 4 + rng.below((h - y0 - h / 4 + 1) as u64) as usize).min(h);
    let mut mask = vec![false; w * h];
    for y in y0..y1 {
        for x in x0..x1 {
            mask[y * w + x] = (0..frame_count).all(|t| object_ids[t * w * h + y * w + x] == 0);
        }
    }
    mask
}

/// Resamples a trajectory (points spread evenly over the clip, as Kling's are) to one
/// point per frame by linear interpolation.
pub fn resample_path(points: &[[f32; 2]], frame_count: usize) -> Vec<[f32; 2]> {
    match points {
        [] => Vec::new(),
        [only] => vec![*only; frame_count],
        _ => (0..frame_count)
            .map(|f| {
                let u = if frame_count > 1 {
                    f as f32 / (frame_count - 1) as f32
                } else {
                    0.0
                };
                let pos = u * (points.len() - 1) as f32;
                let i = (pos.floor() as usize).min(points.len() - 2);
                let t = pos - i as f32;
                let (a, b) = (points[i], points[i + 1]);
                [a[0] + (b[0] - a[0]) * t, a[1] + (b[1] - a[1]) * t]
            })
            .collect(),
    }
}

/// Mean distance between a centroid track and a per-frame target path, as a fraction
/// of the frame width, over frames where the object was seen; `None` if never seen.
pub fn trajectory_error(
    track: &[Option<[f32; 2]>],
    target: &[[f32; 2]],
    width: u32,
) -> Option<f64> {
    let (mut sum, mut n) = (0f64, 0usize);
    for (p, q) in track.iter().zip(target) {
        if let Some(p) = p {
            sum += f64::from(((p[0] - q[0]).powi(2) + (p[1] - q[1]).powi(2)).sqrt());
            n += 1;
        }
    }
    (n > 0 && width > 0).then(|| sum / n as f64 / f64::from(width))
}

/// A dynamic-mask target: the path (one point per frame, pixels) an object should follow,
/// and which object (by colour; `None`: the detected object nearest the path's start).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryTarget {
    pub colour: Option<ObjectColour>,
    pub path: Vec<[f32; 2]>,
}

/// Optional references for the conditioning metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreInputs<'a> {
    pub first_frame: Option<&'a [u8]>,
    pub last_frame: Option<&'a [u8]>,
    /// H*W, true where the picture must stay still.
    pub static_mask: Option<&'a [bool]>,
    pub trajectory: Option<&'a TrajectoryTarget>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectScore {
    pub colour: ObjectColour,
    pub colour_ok: bool,
    pub shape_ok: bool,
    /// Still / direction / growing / shrinking as asked (speed is not scored).
    pub motion_ok: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    pub objects: Vec<ObjectScore>,
    /// Every asked-for object was found in its colour.
    pub colour_ok: bool,
    pub shape_ok: bool,
    pub direction_ok: bool,
    /// The camera's image-space signature (horizontal, vertical, zoom, roll signs) matches.
    pub camera_ok: bool,
    pub first_frame_psnr: Option<f64>,
    pub last_frame_psnr: Option<f64>,
    /// In 8-bit levels.
    pub static_drift: Option<f64>,
    /// Fraction of the frame width.
    pub trajectory_error: Option<f64>,
}

/// Scores a detection against what the prompt asked for; `frames` are the clip's RGB8
/// frames (for the PSNR and drift metrics).
pub fn score(
    intent: &PromptIntent,
    detection: &Detection,
    frames: &[u8],
    inputs: &ScoreInputs,
) -> Result<Scores, WorldError> {
    let (w, h, n) = (detection.width, detection.height, detection.frame_count);
    let frame_len = w as usize * h as usize * 3;
    if frames.len() != frame_len * n || n == 0 {
        return Err(WorldError::LengthMismatch {
            expected: frame_len * n,
            actual: frames.len(),
        });
    }
    let objects: Vec<ObjectScore> = intent
        .objects
        .iter()
        .map(|o| match detection.object(o.colour) {
            None => ObjectScore {
                colour: o.colour,
                colour_ok: false,
                shape_ok: false,
                motion_ok: false,
            },
            Some(d) => ObjectScore {
                colour: o.colour,
                colour_ok: true,
                shape_ok: d.shape == o.shape,
                motion_ok: match o.motion {
                    None => true,
                    Some(m) => m.class() == d.motion.class(),
                },
            },
        })
        .collect();
    let first_frame_psnr = inputs
        .first_frame
        .map(|t| psnr(&frames[..frame_len], t))
        .transpose()?;
    let last_frame_psnr = inputs
        .last_frame
        .map(|t| psnr(&frames[(n - 1) * frame_len..], t))
        .transpose()?;
    let static_drift = inputs
        .static_mask
        .map(|m| static_region_drift(frames, w, h, n, m))
        .transpose()?;
    let trajectory_error = inputs.trajectory.and_then(|target| {
        let start = *target.path.first()?;
        let object = match target.colour {
            Some(c) => detection.object(c),
            None => detection.objects.iter().min_by(|a, b| {
                let d = |o: &&crate::detect::DetectedObject| {
                    o.track.iter().flatten().next().map_or(f32::MAX, |p| {
                        (p[0] - start[0]).powi(2) + (p[1] - start[1]).powi(2)
                    })
                };
                d(a).total_cmp(&d(b))
            }),
        };
        // An object asked for but never found is as far off as can be.
        Some(
            object
                .and_then(|o| trajectory_error(&o.track, &target.path, w))
                .unwrap_or(1.0),
        )
    });
    Ok(Scores {
        colour_ok: objects.iter().all(|o| o.colour_ok),
        shape_ok: objects.iter().all(|o| o.shape_ok),
        direction_ok: objects.iter().all(|o| o.motion_ok),
        camera_ok: intent.camera.signature() == detection.camera.signature,
        objects,
        first_frame_psnr,
        last_frame_psnr,
        static_drift,
        trajectory_error,
    })
}

/// How to spoil a clean render to look like a generative model's output.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Degradation {
    /// Gaussian blur sigma in pixels.
    pub blur_sigma: f32,
    /// Per-pixel, per-channel gaussian noise in levels.
    pub noise_sigma: f32,
    /// Per-clip, per-channel offset drawn uniformly from +-this, in levels.
    pub colour_shift: f32,
}

impl Default for Degradation {
    fn default() -> Self {
        Degradation {
            blur_sigma: 0.8,
            noise_sigma: 4.0,
            colour_shift: 8.0,
        }
    }
}

/// Blurs, shifts and adds noise to RGB8 frames, deterministically from `seed`.
pub fn degrade(
    frames: &[u8],
    width: u32,
    height: u32,
    frame_count: usize,
    how: &Degradation,
    seed: u64,
) -> Result<Vec<u8>, WorldError> {
    let (w, h) = (width as usize, height as usize);
    if frames.len() != w * h * 3 * frame_count {
        return Err(WorldError::LengthMismatch {
            expected: w * h * 3 * frame_count,
            actual: frames.len(),
        });
    }
    let mut rng = SplitMix64::new(seed);
    let shift: [f32; 3] = [0; 3].map(|_| rng.range(-how.colour_shift, how.colour_shift));
    let radius = (3.0 * how.blur_sigma).ceil().max(0.0) as i64;
    let mut kernel: Vec<f32> = (-radius..=radius)
        .map(|i| (-(i * i) as f32 / (2.0 * how.blur_sigma.max(1e-3).powi(2))).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= total);
    let mut out = vec![0u8; frames.len()];
    let mut tmp = vec![0f32; w * h * 3];
    // Clamped source index of every tap, per column and per row (edge extension).
    let taps = |n: usize| -> Vec<usize> {
        (0..n)
            .flat_map(|i| {
                (-radius..=radius).map(move |k| (i as i64 + k).clamp(0, n as i64 - 1) as usize)
            })
            .collect()
    };
    let (x_taps, y_taps) = (taps(w), taps(h));
    let span = kernel.len();
    for f in 0..frame_count {
        let src = &frames[f * w * h * 3..(f + 1) * w * h * 3];
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            for x in 0..w {
                let mut acc = [0f32; 3];
                for (wgt, &xx) in kernel.iter().zip(&x_taps[x * span..(x + 1) * span]) {
                    for c in 0..3 {
                        acc[c] += wgt * f32::from(row[xx * 3 + c]);
                    }
                }
                tmp[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&acc);
            }
        }
        let dst = &mut out[f * w * h * 3..(f + 1) * w * h * 3];
        for y in 0..h {
            let rows = &y_taps[y * span..(y + 1) * span];
            for x in 0..w {
                for c in 0..3 {
                    let mut acc = shift[c] + how.noise_sigma * rng.gaussian();
                    for (wgt, &yy) in kernel.iter().zip(rows) {
                        acc += wgt * tmp[(yy * w + x) * 3 + c];
                    }
                    dst[(y * w + x) * 3 + c] = (acc.clamp(0.0, 255.0) + 0.5) as u8;
                }
            }
        }
    }
    Ok(out)
}
