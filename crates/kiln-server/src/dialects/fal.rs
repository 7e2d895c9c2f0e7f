//! The fal dialect: fal.ai's queue API (`queue.fal.run`) and synchronous API (`fal.run`) for
//! the Kling 2.1 Master endpoints, so the official `fal_client` SDK runs unchanged against
//! kiln. This module owns fal's input JSON (into a [`VideoRequest`]), its status, result and
//! cancel answers, its two error shapes (pydantic-style 422 `{"detail": [..]}` lists and flat
//! `{"detail", "error_type"}` bodies with `X-Fal-Error-Type`), `Authorization: Key` auth, and
//! the `fal_webhook` payload.
//!
//! The SDK parses only `IN_QUEUE`, `IN_PROGRESS` and `COMPLETED` (anything else raises), so a
//! failed, cancelled or expired job reads as `COMPLETED` with `error`/`error_type`, and its
//! result URL answers an HTTP error. The SDK retries 408/409/429 (the submit POST included),
//! so none of them is ever answered once a job was queued. Extension: `aspect_ratio` is also
//! taken on image-to-video (fal has none there), where the image is centre-cropped to it.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query, RawQuery, State};
use axum::http::header::{AUTHORIZATION, RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use futures_util::stream;
use kiln_jobs::{CancelOutcome, Job, JobState};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{enqueue, now_ms, output_urls, uploads, BaseUrl, Submission, SubmitError};
use crate::auth::scheme_token;
use crate::delivery::{sign_body, OutboundWebhook, SIGNATURE_HEADER};
use crate::request::{AspectRatio, DurationSeconds, FrameImage, FramePosition, RequestError};
use crate::worker::{PHASE_DENOISING, PHASE_ENCODING_PROMPT};
use crate::{AppState, VideoRequest};

pub(crate) const DIALECT: &str = "fal";

/// Sent on every answer: its presence tells the SDK that a 502/503/504 came from the app
/// rather than an ingress, so it does not retry (and resubmit) on those.
const REQUEST_ID_HEADER: &str = "x-fal-request-id";
const ERROR_TYPE_HEADER: &str = "x-fal-error-type";
/// The SDK's server-side start timeout: the longest wait before processing starts.
const REQUEST_TIMEOUT_HEADER: &str = "x-fal-request-timeout";
/// A 504 carrying this is never retried by the SDK.
const REQUEST_TIMEOUT_TYPE_HEADER: &str = "x-fal-request-timeout-type";

/// fal's defaults for these endpoints, which differ from the loaded model's own.
const DEFAULT_NEGATIVE_PROMPT: &str = "blur, distort, and low quality";
const DEFAULT_CFG_SCALE: f64 = 0.5;
const DEFAULT_SECONDS: f64 = 5.0;

/// Longest a `fal.run` request holds its connection; the job itself goes on after that.
const SYNC_WAIT_LIMIT: Duration = Duration::from_secs(3600);

/// fal's error answers. `Validation` is the pydantic shape (HTTP 422, `detail` a list naming
/// fields); the rest are flat `{"detail": "...", "error_type": "..."}` with `X-Fal-Error-Type`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FalError {
    #[error("{} input error(s)", .0.len())]
    Validation(Vec<InputError>),
    #[error("missing or unknown API key; send `Authorization: Key <key>` with a key configured on this server")]
    Unauthorized,
    #[error("endpoint {0} not found; this server serves fal-ai/kling-video/v2.1/master/text-to-video and fal-ai/kling-video/v2.1/master/image-to-video (or the model ids it was configured with)")]
    UnknownEndpoint(String),
    #[error("request {0} not found; check the id and the app in the URL (a request is visible only to the key that submitted it)")]
    RequestNotFound(String),
    #[error("Request is still in progress; poll its status_url until COMPLETED")]
    InProgress,
    #[error("{0}")]
    GenerationFailed(String),
    #[error("the request was cancelled before it finished; submit it again")]
    Cancelled,
    #[error("the result has expired and its video was deleted; submit the request again")]
    Expired,
    #[error("the queue is full; retry after {retry_after} seconds")]
    QueueFull { retry_after: u64 },
    #[error("the request body is over the {limit}-byte limit; send image_url as an http(s) URL instead of a data URI, or a smaller image")]
    PayloadTooLarge { limit: usize },
    #[error("the request did not start within the {seconds} s asked for in X-Fal-Request-Timeout and was cancelled")]
    StartTimeout { seconds: f64 },
    #[error("the request ran longer than this server holds a synchronous connection ({} s); it goes on: submit through the queue API to follow it", SYNC_WAIT_LIMIT.as_secs())]
    SyncWaitOver,
    #[error("internal error: {0}")]
    Internal(String),
}

/// One entry of a 422 `detail` list, as FastAPI/pydantic write it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct InputError {
    loc: Vec<Value>,
    msg: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    ctx: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    input: Option<Value>,
}

impl InputError {
    fn body_field(field: &str, msg: impl Into<String>, kind: &str) -> Self {
        Self {
            loc: vec![json!("body"), json!(field)],
            msg: msg.into(),
            kind: kind.to_string(),
            ctx: None,
            input: None,
        }
    }

    fn with_ctx(mut self, ctx: Value) -> Self {
        self.ctx = Some(ctx);
        self
    }

