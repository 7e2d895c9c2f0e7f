//! `videoInference` in: Runware's field names and types become a [`VideoRequest`], and
//! kiln's validation errors go back out under Runware's parameter names. Controls kiln
//! cannot honour (content checks, LoRAs, audio, other output types) are refused by name.

use serde_json::{Map, Value};

use super::RunwareError;
use crate::dialects::uploads;
use crate::request::{
    AspectRatio, CameraAxes, CameraControl, CameraType, DurationSeconds, FrameImage, FramePosition,
    OutputFormat, RequestError, VideoRequest,
};
use crate::AppState;

/// Every field of the SDK's `IVideoInference` (0.5.24) as it reaches the wire. Anything
/// else is refused by name rather than ignored.
const KNOWN_FIELDS: &[&str] = &[
    "taskType",
    "taskUUID",
    "deliveryMethod",
    "model",
    "positivePrompt",
    "negativePrompt",
    "width",
    "height",
    "duration",
    "CFGScale",
    "seed",
    "steps",
    "numberResults",
    "outputType",
    "outputFormat",
    "outputQuality",
    "includeCost",
    "ttl",
    "uploadEndpoint",
    "webhookURL",
    "safety",
    "nsfw_check",
    "inputs",
    "frameImages",
    "referenceImages",
    "providerSettings",
    "fps",
    "scheduler",
    "acceleration",
    "acceleratorOptions",
    "resolution",
    "lora",
    "speech",
    "settings",
    "advancedFeatures",
    "referenceVideos",
    "inputAudios",
];

/// kiln's request field names with underscores and their Runware names, for messages.
const RENAMES: &[(&str, &str)] = &[
    ("negative_prompt", "negativePrompt"),
    ("cfg_scale", "CFGScale"),
    ("number_results", "numberResults"),
    ("output_format", "outputFormat"),
    ("output_quality", "outputQuality"),
    ("webhook_url", "webhookURL"),
    ("upload_endpoint", "uploadEndpoint"),
    ("camera_control", "providerSettings.klingai.cameraControl"),
];

/// A translated `videoInference`.
pub(crate) struct VideoTask {
    pub request: VideoRequest,
    /// `deliveryMethod: "sync"`: answer with the videos, no acknowledgement.
    pub sync: bool,
    /// Where each entry of `request.images` came from, for errors.
    images: Vec<ImagePath>,
    frame_field: String,
    reference_field: String,
}

/// The Runware path of one frame image: the array item and its image string.
struct ImagePath {
    item: String,
    image: String,
}

impl VideoTask {
    /// kiln's validation error under Runware's parameter name.
    pub(crate) fn request_error(&self, e: RequestError) -> RunwareError {
        let rename = |message: String| {
            RENAMES
                .iter()
                .fold(message, |m, (kiln, runware)| m.replace(kiln, runware))
        };
        match e {
            RequestError::Invalid { field, message } => {
                RunwareError::invalid(self.runware_field(&field), rename(message))
            }
            RequestError::Unsupported { field, message } => {
                RunwareError::unsupported(self.runware_field(&field), rename(message))
            }
        }
    }

    fn runware_field(&self, field: &str) -> String {
        let split = field.find(['.', '[']).unwrap_or(field.len());
        let (head, rest) = field.split_at(split);
        let renamed = match head {
            "prompt" => "positivePrompt",
            "negative_prompt" => "negativePrompt",
            "cfg_scale" | "guidance" => "CFGScale",
            "frames" => "duration",
            "aspect_ratio" => "width",
            "number_results" => "numberResults",
            "output_format" => "outputFormat",
            "output_quality" => "outputQuality",
            "webhook_url" => "webhookURL",
            "upload_endpoint" => "uploadEndpoint",
            "reference_images" => return format!("{}{rest}", self.reference_field),
            "camera_control" => return format!("providerSettings.klingai.cameraControl{rest}"),
            "images" => return self.image_field(rest),
            _ => return field.to_string(),
        };
        format!("{renamed}{rest}")
    }

    /// `images[1].image` → `inputs.frameImages[1].image` (or wherever that image was).
    fn image_field(&self, rest: &str) -> String {
        let parsed = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(index, tail)| Some((index.parse::<usize>().ok()?, tail)));
        match parsed.and_then(|(i, tail)| Some((self.images.get(i)?, tail))) {
            Some((path, ".image")) => path.image.clone(),
            Some((path, tail)) => format!("{}{tail}", path.item),
            None => format!("{}{rest}", self.frame_field),
        }
    }
}

