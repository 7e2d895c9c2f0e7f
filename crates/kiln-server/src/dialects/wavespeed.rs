//! WaveSpeed's v3 predictions API, so the official `wavespeed` Python SDK (2.0.5) runs
//! unchanged with `Client(base_url="http://127.0.0.1:PORT")`.
//!
//! It owns the submit route `POST /api/v3/{model path}` (`?webhook=`, `enable_sync_mode`),
//! the prediction view at `GET /api/v3/predictions/{id}/result` (and the older
//! `/predictions/{id}`), input uploads (the SDK's ticket plus `PUT`, and the legacy
//! multipart upload), the `{"code","message","data"}` envelope with its error form, and
//! the prediction webhook, signed WaveSpeed's way (`webhook-signature: v3,<hex>`).
//!
//! Uploads: a ticket saves an empty placeholder upload at once, so its `download_url`
//! (`/uploads/<key>`) exists from the start and `uploads::inline` resolves it at submit.
//! The ticket's PUT URL names the same key and fills the placeholder exactly once. The key
//! is a fresh UUID that only the ticket's holder knows: that is what pre-authorises the
//! PUT, which the SDK sends without `Authorization`, as to a presigned URL.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{FromRequestParts, Multipart, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use kiln_jobs::{Job, JobError, JobState};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::{enqueue, output_urls, resolved_of, uploads, BaseUrl, Submission, SubmitError};
use crate::auth::scheme_token;
use crate::delivery::OutboundWebhook;
use crate::request::{
    AspectRatio, DurationSeconds, FrameImage, FramePosition, RequestError, VideoRequest,
};
use crate::AppState;

pub(crate) const DIALECT: &str = "wavespeed";

/// How long a sync-mode POST is held before answering WaveSpeed's "Sync mode timed out"
/// (the job goes on; the SDK reports its id so the caller can poll).
const SYNC_WAIT_LIMIT: Duration = Duration::from_secs(30 * 60);

pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v3/predictions/{id}/result", get(get_prediction))
        .route("/api/v3/predictions/{id}", get(get_prediction))
        .route("/api/v3/media/uploads", post(create_upload_ticket))
        .route("/api/v3/media/uploads/{key}", put(receive_upload))
        .route("/api/v3/media/upload/binary", post(upload_binary))
        // Model paths have two or more segments (`kwaivgi/kling-v2.1-t2v-master`).
        .route("/api/v3/{*model}", post(submit))
}

/// Every WaveSpeed error: `{"code": <http status>, "message": "...", "data": null}`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WaveSpeedError {
    /// A body, query or field the API does not accept; the message names the field.
    #[error("{message}")]
    BadRequest { message: String },
    #[error("missing or invalid API key; send `Authorization: Bearer <key>` with a key configured on this server")]
    Unauthorized,
    #[error("{message}")]
    NotFound { message: String },
    #[error("{message}")]
    Conflict { message: String },
    #[error("the request body is over the {limit}-byte limit; send a smaller file")]
    PayloadTooLarge { limit: usize },
    #[error("the queue is full; retry after {retry_after} seconds")]
    QueueFull { retry_after: u64 },
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl WaveSpeedError {
    fn status(&self) -> StatusCode {
        match self {
            WaveSpeedError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            WaveSpeedError::Unauthorized => StatusCode::UNAUTHORIZED,
            WaveSpeedError::NotFound { .. } => StatusCode::NOT_FOUND,
            WaveSpeedError::Conflict { .. } => StatusCode::CONFLICT,
            WaveSpeedError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            WaveSpeedError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            WaveSpeedError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for WaveSpeedError {
    fn into_response(self) -> Response {
        if let WaveSpeedError::Internal { message } = &self {
            tracing::error!(%message, "internal error");
        }
        let status = self.status();
        let body = json!({ "code": status.as_u16(), "message": self.to_string(), "data": null });
        let mut response = (status, Json(body)).into_response();
        match &self {
            WaveSpeedError::QueueFull { retry_after } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
            }
            WaveSpeedError::Unauthorized => {
                response
                    .headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}

impl From<SubmitError> for WaveSpeedError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Request(
                RequestError::Invalid { field, message }
                | RequestError::Unsupported { field, message },
            ) => {
                // kiln's names for the fields WaveSpeed names otherwise.
                let field = match field.as_str() {
                    "cfg_scale" => "guidance_scale".to_string(),
                    "webhook_url" => "webhook".to_string(),
                    f if f.starts_with("images") => "image".to_string(),
                    _ => field,
                };
                invalid(&field, message.replace("cfg_scale", "guidance_scale"))
            }
            SubmitError::QueueFull { retry_after } => WaveSpeedError::QueueFull { retry_after },
            SubmitError::DuplicateId { id } => WaveSpeedError::Conflict {
                message: format!("a prediction with id {id} already exists"),
            },
            SubmitError::Internal(message) => WaveSpeedError::Internal { message },
        }
    }
}

impl From<JobError> for WaveSpeedError {
    fn from(e: JobError) -> Self {
        WaveSpeedError::Internal {
            message: e.to_string(),
        }
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> WaveSpeedError {
    WaveSpeedError::BadRequest {
        message: format!("{field}: {message}"),
    }
}

fn body_error(state: &AppState, rejection: &BytesRejection) -> WaveSpeedError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        WaveSpeedError::PayloadTooLarge {
            limit: state.config.max_body_bytes,
        }
    } else {
        WaveSpeedError::BadRequest {
            message: format!("cannot read the request body: {}", rejection.body_text()),
        }
    }
}

/// A JSON object from a body; an empty body is `{}` (the SDK posts `{}` for no input).
fn json_body(bytes: &[u8]) -> Result<Value, WaveSpeedError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(bytes).map_err(|e| WaveSpeedError::BadRequest {
        message: format!(
            "the body is not valid JSON ({e}); send a JSON object with the model's fields"
        ),
    })
}

/// `raw` as `T`, naming the field at fault.
fn typed<T: DeserializeOwned>(raw: &Value) -> Result<T, WaveSpeedError> {
    serde_path_to_error::deserialize(raw).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            WaveSpeedError::BadRequest {
                message: inner.to_string(),
            }
        } else {
            invalid(&path, inner)
        }
    })
}

