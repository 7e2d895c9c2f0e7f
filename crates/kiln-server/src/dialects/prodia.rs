//! Prodia's v2 job API for its Kling job types (`inference.kling.txt2vid.v1` and
//! `inference.kling.img2vid.v1`), so the official `prodia` JS SDK (`prodia/v2`, with
//! `baseUrl: "http://127.0.0.1:PORT/v2"`) and plain HTTP clients run unchanged.
//!
//! It owns `POST /v2/job` (held until the video exists; the job as JSON, or as multipart
//! with one `job` part and `input` file parts that config fields name; the answer chosen by
//! `Accept`: multipart `job` + `output`, raw `video/mp4`, or the job JSON), the async family
//! under `/v2/job/async`, the job JSON (`state.current`: processing, processed, failed) and
//! Prodia's error forms. Prodia has no webhooks.
//!
//! Where Prodia's docs are silent: a `config.model`/`config.model_name` this server does
//! not serve is a 400 naming that field (Prodia answers invalid config with 400), and a
//! missing one means the loaded model, not `kling-v1`. A job that fails while a sync request
//! waits answers 400 with the failed job, so the SDK throws `ProdiaUserError` instead of
//! resending the whole job as it does after a 5xx. Sync jobs can be read through the async
//! routes too.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, Multipart, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine;
use kiln_jobs::{Job, JobError, JobState};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{enqueue, resolved_of, BaseUrl, Submission, SubmitError};
use super::{now_ms, utc_timestamp, wait_for_end};
use crate::auth::scheme_token;
use crate::request::{
    AspectRatio, CameraControl, DurationSeconds, DynamicMaskInput, FrameImage, FramePosition, Mode,
    RequestError, VideoRequest,
};
use crate::AppState;

pub(crate) const DIALECT: &str = "prodia";

const TXT2VID: &str = "inference.kling.txt2vid.v1";
const IMG2VID: &str = "inference.kling.img2vid.v1";
/// The name of the one output file of a job.
const OUTPUT_NAME: &str = "video.mp4";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/job", post(run_job))
        .route("/v2/job/async", post(create_async_job))
        .route("/v2/job/async/{id}/job.state.current", get(get_job_state))
        .route("/v2/job/async/{id}/job.json", get(get_job_json))
        .route("/v2/job/async/{id}/output", get(list_outputs))
        .route("/v2/job/async/{id}/output/{filename}", get(get_output))
}

/// Every Prodia error: `{"error": "..."}` with its HTTP status; a sync request that
/// accepts multipart gets it as the `error` of a failed job part instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProdiaError {
    /// The job or its config is not one this server accepts; the message names the field.
    #[error("{message}")]
    InvalidJob { message: String },
    #[error("missing or invalid token; send `Authorization: Bearer <token>` with a key configured on this server")]
    Unauthorized,
    #[error("{message}")]
    NotFound { message: String },
    #[error(
        "cannot answer with {accept}; accept multipart/form-data, video/mp4 or application/json"
    )]
    NotAcceptable { accept: String },
    #[error("the request body is over the {limit}-byte limit; send smaller inputs")]
    PayloadTooLarge { limit: usize },
    #[error("no capacity: the queue is full; retry after {retry_after} seconds")]
    QueueFull { retry_after: u64 },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl ProdiaError {
    fn status(&self) -> StatusCode {
        match self {
            ProdiaError::InvalidJob { .. } => StatusCode::BAD_REQUEST,
            ProdiaError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProdiaError::NotFound { .. } => StatusCode::NOT_FOUND,
            ProdiaError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            ProdiaError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProdiaError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ProdiaError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// `Retry-After` on 429 (the SDK waits that long and resends), `WWW-Authenticate` on 401.
    fn add_headers(&self, headers: &mut HeaderMap) {
        match self {
            ProdiaError::QueueFull { retry_after } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            ProdiaError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
    }
}

impl IntoResponse for ProdiaError {
    fn into_response(self) -> Response {
        if let ProdiaError::Internal { message } = &self {
            tracing::error!(%message, "internal error");
        }
        let mut response =
            (self.status(), Json(json!({ "error": self.to_string() }))).into_response();
        self.add_headers(response.headers_mut());
        response
    }
}

impl From<JobError> for ProdiaError {
    fn from(e: JobError) -> Self {
        ProdiaError::Internal {
            message: e.to_string(),
        }
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ProdiaError {
    ProdiaError::InvalidJob {
        message: format!("{field}: {message}"),
    }
}

fn body_error(state: &AppState, status: StatusCode, text: &str) -> ProdiaError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ProdiaError::PayloadTooLarge {
            limit: state.config.max_body_bytes,
        }
    } else {
        ProdiaError::InvalidJob {
            message: format!("cannot read the request body: {text}"),
        }
    }
}

fn caller(state: &AppState, headers: &HeaderMap) -> Result<String, ProdiaError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| scheme_token(v, "bearer"));
    state
        .keys
        .owner_for_key(token)
        .ok_or(ProdiaError::Unauthorized)
}

/// What a sync request gets back, by its `Accept`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Parts `job` and `output` (also errors, as a failed `job` part).
    Multipart,
    /// The video's bytes alone.
    Video,
    /// The job JSON alone.
    JobJson,
}

