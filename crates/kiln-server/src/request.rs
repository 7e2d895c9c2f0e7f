//! The one typed video request every surface translates into, its validation against the
//! loaded model, and the resolved form a job stores (defaults filled in, seed drawn).
//!
//! The native API deserializes [`VideoRequest`] directly; the fal/Runware/WaveSpeed/Prodia
//! dialects will build one from their own JSON and call the same [`VideoRequest::validate`].

use std::net::IpAddr;
use std::time::Duration;

use kiln_media::image_in::ImageSource;
use kiln_pipeline::conditioning::{camera_preset, CAMERA_LIMIT};
use kiln_pipeline::MAX_PROMPT_CHARS;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::address::is_public;
use crate::generator::ModelCapabilities;

/// A request for one to four clips.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VideoRequest {
    /// What the video shows, up to 2500 characters.
    #[serde(default)]
    pub prompt: String,
    /// What to avoid [default: the model's].
    pub negative_prompt: Option<String>,
    /// Clip length: 5 or 10 seconds, as a number or a numeric string [default: the model's].
    pub duration: Option<DurationSeconds>,
    /// Frame count instead of `duration`, of the form 4n+1.
    pub frames: Option<usize>,
    /// The model's size for this aspect [default: 16:9]; or give `width` and `height`.
    pub aspect_ratio: Option<AspectRatio>,
    pub width: Option<usize>,
    pub height: Option<usize>,
    /// The hosted APIs' 0–1 guidance: guidance = 1 + 8·cfg_scale (0.5 → 5).
    pub cfg_scale: Option<f64>,
    /// Raw classifier-free guidance instead of `cfg_scale`; 1 or less turns it off.
    pub guidance: Option<f64>,
    /// Denoising steps [default: the model's; doubled in `pro` mode].
    pub steps: Option<usize>,
    /// Noise seed [default: drawn and reported]. Result n uses seed + n.
    pub seed: Option<u64>,
    /// First and last frame images (http(s) URL or data URI).
    #[serde(default)]
    pub images: Vec<FrameImage>,
    /// Subject reference images; refused unless the model takes them.
    #[serde(default)]
    pub reference_images: Vec<String>,
    pub camera_control: Option<CameraControl>,
    /// Mask over the first frame: white marks what stays still.
    pub static_mask: Option<String>,
    /// Masks over the first frame whose white pixels follow a path.
    #[serde(default)]
    pub dynamic_masks: Vec<DynamicMaskInput>,
    /// `std` [default] or `pro` (twice the steps).
    pub mode: Option<Mode>,
    /// 1 to 4 clips [default: 1].
    pub number_results: Option<u32>,
    /// [default: mp4]
    pub output_format: Option<OutputFormat>,
    /// 20 (smallest) to 99 (best) [default: 95].
    pub output_quality: Option<u8>,
    /// POSTed the job when it ends, signed with `X-Kiln-Signature`.
    pub webhook_url: Option<String>,
    /// Receives an HTTP PUT of the video file (one result only).
    pub upload_endpoint: Option<String>,
    /// Seconds the outputs are kept [default: the server's].
    pub ttl: Option<u64>,
    /// Report the cost in the result.
    #[serde(default)]
    pub include_cost: bool,
}

