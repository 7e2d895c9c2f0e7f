//! Camera motion: Kling's `camera_control` (five types, six axes in -10..=10) mapped onto an
//! image-space similarity transform per frame. Values describe how the *camera* moves; the
//! content moves the other way (camera pans right, the scene slides left).

use serde::{Deserialize, Serialize};

use crate::error::WorldError;

/// Content translation per axis unit, in frame extents (width or height) per second.
pub const TRANSLATE_PER_UNIT: f32 = 0.005;
/// Content log-scale per zoom unit per second.
pub const ZOOM_PER_UNIT: f32 = 0.008;
/// Content rotation per roll unit per second, in radians (0.6 degrees).
pub const ROLL_PER_UNIT: f32 = 0.6 * std::f32::consts::PI / 180.0;
/// Axis value the presets use for each of their components.
pub const PRESET_STRENGTH: i8 = 6;
/// An image-space component counts as moving above the rate of 1.5 axis units: sampled
/// scenes use 3..=10, so detection has a margin of 2x on either side.
pub const SIGNATURE_THRESHOLD_UNITS: f32 = 1.5;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CameraPreset {
    /// Camera descends and pulls back: content rises and shrinks.
    DownBack,
    /// Camera pushes forward and rises: content grows and sinks.
    ForwardUp,
    /// Camera turns right and pushes forward: content slides left and grows.
    RightTurnForward,
    /// Camera turns left and pushes forward: content slides right and grows.
    LeftTurnForward,
}

impl CameraPreset {
    pub const ALL: [CameraPreset; 4] = [
        CameraPreset::DownBack,
        CameraPreset::ForwardUp,
        CameraPreset::RightTurnForward,
        CameraPreset::LeftTurnForward,
    ];

    pub fn kling_name(self) -> &'static str {
        match self {
            CameraPreset::DownBack => "down_back",
            CameraPreset::ForwardUp => "forward_up",
            CameraPreset::RightTurnForward => "right_turn_forward",
            CameraPreset::LeftTurnForward => "left_turn_forward",
        }
    }

    /// The axes a preset stands for.
    pub fn axes(self) -> CameraAxes {
        let s = PRESET_STRENGTH;
        match self {
            CameraPreset::DownBack => CameraAxes {
                tilt: -s,
                zoom: -s,
                ..CameraAxes::ZERO
            },
            CameraPreset::ForwardUp => CameraAxes {
                tilt: s,
                zoom: s,
                ..CameraAxes::ZERO
            },
            CameraPreset::RightTurnForward => CameraAxes {
                pan: s,
                zoom: s,
                ..CameraAxes::ZERO
            },
            CameraPreset::LeftTurnForward => CameraAxes {
                pan: -s,
                zoom: s,
                ..CameraAxes::ZERO
            },
        }
    }
}

/// Kling's six axes, each -10..=10. Positive means: camera moves right (horizontal), up
/// (vertical), turns right (pan), turns up (tilt), rolls clockwise (roll), zooms in (zoom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CameraAxes {
    #[serde(default)]
    pub horizontal: i8,
    #[serde(default)]
    pub vertical: i8,
    #[serde(default)]
    pub pan: i8,
    #[serde(default)]
    pub tilt: i8,
    #[serde(default)]
    pub roll: i8,
    #[serde(default)]
    pub zoom: i8,
}

impl CameraAxes {
    pub const ZERO: CameraAxes = CameraAxes {
        horizontal: 0,
        vertical: 0,
        pan: 0,
        tilt: 0,
        roll: 0,
        zoom: 0,
    };
    pub const NAMES: [&'static str; 6] = ["horizontal", "vertical", "pan", "tilt", "roll", "zoom"];

    /// Builds axes from user numbers, rejecting values outside -10..=10.
    pub fn from_values(values: [i32; 6]) -> Result<Self, WorldError> {
        let mut out = [0i8; 6];
        for (i, v) in values.iter().enumerate() {
            if !(-10..=10).contains(v) {
                return Err(WorldError::AxisOutOfRange {
                    axis: Self::NAMES[i],
                    value: *v,
                });
            }
            out[i] = *v as i8;
        }
        Ok(Self::from_array(out))
    }

    pub fn to_array(self) -> [i8; 6] {
        [
            self.horizontal,
            self.vertical,
            self.pan,
            self.tilt,
            self.roll,
            self.zoom,
        ]
    }

    pub fn from_array(a: [i8; 6]) -> Self {
        CameraAxes {
            horizontal: a[0],
            vertical: a[1],
            pan: a[2],
            tilt: a[3],
            roll: a[4],
            zoom: a[5],
        }
    }

    pub fn is_zero(self) -> bool {
        self == Self::ZERO
    }

    /// Image-space rates: in this flat world a truck (horizontal) and a pan look the same,
    /// as do a pedestal (vertical) and a tilt.
    pub fn rates(self) -> CameraRates {
        let h = f32::from(self.horizontal) + f32::from(self.pan);
        let v = f32::from(self.vertical) + f32::from(self.tilt);
        CameraRates {
            translate_x: -h * TRANSLATE_PER_UNIT,
            translate_y: v * TRANSLATE_PER_UNIT,
            log_scale: f32::from(self.zoom) * ZOOM_PER_UNIT,
            rotation: -f32::from(self.roll) * ROLL_PER_UNIT,
        }
    }
}

/// The camera motion of a whole scene.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", content = "config")]
pub enum CameraMotion {
    Static,
    Preset(CameraPreset),
    /// Kling's `simple` type: any mix of the six axes.
    Axes(CameraAxes),
}

impl CameraMotion {
    pub fn pan_left() -> Self {
        Self::single(2, -PRESET_STRENGTH)
    }
    pub fn pan_right() -> Self {
        Self::single(2, PRESET_STRENGTH)
    }
    pub fn tilt_up() -> Self {
        Self::single(3, PRESET_STRENGTH)
    }
    pub fn tilt_down() -> Self {
        Self::single(3, -PRESET_STRENGTH)
    }
    pub fn zoom_in() -> Self {
        Self::single(5, PRESET_STRENGTH)
    }
    pub fn zoom_out() -> Self {
        Self::single(5, -PRESET_STRENGTH)
    }
    pub fn roll_clockwise() -> Self {
        Self::single(4, PRESET_STRENGTH)
    }
    pub fn roll_counterclockwise() -> Self {
        Self::single(4, -PRESET_STRENGTH)
    }