/// The caller's owner id from `Authorization: Bearer <key>`.
struct Caller(String);

impl FromRequestParts<AppState> for Caller {
    type Rejection = WaveSpeedError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| scheme_token(v, "bearer"));
        state
            .keys
            .owner_for_key(key)
            .map(Caller)
            .ok_or(WaveSpeedError::Unauthorized)
    }
}

fn envelope(data: Value) -> Json<Value> {
    Json(json!({ "code": 200, "message": "success", "data": data }))
}

#[derive(Debug, Deserialize)]
struct SubmitQuery {
    webhook: Option<String>,
}

/// The body of a Kling 2.1 Master submit (t2v and i2v share it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PredictionInput {
    #[serde(default)]
    prompt: String,
    negative_prompt: Option<String>,
    /// `16:9`, `9:16` or `1:1`.
    aspect_ratio: Option<String>,
    /// 5 or 10 (seconds); WaveSpeed sends an integer.
    duration: Option<Value>,
    /// 0 to 1.
    guidance_scale: Option<f64>,
    /// The first frame: a URL (an upload's `download_url`) or a data URI.
    image: Option<String>,
    /// Not on the Kling pages but on WaveSpeed's other models: -1 draws one.
    seed: Option<i64>,
    #[serde(default)]
    enable_sync_mode: bool,
}