    /// Echoes the offending value, except long strings (a data URI can be megabytes).
    fn with_input(mut self, input: &Value) -> Self {
        let short = input.as_str().is_none_or(|s| s.len() <= 256);
        if short {
            self.input = Some(input.clone());
        }
        self
    }
}

impl FalError {
    fn status(&self) -> StatusCode {
        match self {
            FalError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            FalError::Unauthorized => StatusCode::UNAUTHORIZED,
            FalError::UnknownEndpoint(_) | FalError::RequestNotFound(_) => StatusCode::NOT_FOUND,
            FalError::InProgress | FalError::Cancelled => StatusCode::BAD_REQUEST,
            FalError::Expired => StatusCode::GONE,
            FalError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            FalError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            FalError::StartTimeout { .. } | FalError::SyncWaitOver => StatusCode::GATEWAY_TIMEOUT,
            FalError::GenerationFailed(_) | FalError::Internal(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }

    /// fal's `error_type`: the documented infrastructure types where one fits.
    fn error_type(&self) -> &'static str {
        match self {
            FalError::Validation(errors) => match errors.first().map(|e| e.kind.as_str()) {
                Some("file_download_error") => "file_download_error",
                _ => "validation_error",
            },
            FalError::Unauthorized => "unauthorized",
            FalError::UnknownEndpoint(_) | FalError::RequestNotFound(_) => "not_found",
            FalError::InProgress => "request_in_progress",
            FalError::GenerationFailed(_) => "runner_server_error",
            FalError::Cancelled => "request_cancelled",
            FalError::Expired => "result_expired",
            FalError::QueueFull { .. } => "queue_full",
            FalError::PayloadTooLarge { .. } => "payload_too_large",
            FalError::StartTimeout { .. } | FalError::SyncWaitOver => "request_timeout",
            FalError::Internal(_) => "internal_error",
        }
    }

    fn body(&self) -> Value {
        match self {
            FalError::Validation(errors) => json!({ "detail": errors }),
            other => json!({ "detail": other.to_string(), "error_type": other.error_type() }),
        }
    }
}

impl IntoResponse for FalError {
    fn into_response(self) -> Response {
        if let FalError::Internal(message) = &self {
            tracing::error!(%message, "internal error on the fal surface");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        let headers = response.headers_mut();
        if !matches!(self, FalError::Validation(_)) {
            headers.insert(
                ERROR_TYPE_HEADER,
                HeaderValue::from_static(self.error_type()),
            );
        }
        match &self {
            FalError::QueueFull { retry_after } => {
                headers.insert(RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            FalError::Unauthorized => {
                headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Key"));
            }
            FalError::StartTimeout { .. } => {
                headers.insert(
                    REQUEST_TIMEOUT_TYPE_HEADER,
                    HeaderValue::from_static("user"),
                );
            }
            _ => {}
        }
        response
    }
}

impl From<SubmitError> for FalError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Request(e) => FalError::Validation(vec![request_error(e)]),
            SubmitError::QueueFull { retry_after } => FalError::QueueFull { retry_after },
            // Ids are drawn by the store, so a duplicate is a server fault.
            SubmitError::DuplicateId { .. } | SubmitError::Internal(_) => {
                FalError::Internal(e.to_string())
            }
        }
    }
}

impl From<kiln_jobs::JobError> for FalError {
    fn from(e: kiln_jobs::JobError) -> Self {
        match e {
            kiln_jobs::JobError::NotFound { id } => FalError::RequestNotFound(id),
            other => FalError::Internal(other.to_string()),
        }
    }
}

/// A validation error of the shared request, named as fal names the field.
fn request_error(e: RequestError) -> InputError {
    let (field, message, kind) = match e {
        RequestError::Invalid { field, message } => (field, message, "value_error"),
        RequestError::Unsupported { field, message } => (field, message, "feature_not_supported"),
    };
    let loc = match field.as_str() {
        "webhook_url" => vec![json!("query"), json!("fal_webhook")],
        "cfg_scale" | "guidance" => vec![json!("body"), json!("cfg_scale")],
        f if f == "images" || f.starts_with("images[") => vec![json!("body"), json!("image_url")],
        other => vec![json!("body"), json!(other)],
    };
    InputError {
        loc,
        msg: message,
        kind: kind.to_string(),
        ctx: None,
        input: None,
    }
}

/// The caller, as a job owner id, from `Authorization: Key <key>` (the SDK's form) or
/// `Bearer <key>`.
struct FalOwner(String);

impl FromRequestParts<AppState> for FalOwner {
    type Rejection = FalError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| scheme_token(v, "key").or_else(|| scheme_token(v, "bearer")));
        state
            .keys
            .owner_for_key(key)
            .map(FalOwner)
            .ok_or(FalError::Unauthorized)
    }
}