/// Seconds as `5`, `5.0` or `"5"`: the dialects disagree on the type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum DurationSeconds {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum AspectRatio {
    #[serde(rename = "16:9")]
    Landscape,
    #[serde(rename = "9:16")]
    Portrait,
    #[serde(rename = "1:1")]
    Square,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FrameImage {
    /// An http(s) URL or a `data:image/...;base64,` URI.
    pub image: String,
    #[serde(default)]
    pub frame: FramePosition,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum FramePosition {
    #[default]
    First,
    Last,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraControl {
    #[serde(rename = "type")]
    pub kind: CameraType,
    /// Axes for `simple`; presets take none.
    pub config: Option<CameraAxes>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CameraType {
    Simple,
    DownBack,
    ForwardUp,
    RightTurnForward,
    LeftTurnForward,
}

impl CameraType {
    fn preset_name(self) -> Option<&'static str> {
        match self {
            CameraType::Simple => None,
            CameraType::DownBack => Some("down_back"),
            CameraType::ForwardUp => Some("forward_up"),
            CameraType::RightTurnForward => Some("right_turn_forward"),
            CameraType::LeftTurnForward => Some("left_turn_forward"),
        }
    }
}

/// Each axis −10 to 10; missing axes are 0.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CameraAxes {
    pub horizontal: Option<f64>,
    pub vertical: Option<f64>,
    pub pan: Option<f64>,
    pub tilt: Option<f64>,
    pub roll: Option<f64>,
    pub zoom: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DynamicMaskInput {
    /// Mask image over the first frame (URL or data URI); white pixels move.
    pub mask: String,
    /// The path, in pixels of the first-frame image (origin top left), spread over the clip.
    pub trajectories: Vec<TrajectoryPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrajectoryPoint {
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Std,
    Pro,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    #[default]
    Mp4,
    Webm,
    Mov,
}

impl OutputFormat {
    pub fn video_format(self) -> kiln_media::video_out::VideoFormat {
        use kiln_media::video_out::VideoFormat;
        match self {
            OutputFormat::Mp4 => VideoFormat::Mp4,
            OutputFormat::Webm => VideoFormat::Webm,
            OutputFormat::Mov => VideoFormat::Mov,
        }
    }
}

/// Why a request was refused, naming the field; maps to each surface's error shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RequestError {
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The request is well-formed but the loaded model cannot honour this control.
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
}

impl RequestError {
    pub fn field(&self) -> &str {
        match self {
            RequestError::Invalid { field, .. } | RequestError::Unsupported { field, .. } => field,
        }
    }
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::Invalid {
        field: field.into(),
        message: message.into(),
    }
}

fn unsupported(field: impl Into<String>, message: impl Into<String>) -> RequestError {
    RequestError::Unsupported {
        field: field.into(),
        message: message.into(),
    }
}

/// Server-side bounds that are not the model's.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    pub default_ttl: Duration,
    pub max_ttl: Duration,
    /// Lets webhook/upload URLs name loopback or private addresses.
    pub allow_private_addresses: bool,
}

/// A validated request with every default resolved: what a job stores and a worker runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedRequest {
    pub prompt: String,
    pub negative_prompt: String,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    pub fps: u32,
    pub steps: usize,
    pub guidance_scale: f64,
    pub seed: u64,
    pub first_frame: Option<String>,
    pub last_frame: Option<String>,
    /// [horizontal, vertical, pan, tilt, roll, zoom].
    pub camera: Option<[f64; 6]>,
    pub static_mask: Option<String>,
    pub dynamic_masks: Vec<ResolvedDynamicMask>,
    pub mode: Mode,
    pub number_results: u32,
    pub output_format: OutputFormat,
    pub output_quality: u8,
    pub webhook_url: Option<String>,
    pub upload_endpoint: Option<String>,
    pub ttl_seconds: u64,
    pub include_cost: bool,
    /// The server's address as the submitting client saw it (`https://127.0.0.1:8444`),
    /// so output URLs in results and webhooks are absolute without `public_url`.
    #[serde(default)]
    pub base_url: Option<String>,
    /// What a dialect must echo later (fal's endpoint id, WaveSpeed's model path…).
    #[serde(default)]
    pub dialect_meta: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResolvedDynamicMask {
    pub mask: String,
    /// Points in pixels of the first-frame image, mapped to the clip by the worker once the
    /// image's size is known.
    pub trajectory: Vec<[f32; 2]>,
}

/// Largest accepted side, so one request cannot ask for an image the size of a poster wall.
const MAX_SIDE: usize = 2048;
const MAX_STEPS: usize = 200;
const MAX_RESULTS: u32 = 4;

impl VideoRequest {
    /// Checks every field against the API's rules and `caps`, and fills in defaults.
    /// The first problem found is returned, naming its field, cause and fix.
    pub fn validate(
        &self,
        caps: &ModelCapabilities,
        limits: &RequestLimits,
    ) -> Result<ResolvedRequest, RequestError> {
        let d = &caps.defaults;
        let prompt = self.prompt.trim();
        // Image-to-video may leave the motion to the model (Kling's i2v prompt is optional).
        let has_first_frame = self.images.iter().any(|i| i.frame == FramePosition::First);
        if prompt.is_empty() && !has_first_frame {
            return Err(invalid(
                "prompt",
                "the prompt is empty; describe the video to generate (it may be left out only with a first-frame image)",
            ));
        }
        let chars = self.prompt.chars().count();
        if chars > MAX_PROMPT_CHARS {
            return Err(invalid(
                "prompt",
                format!("the prompt has {chars} characters; at most {MAX_PROMPT_CHARS} are allowed, shorten it"),
            ));
        }
        let negative_prompt = self
            .negative_prompt
            .clone()
            .unwrap_or_else(|| d.negative_prompt.clone());
        if negative_prompt.chars().count() > MAX_PROMPT_CHARS {
            return Err(invalid(
                "negative_prompt",
                format!("at most {MAX_PROMPT_CHARS} characters are allowed; shorten it"),
            ));
        }

        let frames = self.resolve_frames(caps)?;
        let (width, height) = self.resolve_size(caps)?;

        let guidance_scale = match (self.cfg_scale, self.guidance) {
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "guidance",
                    "give either cfg_scale (0 to 1) or guidance, not both",
                ))
            }
            (Some(c), None) => kiln_pipeline::guidance_from_cfg_scale(c).map_err(|_| {
                invalid(
                    "cfg_scale",
                    format!(
                        "cfg_scale = {c}; expected a number from 0 to 1 (0.5 is the usual value)"
                    ),
                )
            })?,
            (None, Some(g)) => {
                if !(g.is_finite() && (0.0..=50.0).contains(&g)) {
                    return Err(invalid(
                        "guidance",
                        format!("guidance = {g}; expected 0 to 50 (1 or less turns guidance off)"),
                    ));
                }
                g
            }
            (None, None) => d.guidance_scale,
        };

        let mode = self.mode.unwrap_or_default();
        let steps = match self.steps {
            Some(s) if s == 0 || s > MAX_STEPS => {
                return Err(invalid(
                    "steps",
                    format!(
                        "steps = {s}; expected 1 to {MAX_STEPS}, or leave it out for the model's"
                    ),
                ))
            }
            Some(s) => s,
            // Pro buys quality with time: twice the model's steps.
            None => match mode {
                Mode::Std => d.steps,
                Mode::Pro => (d.steps * 2).min(MAX_STEPS),
            },
        };

        let seed = self.seed.unwrap_or_else(random_seed);

        let (first_frame, last_frame) = self.resolve_images(caps)?;
        if !self.reference_images.is_empty() && !caps.accepts_reference_images {
            return Err(unsupported(
                "reference_images",
                "the loaded model cannot use reference images; leave reference_images out, or put the subject in a first-frame image (images[].frame = first) on a model that takes images",
            ));
        }
        let camera = self.resolve_camera(caps)?;
        let (static_mask, dynamic_masks) = self.resolve_masks(caps, first_frame.is_some())?;

        let number_results = self.number_results.unwrap_or(1);
        if !(1..=MAX_RESULTS).contains(&number_results) {
            return Err(invalid(
                "number_results",
                format!("number_results = {number_results}; expected 1 to {MAX_RESULTS}"),
            ));
        }
        let output_quality = self.output_quality.unwrap_or(95);
        if !(20..=99).contains(&output_quality) {
            return Err(invalid(
                "output_quality",
                format!("output_quality = {output_quality}; expected 20 (smallest file) to 99 (best picture), 95 by default"),
            ));
        }
        if let Some(url) = &self.webhook_url {
            check_delivery_url("webhook_url", url, limits)?;
        }
        if let Some(url) = &self.upload_endpoint {
            check_delivery_url("upload_endpoint", url, limits)?;
            if number_results != 1 {
                return Err(invalid(
                    "upload_endpoint",
                    "an upload endpoint receives one file; set number_results to 1 or leave upload_endpoint out",
                ));
            }
        }
        let ttl_seconds = match self.ttl {
            Some(t) if t == 0 || t > limits.max_ttl.as_secs() => {
                return Err(invalid(
                    "ttl",
                    format!(
                        "ttl = {t}; expected 1 to {} seconds",
                        limits.max_ttl.as_secs()
                    ),
                ))
            }
            Some(t) => t,
            None => limits.default_ttl.as_secs().max(1),
        };

        Ok(ResolvedRequest {
            prompt: self.prompt.clone(),
            negative_prompt,
            frames,
            width,
            height,
            fps: d.fps,
            steps,
            guidance_scale,
            seed,
            first_frame,
            last_frame,
            camera,
            static_mask,
            dynamic_masks,
            mode,
            number_results,
            output_format: self.output_format.unwrap_or_default(),
            output_quality,
            webhook_url: self.webhook_url.clone(),
            upload_endpoint: self.upload_endpoint.clone(),
            ttl_seconds,
            include_cost: self.include_cost,
            base_url: None,
            dialect_meta: serde_json::Value::Null,
        })
    }

    fn resolve_frames(&self, caps: &ModelCapabilities) -> Result<usize, RequestError> {
        let d = &caps.defaults;
        let tf = caps.temporal_factor.max(1);
        let max_frames = d.frames_for_seconds(10.0);
        match (&self.duration, self.frames) {
            (Some(_), Some(_)) => Err(invalid(
                "frames",
                "give either duration or frames, not both",
            )),
            (Some(duration), None) => {
                let seconds = match duration {
                    DurationSeconds::Number(n) => Some(*n),
                    DurationSeconds::Text(t) => t.trim().parse::<f64>().ok(),
                };
                match seconds {
                    Some(s) if s == 5.0 || s == 10.0 => Ok(d.frames_for_seconds(s)),
                    _ => Err(invalid(
                        "duration",
                        format!("duration = {duration:?}; expected 5 or 10 (seconds), or give frames instead"),
                    )),
                }
            }
            (None, Some(f)) => {
                if f == 0 || (f - 1) % tf != 0 || f > max_frames {
                    let lower = f.saturating_sub(1) / tf * tf + 1;
                    return Err(invalid(
                        "frames",
                        format!(
                            "frames = {f}; the frame count must be of the form {tf}n+1 and at most {max_frames}; use {lower} or {}",
                            lower + tf
                        ),
                    ));
                }
                Ok(f)
            }
            (None, None) => Ok(d.frames_for_seconds(f64::from(d.seconds))),
        }
    }

    fn resolve_size(&self, caps: &ModelCapabilities) -> Result<(usize, usize), RequestError> {
        let sizes = &caps.defaults.sizes;
        let m = caps.size_multiple.max(1);
        match (self.aspect_ratio, self.width, self.height) {
            (Some(_), Some(_), _) | (Some(_), _, Some(_)) => Err(invalid(
                "aspect_ratio",
                "give either aspect_ratio or width and height, not both",
            )),
            (None, Some(_), None) => Err(invalid(
                "height",
                "width was given without height; give both",
            )),
            (None, None, Some(_)) => Err(invalid(
                "width",
                "height was given without width; give both",
            )),
            (None, Some(w), Some(h)) => {
                for (name, v) in [("width", w), ("height", h)] {
                    if v == 0 || v % m != 0 || v > MAX_SIDE {
                        let lower = (v / m * m).clamp(m, MAX_SIDE);
                        return Err(invalid(
                            name,
                            format!("{name} = {v}; sizes must be multiples of {m} up to {MAX_SIDE}; use {lower}"),
                        ));
                    }
                }
                Ok((w, h))
            }
            (aspect, None, None) => {
                let [w, h] = match aspect.unwrap_or(AspectRatio::Landscape) {
                    AspectRatio::Landscape => sizes.landscape,
                    AspectRatio::Portrait => sizes.portrait,
                    AspectRatio::Square => sizes.square,
                };
                Ok((w, h))
            }
        }
    }

    fn resolve_images(
        &self,
        caps: &ModelCapabilities,
    ) -> Result<(Option<String>, Option<String>), RequestError> {
        if self.images.is_empty() {
            return Ok((None, None));
        }
        if !caps.accepts_images {
            return Err(unsupported(
                "images",
                "the loaded model takes text only; leave images out, or run a model with the image-to-video input (kiln's bundled model)",
            ));
        }
        let (mut first, mut last) = (None, None);
        for (i, image) in self.images.iter().enumerate() {
            let field = format!("images[{i}].image");
            check_image_source(&field, &image.image)?;
            let slot = match image.frame {
                FramePosition::First => &mut first,
                FramePosition::Last => &mut last,
            };
            if slot.is_some() {
                return Err(invalid(
                    format!("images[{i}].frame"),
                    "two images for the same frame; give at most one first and one last frame",
                ));
            }
            *slot = Some(image.image.clone());
        }
        Ok((first, last))
    }

    fn resolve_camera(&self, caps: &ModelCapabilities) -> Result<Option<[f64; 6]>, RequestError> {
        let Some(control) = &self.camera_control else {
            return Ok(None);
        };
        if !caps.accepts_camera {
            return Err(unsupported(
                "camera_control",
                "the loaded model has no camera control; leave camera_control out and describe the camera in the prompt, or run a model with kiln's camera embedder (the bundled model)",
            ));
        }
        if let Some(name) = control.kind.preset_name() {
            if control.config.is_some() {
                return Err(invalid(
                    "camera_control.config",
                    format!("the {name} preset takes no config; leave config out, or use type simple with axes"),
                ));
            }
            return Ok(camera_preset(name));
        }
        let Some(c) = &control.config else {
            return Err(invalid(
                "camera_control.config",
                "type simple needs config with at least one axis (horizontal, vertical, pan, tilt, roll, zoom)",
            ));
        };
        let named = [
            ("horizontal", c.horizontal),
            ("vertical", c.vertical),
            ("pan", c.pan),
            ("tilt", c.tilt),
            ("roll", c.roll),
            ("zoom", c.zoom),
        ];
        let mut axes = [0.0; 6];
        for (slot, (name, v)) in axes.iter_mut().zip(named) {
            let v = v.unwrap_or(0.0);
            if !(v.is_finite() && v.abs() <= CAMERA_LIMIT) {
                return Err(invalid(
                    format!("camera_control.config.{name}"),
                    format!("{name} = {v}; expected -{CAMERA_LIMIT} to {CAMERA_LIMIT}"),
                ));
            }
            *slot = v;
        }
        Ok(Some(axes))
    }

    #[allow(clippy::type_complexity)]
    fn resolve_masks(
        &self,
        caps: &ModelCapabilities,
        has_first_frame: bool,
    ) -> Result<(Option<String>, Vec<ResolvedDynamicMask>), RequestError> {
        if self.static_mask.is_none() && self.dynamic_masks.is_empty() {
            return Ok((None, Vec::new()));
        }
        let field = if self.static_mask.is_some() {
            "static_mask"
        } else {
            "dynamic_masks"
        };
        if !caps.accepts_images {
            return Err(unsupported(
                field,
                "the loaded model takes text only; masks need a model with the image-to-video input (kiln's bundled model)",
            ));
        }
        if !has_first_frame {
            return Err(invalid(
                field,
                "masks are drawn over the first frame; add an image with frame first",
            ));
        }
        if let Some(mask) = &self.static_mask {
            check_image_source("static_mask", mask)?;
        }
        let mut dynamic = Vec::with_capacity(self.dynamic_masks.len());
        for (i, m) in self.dynamic_masks.iter().enumerate() {
            check_image_source(&format!("dynamic_masks[{i}].mask"), &m.mask)?;
            if m.trajectories.is_empty() {
                return Err(invalid(
                    format!("dynamic_masks[{i}].trajectories"),
                    "a dynamic mask needs at least one {x, y} point",
                ));
            }
            let mut trajectory = Vec::with_capacity(m.trajectories.len());
            for (j, p) in m.trajectories.iter().enumerate() {
                if !(p.x.is_finite() && p.y.is_finite()) {
                    return Err(invalid(
                        format!("dynamic_masks[{i}].trajectories[{j}]"),
                        "x and y must be finite numbers (pixels of the first-frame image)",
                    ));
                }
                trajectory.push([p.x as f32, p.y as f32]);
            }
            dynamic.push(ResolvedDynamicMask {
                mask: m.mask.clone(),
                trajectory,
            });
        }
        Ok((self.static_mask.clone(), dynamic))
    }
}