/// `POST /api/v3/{model}`: queue a prediction; with `enable_sync_mode`, answer when it ends.
async fn submit(
    State(state): State<AppState>,
    Caller(owner): Caller,
    BaseUrl(base): BaseUrl,
    Path(model): Path<String>,
    query: Result<Query<SubmitQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, WaveSpeedError> {
    let model = model.trim_matches('/').to_string();
    if !state.config.serves_model(&model) {
        return Err(WaveSpeedError::NotFound {
            message: format!(
                "model {model} not found; this server serves kwaivgi/kling-v2.1-t2v-master and kwaivgi/kling-v2.1-i2v-master (or the ids it is configured with)"
            ),
        });
    }
    let Query(query) = query.map_err(|e| invalid("webhook", e.body_text()))?;
    let bytes = body.map_err(|e| body_error(&state, &e))?;
    let mut raw = json_body(&bytes)?;
    let input: PredictionInput = typed(&raw)?;
    let sync = input.enable_sync_mode;
    let request = translate(&state, &model, input, query.webhook).await?;
    if let Some(fields) = raw.as_object_mut() {
        fields.remove("enable_sync_mode");
    }
    let (job, _) = enqueue(
        &state,
        Submission {
            owner,
            dialect: DIALECT,
            id: None,
            request,
            base_url: base.clone(),
            meta: json!({ "model": model, "input": raw }),
        },
    )
    .await?;
    if !sync {
        return Ok(envelope(prediction(&job, &base)));
    }
    let job = super::wait_for_end(&state, &job.id, Some(SYNC_WAIT_LIMIT)).await?;
    let mut data = prediction(&job, &base);
    if !job.state.is_final() {
        // The SDK recognises this wording and reports the id so the caller can poll.
        data["error"] = json!(format!(
            "Sync mode timed out after {} s; the prediction goes on, query its result at {}",
            SYNC_WAIT_LIMIT.as_secs(),
            result_url(&base, &job.id)
        ));
    }
    Ok(envelope(data))
}

/// WaveSpeed's input as kiln's request. Checks WaveSpeed's own ranges first, so errors
/// speak its field names and values.
async fn translate(
    state: &AppState,
    model: &str,
    input: PredictionInput,
    webhook: Option<String>,
) -> Result<VideoRequest, WaveSpeedError> {
    let duration = input.duration.as_ref().map(parse_duration).transpose()?;
    let aspect_ratio = input
        .aspect_ratio
        .as_deref()
        .map(parse_aspect_ratio)
        .transpose()?;
    if let Some(g) = input.guidance_scale {
        if !(g.is_finite() && (0.0..=1.0).contains(&g)) {
            return Err(invalid(
                "guidance_scale",
                format!("{g} is out of range; expected 0 to 1 (0.5 is the default)"),
            ));
        }
    }
    let seed = match input.seed {
        None | Some(-1) => None,
        Some(s) => Some(u64::try_from(s).map_err(|_| {
            invalid(
                "seed",
                format!("{s}; expected a non-negative seed, or -1 for a random one"),
            )
        })?),
    };
    let image = input
        .image
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let images = match image {
        Some(image) => {
            let inlined = uploads::inline(state, image).await;
            if inlined.ends_with(";base64,") {
                return Err(invalid(
                    "image",
                    format!("the upload {image} has no bytes yet; PUT the file to the ticket's upload URL before submitting"),
                ));
            }
            vec![FrameImage {
                image: inlined,
                frame: FramePosition::First,
            }]
        }
        None if model.contains("i2v") => {
            return Err(invalid(
                "image",
                format!("{model} needs image, the first frame: a URL (such as a download_url from /api/v3/media/uploads) or a data URI"),
            ))
        }
        None => Vec::new(),
    };
    Ok(VideoRequest {
        prompt: input.prompt,
        negative_prompt: input.negative_prompt,
        duration,
        aspect_ratio,
        cfg_scale: input.guidance_scale,
        seed,
        images,
        webhook_url: webhook,
        ..VideoRequest::default()
    })
}

fn parse_duration(value: &Value) -> Result<DurationSeconds, WaveSpeedError> {
    let seconds = match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match seconds {
        Some(s) if s == 5.0 || s == 10.0 => Ok(DurationSeconds::Number(s)),
        _ => Err(invalid(
            "duration",
            format!("{value} is not offered; use 5 or 10 (seconds)"),
        )),
    }
}

fn parse_aspect_ratio(text: &str) -> Result<AspectRatio, WaveSpeedError> {
    match text.trim() {
        "16:9" => Ok(AspectRatio::Landscape),
        "9:16" => Ok(AspectRatio::Portrait),
        "1:1" => Ok(AspectRatio::Square),
        other => Err(invalid(
            "aspect_ratio",
            format!("{other:?} is not offered; use 16:9, 9:16 or 1:1"),
        )),
    }
}

fn result_url(base: &str, id: &str) -> String {
    format!(
        "{}/api/v3/predictions/{id}/result",
        base.trim_end_matches('/')
    )
}

/// A job as WaveSpeed's prediction `data` object; `base` is where its `urls.get` points.
fn prediction(job: &Job, base: &str) -> Value {
    let meta = resolved_of(job).map(|r| r.dialect_meta);
    let model = meta
        .as_ref()
        .and_then(|m| m.get("model"))
        .and_then(Value::as_str)
        .unwrap_or(&job.model);
    let (status, error) = match job.state {
        JobState::Queued => ("created", String::new()),
        JobState::Running => ("processing", String::new()),
        JobState::Succeeded => ("completed", String::new()),
        JobState::Failed => (
            "failed",
            job.error
                .clone()
                .unwrap_or_else(|| "the prediction failed".to_string()),
        ),
        JobState::Cancelled => ("cancelled", "the prediction was cancelled".to_string()),
        // WaveSpeed's word for a prediction that is gone; the SDK stops on it.
        JobState::Expired => (
            "deleted",
            "the outputs passed their time to live and were deleted; run the prediction again"
                .to_string(),
        ),
    };
    let outputs = if job.state == JobState::Succeeded {
        output_urls(job)
    } else {
        Vec::new()
    };
    let inference_ms = job
        .result
        .as_ref()
        .and_then(|r| r.pointer("/timings/generate_seconds"))
        .and_then(Value::as_f64)
        .map_or(0, |s| (s * 1000.0).round() as u64);
    let execution_ms = match (job.started_at_ms, job.finished_at_ms) {
        (Some(start), Some(end)) => (end - start).max(0),
        _ => 0,
    };
    json!({
        "id": job.id,
        "model": model,
        "outputs": outputs,
        "urls": { "get": result_url(base, &job.id) },
        "has_nsfw_contents": vec![false; outputs.len()],
        "status": status,
        "created_at": super::utc_timestamp(job.created_at_ms),
        "error": error,
        "executionTime": execution_ms,
        "timings": { "inference": inference_ms },
    })
}

/// `GET /api/v3/predictions/{id}/result` and `GET /api/v3/predictions/{id}`.
async fn get_prediction(
    State(state): State<AppState>,
    Caller(owner): Caller,
    BaseUrl(base): BaseUrl,
    Path(id): Path<String>,
) -> Result<Json<Value>, WaveSpeedError> {
    let job = state
        .store
        .get(&id, Some(&owner))
        .await?
        .filter(|job| job.dialect == DIALECT)
        .ok_or_else(|| WaveSpeedError::NotFound {
            message: format!(
                "prediction {id} not found; check the id (a prediction is visible only to the key that created it)"
            ),
        })?;
    Ok(envelope(prediction(&job, &base)))
}

#[derive(Debug, Deserialize)]
struct UploadTicketRequest {
    filename: String,
    size: u64,
    content_type: Option<String>,
}

/// `POST /api/v3/media/uploads`: a ticket to PUT one file to.
async fn create_upload_ticket(
    State(state): State<AppState>,
    Caller(_owner): Caller,
    BaseUrl(base): BaseUrl,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, WaveSpeedError> {
    let bytes = body.map_err(|e| body_error(&state, &e))?;
    let ticket: UploadTicketRequest = typed(&json_body(&bytes)?)?;
    if ticket.size == 0 {
        return Err(invalid(
            "size",
            "the file is empty; upload a file with content",
        ));
    }
    if ticket.size > state.config.max_body_bytes as u64 {
        return Err(WaveSpeedError::PayloadTooLarge {
            limit: state.config.max_body_bytes,
        });
    }
    let content_type = ticket
        .content_type
        .filter(|c| !c.trim().is_empty())
        .unwrap_or_else(|| uploads::content_type_for(&ticket.filename).to_string());
    let key = uploads::save(&state, &[], &content_type)
        .await
        .map_err(|e| WaveSpeedError::Internal {
            message: format!("cannot create the upload: {e}"),
        })?;
    let base = base.trim_end_matches('/');
    Ok(envelope(json!({
        "upload": {
            "method": "PUT",
            "url": format!("{base}/api/v3/media/uploads/{key}"),
            "headers": {},
        },
        "download_url": uploads::url(base, &key),
    })))
}

/// A key as `uploads::save` makes them: `<uuid>.<ext>`, nothing else.
fn is_upload_key(key: &str) -> bool {
    key.split_once('.').is_some_and(|(id, ext)| {
        uuid::Uuid::try_parse(id).is_ok()
            && !ext.is_empty()
            && ext.chars().all(|c| c.is_ascii_alphanumeric())
    })
}

/// `PUT /api/v3/media/uploads/{key}`: the bytes of a ticket's placeholder, once.
async fn receive_upload(
    State(state): State<AppState>,
    Path(key): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, WaveSpeedError> {
    let not_found = || WaveSpeedError::NotFound {
        message: format!(
            "upload {key} not found; ask POST /api/v3/media/uploads for a ticket first"
        ),
    };
    if !is_upload_key(&key) {
        return Err(not_found());
    }
    // The folder `uploads::save` writes to (see `dialects::uploads`).
    let folder = state.config.data_dir.join("uploads");
    let path = folder.join(&key);
    let placeholder = tokio::fs::metadata(&path).await.map_err(|_| not_found())?;
    if placeholder.len() > 0 {
        return Err(WaveSpeedError::Conflict {
            message: format!("upload {key} already has its file; ask POST /api/v3/media/uploads for a new ticket"),
        });
    }
    let bytes = body.map_err(|e| body_error(&state, &e))?;
    if bytes.is_empty() {
        return Err(invalid(
            "body",
            "the PUT body is empty; send the file's bytes",
        ));
    }
    let tmp = folder.join(format!(".{key}.tmp"));
    let write = async {
        tokio::fs::write(&tmp, &bytes).await?;
        tokio::fs::rename(&tmp, &path).await
    };
    write.await.map_err(|e| WaveSpeedError::Internal {
        message: format!("cannot store the upload: {e}"),
    })?;
    Ok(StatusCode::OK)
}

/// `POST /api/v3/media/upload/binary`: the legacy upload, multipart field `file`.
async fn upload_binary(
    State(state): State<AppState>,
    Caller(_owner): Caller,
    BaseUrl(base): BaseUrl,
    multipart: Result<Multipart, MultipartRejection>,
) -> Result<Json<Value>, WaveSpeedError> {
    let multipart_error = |status: StatusCode, text: String| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            WaveSpeedError::PayloadTooLarge {
                limit: state.config.max_body_bytes,
            }
        } else {
            invalid("file", format!("cannot read the multipart body: {text}"))
        }
    };
    let mut multipart = multipart.map_err(|e| multipart_error(e.status(), e.body_text()))?;
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| multipart_error(e.status(), e.body_text()))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let filename = field.file_name().unwrap_or("upload").to_string();
        let content_type = field
            .content_type()
            .filter(|c| !c.starts_with("application/octet-stream"))
            .map_or_else(
                || uploads::content_type_for(&filename).to_string(),
                str::to_string,
            );
        let bytes = field
            .bytes()
            .await
            .map_err(|e| multipart_error(e.status(), e.body_text()))?;
        if bytes.is_empty() {
            return Err(invalid(
                "file",
                "the file is empty; upload a file with content",
            ));
        }
        let key = uploads::save(&state, &bytes, &content_type)
            .await
            .map_err(|e| WaveSpeedError::Internal {
                message: format!("cannot store the upload: {e}"),
            })?;
        let kind = match content_type.split('/').next().unwrap_or("") {
            kind @ ("image" | "video" | "audio") => kind,
            _ => "file",
        };
        return Ok(envelope(json!({
            "type": kind,
            "download_url": uploads::url(&base, &key),
            "filename": filename,
            "size": bytes.len(),
        })));
    }
    Err(invalid(
        "file",
        "no multipart field named file; send the file as multipart/form-data field `file`",
    ))
}