/// `queue.fal.run`: submit, status (polled and streamed), result, cancel. Merged into the
/// main listener: endpoint ids are at least `owner/app`, so every route starts with two
/// free segments; unmatched methods there fall back to the native 404 so unknown paths keep
/// answering as before.
pub(crate) fn queue_router() -> Router<AppState> {
    Router::new()
        .route(
            "/{owner}/{app}",
            post(submit).fallback(crate::native::no_route),
        )
        .route(
            "/{owner}/{app}/{*path}",
            post(submit).fallback(crate::native::no_route),
        )
        .route("/{owner}/{app}/requests/{id}", get(result))
        .route("/{owner}/{app}/requests/{id}/status", get(status))
        .route(
            "/{owner}/{app}/requests/{id}/status/stream",
            get(status_stream),
        )
        .route("/{owner}/{app}/requests/{id}/cancel", put(cancel))
        .layer(axum::middleware::map_response(ensure_request_id))
}

/// The `fal.run` host: the same paths, answered synchronously (`Server::router_for` adds
/// `/files` beside them, since outputs are linked on this listener's address).
pub(crate) fn run_router() -> Router<AppState> {
    Router::new()
        .route("/{owner}/{app}", post(run))
        .route("/{owner}/{app}/{*path}", post(run))
        .fallback(unknown_route)
        .layer(axum::middleware::map_response(ensure_request_id))
}

async fn unknown_route(uri: Uri) -> FalError {
    FalError::UnknownEndpoint(uri.path().trim_start_matches('/').to_string())
}

/// Answers that do not concern a job (errors before enqueue) still carry a request id.
async fn ensure_request_id(mut response: Response) -> Response {
    if !response.headers().contains_key(REQUEST_ID_HEADER) {
        if let Ok(value) = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
            response.headers_mut().insert(REQUEST_ID_HEADER, value);
        }
    }
    response
}

fn with_request_id(mut response: Response, id: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// Which of the two fal endpoints a request went to. Configured ids that name neither take
/// an image when one is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    TextToVideo,
    ImageToVideo,
    Either,
}

impl Task {
    fn of(endpoint_id: &str) -> Self {
        if endpoint_id.ends_with("/text-to-video") {
            Task::TextToVideo
        } else if endpoint_id.ends_with("/image-to-video") {
            Task::ImageToVideo
        } else {
            Task::Either
        }
    }

    fn fields(self) -> &'static [&'static str] {
        match self {
            Task::TextToVideo => &[
                "prompt",
                "duration",
                "aspect_ratio",
                "negative_prompt",
                "cfg_scale",
            ],
            Task::ImageToVideo | Task::Either => &[
                "prompt",
                "image_url",
                "duration",
                "aspect_ratio",
                "negative_prompt",
                "cfg_scale",
            ],
        }
    }
}

/// fal's input for these endpoints, type-checked and with fal's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
struct FalInput {
    prompt: String,
    seconds: f64,
    aspect_ratio: AspectRatio,
    negative_prompt: String,
    cfg_scale: f64,
    image_url: Option<String>,
}

/// Reads fal's JSON the way fal's pydantic models do: every problem is reported, each naming
/// its field. Unknown fields are refused rather than ignored, so a control kiln would not
/// honour never changes the output silently.
fn parse_input(body: &Value, task: Task) -> Result<FalInput, Vec<InputError>> {
    let Some(object) = body.as_object() else {
        return Err(vec![InputError {
            loc: vec![json!("body")],
            msg: "Input should be a valid dictionary or object to extract fields from".into(),
            kind: "model_attributes_type".into(),
            ctx: None,
            input: None,
        }]);
    };
    let mut errors = Vec::new();
    for key in object.keys() {
        if !task.fields().contains(&key.as_str()) {
            let hint = match (task, key.as_str()) {
                (Task::TextToVideo, "image_url") => "; the text-to-video endpoint takes no image, use fal-ai/kling-video/v2.1/master/image-to-video".to_string(),
                _ => format!("; this endpoint takes {}", task.fields().join(", ")),
            };
            errors.push(
                InputError::body_field(
                    key,
                    format!("Extra inputs are not permitted{hint}"),
                    "extra_forbidden",
                )
                .with_input(&object[key]),
            );
        }
    }
    let present = |name: &str| object.get(name).filter(|v| !v.is_null());

    let prompt = match object.get("prompt") {
        Some(Value::String(s)) => s.clone(),
        None => {
            errors.push(InputError::body_field(
                "prompt",
                "Field required",
                "missing",
            ));
            String::new()
        }
        Some(other) => {
            errors.push(
                InputError::body_field("prompt", "Input should be a valid string", "string_type")
                    .with_input(other),
            );
            String::new()
        }
    };

    let seconds = match present("duration") {
        None => DEFAULT_SECONDS,
        Some(v) => match parse_duration(v) {
            Some(s) => s,
            None => {
                errors.push(
                    InputError::body_field("duration", "Input should be '5' or '10'", "enum")
                        .with_ctx(json!({ "expected": "'5' or '10'" }))
                        .with_input(v),
                );
                DEFAULT_SECONDS
            }
        },
    };

    let aspect_ratio = match present("aspect_ratio") {
        None => AspectRatio::Landscape,
        Some(v) => match v.as_str() {
            Some("16:9") => AspectRatio::Landscape,
            Some("9:16") => AspectRatio::Portrait,
            Some("1:1") => AspectRatio::Square,
            _ => {
                errors.push(
                    InputError::body_field(
                        "aspect_ratio",
                        "Input should be '16:9', '9:16' or '1:1'",
                        "enum",
                    )
                    .with_ctx(json!({ "expected": "'16:9', '9:16' or '1:1'" }))
                    .with_input(v),
                );
                AspectRatio::Landscape
            }
        },
    };

    let negative_prompt = match present("negative_prompt") {
        None => DEFAULT_NEGATIVE_PROMPT.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            errors.push(
                InputError::body_field(
                    "negative_prompt",
                    "Input should be a valid string",
                    "string_type",
                )
                .with_input(other),
            );
            String::new()
        }
    };

    let cfg_scale = match present("cfg_scale") {
        None => DEFAULT_CFG_SCALE,
        Some(v) => match v.as_f64() {
            Some(c) if c < 0.0 => {
                errors.push(
                    InputError::body_field(
                        "cfg_scale",
                        "Input should be greater than or equal to 0",
                        "greater_than_equal",
                    )
                    .with_ctx(json!({ "ge": 0 }))
                    .with_input(v),
                );
                DEFAULT_CFG_SCALE
            }
            Some(c) if c > 1.0 => {
                errors.push(
                    InputError::body_field(
                        "cfg_scale",
                        "Input should be less than or equal to 1 (fal's 0-1 guidance scale; 0.5 is the default)",
                        "less_than_equal",
                    )
                    .with_ctx(json!({ "le": 1 }))
                    .with_input(v),
                );
                DEFAULT_CFG_SCALE
            }
            Some(c) => c,
            None => {
                errors.push(
                    InputError::body_field(
                        "cfg_scale",
                        "Input should be a valid number",
                        "float_type",
                    )
                    .with_input(v),
                );
                DEFAULT_CFG_SCALE
            }
        },
    };

    let image_url = match (task, object.get("image_url")) {
        (Task::TextToVideo, _) => None,
        (_, Some(Value::String(s))) => Some(s.clone()),
        (Task::ImageToVideo, None) => {
            errors.push(InputError::body_field(
                "image_url",
                "Field required",
                "missing",
            ));
            None
        }
        (Task::Either, None | Some(Value::Null)) => None,
        (_, Some(other)) => {
            errors.push(
                InputError::body_field(
                    "image_url",
                    "Input should be a valid string",
                    "string_type",
                )
                .with_input(other),
            );
            None
        }
    };

    if errors.is_empty() {
        Ok(FalInput {
            prompt,
            seconds,
            aspect_ratio,
            negative_prompt,
            cfg_scale,
            image_url,
        })
    } else {
        Err(errors)
    }
}