    fn single(axis: usize, value: i8) -> Self {
        let mut a = [0i8; 6];
        a[axis] = value;
        CameraMotion::Axes(CameraAxes::from_array(a))
    }

    /// From Kling's `camera_control {type, config}`; `simple` uses the axes, the other
    /// types ignore them as Kling does.
    pub fn from_kling(kind: &str, config: CameraAxes) -> Result<Self, WorldError> {
        for (i, v) in config.to_array().iter().enumerate() {
            if !(-10..=10).contains(v) {
                return Err(WorldError::AxisOutOfRange {
                    axis: CameraAxes::NAMES[i],
                    value: i32::from(*v),
                });
            }
        }
        match kind {
            "simple" if config.is_zero() => Ok(CameraMotion::Static),
            "simple" => Ok(CameraMotion::Axes(config)),
            other => CameraPreset::ALL
                .iter()
                .find(|p| p.kling_name() == other)
                .map(|p| CameraMotion::Preset(*p))
                .ok_or_else(|| WorldError::UnknownCameraType(other.to_string())),
        }
    }

    /// The equivalent six axes.
    pub fn axes(self) -> CameraAxes {
        match self {
            CameraMotion::Static => CameraAxes::ZERO,
            CameraMotion::Preset(p) => p.axes(),
            CameraMotion::Axes(a) => a,
        }
    }

    pub fn rates(self) -> CameraRates {
        self.axes().rates()
    }

    pub fn signature(self) -> CameraSignature {
        self.rates().signature()
    }
}

/// Per-second image-space rates of the content: translation in frame widths (x) and
/// heights (y, downwards positive), log of scale, and rotation in radians with clockwise
/// on screen positive.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct CameraRates {
    pub translate_x: f32,
    pub translate_y: f32,
    pub log_scale: f32,
    pub rotation: f32,
}

impl CameraRates {
    pub fn transform_at(&self, seconds: f32, width: u32, height: u32) -> CameraTransform {
        CameraTransform {
            scale: (self.log_scale * seconds).exp(),
            rotation: self.rotation * seconds,
            translate: [
                self.translate_x * seconds * width as f32,
                self.translate_y * seconds * height as f32,
            ],
        }
    }

    /// Which way the camera moves on each image-space component, with a dead zone.
    pub fn signature(&self) -> CameraSignature {
        let sign = |v: f32, unit: f32| -> i8 {
            let t = SIGNATURE_THRESHOLD_UNITS * unit;
            if v > t {
                1
            } else if v < -t {
                -1
            } else {
                0
            }
        };
        CameraSignature {
            horizontal: -sign(self.translate_x, TRANSLATE_PER_UNIT),
            vertical: sign(self.translate_y, TRANSLATE_PER_UNIT),
            zoom: sign(self.log_scale, ZOOM_PER_UNIT),
            roll: -sign(self.rotation, ROLL_PER_UNIT),
        }
    }
}

/// What the camera does in image space, as signs in camera terms (+1: moves or turns
/// right, up, zooms in, rolls clockwise). Camera accuracy compares these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CameraSignature {
    pub horizontal: i8,
    pub vertical: i8,
    pub zoom: i8,
    pub roll: i8,
}

impl CameraSignature {
    pub fn is_static(&self) -> bool {
        *self == CameraSignature::default()
    }
}

/// World (frame-0 pixel coordinates) to image at one frame: rotate by `rotation`
/// (clockwise on screen) and scale by `scale` about the frame centre, then translate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct CameraTransform {
    pub scale: f32,
    pub rotation: f32,
    pub translate: [f32; 2],
}

impl Default for CameraTransform {
    fn default() -> Self {
        CameraTransform {
            scale: 1.0,
            rotation: 0.0,
            translate: [0.0, 0.0],
        }
    }
}

impl CameraTransform {
    pub fn world_to_image(&self, p: [f32; 2], width: u32, height: u32) -> [f32; 2] {
        let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
        let (s, c) = self.rotation.sin_cos();
        let (dx, dy) = (p[0] - cx, p[1] - cy);
        [
            cx + self.scale * (c * dx - s * dy) + self.translate[0],
            cy + self.scale * (s * dx + c * dy) + self.translate[1],
        ]
    }

    pub fn image_to_world(&self, q: [f32; 2], width: u32, height: u32) -> [f32; 2] {
        let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
        let (s, c) = self.rotation.sin_cos();
        let inv = 1.0 / self.scale.max(1e-6);
        let (dx, dy) = (q[0] - cx - self.translate[0], q[1] - cy - self.translate[1]);
        [cx + inv * (c * dx + s * dy), cy + inv * (-s * dx + c * dy)]
    }
}