/// The prediction webhook: the `data` object (with `input`) once the job has ended,
/// signed when the server has a webhook secret.
pub(crate) fn webhook(state: &AppState, job: &Job) -> Option<OutboundWebhook> {
    let url = job.webhook_url.clone()?;
    if !job.state.is_final() {
        return None;
    }
    let resolved = resolved_of(job);
    let base = state
        .config
        .public_url
        .clone()
        .or_else(|| resolved.as_ref().and_then(|r| r.base_url.clone()))
        .unwrap_or_default();
    let mut data = prediction(job, &base);
    data["input"] = resolved
        .and_then(|r| r.dialect_meta.get("input").cloned())
        .unwrap_or_else(|| json!({}));
    let body = match serde_json::to_vec(&data) {
        Ok(body) => body,
        Err(e) => {
            tracing::error!(job = %job.id, "cannot serialize the webhook body: {e}");
            return None;
        }
    };
    let timestamp = (super::now_ms() / 1000).to_string();
    let mut headers = vec![
        ("webhook-id".to_string(), job.id.clone()),
        ("webhook-timestamp".to_string(), timestamp.clone()),
    ];
    if let Some(secret) = state.delivery.webhook_secret() {
        headers.push((
            "webhook-signature".to_string(),
            webhook_signature(secret, &job.id, &timestamp, &body),
        ));
    }
    Some(OutboundWebhook {
        job_id: job.id.clone(),
        url,
        body,
        headers,
    })
}

/// `v3,<hex HMAC-SHA256>` of `{id}.{timestamp}.{body}`, keyed by the secret without its
/// `whsec_` prefix (WaveSpeed does not base64-decode it).
pub(crate) fn webhook_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = secret.strip_prefix("whsec_").unwrap_or(secret);
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v3,{}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_covers_id_timestamp_and_body() {
        let plain = webhook_signature("secret", "id", "1", b"{}");
        assert_eq!(plain, webhook_signature("whsec_secret", "id", "1", b"{}"));
        assert!(plain.starts_with("v3,") && plain.len() == 3 + 64, "{plain}");
        assert_ne!(plain, webhook_signature("secret", "id", "2", b"{}"));
    }

    #[test]
    fn upload_keys_are_uuid_and_extension() {
        assert!(is_upload_key("67e55044-10b1-426f-9247-bb680e5fe0c8.png"));
        for bad in [
            "../x.png",
            "67e55044-10b1-426f-9247-bb680e5fe0c8",
            "a.png",
            "67e55044-10b1-426f-9247-bb680e5fe0c8.p/g",
        ] {
            assert!(!is_upload_key(bad), "{bad}");
        }
    }
}