/// fal's schema is the string enum "5"/"10"; the SDK forwards numbers unchanged, so those
/// are taken too.
fn parse_duration(value: &Value) -> Option<f64> {
    let seconds = match value {
        Value::String(s) if s == "5" || s == "10" => s.parse().ok(),
        Value::Number(n) => n.as_f64(),
        _ => None,
    }?;
    (seconds == 5.0 || seconds == 10.0).then_some(seconds)
}

#[derive(Debug, Deserialize)]
struct SubmitParams {
    fal_webhook: Option<String>,
}

/// An endpoint id split as fal's SDK splits it: status/result/cancel URLs carry only
/// `owner/app`.
struct Endpoint {
    id: String,
    app: String,
}

impl Endpoint {
    fn from_path(state: &AppState, path: &str) -> Result<Self, FalError> {
        let id = path.trim_matches('/').to_string();
        let mut segments = id.split('/');
        let app = match (segments.next(), segments.next()) {
            (Some(owner), Some(app)) if !owner.is_empty() && !app.is_empty() => {
                format!("{owner}/{app}")
            }
            _ => return Err(FalError::UnknownEndpoint(id)),
        };
        if !state.config.serves_model(&id) {
            return Err(FalError::UnknownEndpoint(id));
        }
        Ok(Self { id, app })
    }
}

/// The three URLs a request handle is made of, on this server as the client reached it.
fn request_urls(base: &str, app: &str, id: &str) -> (String, String, String) {
    let response_url = format!("{}/{app}/requests/{id}", base.trim_end_matches('/'));
    (
        format!("{response_url}/status"),
        format!("{response_url}/cancel"),
        response_url,
    )
}

