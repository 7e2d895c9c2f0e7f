//! The hosted platforms' dialects. Each module is a thin translation: its wire JSON into a
//! [`VideoRequest`] (validated by the same [`VideoRequest::validate`] as the native API),
//! and the stored [`Job`] back out in its own status vocabulary, result shape, error shape
//! and webhook payload. Nothing here runs a job or touches the store's rules.

pub(crate) mod fal;
pub(crate) mod prodia;
pub(crate) mod runware;
pub(crate) mod wavespeed;

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
        Ok(BaseUrl(base_url(state, &parts.headers, parts.extensions.get::<ListenerScheme>())))
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

/// Sends a finished (or cancelled) job's webhook in the shape of the dialect that made it.
pub(crate) fn spawn_job_webhook(state: &AppState, job: &Job) {
    let webhook = match job.dialect.as_str() {
        fal::DIALECT => fal::webhook(state, job),
        runware::DIALECT => runware::webhook(state, job),
        wavespeed::DIALECT => wavespeed::webhook(state, job),
        prodia::DIALECT => None,
        _ => {
            state.delivery.spawn_webhook(state, &JobView::new(job, None));
            return;
        }
    };
    if let Some(webhook) = webhook {
        state.delivery.spawn_post(state, webhook);
    }
}
