//! The detector: from RGB frames alone it finds the objects of the known palette, their
//! shapes, tracks and motion, and the camera motion. It never sees ground truth.
//!
//! Camera motion is estimated by Lucas-Kanade alignment of a similarity transform on the
//! background (object pixels masked out), whose ripple texture and gradient carry the
//! motion. Object motion is measured in world coordinates (each centroid mapped back
//! through the estimated camera), so a still object under a panning camera reads as still.

use serde::{Deserialize, Serialize};

use crate::camera::{CameraRates, CameraSignature, CameraTransform};
use crate::caption::MotionIntent;
use crate::error::WorldError;
use crate::render::inside;
use crate::scene::{BackgroundColour, Direction, ObjectColour, Shape, Size, Speed};

/// A pixel belongs to an object colour when within this RGB distance of it. Palette
/// colours are >= 92 apart and >= 88 from any background blend with texture.
pub const COLOUR_RADIUS: f32 = 46.0;
/// Objects slower than this (short sides per second, world) count as still.
pub const STILL_SPEED: f32 = 0.018;
/// Speeds above this count as fast (slow is 0.04, fast 0.08).
pub const FAST_SPEED: f32 = 0.058;
/// |d ln(area)/dt| above this counts as growing or shrinking (growth gives 0.2).
pub const GROWTH_RATE: f32 = 0.07;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackgroundEstimate {
    /// Mean of the background pixels of the first frame.
    pub mean: [f32; 3],
    /// Means of the outer fifths of the first frame (left, right, top, bottom).
    pub left: [f32; 3],
    pub right: [f32; 3],
    pub top: [f32; 3],
    pub bottom: [f32; 3],
    /// Palette colour nearest to the mean.
    pub nearest: BackgroundColour,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CameraEstimate {
    /// World (frame 0) to image, per frame.
    pub per_frame: Vec<CameraTransform>,
    pub rates: CameraRates,
    pub signature: CameraSignature,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    pub colour: ObjectColour,
    pub shape: Shape,
    /// Best template IoU per shape (circle, square, triangle), averaged over frames.
    pub shape_scores: [f32; 3],
    pub size: Size,
    pub motion: MotionIntent,
    /// World velocity in short sides per second (image axes, y down).
    pub velocity: [f32; 2],
    /// d ln(world area) / dt.
    pub log_area_rate: f32,
    /// Image centroid per frame (pixel units, centres at +0.5) when seen.
    pub track: Vec<Option<[f32; 2]>>,
    /// Pixel count per frame (0 when unseen).
    pub areas: Vec<u32>,
    pub frames_seen: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub width: u32,
    pub height: u32,
    pub frame_count: usize,
    pub fps: f32,
    pub background: BackgroundEstimate,
    pub camera: CameraEstimate,
    pub objects: Vec<DetectedObject>,
}

impl Detection {
    pub fn object(&self, colour: ObjectColour) -> Option<&DetectedObject> {
        self.objects.iter().find(|o| o.colour == colour)
    }
}

/// The largest connected blob of one colour in one frame.
#[derive(Debug, Clone, Default)]
struct Blob {
    pixels: Vec<u32>,
    sum: [f64; 2],
    touches_border: bool,
}

impl Blob {
    fn area(&self) -> usize {
        self.pixels.len()
    }
    fn centroid(&self) -> [f32; 2] {
        let n = self.pixels.len().max(1) as f64;
        [(self.sum[0] / n) as f32, (self.sum[1] / n) as f32]
    }
}

fn label_frame(rgb: &[u8], labels: &mut [u8]) {
    let palette: Vec<[f32; 3]> = ObjectColour::ALL
        .iter()
        .map(|c| c.rgb().map(f32::from))
        .collect();
    let r2 = COLOUR_RADIUS * COLOUR_RADIUS;
    for (px, label) in rgb.chunks_exact(3).zip(labels.iter_mut()) {
        let p = [f32::from(px[0]), f32::from(px[1]), f32::from(px[2])];
        *label = 0;
        for (k, c) in palette.iter().enumerate() {
            let d = (p[0] - c[0]).powi(2) + (p[1] - c[1]).powi(2) + (p[2] - c[2]).powi(2);
            if d < r2 {
                *label = k as u8 + 1;
                break;
            }
        }
    }
}

/// Largest 4-connected component per palette colour.
fn blobs_of(labels: &[u8], width: usize, height: usize) -> Vec<Option<Blob>> {
    let mut best: Vec<Option<Blob>> = vec![None; ObjectColour::ALL.len()];
    let mut seen = vec![false; labels.len()];
    let mut stack = Vec::new();
    for start in 0..labels.len() {
        if labels[start] == 0 || seen[start] {
            continue;
        }
        let label = labels[start];
        let mut blob = Blob::default();
        seen[start] = true;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            blob.pixels.push(i as u32);
            blob.sum[0] += x as f64 + 0.5;
            blob.sum[1] += y as f64 + 0.5;
            if x == 0 || y == 0 || x + 1 == width || y + 1 == height {
                blob.touches_border = true;
            }
            let mut visit = |j: usize| {
                if labels[j] == label && !seen[j] {
                    seen[j] = true;
                    stack.push(j);
                }
            };
            if x > 0 {
                visit(i - 1);
            }
            if x + 1 < width {
                visit(i + 1);
            }
            if y > 0 {
                visit(i - width);
            }
            if y + 1 < height {
                visit(i + width);
            }
        }
        let slot = &mut best[label as usize - 1];
        if slot.as_ref().is_none_or(|b| b.area() < blob.area()) {
            *slot = Some(blob);
        }
    }
    best
}