/// Validates and queues one fal request; shared by both hosts.
async fn submit_request(
    state: &AppState,
    owner: String,
    base: &str,
    uri: &Uri,
    params: Result<Query<SubmitParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Job, Endpoint), FalError> {
    let endpoint = Endpoint::from_path(state, uri.path())?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            FalError::PayloadTooLarge {
                limit: state.config.max_body_bytes,
            }
        } else {
            FalError::Validation(vec![InputError {
                loc: vec![json!("body")],
                msg: format!("cannot read the request body: {rejection}"),
                kind: "value_error".into(),
                ctx: None,
                input: None,
            }])
        }
    })?;
    let webhook_url = match params {
        Ok(Query(p)) => p.fal_webhook,
        Err(rejection) => {
            return Err(FalError::Validation(vec![InputError {
                loc: vec![json!("query")],
                msg: format!("cannot read the query string: {rejection}"),
                kind: "value_error".into(),
                ctx: None,
                input: None,
            }]))
        }
    };
    let json_body: Value = serde_json::from_slice(&body).map_err(|e| {
        FalError::Validation(vec![InputError {
            loc: vec![json!("body"), json!(e.column())],
            msg: "JSON decode error".into(),
            kind: "json_invalid".into(),
            ctx: Some(json!({ "error": e.to_string() })),
            input: None,
        }])
    })?;
    let input = parse_input(&json_body, Task::of(&endpoint.id)).map_err(FalError::Validation)?;

    let images = match &input.image_url {
        // An upload of this server goes in as bytes, so the worker never fetches from itself.
        Some(url) => vec![FrameImage {
            image: uploads::inline(state, url).await,
            frame: FramePosition::First,
        }],
        None => Vec::new(),
    };
    let request = VideoRequest {
        prompt: input.prompt,
        negative_prompt: Some(input.negative_prompt),
        duration: Some(DurationSeconds::Number(input.seconds)),
        aspect_ratio: Some(input.aspect_ratio),
        cfg_scale: Some(input.cfg_scale),
        images,
        webhook_url,
        ..VideoRequest::default()
    };
    let (job, _) = enqueue(
        state,
        Submission {
            owner,
            dialect: DIALECT,
            id: None,
            request,
            base_url: base.to_string(),
            meta: json!({ "endpoint_id": endpoint.id, "app": endpoint.app }),
        },
    )
    .await?;
    Ok((job, endpoint))
}