/// The JS SDK sends `multipart/form-data; video/mp4` (types joined by `; `), so both `,`
/// and `;` separate types here; parameters (`q=0.9`) are skipped.
fn negotiate(headers: &HeaderMap) -> Result<Answer, ProdiaError> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let types: Vec<String> = accept
        .split([',', ';'])
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| t.contains('/'))
        .collect();
    let has = |names: &[&str]| types.iter().any(|t| names.contains(&t.as_str()));
    if types.is_empty() || has(&["multipart/form-data", "multipart/*"]) {
        Ok(Answer::Multipart)
    } else if has(&["video/mp4", "video/*"]) {
        Ok(Answer::Video)
    } else if has(&["application/json", "application/*"]) {
        Ok(Answer::JobJson)
    } else if has(&["*/*"]) {
        Ok(Answer::Multipart)
    } else {
        Err(ProdiaError::NotAcceptable {
            accept: accept.to_string(),
        })
    }
}

/// One part of a multipart answer.
struct Part<'a> {
    name: &'a str,
    file_name: &'a str,
    content_type: &'a str,
    body: &'a [u8],
}

fn multipart_response(status: StatusCode, parts: &[Part<'_>]) -> Response {
    let boundary = format!("kiln-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for part in parts {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"{}\"; filename=\"{}\"\r\nContent-Type: {}\r\n\r\n",
                part.name, part.file_name, part.content_type
            )
            .as_bytes(),
        );
        body.extend_from_slice(part.body);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (
        status,
        [(
            header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )],
        body,
    )
        .into_response()
}

fn job_part(job: &Value) -> Vec<u8> {
    serde_json::to_vec(job).unwrap_or_default()
}

/// A sync request's error: for a client that accepts multipart, a 4xx is a failed `job`
/// part (the SDK throws `ProdiaUserError` with its `error`); otherwise `{"error"}`.
fn sync_error(answer: Answer, error: ProdiaError) -> Response {
    let status = error.status();
    if answer != Answer::Multipart || !status.is_client_error() {
        return error.into_response();
    }
    let now = utc_timestamp(now_ms());
    let job = json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "state": { "current": "failed" },
        "created_at": now,
        "updated_at": now,
        "error": error.to_string(),
    });
    let body = job_part(&job);
    let mut response = multipart_response(
        status,
        &[Part {
            name: "job",
            file_name: "job.json",
            content_type: "application/json",
            body: &body,
        }],
    );
    error.add_headers(response.headers_mut());
    response
}

/// Files sent as multipart `input` parts, by file name: (content type, bytes).
#[derive(Default)]
struct InputFiles(HashMap<String, (Option<String>, Bytes)>);

