//! Rendering a scene to RGB8 frames with ground truth.
//!
//! World coordinates are frame-0 pixel coordinates; the camera maps them to each frame's
//! image. The background is a function of world position over the whole plane (gradients
//! clamp past the frame-0 edges), so camera motion never reveals empty borders. Every
//! background carries a faint fixed ripple texture (±14 levels) so that camera motion is
//! visible even over a solid colour; without it a pan over one moving object would look
//! exactly like a still camera.

use serde::{Deserialize, Serialize};

use crate::camera::CameraTransform;
use crate::error::WorldError;
use crate::scene::{Background, GradientDirection, ObjectColour, SceneSpec, Shape};
use crate::scene::{SQUARE_SIDE, TRIANGLE_SIDE};

/// Amplitude of the background ripple texture, in 8-bit levels.
pub const TEXTURE_AMPLITUDE: f32 = 14.0;
/// The texture's two plane waves: direction (degrees) and wavelength in short sides.
const TEXTURE_WAVES: [(f32, f32); 2] = [(30.0, 0.45), (110.0, 0.6)];
const SIN_TABLE_SIZE: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BBox {
    pub x0: f32,
    pub y0: f32,
    pub x1: f32,
    pub y1: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectTruth {
    pub colour: ObjectColour,
    pub shape: Shape,
    /// Centroid of the whole shape in image pixels (may lie outside the frame).
    pub centroid: [f32; 2],
    /// Bounding box of the whole shape clipped to the frame; `None` when out of view.
    pub bbox: Option<BBox>,
    /// Apparent scale: object growth times camera zoom.
    pub scale: f32,
    /// Pixels where this object covers at least half the pixel.
    pub visible_pixels: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameTruth {
    pub seconds: f32,
    pub camera: CameraTransform,
    pub objects: Vec<ObjectTruth>,
}

/// A rendered clip: `frames` is F*H*W*3 RGB8, `object_ids` is F*H*W with 0 for background
/// and `i + 1` for `spec.objects[i]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Clip {
    pub width: u32,
    pub height: u32,
    pub frame_count: usize,
    pub fps: f32,
    pub frames: Vec<u8>,
    pub object_ids: Vec<u8>,
    pub truth: Vec<FrameTruth>,
}

impl Clip {
    pub fn frame(&self, index: usize) -> &[u8] {
        let n = self.width as usize * self.height as usize * 3;
        &self.frames[index * n..(index + 1) * n]
    }
}

struct SinTable(Vec<f32>);

impl SinTable {
    fn new() -> Self {
        Self(
            (0..SIN_TABLE_SIZE)
                .map(|i| (i as f32 / SIN_TABLE_SIZE as f32 * std::f32::consts::TAU).sin())
                .collect(),
        )
    }

    /// sin(2*pi*turns) by table lookup: the texture needs speed, not precision.
    fn sin_turns(&self, turns: f32) -> f32 {
        let f = turns - turns.floor();
        self.0[((f * SIN_TABLE_SIZE as f32) as usize).min(SIN_TABLE_SIZE - 1)]
    }
}

/// Background colour at a world point, as f32 RGB.
fn background_at(
    bg: &Background,
    p: [f32; 2],
    width: u32,
    height: u32,
    waves: &[[f32; 2]; 2],
    table: &SinTable,
) -> [f32; 3] {
    let (w, h) = (width as f32, height as f32);
    let base = match bg {
        Background::Solid { colour } => colour.rgb().map(f32::from),
        Background::Gradient {
            from,
            to,
            direction,
        } => {
            let (u, v) = (p[0] / w, p[1] / h);
            let t = match direction {
                GradientDirection::Horizontal => u,
                GradientDirection::Vertical => v,
                GradientDirection::Diagonal => 0.5 * (u + v),
            }
            .clamp(0.0, 1.0);
            let (a, b) = (from.rgb(), to.rgb());
            [0, 1, 2].map(|c| f32::from(a[c]) * (1.0 - t) + f32::from(b[c]) * t)
        }
    };
    let (dx, dy) = (p[0] - w / 2.0, p[1] - h / 2.0);
    let ripple = 0.5
        * (table.sin_turns(dx * waves[0][0] + dy * waves[0][1])
            + table.sin_turns(dx * waves[1][0] + dy * waves[1][1]));
    base.map(|c| c + TEXTURE_AMPLITUDE * ripple)
}

/// Whether a point in object-local pixels (origin at the shape's centroid) is inside a
/// shape of equal-area diameter `d`. Squares are axis-aligned, triangles point up.
pub(crate) fn inside(shape: Shape, d: f32, x: f32, y: f32) -> bool {
    match shape {
        Shape::Circle => x * x + y * y <= 0.25 * d * d,
        Shape::Square => {
            let half = 0.5 * SQUARE_SIDE * d;
            x.abs() <= half && y.abs() <= half
        }
        Shape::Triangle => {
            let side = TRIANGLE_SIDE * d;
            let tall = side * 3f32.sqrt() / 2.0;
            // apex at y = -2/3 tall, base at y = +1/3 tall
            y <= tall / 3.0 && x.abs() * tall <= (y + 2.0 * tall / 3.0) * (side / 2.0)
        }
    }
}

/// Tight image-space box of a shape (outline points rotated and scaled by the camera),
/// clipped to the frame.
fn shape_bbox(
    shape: Shape,
    d: f32,
    cam: &CameraTransform,
    centre: [f32; 2],
    width: u32,
    height: u32,
) -> Option<BBox> {
    let (s, c) = cam.rotation.sin_cos();
    let outline: Vec<[f32; 2]> = match shape {
        Shape::Circle => (0..32)
            .map(|i| {
                let a = i as f32 / 32.0 * std::f32::consts::TAU;
                [0.5 * d * a.cos(), 0.5 * d * a.sin()]
            })
            .collect(),
        Shape::Square => {
            let h = 0.5 * SQUARE_SIDE * d;
            vec![[-h, -h], [h, -h], [h, h], [-h, h]]
        }
        Shape::Triangle => {
            let side = TRIANGLE_SIDE * d;
            let tall = side * 3f32.sqrt() / 2.0;
            vec![
                [0.0, -2.0 * tall / 3.0],
                [-side / 2.0, tall / 3.0],
                [side / 2.0, tall / 3.0],
            ]
        }
    };
    let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
    for [lx, ly] in outline {
        let x = centre[0] + cam.scale * (c * lx - s * ly);
        let y = centre[1] + cam.scale * (s * lx + c * ly);
        (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
    }
    let (x0, y0) = (x0.max(0.0), y0.max(0.0));
    let (x1, y1) = (x1.min(width as f32), y1.min(height as f32));
    (x1 > x0 && y1 > y0).then_some(BBox { x0, y0, x1, y1 })
}

/// Renders `frame_count` frames at `fps`. Objects are anti-aliased by 4x4 supersampling
/// inside their bounding boxes; the smooth background is sampled once per pixel.
pub fn render(
    spec: &SceneSpec,
    width: u32,
    height: u32,
    frame_count: usize,
    fps: f32,
) -> Result<Clip, WorldError> {
    if width == 0 || height == 0 || width > 4096 || height > 4096 || frame_count > 10_000 {
        return Err(WorldError::InvalidSize {
            width,
            height,
            frames: frame_count,
        });
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(WorldError::InvalidFps(fps));
    }
    let (wu, hu) = (width as usize, height as usize);
    let mut frames = vec![0u8; frame_count * wu * hu * 3];
    let mut object_ids = vec![0u8; frame_count * wu * hu];
    let mut truth = Vec::with_capacity(frame_count);
    let rates = spec.camera.rates();
    let table = SinTable::new();
    let short = width.min(height) as f32;
    let waves = TEXTURE_WAVES.map(|(deg, wavelength): (f32, f32)| {
        let r = deg.to_radians();
        [
            r.cos() / (wavelength * short),
            r.sin() / (wavelength * short),
        ]
    });
    let mut rgb = vec![[0f32; 3]; wu * hu];
    const SUB: usize = 4;
    for f in 0..frame_count {
        let seconds = f as f32 / fps;
        let cam = rates.transform_at(seconds, width, height);
        let pixels = &mut frames[f * wu * hu * 3..(f + 1) * wu * hu * 3];
        let ids = &mut object_ids[f * wu * hu..(f + 1) * wu * hu];
        for y in 0..hu {
            for x in 0..wu {
                let p = cam.image_to_world([x as f32 + 0.5, y as f32 + 0.5], width, height);
                rgb[y * wu + x] = background_at(&spec.background, p, width, height, &waves, &table);
            }
        }
        let (sin_r, cos_r) = cam.rotation.sin_cos();
        let inv_scale = 1.0 / cam.scale;
        let mut objects = Vec::with_capacity(spec.objects.len());
        for (k, obj) in spec.objects.iter().enumerate() {
            let growth = obj.motion.growth_at(seconds);
            let d = obj.size.extent() * short * growth;
            let centre_world = obj.centre_at(seconds, width, height);
            let centre = cam.world_to_image(centre_world, width, height);
            let radius = obj.shape.circumradius() * d * cam.scale;
            let colour = obj.colour.rgb().map(f32::from);
            let x0 = (centre[0] - radius - 1.0).floor().max(0.0) as usize;
            let y0 = (centre[1] - radius - 1.0).floor().max(0.0) as usize;
            let x1 = ((centre[0] + radius + 1.0).ceil().max(0.0) as usize).min(wu);
            let y1 = ((centre[1] + radius + 1.0).ceil().max(0.0) as usize).min(hu);
            let mut visible = 0u32;
            for y in y0..y1 {
                for x in x0..x1 {
                    let mut hits = 0usize;
                    for sy in 0..SUB {
                        for sx in 0..SUB {
                            let qx = x as f32 + (sx as f32 + 0.5) / SUB as f32 - centre[0];
                            let qy = y as f32 + (sy as f32 + 0.5) / SUB as f32 - centre[1];
                            // image offset -> object-local world offset (undo rotation, scale)
                            let lx = (cos_r * qx + sin_r * qy) * inv_scale;
                            let ly = (-sin_r * qx + cos_r * qy) * inv_scale;
                            hits += usize::from(inside(obj.shape, d, lx, ly));
                        }
                    }
                    if hits == 0 {
                        continue;
                    }
                    let coverage = hits as f32 / (SUB * SUB) as f32;
                    let px = &mut rgb[y * wu + x];
                    for c in 0..3 {
                        px[c] += (colour[c] - px[c]) * coverage;
                    }
                    if hits * 2 >= SUB * SUB {
                        ids[y * wu + x] = (k + 1) as u8;
                        visible += 1;
                    }
                }
            }
            let bbox = shape_bbox(obj.shape, d, &cam, centre, width, height);
            objects.push(ObjectTruth {
                colour: obj.colour,
                shape: obj.shape,
                centroid: centre,
                bbox,
                scale: growth * cam.scale,
                visible_pixels: visible,
            });
        }
        for (out, px) in pixels.chunks_exact_mut(3).zip(rgb.iter()) {
            for c in 0..3 {
                out[c] = (px[c].clamp(0.0, 255.0) + 0.5) as u8;
            }
        }
        truth.push(FrameTruth {
            seconds,
            camera: cam,
            objects,
        });
    }
    Ok(Clip {
        width,
        height,
        frame_count,
        fps,
        frames,
        object_ids,
        truth,
    })
}