/// Luminance smoothed with a [1 2 1] kernel both ways (noise matters, detail does not).
fn luminance(rgb: &[u8], width: usize, height: usize) -> Vec<f32> {
    let lum: Vec<f32> = rgb
        .chunks_exact(3)
        .map(|p| 0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2]))
        .collect();
    let mut tmp = vec![0f32; lum.len()];
    for y in 0..height {
        for x in 0..width {
            let l = lum[y * width + x.saturating_sub(1)];
            let r = lum[y * width + (x + 1).min(width - 1)];
            tmp[y * width + x] = 0.25 * l + 0.5 * lum[y * width + x] + 0.25 * r;
        }
    }
    let mut out = vec![0f32; lum.len()];
    for y in 0..height {
        for x in 0..width {
            let u = tmp[y.saturating_sub(1) * width + x];
            let d = tmp[(y + 1).min(height - 1) * width + x];
            out[y * width + x] = 0.25 * u + 0.5 * tmp[y * width + x] + 0.25 * d;
        }
    }
    out
}

/// Bilinear sample; callers keep (x, y) at least 1 px inside, so truncation is floor.
fn bilinear(img: &[f32], width: usize, x: f32, y: f32) -> f32 {
    let (x0, y0) = ((x as usize) as f32, (y as usize) as f32);
    let (fx, fy) = (x - x0, y - y0);
    let i = y0 as usize * width + x0 as usize;
    let top = img[i] * (1.0 - fx) + img[i + 1] * fx;
    let bottom = img[i + width] * (1.0 - fx) + img[i + width + 1] * fx;
    top * (1.0 - fy) + bottom * fy
}

/// Object pixels grown by `radius` (blurred edges are neither object nor background).
fn dilated_mask(labels: &[u8], width: usize, height: usize, radius: usize) -> Vec<bool> {
    let mut mask = vec![false; labels.len()];
    for y in 0..height {
        for x in 0..width {
            if labels[y * width + x] == 0 {
                continue;
            }
            for yy in y.saturating_sub(radius)..(y + radius + 1).min(height) {
                for xx in x.saturating_sub(radius)..(x + radius + 1).min(width) {
                    mask[yy * width + xx] = true;
                }
            }
        }
    }
    mask
}