/// The job JSON and its input files, from a JSON body or a multipart one.
async fn read_job(state: &AppState, request: Request) -> Result<(Value, InputFiles), ProdiaError> {
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| {
            c.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|e| body_error(state, e.status(), &e.body_text()))?;
        return Ok((parse_job_json(&bytes)?, InputFiles::default()));
    }
    let mut multipart = Multipart::from_request(request, state)
        .await
        .map_err(|e| body_error(state, e.status(), &e.body_text()))?;
    let mut job = None;
    let mut inputs = InputFiles::default();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| body_error(state, e.status(), &e.body_text()))?
    {
        let name = field.name().unwrap_or("").to_string();
        match name.as_str() {
            "job" => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| body_error(state, e.status(), &e.body_text()))?;
                if job.is_some() {
                    return Err(invalid("job", "two job parts; send exactly one"));
                }
                job = Some(parse_job_json(&bytes)?);
            }
            "input" => {
                let Some(file_name) = field.file_name().map(str::to_string) else {
                    return Err(invalid(
                        "input",
                        "an input part has no filename; config fields name inputs by their filename",
                    ));
                };
                let content_type = field.content_type().map(str::to_string);
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| body_error(state, e.status(), &e.body_text()))?;
                if inputs.0.contains_key(&file_name) {
                    return Err(invalid(
                        "input",
                        format!("two input parts are named {file_name:?}; give each a distinct filename"),
                    ));
                }
                inputs.0.insert(file_name, (content_type, bytes));
            }
            other => {
                return Err(ProdiaError::InvalidJob {
                    message: format!("unknown multipart part {other:?}; send one part named job and any number named input"),
                })
            }
        }
    }
    let job = job.ok_or_else(|| {
        invalid(
            "job",
            "the multipart body has no part named job; send the job JSON as a part named job",
        )
    })?;
    Ok((job, inputs))
}

fn parse_job_json(bytes: &[u8]) -> Result<Value, ProdiaError> {
    let job: Value = serde_json::from_slice(bytes).map_err(|e| {
        invalid(
            "job",
            format!("not valid JSON ({e}); send {{\"type\": ..., \"config\": {{...}}}}"),
        )
    })?;
    if !job.is_object() {
        return Err(invalid(
            "job",
            "expected a JSON object {\"type\": ..., \"config\": {...}}",
        ));
    }
    Ok(job)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JobSpec {
    #[serde(rename = "type")]
    _kind: String,
    #[serde(default)]
    config: KlingConfig,
}

/// Both Kling job types' config: the union of their fields, as Prodia documents them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct KlingConfig {
    prompt: Option<String>,
    negative_prompt: Option<String>,
    /// txt2vid's name for the model version…
    model: Option<String>,
    /// …and img2vid's; either is accepted in both.
    model_name: Option<String>,
    mode: Option<Mode>,
    aspect_ratio: Option<AspectRatio>,
    /// `"5"` or `"10"` (examples use strings), numbers too.
    duration: Option<DurationSeconds>,
    cfg_scale: Option<f64>,
    camera_control: Option<CameraControl>,
    /// An input part's filename, a URL or a data URI; so are the tail and the masks.
    image: Option<String>,
    image_tail: Option<String>,
    static_mask: Option<String>,
    #[serde(default)]
    dynamic_masks: Vec<DynamicMaskInput>,
}

/// A translated job: kiln's request and, per `images` entry, the Prodia field it came from.
struct Translated {
    request: VideoRequest,
    image_fields: Vec<&'static str>,
}

