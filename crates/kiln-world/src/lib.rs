//! The procedural world of kiln's bundled model. This crate owns scene sampling (a
//! background, one to three coloured shapes, their motion and the camera's), rendering to
//! plain RGB8 frames with per-frame ground truth, the caption grammar and its parser, the
//! held-out split of combinations never shown in training, and the detector that measures
//! how well a clip follows a prompt.
//!
//! It must not know about models, tensor libraries or training: everything goes in and out
//! as plain `u8` buffers, scene specs and prompts. Randomness comes from [`SplitMix64`], a
//! fixed algorithm, so a seed names the same scene on every platform.

// Pixel and matrix code reads best with explicit indices.
#![allow(clippy::needless_range_loop)]

pub mod camera;
pub mod caption;
pub mod detect;
pub mod error;
pub mod metrics;
pub mod render;
pub mod rng;
pub mod scene;

pub use camera::{
    CameraAxes, CameraMotion, CameraPreset, CameraRates, CameraSignature, CameraTransform,
};
pub use caption::{caption, captions, parse_prompt, MotionIntent, ObjectIntent, PromptIntent};
pub use detect::{detect, BackgroundEstimate, CameraEstimate, DetectedObject, Detection};
pub use error::WorldError;
pub use metrics::{
    degrade, psnr, resample_path, score, static_region_drift, still_region, trajectory_error,
    Degradation, ObjectScore, ScoreInputs, Scores, TrajectoryTarget,
};
pub use render::{render, BBox, Clip, FrameTruth, ObjectTruth};
pub use rng::SplitMix64;
pub use scene::{
    is_held_out, sample_scene, sample_scene_with, Background, BackgroundColour, Direction,
    GradientDirection, Motion, ObjectColour, ObjectSpec, SceneSpec, Shape, Size, Speed, Split,
    MAX_OBJECTS,
};
