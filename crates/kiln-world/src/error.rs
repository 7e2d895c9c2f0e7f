//! Errors for inputs that come from users (sizes, camera values, buffers).

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum WorldError {
    #[error("frame size {width}x{height} with {frames} frames is not renderable (each must be at least 1, at most 4096 px and 10000 frames)")]
    InvalidSize {
        width: u32,
        height: u32,
        frames: usize,
    },
    #[error("fps must be a positive finite number, got {0}")]
    InvalidFps(f32),
    #[error("buffer has {actual} bytes, expected {expected}")]
    LengthMismatch { expected: usize, actual: usize },
    #[error("camera axis {axis} = {value} is outside -10..=10")]
    AxisOutOfRange { axis: &'static str, value: i32 },
    #[error("unknown camera_control type {0:?} (expected simple, down_back, forward_up, right_turn_forward or left_turn_forward)")]
    UnknownCameraType(String),
}