fn solve4(mut a: [[f64; 4]; 4], mut b: [f64; 4]) -> Option<[f64; 4]> {
    for col in 0..4 {
        let pivot = (col..4).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-12 {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..4 {
            let f = a[row][col] / a[col][col];
            for k in col..4 {
                a[row][k] -= f * a[col][k];
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0f64; 4];
    for row in (0..4).rev() {
        let s: f64 = (row + 1..4).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    Some(x)
}

/// Per-frame similarity transform from frame 0 to each frame, by Gauss-Newton on the
/// background luminance with a Huber weight, each frame starting from the previous one.
fn estimate_camera(
    lums: &[Vec<f32>],
    masks: &[Vec<bool>],
    width: usize,
    height: usize,
) -> Vec<CameraTransform> {
    let (cx, cy) = ((width as f32 - 1.0) / 2.0, (height as f32 - 1.0) / 2.0);
    // Every other pixel both ways: the texture is smooth, a quarter of the pixels is plenty.
    let samples: Vec<(f32, f32, f32)> = (0..width * height)
        .filter(|&i| ((i % width) & 1) == 0 && ((i / width) & 1) == 0 && !masks[0][i])
        .map(|i| ((i % width) as f32 - cx, (i / width) as f32 - cy, lums[0][i]))
        .collect();
    let mut params = [1.0f64, 0.0, 0.0, 0.0]; // a, b, tx, ty with A = [[a, -b], [b, a]]
    let mut previous = params;
    let mut out = vec![CameraTransform::default()];
    for t in 1..lums.len() {
        // Camera motion is smooth: start from a constant-velocity guess.
        let guess: [f64; 4] = std::array::from_fn(|k| 2.0 * params[k] - previous[k]);
        previous = params;
        params = guess;
        let lum = &lums[t];
        let grad_x: Vec<f32> = (0..lum.len())
            .map(|i| {
                let x = i % width;
                0.5 * (lum[i - x + (x + 1).min(width - 1)] - lum[i - x + x.saturating_sub(1)])
            })
            .collect();
        let grad_y: Vec<f32> = (0..lum.len())
            .map(|i| {
                let (x, y) = (i % width, i / width);
                0.5 * (lum[(y + 1).min(height - 1) * width + x]
                    - lum[y.saturating_sub(1) * width + x])
            })
            .collect();
        for _ in 0..10 {
            let (a, b, tx, ty) = (
                params[0] as f32,
                params[1] as f32,
                params[2] as f32,
                params[3] as f32,
            );
            let mut h = [[0f64; 4]; 4];
            let mut g = [0f64; 4];
            let mut used = 0usize;
            for &(dx, dy, l0) in &samples {
                let qx = cx + a * dx - b * dy + tx;
                let qy = cy + b * dx + a * dy + ty;
                if !(qx >= 1.0 && qy >= 1.0 && qx < width as f32 - 2.0 && qy < height as f32 - 2.0)
                {
                    continue;
                }
                if masks[t][(qy + 0.5) as usize * width + (qx + 0.5) as usize] {
                    continue;
                }
                let r = bilinear(lum, width, qx, qy) - l0;
                let gx = bilinear(&grad_x, width, qx, qy);
                let gy = bilinear(&grad_y, width, qx, qy);
                let j = [gx * dx + gy * dy, -gx * dy + gy * dx, gx, gy].map(f64::from);
                let weight = if r.abs() < 6.0 {
                    1.0
                } else {
                    6.0 / f64::from(r.abs())
                };
                for row in 0..4 {
                    g[row] += weight * j[row] * f64::from(r);
                    for col in row..4 {
                        h[row][col] += weight * j[row] * j[col];
                    }
                }
                used += 1;
            }
            if used < 32 {
                break;
            }
            for row in 0..4 {
                for col in 0..row {
                    h[row][col] = h[col][row];
                }
                h[row][row] *= 1.0 + 1e-6;
            }
            let Some(step) = solve4(h, g.map(|v| -v)) else {
                break;
            };
            for k in 0..4 {
                params[k] += step[k];
            }
            if step[0].abs() + step[1].abs() < 5e-5 && step[2].abs() + step[3].abs() < 5e-3 {
                break;
            }
        }
        let (a, b) = (params[0] as f32, params[1] as f32);
        out.push(CameraTransform {
            scale: (a * a + b * b).sqrt(),
            rotation: b.atan2(a),
            translate: [params[2] as f32, params[3] as f32],
        });
    }
    out
}

fn camera_rates(per_frame: &[CameraTransform], fps: f32, width: u32, height: u32) -> CameraRates {
    let (mut tt, mut sx, mut sy, mut ss, mut sr) = (0f64, 0f64, 0f64, 0f64, 0f64);
    for (i, c) in per_frame.iter().enumerate() {
        let t = f64::from(i as f32 / fps);
        tt += t * t;
        sx += t * f64::from(c.translate[0] / width as f32);
        sy += t * f64::from(c.translate[1] / height as f32);
        ss += t * f64::from(c.scale.max(1e-6).ln());
        sr += t * f64::from(c.rotation);
    }
    if tt <= 0.0 {
        return CameraRates::default();
    }
    CameraRates {
        translate_x: (sx / tt) as f32,
        translate_y: (sy / tt) as f32,
        log_scale: (ss / tt) as f32,
        rotation: (sr / tt) as f32,
    }
}

/// Least-squares slope of `ys` against `ts`.
fn slope(ts: &[f32], ys: &[f32]) -> f32 {
    let n = ts.len() as f32;
    if ts.len() < 2 {
        return 0.0;
    }
    let (mt, my) = (ts.iter().sum::<f32>() / n, ys.iter().sum::<f32>() / n);
    let num: f32 = ts.iter().zip(ys).map(|(t, y)| (t - mt) * (y - my)).sum();
    let den: f32 = ts.iter().map(|t| (t - mt) * (t - mt)).sum();
    if den <= 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Best IoU of each shape template (equal area, same centroid, best rotation) with a blob.
fn shape_fit(blob: &Blob, width: usize, height: usize) -> [f32; 3] {
    let area = blob.area() as f32;
    let c = blob.centroid();
    let d = 2.0 * (area / std::f32::consts::PI).sqrt();
    let reach = (0.8 * d + 2.0).ceil() as i64;
    let (x0, x1) = (
        (c[0] as i64 - reach).max(0),
        (c[0] as i64 + reach).min(width as i64 - 1),
    );
    let (y0, y1) = (
        (c[1] as i64 - reach).max(0),
        (c[1] as i64 + reach).min(height as i64 - 1),
    );
    let (bw, bh) = ((x1 - x0 + 1) as usize, (y1 - y0 + 1) as usize);
    let mut local = vec![false; bw * bh];
    for &p in &blob.pixels {
        let (x, y) = ((p as usize % width) as i64, (p as usize / width) as i64);
        if x >= x0 && x <= x1 && y >= y0 && y <= y1 {
            local[(y - y0) as usize * bw + (x - x0) as usize] = true;
        }
    }
    let mut best = [0f32; 3];
    for (k, shape) in Shape::ALL.iter().enumerate() {
        let (steps, span) = match shape {
            Shape::Circle => (1, 0.0f32),
            Shape::Square => (10, 90.0),
            Shape::Triangle => (12, 120.0),
        };
        for s in 0..steps {
            let (sin, cos) = (span * s as f32 / steps as f32).to_radians().sin_cos();
            let (mut inter, mut template) = (0u32, 0u32);
            for yy in 0..bh {
                for xx in 0..bw {
                    let qx = (x0 + xx as i64) as f32 + 0.5 - c[0];
                    let qy = (y0 + yy as i64) as f32 + 0.5 - c[1];
                    let (lx, ly) = (cos * qx + sin * qy, -sin * qx + cos * qy);
                    if inside(*shape, d, lx, ly) {
                        template += 1;
                        inter += u32::from(local[yy * bw + xx]);
                    }
                }
            }
            let union = area + template as f32 - inter as f32;
            if union > 0.0 {
                best[k] = best[k].max(inter as f32 / union);
            }
        }
    }
    best
}

fn mean_rgb(rgb: &[u8], width: usize, keep: impl Fn(usize, usize) -> bool) -> [f32; 3] {
    let mut sum = [0f64; 3];
    let mut n = 0f64;
    for (i, p) in rgb.chunks_exact(3).enumerate() {
        if keep(i % width, i / width) {
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
            }
            n += 1.0;
        }
    }
    sum.map(|s| if n > 0.0 { (s / n) as f32 } else { 0.0 })
}

/// Runs the detector on `frame_count` RGB8 frames of `width` x `height` at `fps`.
pub fn detect(
    frames: &[u8],
    width: u32,
    height: u32,
    frame_count: usize,
    fps: f32,
) -> Result<Detection, WorldError> {
    if width < 4 || height < 4 || frame_count == 0 || width > 4096 || height > 4096 {
        return Err(WorldError::InvalidSize {
            width,
            height,
            frames: frame_count,
        });
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(WorldError::InvalidFps(fps));
    }
    let (w, h) = (width as usize, height as usize);
    let frame_len = w * h * 3;
    let expected = frame_len
        .checked_mul(frame_count)
        .ok_or(WorldError::InvalidSize {
            width,
            height,
            frames: frame_count,
        })?;
    if frames.len() != expected {
        return Err(WorldError::LengthMismatch {
            expected,
            actual: frames.len(),
        });
    }
    let mut labels = vec![0u8; w * h];
    let mut blobs: Vec<Vec<Option<Blob>>> = Vec::with_capacity(frame_count);
    let mut masks = Vec::with_capacity(frame_count);
    let mut lums = Vec::with_capacity(frame_count);
    let mut background_mask = Vec::new();
    for f in 0..frame_count {
        let rgb = &frames[f * frame_len..(f + 1) * frame_len];
        label_frame(rgb, &mut labels);
        blobs.push(blobs_of(&labels, w, h));
        let mask = dilated_mask(&labels, w, h, 2);
        if f == 0 {
            background_mask = labels.iter().map(|&l| l == 0).collect();
        }
        masks.push(mask);
        lums.push(luminance(rgb, w, h));
    }

    let first = &frames[..frame_len];
    let is_bg = |x: usize, y: usize| background_mask[y * w + x];
    let fifth_w = (w / 5).max(1);
    let fifth_h = (h / 5).max(1);
    let mean = mean_rgb(first, w, is_bg);
    let background = BackgroundEstimate {
        mean,
        left: mean_rgb(first, w, |x, y| x < fifth_w && is_bg(x, y)),
        right: mean_rgb(first, w, |x, y| x >= w - fifth_w && is_bg(x, y)),
        top: mean_rgb(first, w, |x, y| y < fifth_h && is_bg(x, y)),
        bottom: mean_rgb(first, w, |x, y| y >= h - fifth_h && is_bg(x, y)),
        nearest: *BackgroundColour::ALL
            .iter()
            .min_by(|a, b| {
                let d = |c: &BackgroundColour| {
                    let rgb = c.rgb();
                    (0..3)
                        .map(|k| (f32::from(rgb[k]) - mean[k]).powi(2))
                        .sum::<f32>()
                };
                d(a).total_cmp(&d(b))
            })
            .unwrap_or(&BackgroundColour::Gray),
    };

    let per_frame = estimate_camera(&lums, &masks, w, h);
    let rates = camera_rates(&per_frame, fps, width, height);
    let camera = CameraEstimate {
        signature: rates.signature(),
        rates,
        per_frame,
    };

    let short = width.min(height) as f32;
    let min_area = (0.0015 * (w * h) as f32).max(6.0) as usize;
    let min_frames = (frame_count / 10).max(3).min(frame_count);
    let mut objects = Vec::new();
    for (k, colour) in ObjectColour::ALL.iter().enumerate() {
        let seen: Vec<usize> = (0..frame_count)
            .filter(|&f| blobs[f][k].as_ref().is_some_and(|b| b.area() >= min_area))
            .collect();
        if seen.len() < min_frames {
            continue;
        }
        let mut track = vec![None; frame_count];
        let mut areas = vec![0u32; frame_count];
        let (mut ts, mut xs, mut ys, mut log_areas) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut whole = Vec::new();
        for &f in &seen {
            let Some(blob) = blobs[f][k].as_ref() else {
                continue;
            };
            let c = blob.centroid();
            track[f] = Some(c);
            areas[f] = blob.area() as u32;
            if blob.touches_border {
                continue;
            }
            whole.push(f);
            let cam = &camera.per_frame[f];
            let p = cam.image_to_world(c, width, height);
            ts.push(f as f32 / fps);
            xs.push(p[0] / short);
            ys.push(p[1] / short);
            log_areas.push((blob.area() as f32 / (cam.scale * cam.scale).max(1e-6)).ln());
        }
        // Objects only ever seen cut by the frame edge: shape from their cut blobs.
        let shape_frames: Vec<usize> = if whole.is_empty() {
            seen.clone()
        } else {
            whole.clone()
        };
        let picks = 5.min(shape_frames.len());
        let mut scores = [0f32; 3];
        for i in 0..picks {
            let f = shape_frames[i * shape_frames.len() / picks];
            if let Some(blob) = blobs[f][k].as_ref() {
                let fit = shape_fit(blob, w, h);
                for s in 0..3 {
                    scores[s] += fit[s] / picks as f32;
                }
            }
        }
        let shape_index = (0..3)
            .max_by(|&a, &b| scores[a].total_cmp(&scores[b]))
            .unwrap_or(0);
        let velocity = [slope(&ts, &xs), slope(&ts, &ys)];
        let log_area_rate = slope(&ts, &log_areas);
        let speed = (velocity[0] * velocity[0] + velocity[1] * velocity[1]).sqrt();
        let motion = if ts.len() >= 3 && speed >= STILL_SPEED {
            MotionIntent::Move {
                direction: Direction::from_vector(velocity[0], velocity[1]),
                speed: Some(if speed > FAST_SPEED {
                    Speed::Fast
                } else {
                    Speed::Slow
                }),
            }
        } else if log_area_rate > GROWTH_RATE {
            MotionIntent::Grow
        } else if log_area_rate < -GROWTH_RATE {
            MotionIntent::Shrink
        } else {
            MotionIntent::Still
        };
        let size_frame = whole.first().copied().unwrap_or(seen[0]);
        let size = blobs[size_frame][k].as_ref().map_or(Size::Medium, |b| {
            let scale = camera.per_frame[size_frame].scale.max(1e-6);
            let extent = 2.0 * (b.area() as f32 / std::f32::consts::PI).sqrt() / scale / short;
            *Size::ALL
                .iter()
                .min_by(|a, b| {
                    (a.extent().ln() - extent.ln())
                        .abs()
                        .total_cmp(&(b.extent().ln() - extent.ln()).abs())
                })
                .unwrap_or(&Size::Medium)
        });
        objects.push(DetectedObject {
            colour: *colour,
            shape: Shape::ALL[shape_index],
            shape_scores: scores,
            size,
            motion,
            velocity,
            log_area_rate,
            track,
            areas,
            frames_seen: seen.len(),
        });
    }
    Ok(Detection {
        width,
        height,
        frame_count,
        fps,
        background,
        camera,
        objects,
    })
}