/// `POST /{endpoint_id}[?fal_webhook=<url>]` on the queue host.
async fn submit(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    FalOwner(owner): FalOwner,
    uri: Uri,
    params: Result<Query<SubmitParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FalError> {
    let (job, endpoint) = submit_request(&state, owner, &base, &uri, params, body).await?;
    // The job is queued: from here on nothing may fail, or the SDK's retry would queue it twice.
    let position = state
        .store
        .queue_position(&job.id)
        .await
        .ok()
        .flatten()
        .unwrap_or(0);
    let (status_url, cancel_url, response_url) = request_urls(&base, &endpoint.app, &job.id);
    let mut body = json!({
        "status": "IN_QUEUE",
        "request_id": job.id,
        "response_url": response_url,
        "status_url": status_url,
        "cancel_url": cancel_url,
        "queue_position": position,
    });
    if job.webhook_url.is_some() {
        body["gateway_request_id"] = json!(job.id);
    }
    Ok(with_request_id(Json(body).into_response(), &job.id))
}

/// `POST /{endpoint_id}` on the run host: queues the job and answers its output when it ends.
/// The wait is this request's own future: if the client goes away it is dropped (the job
/// runs on), and it never outlives [`SYNC_WAIT_LIMIT`].
async fn run(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    FalOwner(owner): FalOwner,
    uri: Uri,
    headers: HeaderMap,
    params: Result<Query<SubmitParams>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, FalError> {
    let start_timeout = headers
        .get(REQUEST_TIMEOUT_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0);
    let (job, _) = submit_request(&state, owner.clone(), &base, &uri, params, body).await?;
    let id = job.id;
    let started = Instant::now();
    let start_deadline = start_timeout.map(|s| started + Duration::from_secs_f64(s.min(1e6)));
    let poll = state.config.events_poll.max(Duration::from_millis(10));
    loop {
        tokio::time::sleep(poll).await;
        let job = match state.store.get(&id, Some(&owner)).await {
            Ok(Some(job)) => job,
            Ok(None) => return Err(FalError::RequestNotFound(id)),
            // A transient store error: the job is still there; look again next tick.
            Err(e) => {
                tracing::warn!(job = %id, "cannot read the job while waiting: {e}");
                if started.elapsed() > SYNC_WAIT_LIMIT {
                    return Err(FalError::SyncWaitOver);
                }
                continue;
            }
        };
        if job.state.is_final() {
            let answer = match result_of(&job) {
                Ok(output) => Json(output).into_response(),
                Err(e) => e.into_response(),
            };
            return Ok(with_request_id(answer, &id));
        }
        if job.state == JobState::Queued && start_deadline.is_some_and(|d| Instant::now() >= d) {
            let cancelled = state.store.request_cancel(&id, Some(&owner)).await;
            if matches!(cancelled, Ok(CancelOutcome::Cancelled)) {
                if let Ok(Some(job)) = state.store.get(&id, Some(&owner)).await {
                    super::spawn_job_webhook(&state, &job);
                }
                let seconds = start_timeout.unwrap_or_default();
                return Ok(with_request_id(
                    FalError::StartTimeout { seconds }.into_response(),
                    &id,
                ));
            }
            // It started meanwhile (a cancel then stops it at its next step) or the store
            // failed: keep waiting for its end.
        }
        if started.elapsed() > SYNC_WAIT_LIMIT {
            return Ok(with_request_id(FalError::SyncWaitOver.into_response(), &id));
        }
    }
}

#[derive(Debug, Deserialize)]
struct RequestPath {
    owner: String,
    app: String,
    id: String,
}

/// The caller's fal job named by a status/result/cancel URL; another key's job, another
/// dialect's job or another app's path reads as not found.
async fn find_job(state: &AppState, owner: &str, path: &RequestPath) -> Result<Job, FalError> {
    let not_found = || FalError::RequestNotFound(path.id.clone());
    let job = state
        .store
        .get(&path.id, Some(owner))
        .await?
        .ok_or_else(not_found)?;
    let app = format!("{}/{}", path.owner, path.app);
    let stored_app = job
        .request
        .get("dialect_meta")
        .and_then(|m| m.get("app"))
        .and_then(Value::as_str);
    if job.dialect != DIALECT || stored_app != Some(app.as_str()) {
        return Err(not_found());
    }
    Ok(job)
}

/// `2025-01-01T12:00:00.123` (UTC, no offset), as fal's log timestamps read.
fn iso_timestamp(ms: i64) -> String {
    super::utc_timestamp(ms).trim_end_matches('Z').to_string()
}

fn log_line(message: impl Into<String>, level: &str, ms: i64) -> Value {
    json!({
        "message": message.into(),
        "level": level,
        "source": "user",
        "timestamp": iso_timestamp(ms),
    })
}

/// Logs as fal returns them: everything so far. The store keeps only the latest progress,
/// so the lines are the start, then where the job stands now (`step 3/10`), then its end.
fn job_logs(job: &Job) -> Vec<Value> {
    let mut logs = Vec::new();
    let Some(started) = job.started_at_ms else {
        return logs;
    };
    logs.push(log_line("request started", "INFO", started));
    match job.state {
        JobState::Running => {
            let message = match &job.progress {
                None => "starting".to_string(),
                Some(p) if p.phase == PHASE_DENOISING => format!("step {}/{}", p.step, p.steps),
                Some(p) if p.phase == PHASE_ENCODING_PROMPT => "encoding prompt".to_string(),
                Some(p) => format!("{} (step {}/{})", p.phase, p.step, p.steps),
            };
            logs.push(log_line(message, "INFO", now_ms()));
        }
        JobState::Queued => {}
        _ => {
            let ended = job.finished_at_ms.unwrap_or(started);
            match failure_of(job) {
                None => logs.push(log_line(
                    format!(
                        "completed in {:.1} s",
                        (ended - started).max(0) as f64 / 1000.0
                    ),
                    "INFO",
                    ended,
                )),
                Some(e) => logs.push(log_line(error_message(&e), "ERROR", ended)),
            }
        }
    }
    logs
}

/// Seconds the job ran, as fal's `metrics.inference_time`.
fn inference_time(job: &Job) -> Option<f64> {
    job.result
        .as_ref()
        .and_then(|r| r.pointer("/timings/total_seconds"))
        .and_then(Value::as_f64)
        .or_else(|| {
            let (start, end) = (job.started_at_ms?, job.finished_at_ms?);
            Some((end - start).max(0) as f64 / 1000.0)
        })
}

/// Why a finished job has no output, as fal's result URL answers it; `None` if it has one.
fn failure_of(job: &Job) -> Option<FalError> {
    match job.state {
        JobState::Queued | JobState::Running => Some(FalError::InProgress),
        JobState::Succeeded => None,
        JobState::Cancelled => Some(FalError::Cancelled),
        JobState::Expired => Some(FalError::Expired),
        JobState::Failed => {
            let error = job
                .error
                .clone()
                .unwrap_or_else(|| "generation failed".into());
            // The worker names the input it could not read; fal reports that as a typed
            // input error on the field.
            Some(match error.strip_prefix("images (first frame): ") {
                Some(message) => FalError::Validation(vec![InputError::body_field(
                    "image_url",
                    message,
                    "file_download_error",
                )]),
                None => FalError::GenerationFailed(error),
            })
        }
    }
}

fn error_message(e: &FalError) -> String {
    match e {
        FalError::Validation(errors) => errors
            .iter()
            .map(|e| e.msg.clone())
            .collect::<Vec<_>>()
            .join("; "),
        other => other.to_string(),
    }
}

/// The model output: `{"video": File}`.
fn output_of(job: &Job) -> Result<Value, FalError> {
    let output = job
        .result
        .as_ref()
        .and_then(|r| r.pointer("/outputs/0"))
        .ok_or_else(|| FalError::Internal(format!("job {} succeeded without an output", job.id)))?;
    let url = output_urls(job)
        .into_iter()
        .next()
        .ok_or_else(|| FalError::Internal(format!("job {} has no output URL", job.id)))?;
    let file_name = output
        .get("key")
        .and_then(Value::as_str)
        .unwrap_or("output.mp4");
    Ok(json!({
        "video": {
            "url": url,
            "content_type": output.get("content_type").cloned().unwrap_or(json!("video/mp4")),
            "file_name": file_name,
            "file_size": output.get("size_bytes").cloned().unwrap_or(Value::Null),
        }
    }))
}

fn result_of(job: &Job) -> Result<Value, FalError> {
    match failure_of(job) {
        Some(e) => Err(e),
        None => output_of(job),
    }
}

/// The status JSON of a job, and whether it is `COMPLETED`.
async fn status_view(state: &AppState, job: &Job, base: &str, app: &str, logs: bool) -> Value {
    let (_, _, response_url) = request_urls(base, app, &job.id);
    let logs = if logs {
        Value::Array(job_logs(job))
    } else {
        Value::Null
    };
    let mut view = Map::new();
    view.insert("request_id".into(), json!(job.id));
    view.insert("response_url".into(), json!(response_url));
    view.insert("logs".into(), logs);
    match job.state {
        JobState::Queued => {
            let position = state
                .store
                .queue_position(&job.id)
                .await
                .ok()
                .flatten()
                .unwrap_or(0);
            view.insert("status".into(), json!("IN_QUEUE"));
            view.insert("queue_position".into(), json!(position));
        }
        JobState::Running => {
            view.insert("status".into(), json!("IN_PROGRESS"));
        }
        _ => {
            view.insert("status".into(), json!("COMPLETED"));
            let metrics = match inference_time(job) {
                Some(t) => json!({ "inference_time": t }),
                None => json!({}),
            };
            view.insert("metrics".into(), metrics);
            // The SDK knows no failed status: failures are COMPLETED with an error.
            if let Some(e) = failure_of(job) {
                view.insert("error".into(), json!(error_message(&e)));
                view.insert("error_type".into(), json!(e.error_type()));
            }
        }
    }
    Value::Object(view)
}

/// `logs=1` (docs) or `logs=true` (the Python SDK).
fn wants_logs(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            matches!(pair.split_once('='), Some(("logs", v)) if v == "1" || v.eq_ignore_ascii_case("true"))
        })
    })
}

