//! The hosted platforms' dialects. Each module is a thin translation: its wire JSON into a
//! [`VideoRequest`] (validated by the same [`VideoRequest::validate`] as the native API),
//! and the stored [`Job`] back out in its own status vocabulary, result shape, error shape
//! and webhook payload. Nothing here runs a job or touches the store's rules.

pub(crate) mod fal;
pub(crate) mod prodia;
pub(crate) mod runware;
pub(crate) mod wavespeed;

use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::Router;
use kiln_jobs::{Job, JobError, NewJob};

use crate::native::{request_limits, JobView};
use crate::request::{RequestError, ResolvedRequest, VideoRequest};
use crate::AppState;

/// The routes every dialect adds to the main listener (fal with queue semantics).
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route("/uploads/{key}", axum::routing::get(uploads::get_upload))
        .merge(fal::queue_router())
        .merge(runware::router())
        .merge(wavespeed::router())
        .merge(prodia::router())
}

/// Whether a listener speaks TLS: decides the scheme of the URLs a dialect hands back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerScheme(pub &'static str);

/// The server's base URL as this request reached it: the configured `public_url`, else
/// `<scheme>://<Host header>`, the scheme coming from the listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BaseUrl(pub String);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(BaseUrl(base_url(
            state,
            &parts.headers,
            parts.extensions.get::<ListenerScheme>(),
        )))
    }
}

fn base_url(state: &AppState, headers: &HeaderMap, scheme: Option<&ListenerScheme>) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let scheme = scheme.map_or("http", |s| s.0);
    format!("{scheme}://{host}")
}

/// A dialect's request, translated, on its way into the queue.
pub(crate) struct Submission {
    pub owner: String,
    pub dialect: &'static str,
    /// The id the client chose (Runware's `taskUUID`), if any.
    pub id: Option<String>,
    pub request: VideoRequest,
    pub base_url: String,
    /// Echoed back by the dialect later (endpoint id, model path…).
    pub meta: serde_json::Value,
}

/// Why a submission was not queued; each dialect maps it to its own error shape.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SubmitError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the queue is full; retry after {retry_after} seconds")]
    QueueFull { retry_after: u64 },
    #[error("a job with id {id} already exists; use a new id for each task")]
    DuplicateId { id: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<JobError> for SubmitError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::DuplicateId { id } => SubmitError::DuplicateId { id },
            other => SubmitError::Internal(other.to_string()),
        }
    }
}

/// Validates and queues a dialect's request, and wakes a worker.
pub(crate) async fn enqueue(
    state: &AppState,
    submission: Submission,
) -> Result<(Job, ResolvedRequest), SubmitError> {
    let mut resolved = submission
        .request
        .validate(&state.capabilities, &request_limits(state))?;
    resolved.base_url = Some(submission.base_url);
    resolved.dialect_meta = submission.meta;
    let request = serde_json::to_value(&resolved)
        .map_err(|e| SubmitError::Internal(format!("cannot serialize the request: {e}")))?;
    let job = state
        .store
        .submit(NewJob {
            id: submission.id,
            owner: submission.owner,
            model: state.config.model_name.clone(),
            dialect: submission.dialect.to_string(),
            request,
            webhook_url: resolved.webhook_url.clone(),
            max_attempts: None,
        })
        .await
        .map_err(|e| match e {
            JobError::QueueFull { .. } => SubmitError::QueueFull {
                retry_after: state.config.retry_after_seconds,
            },
            other => other.into(),
        })?;
    state.work_ready.notify_one();
    Ok((job, resolved))
}

/// The stored request of a job, as queued.
pub(crate) fn resolved_of(job: &Job) -> Option<ResolvedRequest> {
    serde_json::from_value(job.request.clone()).ok()
}