/// Typed reads of one JSON object's fields; errors name the field's Runware path.
#[derive(Clone, Copy)]
struct Fields<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

impl<'a> Fields<'a> {
    fn path(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// A value that is present and not null.
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    fn wrong_type(&self, key: &str, expected: &str) -> RunwareError {
        let path = self.path(key);
        RunwareError::invalid(&path, format!("{path} must be {expected}"))
    }

    fn string(&self, key: &str) -> Result<Option<&'a str>, RunwareError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.wrong_type(key, "a string")),
        }
    }

    fn number(&self, key: &str) -> Result<Option<f64>, RunwareError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a number")),
        }
    }

    /// A whole number (`5` or `5.0`).
    fn integer(&self, key: &str) -> Result<Option<i64>, RunwareError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .or_else(|| {
                    v.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
                        .map(|f| f as i64)
                })
                .map(Some)
                .ok_or_else(|| self.wrong_type(key, "a whole number")),
        }
    }

    /// A whole number from 0 up, as `T`.
    fn count<T: TryFrom<i64>>(&self, key: &str) -> Result<Option<T>, RunwareError> {
        match self.integer(key)? {
            None => Ok(None),
            Some(n) => T::try_from(n)
                .map(Some)
                .map_err(|_| self.wrong_type(key, "a positive whole number in range")),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, RunwareError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(self.wrong_type(key, "true or false")),
        }
    }

    fn object(&self, key: &str) -> Result<Option<&'a Map<String, Value>>, RunwareError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(self.wrong_type(key, "an object")),
        }
    }

    fn array(&self, key: &str) -> Result<Option<&'a Vec<Value>>, RunwareError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(self.wrong_type(key, "an array")),
        }
    }

    /// Refuses `key` when it is set to anything but null or empty.
    fn refuse_if_set(&self, key: &str, why: &str) -> Result<(), RunwareError> {
        match self.map.get(key) {
            Some(v) if is_set(v) => {
                let path = self.path(key);
                Err(RunwareError::unsupported(&path, format!("{path}: {why}")))
            }
            _ => Ok(()),
        }
    }
}

/// Not null, `false`, or an empty string, array or object: the SDK leaves those out anyway.
fn is_set(value: &Value) -> bool {
    match value {
        Value::Null | Value::Bool(false) => false,
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
        _ => true,
    }
}

/// Runware's 2-character minimum (kiln checks the 2500-character maximum).
fn check_prompt(field: &str, prompt: &str) -> Result<(), RunwareError> {
    if prompt.trim().chars().count() < 2 {
        return Err(RunwareError::invalid(
            field,
            format!("{field} must have 2 to 2500 characters"),
        ));
    }
    Ok(())
}

/// The Runware model ids this server answers to, for the not-found message.
fn served_models(state: &AppState) -> String {
    let airs: Vec<&str> = state
        .config
        .model_ids
        .iter()
        .map(String::as_str)
        .filter(|id| id.contains(':') && id.contains('@'))
        .collect();
    if airs.is_empty() {
        state.config.model_name.clone()
    } else {
        airs.join(" or ")
    }
}