/// `GET /{owner}/{app}/requests/{id}/status[?logs=1]`: 202 while it waits or runs, 200 once
/// completed.
async fn status(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    FalOwner(owner): FalOwner,
    Path(path): Path<RequestPath>,
    RawQuery(query): RawQuery,
) -> Result<Response, FalError> {
    let job = find_job(&state, &owner, &path).await?;
    let app = format!("{}/{}", path.owner, path.app);
    let view = status_view(&state, &job, &base, &app, wants_logs(query.as_deref())).await;
    let code = if job.state.is_final() {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_request_id((code, Json(view)).into_response(), &job.id))
}

struct StatusWatch {
    state: AppState,
    owner: String,
    path: RequestPath,
    base: String,
    logs: bool,
    /// What the last event showed, so only changes are sent.
    last: Option<Value>,
    pending: VecDeque<Event>,
    finished: bool,
    first: bool,
}

/// The part of a status that counts as a change (log timestamps move on every read).
fn status_key(view: &Value) -> Value {
    let mut key = view.clone();
    if let Some(logs) = key.get_mut("logs").and_then(Value::as_array_mut) {
        for line in logs {
            if let Some(line) = line.as_object_mut() {
                line.remove("timestamp");
            }
        }
    }
    key
}

async fn next_status_event(mut w: StatusWatch) -> Option<(Result<Event, Infallible>, StatusWatch)> {
    loop {
        if let Some(event) = w.pending.pop_front() {
            return Some((Ok(event), w));
        }
        if w.finished {
            return None;
        }
        if !w.first {
            tokio::time::sleep(w.state.config.events_poll).await;
        }
        w.first = false;
        let job = match find_job(&w.state, &w.owner, &w.path).await {
            Ok(job) => job,
            Err(e) => {
                w.pending
                    .push_back(Event::default().event("error").data(e.body().to_string()));
                w.finished = true;
                continue;
            }
        };
        let app = format!("{}/{}", w.path.owner, w.path.app);
        let view = status_view(&w.state, &job, &w.base, &app, w.logs).await;
        w.finished = job.state.is_final();
        let key = status_key(&view);
        if w.last.as_ref() != Some(&key) {
            w.pending.push_back(Event::default().data(view.to_string()));
            w.last = Some(key);
        }
    }
}

/// `GET /{owner}/{app}/requests/{id}/status/stream[?logs=1]`: server-sent events, one per
/// status change, each `data` the status JSON; the stream ends after `COMPLETED`.
async fn status_stream(
    State(state): State<AppState>,
    BaseUrl(base): BaseUrl,
    FalOwner(owner): FalOwner,
    Path(path): Path<RequestPath>,
    RawQuery(query): RawQuery,
) -> Result<Response, FalError> {
    // A wrong id is an HTTP error, not an empty stream.
    let job = find_job(&state, &owner, &path).await?;
    let watch = StatusWatch {
        state,
        owner,
        path,
        base,
        logs: wants_logs(query.as_deref()),
        last: None,
        pending: VecDeque::new(),
        finished: false,
        first: true,
    };
    let sse = Sse::new(stream::unfold(watch, next_status_event))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)));
    Ok(with_request_id(sse.into_response(), &job.id))
}

/// `GET /{owner}/{app}/requests/{id}`: the model output once completed; fal's error shape
/// for a job still running, failed, cancelled or expired.
async fn result(
    State(state): State<AppState>,
    FalOwner(owner): FalOwner,
    Path(path): Path<RequestPath>,
) -> Result<Response, FalError> {
    let job = find_job(&state, &owner, &path).await?;
    let answer = match result_of(&job) {
        Ok(output) => Json(output).into_response(),
        Err(e) => e.into_response(),
    };
    Ok(with_request_id(answer, &job.id))
}