/// Output URLs of a succeeded job (absolute when the submitter's base URL is known).
pub(crate) fn output_urls(job: &Job) -> Vec<String> {
    job.result
        .as_ref()
        .and_then(|r| r.get("outputs"))
        .and_then(|o| o.as_array())
        .map(|outputs| {
            outputs
                .iter()
                .filter_map(|o| o.get("url").and_then(|u| u.as_str()).map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The latest state of a job once it has ended, or when `limit` has passed.
pub(crate) async fn wait_for_end(
    state: &AppState,
    id: &str,
    limit: Option<Duration>,
) -> Result<Job, JobError> {
    let started = Instant::now();
    loop {
        let job = state
            .store
            .get(id, None)
            .await?
            .ok_or_else(|| JobError::NotFound { id: id.to_string() })?;
        if job.state.is_final() || limit.is_some_and(|l| started.elapsed() >= l) {
            return Ok(job);
        }
        tokio::time::sleep(state.config.events_poll.max(Duration::from_millis(20))).await;
    }
}

/// The wall clock in Unix milliseconds, as job timestamps are stored.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Unix milliseconds as ISO 8601 UTC with milliseconds (`2023-04-01T12:34:56.789Z`).
pub(crate) fn utc_timestamp(ms: i64) -> String {
    let seconds = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = seconds.div_euclid(86_400);
    let of_day = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days: the proleptic Gregorian date of a day number.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        of_day / 3600,
        of_day % 3600 / 60,
        of_day % 60
    )
}

/// Sends a finished (or cancelled) job's webhook in the shape of the dialect that made it.
pub(crate) fn spawn_job_webhook(state: &AppState, job: &Job) {
    let webhooks: Vec<_> = match job.dialect.as_str() {
        fal::DIALECT => fal::webhook(state, job).into_iter().collect(),
        runware::DIALECT => runware::webhooks(state, job),
        wavespeed::DIALECT => wavespeed::webhook(state, job).into_iter().collect(),
        // Prodia has no webhooks.
        prodia::DIALECT => Vec::new(),
        _ => {
            state
                .delivery
                .spawn_webhook(state, &JobView::new(job, None));
            return;
        }
    };
    for webhook in webhooks {
        state.delivery.spawn_post(state, webhook);
    }
}

/// Media a client uploaded before submitting (Runware `imageUpload`, WaveSpeed
/// `media/uploads`), under `<data>/uploads/<uuid>.<ext>`, served at `/uploads/{key}`.
/// A request that names an upload (its URL on this server, or its UUID) gets the bytes
/// inlined as a data URI at submit, so workers never fetch from the server itself.
pub(crate) mod uploads {
    use axum::extract::{Path, State};
    use axum::http::header;
    use axum::response::{IntoResponse, Response};
    use base64::Engine;

    use crate::error::NativeError;
    use crate::AppState;

    fn folder(state: &AppState) -> std::path::PathBuf {
        state.config.data_dir.join("uploads")
    }

    /// The media an upload may hold, by file extension; anything else is stored as `.bin`.
    const MEDIA_TYPES: [(&str, &str); 5] = [
        ("png", "image/png"),
        ("jpg", "image/jpeg"),
        ("webp", "image/webp"),
        ("gif", "image/gif"),
        ("mp4", "video/mp4"),
    ];

    fn extension_for(content_type: &str) -> &'static str {
        let mime = match content_type.split(';').next().unwrap_or("").trim() {
            "image/jpg" => "image/jpeg",
            other => other,
        };
        MEDIA_TYPES
            .iter()
            .find(|(_, m)| *m == mime)
            .map_or("bin", |(ext, _)| ext)
    }

    /// The media type of a file by its name's extension (any case, `.jpeg` too).
    pub(crate) fn content_type_for(name: &str) -> &'static str {
        let ext = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let ext = if ext == "jpeg" { "jpg" } else { ext.as_str() };
        MEDIA_TYPES
            .iter()
            .find(|(e, _)| *e == ext)
            .map_or("application/octet-stream", |(_, mime)| mime)
    }

    /// A key names an upload only if it is `<uuid>.<ext>` with nothing else in it.
    fn valid_key(key: &str) -> bool {
        key.split_once('.').is_some_and(|(id, ext)| {
            uuid::Uuid::parse_str(id).is_ok() && ext.chars().all(|c| c.is_ascii_alphanumeric())
        })
    }

    /// Stores `bytes` and returns the new upload's key (`<uuid>.<ext>`).
    pub(crate) async fn save(
        state: &AppState,
        bytes: &[u8],
        content_type: &str,
    ) -> std::io::Result<String> {
        let dir = folder(state);
        tokio::fs::create_dir_all(&dir).await?;
        let key = format!("{}.{}", uuid::Uuid::new_v4(), extension_for(content_type));
        let tmp = dir.join(format!(".{key}.tmp"));
        tokio::fs::write(&tmp, bytes).await?;
        tokio::fs::rename(&tmp, dir.join(&key)).await?;
        Ok(key)
    }

    /// The URL of an upload as the client that made it sees this server.
    pub(crate) fn url(base_url: &str, key: &str) -> String {
        format!("{}/uploads/{key}", base_url.trim_end_matches('/'))
    }

    /// `source` as a data URI when it names an upload of this server (its URL, its key, or
    /// its bare UUID); otherwise `source` unchanged.
    pub(crate) async fn inline(state: &AppState, source: &str) -> String {
        match find(state, source).await {
            Some((key, bytes)) => format!(
                "data:{};base64,{}",
                content_type_for(&key),
                base64::engine::general_purpose::STANDARD.encode(bytes)
            ),
            None => source.to_string(),
        }
    }

    async fn find(state: &AppState, source: &str) -> Option<(String, Vec<u8>)> {
        let tail = source
            .rsplit_once("/uploads/")
            .map_or(source, |(_, key)| key)
            .trim();
        if valid_key(tail) {
            let bytes = tokio::fs::read(folder(state).join(tail)).await.ok()?;
            return Some((tail.to_string(), bytes));
        }
        // A bare UUID (Runware's imageUUID): stored under one of the known extensions.
        uuid::Uuid::parse_str(tail).ok()?;
        for ext in MEDIA_TYPES.iter().map(|(e, _)| *e).chain(["bin"]) {
            let key = format!("{tail}.{ext}");
            if let Ok(bytes) = tokio::fs::read(folder(state).join(&key)).await {
                return Some((key, bytes));
            }
        }
        None
    }

    /// `GET /uploads/{key}`.
    pub(crate) async fn get_upload(
        State(state): State<AppState>,
        Path(key): Path<String>,
    ) -> Result<Response, NativeError> {
        let not_found = || NativeError::not_found(format!("upload {key}"));
        if !valid_key(&key) {
            return Err(not_found());
        }
        let bytes = tokio::fs::read(folder(&state).join(&key))
            .await
            .map_err(|_| not_found())?;
        Ok(([(header::CONTENT_TYPE, content_type_for(&key))], bytes).into_response())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_iso_8601_utc() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_timestamp(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(utc_timestamp(-1), "1969-12-31T23:59:59.999Z");
    }
}