pub(crate) async fn translate(
    state: &AppState,
    task: &Map<String, Value>,
) -> Result<VideoTask, RunwareError> {
    let f = Fields {
        map: task,
        path: "",
    };
    if let Some((key, _)) = task
        .iter()
        .find(|(key, value)| !KNOWN_FIELDS.contains(&key.as_str()) && is_set(value))
    {
        return Err(RunwareError::unsupported(
            key,
            format!("{key} is not a videoInference parameter this server knows; leave it out"),
        ));
    }

    let sync = match f.string("deliveryMethod")? {
        None | Some("async") => false,
        Some("sync") => true,
        Some(other) => return Err(RunwareError::invalid(
            "deliveryMethod",
            format!("deliveryMethod {other:?}; expected async (acknowledge now, then getResponse) or sync (answer with the videos)"),
        )),
    };
    let model = f.string("model")?.ok_or_else(|| {
        RunwareError::invalid(
            "model",
            format!("model is required; use {}", served_models(state)),
        )
    })?;
    if !state.config.serves_model(model) {
        return Err(RunwareError::ModelNotFound {
            model: model.to_string(),
            served: served_models(state),
        });
    }

    let prompt = f.string("positivePrompt")?.ok_or_else(|| {
        RunwareError::invalid(
            "positivePrompt",
            "positivePrompt is required: 2 to 2500 characters describing the video",
        )
    })?;
    check_prompt("positivePrompt", prompt)?;
    let negative_prompt = f.string("negativePrompt")?;
    if let Some(negative) = negative_prompt {
        check_prompt("negativePrompt", negative)?;
    }
    // Checked here too, so the message speaks Runware (kiln's also offers `frames`).
    let duration = match f.get("duration") {
        None => None,
        Some(value) => {
            let seconds = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok(),
                _ => None,
            };
            match seconds {
                Some(s) if s == 5.0 || s == 10.0 => Some(DurationSeconds::Number(s)),
                _ => {
                    return Err(RunwareError::invalid(
                        "duration",
                        format!("duration = {value}; expected 5 or 10 (seconds)"),
                    ))
                }
            }
        }
    };
    let output_type = f.string("outputType")?;
    if output_type.is_some_and(|t| !t.eq_ignore_ascii_case("URL")) {
        return Err(RunwareError::unsupported(
            "outputType",
            "this server delivers videos as URLs only; set outputType to URL or leave it out",
        ));
    }
    let output_format = match f.string("outputFormat")? {
        None => None,
        Some(s) => Some(match s.to_ascii_uppercase().as_str() {
            "MP4" => OutputFormat::Mp4,
            "WEBM" => OutputFormat::Webm,
            "MOV" => OutputFormat::Mov,
            _ => {
                return Err(RunwareError::invalid(
                    "outputFormat",
                    format!("outputFormat {s:?}; expected MP4, WEBM or MOV"),
                ))
            }
        }),
    };
    let output_quality = match f.integer("outputQuality")? {
        None => None,
        Some(q) => Some(
            u8::try_from(q)
                .ok()
                .filter(|q| (20..=99).contains(q))
                .ok_or_else(|| {
                    RunwareError::invalid(
                        "outputQuality",
                        format!(
                            "outputQuality = {q}; expected 20 (smallest file) to 99 (best picture)"
                        ),
                    )
                })?,
        ),
    };
    let ttl = match f.integer("ttl")? {
        None => None,
        Some(t) if t < 60 => {
            return Err(RunwareError::invalid(
                "ttl",
                format!("ttl = {t}; expected at least 60 seconds"),
            ))
        }
        Some(t) => Some(t as u64),
    };
    let seed = match f.get("seed") {
        None => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            f.wrong_type("seed", "a whole number from 0 to 18446744073709551615")
        })?),
    };

    check_model_controls(state, f)?;
    check_safety(f)?;
    let camera_control = provider_settings(f)?;

    let inputs = f.object("inputs")?;
    let inputs_fields = inputs.map(|map| Fields {
        map,
        path: "inputs",
    });
    let mut frame_source: Option<(String, &Vec<Value>)> = None;
    let mut reference_source: Option<(String, &Vec<Value>)> = None;
    if let Some(inputs) = inputs_fields {
        for (key, value) in inputs.map {
            let known = ["frameImages", "frames", "referenceImages", "references"];
            if !known.contains(&key.as_str()) && is_set(value) {
                return Err(RunwareError::unsupported(
                    format!("inputs.{key}"),
                    format!("inputs.{key} is not an input this model takes; give frame images in inputs.frameImages"),
                ));
            }
        }
        // The SDK copies deprecated `frames`/`references` into the new names and sends both.
        for (keys, source) in [
            (["frameImages", "frames"], &mut frame_source),
            (["referenceImages", "references"], &mut reference_source),
        ] {
            for key in keys {
                if source.is_none() {
                    if let Some(items) = inputs.array(key)?.filter(|items| !items.is_empty()) {
                        *source = Some((format!("inputs.{key}"), items));
                    }
                }
            }
        }
    }
    // The legacy top-level forms.
    for (key, source) in [
        ("frameImages", &mut frame_source),
        ("referenceImages", &mut reference_source),
    ] {
        if let Some(items) = f.array(key)?.filter(|items| !items.is_empty()) {
            if let Some((other, _)) = source {
                return Err(RunwareError::invalid(
                    key,
                    format!("give {key} once: in {other} or at the top level, not both"),
                ));
            }
            *source = Some((key.to_string(), items));
        }
    }
    let (images, image_paths) = match &frame_source {
        Some((path, items)) => frame_images(state, path, items).await?,
        None => (Vec::new(), Vec::new()),
    };
    let reference_images = match &reference_source {
        Some((path, items)) => reference_images(state, path, items).await?,
        None => Vec::new(),
    };
    let frame_field = frame_source.map_or_else(|| "inputs.frameImages".into(), |(p, _)| p);
    let reference_field =
        reference_source.map_or_else(|| "inputs.referenceImages".into(), |(p, _)| p);

    let (width, height) = (f.count("width")?, f.count("height")?);
    let aspect_ratio = width.zip(height).and_then(platform_size_aspect);
    let (width, height) = if aspect_ratio.is_some() {
        (None, None)
    } else {
        (width, height)
    };
    let request = VideoRequest {
        prompt: prompt.to_string(),
        negative_prompt: negative_prompt.map(str::to_string),
        duration,
        aspect_ratio,
        width,
        height,
        cfg_scale: f.number("CFGScale")?,
        steps: f.count("steps")?,
        seed,
        images,
        reference_images,
        camera_control,
        number_results: f.count("numberResults")?,
        output_format,
        output_quality,
        webhook_url: f.string("webhookURL")?.map(str::to_string),
        upload_endpoint: f.string("uploadEndpoint")?.map(str::to_string),
        ttl,
        include_cost: f.boolean("includeCost")?.unwrap_or(false),
        ..VideoRequest::default()
    };
    Ok(VideoTask {
        request,
        sync,
        images: image_paths,
        frame_field,
        reference_field,
    })
}