fn translate(
    state: &AppState,
    job: &Value,
    inputs: &InputFiles,
) -> Result<Translated, ProdiaError> {
    let kind = match job.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(other) => return Err(invalid("type", format!("expected a string, got {other}"))),
        None => {
            return Err(invalid(
                "type",
                format!("missing; use {TXT2VID} or {IMG2VID}"),
            ))
        }
    };
    if kind != TXT2VID && kind != IMG2VID {
        return Err(invalid(
            "type",
            format!("unknown job type {kind:?}; this server runs {TXT2VID} and {IMG2VID}"),
        ));
    }
    let spec: JobSpec = serde_path_to_error::deserialize(job).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ProdiaError::InvalidJob {
                message: inner.to_string(),
            }
        } else {
            invalid(&path, inner)
        }
    })?;
    let config = spec.config;

    let model = match (&config.model, &config.model_name) {
        (Some(a), Some(b)) if a != b => {
            return Err(invalid(
                "config.model_name",
                format!("{b:?} differs from config.model {a:?}; give one of them"),
            ))
        }
        (Some(m), _) => Some(("config.model", m)),
        (None, Some(m)) => Some(("config.model_name", m)),
        (None, None) => None,
    };
    if let Some((field, id)) = model {
        if !state.config.serves_model(id) {
            return Err(invalid(
                field,
                format!("{id:?} is not served here; use kling-v2-1-master (or a model name this server is configured with), or leave {field} out for the loaded model"),
            ));
        }
    }
    if let Some(duration) = &config.duration {
        let seconds = match duration {
            DurationSeconds::Number(n) => Some(*n),
            DurationSeconds::Text(t) => t.trim().parse::<f64>().ok(),
        };
        if !matches!(seconds, Some(s) if s == 5.0 || s == 10.0) {
            let shown = match duration {
                DurationSeconds::Number(n) => n.to_string(),
                DurationSeconds::Text(t) => format!("{t:?}"),
            };
            return Err(invalid(
                "config.duration",
                format!("{shown} is not offered; use \"5\" or \"10\" (seconds)"),
            ));
        }
    }

    let mut images = Vec::new();
    let mut image_fields = Vec::new();
    if let Some(image) = &config.image {
        images.push(FrameImage {
            image: resolve_input("config.image", image, inputs)?,
            frame: FramePosition::First,
        });
        image_fields.push("config.image");
    } else if kind == IMG2VID {
        return Err(invalid(
            "config.image",
            "img2vid needs the first frame: the filename of an input part, a URL or a data URI",
        ));
    }
    if let Some(tail) = &config.image_tail {
        images.push(FrameImage {
            image: resolve_input("config.image_tail", tail, inputs)?,
            frame: FramePosition::Last,
        });
        image_fields.push("config.image_tail");
    }
    let static_mask = config
        .static_mask
        .as_deref()
        .map(|m| resolve_input("config.static_mask", m, inputs))
        .transpose()?;
    let dynamic_masks = config
        .dynamic_masks
        .into_iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(DynamicMaskInput {
                mask: resolve_input(&format!("config.dynamic_masks[{i}].mask"), &m.mask, inputs)?,
                trajectories: m.trajectories,
            })
        })
        .collect::<Result<Vec<_>, ProdiaError>>()?;

    Ok(Translated {
        request: VideoRequest {
            prompt: config.prompt.unwrap_or_default(),
            negative_prompt: config.negative_prompt,
            duration: config.duration,
            aspect_ratio: config.aspect_ratio,
            cfg_scale: config.cfg_scale,
            images,
            camera_control: config.camera_control,
            static_mask,
            dynamic_masks,
            mode: config.mode,
            ..VideoRequest::default()
        },
        image_fields,
    })
}