/// `PUT /{owner}/{app}/requests/{id}/cancel`: `OK` (a queued job, cancelled now),
/// 202 `CANCELLATION_REQUESTED` (a running one, stopped at its next step), 400
/// `ALREADY_COMPLETED`, 404 `NOT_FOUND`.
async fn cancel(
    State(state): State<AppState>,
    FalOwner(owner): FalOwner,
    Path(path): Path<RequestPath>,
) -> Result<Response, FalError> {
    let answer = |code: StatusCode, status: &str| {
        with_request_id(
            (code, Json(json!({ "status": status }))).into_response(),
            &path.id,
        )
    };
    match find_job(&state, &owner, &path).await {
        Ok(_) => {}
        Err(FalError::RequestNotFound(_)) => return Ok(answer(StatusCode::NOT_FOUND, "NOT_FOUND")),
        Err(e) => return Err(e),
    }
    let outcome = match state.store.request_cancel(&path.id, Some(&owner)).await {
        Ok(outcome) => outcome,
        Err(kiln_jobs::JobError::NotFound { .. }) => {
            return Ok(answer(StatusCode::NOT_FOUND, "NOT_FOUND"))
        }
        Err(e) => return Err(e.into()),
    };
    Ok(match outcome {
        CancelOutcome::Cancelled => {
            // A queued job ends here, not in a worker, so its webhook goes from here.
            if let Ok(Some(job)) = state.store.get(&path.id, Some(&owner)).await {
                super::spawn_job_webhook(&state, &job);
            }
            answer(StatusCode::OK, "OK")
        }
        CancelOutcome::Requested => answer(StatusCode::ACCEPTED, "CANCELLATION_REQUESTED"),
        CancelOutcome::AlreadyFinished(_) => answer(StatusCode::BAD_REQUEST, "ALREADY_COMPLETED"),
    })
}

/// The webhook for a finished job of this dialect, if it asked for one:
/// `{request_id, gateway_request_id, status: "OK"|"ERROR", payload, error}`, the payload
/// being the output (or the error body the result URL answers, with `error` naming its
/// status code as fal does). fal signs its webhooks with ED25519 under its own published
/// keys, which no other server can reproduce, so none of fal's signature headers is sent;
/// kiln's own HMAC header is added when a webhook secret is configured.
pub(crate) fn webhook(state: &AppState, job: &Job) -> Option<OutboundWebhook> {
    let url = job.webhook_url.clone()?;
    if !job.state.is_final() {
        return None;
    }
    let (status, payload, error) = match result_of(job) {
        Ok(output) => ("OK", output, Value::Null),
        Err(e) => (
            "ERROR",
            e.body(),
            json!(format!("Invalid status code: {}", e.status().as_u16())),
        ),
    };
    let body = json!({
        "request_id": job.id,
        "gateway_request_id": job.id,
        "status": status,
        "payload": payload,
        "error": error,
    });
    let body = match serde_json::to_vec(&body) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(job = %job.id, "cannot serialize the fal webhook: {e}");
            return None;
        }
    };
    let headers = match state.delivery.webhook_secret() {
        Some(secret) => vec![(SIGNATURE_HEADER.to_string(), sign_body(secret, &body))],
        None => Vec::new(),
    };
    Some(OutboundWebhook {
        job_id: job.id.clone(),
        url,
        body,
        headers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_iso_with_millis() {
        assert_eq!(iso_timestamp(0), "1970-01-01T00:00:00.000");
        assert_eq!(iso_timestamp(1_735_732_800_123), "2025-01-01T12:00:00.123");
        assert_eq!(iso_timestamp(951_782_400_000), "2000-02-29T00:00:00.000");
    }

    #[test]
    fn input_defaults_and_errors() {
        let input = parse_input(&json!({"prompt": "a fox"}), Task::TextToVideo).unwrap();
        assert_eq!(input.seconds, 5.0);
        assert_eq!(input.cfg_scale, 0.5);
        assert_eq!(input.negative_prompt, DEFAULT_NEGATIVE_PROMPT);
        assert_eq!(input.aspect_ratio, AspectRatio::Landscape);
        let input = parse_input(
            &json!({"prompt": "a fox", "duration": 10, "image_url": "https://x/y.png"}),
            Task::ImageToVideo,
        )
        .unwrap();
        assert_eq!(input.seconds, 10.0);
        assert_eq!(input.image_url.as_deref(), Some("https://x/y.png"));

        let errors = parse_input(
            &json!({"duration": "7", "cfg_scale": "high", "seed": 3}),
            Task::TextToVideo,
        )
        .unwrap_err();
        let kinds: Vec<(&Value, &str)> = errors
            .iter()
            .map(|e| (&e.loc[1], e.kind.as_str()))
            .collect();
        assert!(
            kinds.contains(&(&json!("seed"), "extra_forbidden")),
            "{kinds:?}"
        );
        assert!(kinds.contains(&(&json!("prompt"), "missing")), "{kinds:?}");
        assert!(kinds.contains(&(&json!("duration"), "enum")), "{kinds:?}");
        assert!(
            kinds.contains(&(&json!("cfg_scale"), "float_type")),
            "{kinds:?}"
        );
        let errors = parse_input(&json!({"prompt": "x"}), Task::ImageToVideo).unwrap_err();
        assert_eq!(errors[0].loc, vec![json!("body"), json!("image_url")]);
    }

    #[test]
    fn logs_flag_reads_both_spellings() {
        assert!(wants_logs(Some("logs=1")));
        assert!(wants_logs(Some("x=2&logs=True")));
        assert!(!wants_logs(Some("logs=false")));
        assert!(!wants_logs(None));
    }
}