/// The sizes Runware's Kling 2.1 Master renders (1080p, and 720p for the standard tier)
/// name an aspect ratio: a local model renders its own size for that aspect, as it does for
/// the other dialects' `aspect_ratio`. Any other size is taken as pixels.
fn platform_size_aspect((width, height): (usize, usize)) -> Option<AspectRatio> {
    match (width, height) {
        (1920, 1080) | (1280, 720) => Some(AspectRatio::Landscape),
        (1080, 1920) | (720, 1280) => Some(AspectRatio::Portrait),
        (1080, 1080) | (720, 720) => Some(AspectRatio::Square),
        _ => None,
    }
}

/// SDK fields for other model families: accepted when they ask for nothing kiln would
/// have to ignore.
fn check_model_controls(state: &AppState, f: Fields<'_>) -> Result<(), RunwareError> {
    let fps = state.capabilities.defaults.fps;
    if let Some(asked) = f.integer("fps")? {
        if asked != i64::from(fps) {
            return Err(RunwareError::unsupported(
                "fps",
                format!("fps = {asked}; this model makes {fps} fps video; leave fps out or set it to {fps}"),
            ));
        }
    }
    f.refuse_if_set(
        "scheduler",
        "this server has one sampler and cannot switch schedulers; leave it out",
    )?;
    f.refuse_if_set(
        "resolution",
        "give the frame size as width and height instead",
    )?;
    f.refuse_if_set("lora", "this server cannot load LoRAs; leave lora out")?;
    f.refuse_if_set("speech", "this model makes silent video; leave speech out")?;
    f.refuse_if_set(
        "referenceVideos",
        "this model takes no reference videos; leave it out",
    )?;
    f.refuse_if_set("inputAudios", "this model makes silent video; leave it out")?;
    // `acceleration` and `acceleratorOptions` trade quality for speed; kiln runs at full
    // quality, so ignoring them never gives a worse video than asked for.
    for key in ["settings", "advancedFeatures"] {
        if let Some(map) = f.object(key)? {
            if let Some((name, _)) = map.iter().find(|(_, v)| is_set(v)) {
                return Err(RunwareError::unsupported(
                    format!("{key}.{name}"),
                    format!("{key}.{name} is not a control this model has; leave it out"),
                ));
            }
        }
    }
    Ok(())
}