/// A server reads images from the network or the request only: a path would let a client
/// read the server's files.
fn check_image_source(field: &str, text: &str) -> Result<(), RequestError> {
    match ImageSource::parse(text) {
        ImageSource::Url(url) if is_http_url(&url) => Ok(()),
        ImageSource::DataUri(_) | ImageSource::Base64(_) => Ok(()),
        _ => Err(invalid(
            field,
            "expected an http(s) URL or a data:image/...;base64, URI (file paths are not read by the server)",
        )),
    }
}

fn is_http_url(text: &str) -> bool {
    reqwest::Url::parse(text)
        .map(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .unwrap_or(false)
}

fn check_delivery_url(field: &str, text: &str, limits: &RequestLimits) -> Result<(), RequestError> {
    let url = reqwest::Url::parse(text)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| invalid(field, "expected an absolute http:// or https:// URL"))?;
    // Names are checked again when resolved at delivery; an address literal can be refused now.
    if let Some(ip) = host_address(&url) {
        if !limits.allow_private_addresses && !is_public(ip) {
            return Err(invalid(
                field,
                format!("{ip} is a loopback or private address, which this server does not call; use a publicly reachable URL"),
            ));
        }
    }
    Ok(())
}

/// A seed in PyTorch's usual 32-bit range, so it can be replayed in diffusers.
fn random_seed() -> u64 {
    u64::from(uuid::Uuid::new_v4().as_u128() as u32)
}

/// The host of `url` when it is an address literal (`127.0.0.1`, `[::1]`).
pub(crate) fn host_address(url: &reqwest::Url) -> Option<IpAddr> {
    let host = url.host_str()?;
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}