/// A config image reference as kiln reads images: URLs and data URIs as given, an input
/// part's filename as a data URI of its bytes.
fn resolve_input(field: &str, reference: &str, inputs: &InputFiles) -> Result<String, ProdiaError> {
    let lower: String = reference
        .trim()
        .chars()
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") || lower.starts_with("data:") {
        return Ok(reference.trim().to_string());
    }
    let Some((content_type, bytes)) = inputs.0.get(reference) else {
        return Err(invalid(
            field,
            format!("no input part named {reference:?}; attach the file as a multipart part named input with that filename, or give a URL or data URI"),
        ));
    };
    let content_type = image_type(bytes)
        .or(content_type.as_deref().filter(|c| c.starts_with("image/")))
        .unwrap_or("application/octet-stream");
    Ok(format!(
        "data:{content_type};base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

/// The image type of `bytes` by their magic numbers; the SDK labels every Blob image/jpeg.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF8") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

/// kiln's field names in Prodia's terms (`cfg_scale` → `config.cfg_scale`, `images[1]…` →
/// the config field that image came from).
fn prodia_field(field: &str, image_fields: &[&str]) -> String {
    if let Some(rest) = field.strip_prefix("images") {
        let index = rest
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .and_then(|(i, _)| i.parse::<usize>().ok());
        return index
            .and_then(|i| image_fields.get(i))
            .unwrap_or(&"config.image")
            .to_string();
    }
    format!("config.{field}")
}

fn submit_error(e: SubmitError, image_fields: &[&str]) -> ProdiaError {
    match e {
        SubmitError::Request(
            RequestError::Invalid { field, message } | RequestError::Unsupported { field, message },
        ) => invalid(&prodia_field(&field, image_fields), message),
        SubmitError::QueueFull { retry_after } => ProdiaError::QueueFull { retry_after },
        SubmitError::DuplicateId { id } => ProdiaError::Internal {
            message: format!("job id {id} is taken"),
        },
        SubmitError::Internal(message) => ProdiaError::Internal { message },
    }
}

/// Checks the caller, reads and translates the job, and queues it.
async fn accept_job(
    state: &AppState,
    base: String,
    headers: &HeaderMap,
    request: Request,
) -> Result<Job, ProdiaError> {
    let owner = caller(state, headers)?;
    let (job, inputs) = read_job(state, request).await?;
    let Translated {
        request,
        image_fields,
    } = translate(state, &job, &inputs)?;
    let meta = json!({
        "type": job.get("type").cloned().unwrap_or(Value::Null),
        "config": job.get("config").cloned().unwrap_or_else(|| json!({})),
    });
    let (job, _) = enqueue(
        state,
        Submission {
            owner,
            dialect: DIALECT,
            id: None,
            request,
            base_url: base,
            meta,
        },
    )
    .await
    .map_err(|e| submit_error(e, &image_fields))?;
    Ok(job)
}

/// A job as Prodia's job JSON.
fn job_json(job: &Job) -> Value {
    let resolved = resolved_of(job);
    let ttl_ms = resolved.as_ref().map_or(0, |r| {
        i64::try_from(r.ttl_seconds).unwrap_or(i64::MAX / 2) * 1000
    });
    let meta = resolved.map(|r| r.dialect_meta).unwrap_or(Value::Null);
    let current = match job.state {
        JobState::Queued | JobState::Running => "processing",
        JobState::Succeeded => "processed",
        JobState::Failed | JobState::Cancelled | JobState::Expired => "failed",
    };
    let updated = job
        .finished_at_ms
        .or(job.started_at_ms)
        .unwrap_or(job.created_at_ms);
    let expires = job
        .expires_at_ms
        .unwrap_or_else(|| job.created_at_ms.saturating_add(ttl_ms));
    let elapsed_ms = match (job.started_at_ms, job.finished_at_ms) {
        (Some(start), Some(end)) => end - start,
        (Some(start), None) => now_ms() - start,
        _ => 0,
    };
    let mut view = json!({
        "id": job.id,
        "type": meta.get("type").cloned().unwrap_or(Value::Null),
        "config": meta.get("config").cloned().unwrap_or_else(|| json!({})),
        "state": { "current": current },
        "created_at": utc_timestamp(job.created_at_ms),
        "updated_at": utc_timestamp(updated),
        "expires_at": utc_timestamp(expires),
        "metrics": { "elapsed": elapsed_ms.max(0) as f64 / 1000.0 },
    });
    if current == "failed" {
        view["error"] = json!(match job.state {
            JobState::Cancelled => "the job was cancelled".to_string(),
            JobState::Expired => "the job's output has expired".to_string(),
            _ => job
                .error
                .clone()
                .unwrap_or_else(|| "the job failed".to_string()),
        });
    }
    view
}

/// The bytes of a succeeded job's video.
async fn output_bytes(state: &AppState, job: &Job) -> Result<Vec<u8>, ProdiaError> {
    let gone = || ProdiaError::NotFound {
        message: format!("the output of job {} is gone; it may have expired", job.id),
    };
    let key = job
        .result
        .as_ref()
        .and_then(|r| r.pointer("/outputs/0/key"))
        .and_then(Value::as_str)
        .ok_or_else(gone)?;
    let path = state.files.path(key).ok_or_else(gone)?;
    tokio::fs::read(path).await.map_err(|_| gone())
}

/// `POST /v2/job`: run a job and answer when its video exists.
async fn run_job(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
    request: Request,
) -> Response {
    let answer = match negotiate(&headers) {
        Ok(answer) => answer,
        Err(e) => return e.into_response(),
    };
    match run_to_end(&state, base, &headers, request, answer).await {
        Ok(response) => response,
        Err(e) => sync_error(answer, e),
    }
}

async fn run_to_end(
    state: &AppState,
    base: String,
    headers: &HeaderMap,
    request: Request,
    answer: Answer,
) -> Result<Response, ProdiaError> {
    let job = accept_job(state, base, headers, request).await?;
    let job = wait_for_end(state, &job.id, None).await?;
    let view = job_json(&job);
    if job.state != JobState::Succeeded {
        let body = job_part(&view);
        return Ok(match answer {
            Answer::Multipart => multipart_response(
                StatusCode::BAD_REQUEST,
                &[Part {
                    name: "job",
                    file_name: "job.json",
                    content_type: "application/json",
                    body: &body,
                }],
            ),
            Answer::Video | Answer::JobJson => {
                (StatusCode::BAD_REQUEST, Json(view)).into_response()
            }
        });
    }
    Ok(match answer {
        Answer::JobJson => Json(view).into_response(),
        Answer::Video => {
            let video = output_bytes(state, &job).await?;
            ([(header::CONTENT_TYPE, "video/mp4")], video).into_response()
        }
        Answer::Multipart => {
            let video = output_bytes(state, &job).await?;
            let body = job_part(&view);
            multipart_response(
                StatusCode::OK,
                &[
                    Part {
                        name: "job",
                        file_name: "job.json",
                        content_type: "application/json",
                        body: &body,
                    },
                    Part {
                        name: "output",
                        file_name: OUTPUT_NAME,
                        content_type: "video/mp4",
                        body: &video,
                    },
                ],
            )
        }
    })
}

/// `POST /v2/job/async`: queue a job; 201 with its job JSON.
async fn create_async_job(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    headers: HeaderMap,
    request: Request,
) -> Result<Response, ProdiaError> {
    let job = accept_job(&state, base, &headers, request).await?;
    Ok((StatusCode::CREATED, Json(job_json(&job))).into_response())
}

/// A Prodia job of the caller's; unknown, another key's and expired jobs are 404.
async fn load_job(state: &AppState, headers: &HeaderMap, id: &str) -> Result<Job, ProdiaError> {
    let owner = caller(state, headers)?;
    state
        .store
        .get(id, Some(&owner))
        .await?
        .filter(|job| job.dialect == DIALECT && job.state != JobState::Expired)
        .ok_or_else(|| ProdiaError::NotFound {
            message: format!("job {id} not found; it may have expired (see its expires_at)"),
        })
}

/// `GET /v2/job/async/{id}/job.state.current`: `processing`, `processed` or `failed`.
async fn get_job_state(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ProdiaError> {
    let job = load_job(&state, &headers, &id).await?;
    let current = job_json(&job)["state"]["current"]
        .as_str()
        .unwrap_or("processing")
        .to_string();
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        current,
    )
        .into_response())
}

/// `GET /v2/job/async/{id}/job.json`.
async fn get_job_json(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ProdiaError> {
    Ok(Json(job_json(&load_job(&state, &headers, &id).await?)))
}

/// `GET /v2/job/async/{id}/output`: the output file names (none until processed).
async fn list_outputs(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ProdiaError> {
    let job = load_job(&state, &headers, &id).await?;
    Ok(Json(if job.state == JobState::Succeeded {
        json!([OUTPUT_NAME])
    } else {
        json!([])
    }))
}

/// `GET /v2/job/async/{id}/output/{filename}`: the video.
async fn get_output(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, filename)): Path<(String, String)>,
) -> Result<Response, ProdiaError> {
    let job = load_job(&state, &headers, &id).await?;
    if job.state != JobState::Succeeded || filename != OUTPUT_NAME {
        return Err(ProdiaError::NotFound {
            message: format!(
                "job {id} has no output {filename:?}; GET /v2/job/async/{id}/output lists its files once it is processed"
            ),
        });
    }
    let video = output_bytes(&state, &job).await?;
    Ok(([(header::CONTENT_TYPE, "video/mp4")], video).into_response())
}