/// kiln has no content checker: a requested check is refused, never skipped silently.
fn check_safety(f: Fields<'_>) -> Result<(), RunwareError> {
    let refused = |parameter: &str| {
        RunwareError::unsupported(
            parameter,
            format!("{parameter}: this server has no content checker; set checkContent to false (or mode to none), or leave safety out"),
        )
    };
    match f.string("nsfw_check")? {
        None | Some("none") => {}
        Some(_) => return Err(refused("nsfw_check")),
    }
    let Some(map) = f.object("safety")? else {
        return Ok(());
    };
    let safety = Fields {
        map,
        path: "safety",
    };
    if safety.boolean("checkContent")? == Some(true) {
        return Err(refused("safety.checkContent"));
    }
    if safety.boolean("checkInputs")? == Some(true) {
        return Err(refused("safety.checkInputs"));
    }
    match safety.string("mode")? {
        None | Some("none") => {}
        Some(_) => return Err(refused("safety.mode")),
    }
    // `tolerance` tunes a check that does not run.
    if let Some((key, _)) = map.iter().find(|(k, v)| {
        !["checkContent", "checkInputs", "mode", "tolerance"].contains(&k.as_str()) && is_set(v)
    }) {
        return Err(RunwareError::unsupported(
            format!("safety.{key}"),
            format!("safety.{key} is not a safety setting this server knows; leave it out"),
        ));
    }
    Ok(())
}

/// `providerSettings.klingai`: camera control in, audio and multi-prompt refused. Other
/// providers' settings are for other models and do not apply here.
fn provider_settings(f: Fields<'_>) -> Result<Option<CameraControl>, RunwareError> {
    let Some(providers) = f.object("providerSettings")? else {
        return Ok(None);
    };
    let providers = Fields {
        map: providers,
        path: "providerSettings",
    };
    let Some(kling) = providers.object("klingai")? else {
        return Ok(None);
    };
    let kling = Fields {
        map: kling,
        path: "providerSettings.klingai",
    };
    kling.refuse_if_set("sound", "this model makes silent video; leave sound out")?;
    kling.refuse_if_set(
        "multiPrompt",
        "this server takes one prompt per video; use positivePrompt",
    )?;
    kling.refuse_if_set(
        "characterOrientation",
        "this model has no character orientation control; leave it out",
    )?;
    // The audio knobs only act with `sound`, which is refused above.
    const AUDIO_ONLY: [&str; 6] = [
        "soundVolume",
        "originalAudioVolume",
        "soundEffectPrompt",
        "bgmPrompt",
        "asmrMode",
        "keepOriginalSound",
    ];
    let known = [
        "sound",
        "multiPrompt",
        "characterOrientation",
        "cameraControl",
    ];
    if let Some((key, _)) = kling.map.iter().find(|(k, v)| {
        !known.contains(&k.as_str()) && !AUDIO_ONLY.contains(&k.as_str()) && is_set(v)
    }) {
        let path = kling.path(key);
        return Err(RunwareError::unsupported(
            &path,
            format!("{path} is not a KlingAI setting this server knows; leave it out"),
        ));
    }
    let Some(control) = kling.object("cameraControl")? else {
        return Ok(None);
    };
    let control = Fields {
        map: control,
        path: "providerSettings.klingai.cameraControl",
    };
    if let Some((key, _)) = control
        .map
        .iter()
        .find(|(k, v)| !["type", "config"].contains(&k.as_str()) && !v.is_null())
    {
        let path = control.path(key);
        return Err(RunwareError::invalid(
            &path,
            format!("{path} is not part of cameraControl; give type and config"),
        ));
    }
    let kind = match control.string("type")? {
        // The SDK leaves `type` out when only axes are given.
        None => CameraType::Simple,
        Some(name) => serde_json::from_value(Value::String(name.to_string())).map_err(|_| {
            RunwareError::invalid(
                control.path("type"),
                format!("camera type {name:?}; expected simple, down_back, forward_up, right_turn_forward or left_turn_forward"),
            )
        })?,
    };
    let config = match control.object("config")? {
        None => None,
        Some(map) => Some(
            serde_json::from_value::<CameraAxes>(Value::Object(map.clone())).map_err(|e| {
                RunwareError::invalid(
                    control.path("config"),
                    format!("{e}; config takes horizontal, vertical, pan, tilt, roll and zoom, each -10 to 10"),
                )
            })?,
        ),
    };
    Ok(Some(CameraControl { kind, config }))
}

/// `frameImages` items (a string, `{image, frame}` or the legacy `{inputImage, frame}`)
/// as kiln's first/last frame images; uploads of this server are inlined.
async fn frame_images(
    state: &AppState,
    path: &str,
    items: &[Value],
) -> Result<(Vec<FrameImage>, Vec<ImagePath>), RunwareError> {
    if items.len() > 2 {
        return Err(RunwareError::invalid(
            path,
            format!(
                "{} frame images; give at most two (frame first and frame last)",
                items.len()
            ),
        ));
    }
    let mut parsed: Vec<(String, Option<FramePosition>, ImagePath)> = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        match item {
            Value::String(image) => parsed.push((
                image.clone(),
                None,
                ImagePath {
                    item: item_path.clone(),
                    image: item_path,
                },
            )),
            Value::Object(map) => {
                let fields = Fields {
                    map,
                    path: &item_path,
                };
                let key = if map.contains_key("image") {
                    "image"
                } else {
                    "inputImage"
                };
                let image = fields.string(key)?.ok_or_else(|| {
                    RunwareError::invalid(
                        fields.path("image"),
                        format!("{item_path} needs an image: an imageUUID, URL, data URI or base64"),
                    )
                })?;
                let frame = match fields.get("frame") {
                    None => None,
                    Some(Value::String(s)) if s == "first" => Some(FramePosition::First),
                    Some(Value::String(s)) if s == "last" => Some(FramePosition::Last),
                    Some(v) if v.as_i64() == Some(0) => Some(FramePosition::First),
                    Some(v) => {
                        return Err(RunwareError::unsupported(
                            fields.path("frame"),
                            format!("frame {v}; this model places images at the first or last frame only: use first, last or 0"),
                        ))
                    }
                };
                if fields.number("timestamp")?.is_some_and(|t| t != 0.0) {
                    return Err(RunwareError::unsupported(
                        fields.path("timestamp"),
                        "this model places images at the first or last frame only; use frame first or last instead of a timestamp",
                    ));
                }
                parsed.push((
                    image.to_string(),
                    frame,
                    ImagePath {
                        item: item_path.clone(),
                        image: fields.path(key),
                    },
                ));
            }
            _ => {
                return Err(RunwareError::invalid(
                    &item_path,
                    format!("{item_path} must be an image string or {{\"image\": ..., \"frame\": \"first\"}}"),
                ))
            }
        }
    }
    // Unplaced images fill the first frame, then the last (one image = first frame).
    let mut taken: Vec<FramePosition> = parsed.iter().filter_map(|(_, f, _)| *f).collect();
    let mut images = Vec::with_capacity(parsed.len());
    let mut paths = Vec::with_capacity(parsed.len());
    for (image, frame, image_path) in parsed {
        let frame = frame.unwrap_or_else(|| {
            let slot = if taken.contains(&FramePosition::First) {
                FramePosition::Last
            } else {
                FramePosition::First
            };
            taken.push(slot);
            slot
        });
        images.push(FrameImage {
            image: resolve_image(state, &image, &image_path.image).await?,
            frame,
        });
        paths.push(image_path);
    }
    Ok((images, paths))
}

/// `referenceImages` items: strings, or `{images: [...]}` groups, flattened.
async fn reference_images(
    state: &AppState,
    path: &str,
    items: &[Value],
) -> Result<Vec<String>, RunwareError> {
    let mut images = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}[{index}]");
        match item {
            Value::String(image) => images.push(resolve_image(state, image, &item_path).await?),
            Value::Object(map) => {
                let fields = Fields {
                    map,
                    path: &item_path,
                };
                fields.refuse_if_set("audio", "this model makes silent video; leave it out")?;
                for (i, image) in fields.array("images")?.into_iter().flatten().enumerate() {
                    let image_path = format!("{item_path}.images[{i}]");
                    let Value::String(image) = image else {
                        return Err(RunwareError::invalid(
                            &image_path,
                            format!("{image_path} must be an image string"),
                        ));
                    };
                    images.push(resolve_image(state, image, &image_path).await?);
                }
            }
            _ => {
                return Err(RunwareError::invalid(
                    &item_path,
                    format!("{item_path} must be an image string"),
                ))
            }
        }
    }
    Ok(images)
}

/// An image reference as kiln's request takes it: an upload of this server (imageUUID or
/// its URL) becomes a data URI; URLs, data URIs and base64 pass through.
async fn resolve_image(state: &AppState, image: &str, field: &str) -> Result<String, RunwareError> {
    let inlined = uploads::inline(state, image).await;
    if inlined == image && uuid::Uuid::parse_str(image.trim()).is_ok() {
        return Err(RunwareError::invalid(
            field,
            format!("no uploaded image has imageUUID {image}; upload it with imageUpload first, or give a URL or data URI"),
        ));
    }
    Ok(inlined)
}
