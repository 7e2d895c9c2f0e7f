//! kiln's native API: `/v1/videos` and its job view.

use axum::extract::{FromRequest, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_jobs::{CancelOutcome, Job, JobError, JobState, NewJob, PageRequest};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::auth::Owner;
use crate::dialects::BaseUrl;
use crate::error::{ErrorBody, NativeError};
use crate::request::{RequestLimits, VideoRequest};
use crate::AppState;

/// The dialect name stored on native jobs.
pub const DIALECT: &str = "native";

/// A job as the native API shows it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    pub id: String,
    /// Always `video`.
    pub object: String,
    /// `queued`, `running`, `succeeded`, `failed`, `cancelled` or `expired`.
    pub status: String,
    pub model: String,
    /// Unix milliseconds.
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// When the outputs are deleted.
    pub expires_at: Option<i64>,
    /// Jobs ahead of this one while it is queued (0: next).
    pub queue_position: Option<u64>,
    /// `{step, steps, phase}` while it runs.
    pub progress: Option<Value>,
    pub cancel_requested: bool,
    /// The request with every default resolved (seed, size, frames, steps…).
    pub request: Value,
    /// `{outputs: [{url, key, content_type, width, height, frames, fps, seconds, …}], seed,
    /// timings, cost?, upload?}` once succeeded.
    pub result: Option<Value>,
    pub error: Option<String>,
    pub links: JobLinks,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobLinks {
    #[serde(rename = "self")]
    pub self_: String,
    pub events: String,
    pub cancel: String,
}

impl JobView {
    pub fn new(job: &Job, queue_position: Option<u64>) -> Self {
        let base = format!("/v1/videos/{}", job.id);
        Self {
            id: job.id.clone(),
            object: "video".to_string(),
            status: job.state.as_str().to_string(),
            model: job.model.clone(),
            created_at: job.created_at_ms,
            started_at: job.started_at_ms,
            finished_at: job.finished_at_ms,
            expires_at: job.expires_at_ms,
            queue_position,
            progress: job
                .progress
                .as_ref()
                .and_then(|p| serde_json::to_value(p).ok()),
            cancel_requested: job.cancel_requested,
            request: job.request.clone(),
            result: job.result.clone(),
            error: job.error.clone(),
            links: JobLinks {
                events: format!("{base}/events"),
                cancel: format!("{base}/cancel"),
                self_: base,
            },
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct JobList {
    pub data: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
pub struct ListParams {
    /// 1 to 1000 [default: 50].
    pub limit: Option<u32>,
    pub cursor: Option<String>,
}

/// JSON body in the native error shape: syntax errors are 400, type and value errors 422
/// naming the field path, bodies over the limit 413.
pub struct NativeJson<T>(pub T);

impl<T: DeserializeOwned + Send> FromRequest<AppState> for NativeJson<T> {
    type Rejection = NativeError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    NativeError::PayloadTooLarge {
                        limit: state.config.max_body_bytes,
                    }
                } else {
                    NativeError::InvalidJson {
                        message: format!("cannot read the request body: {rejection}"),
                    }
                }
            })?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize::<_, T>(&mut de) {
            Ok(v) => Ok(NativeJson(v)),
            Err(err) => {
                let field = err.path().to_string();
                let inner = err.into_inner();
                if inner.is_data() {
                    Err(NativeError::InvalidParameter {
                        field: if field == "." { "body".into() } else { field },
                        message: format!(
                            "{inner}; see /openapi.json for the accepted fields and values"
                        ),
                    })
                } else {
                    Err(NativeError::InvalidJson {
                        message: format!("the body is not valid JSON: {inner}; send a JSON object with Content-Type: application/json"),
                    })
                }
            }
        }
    }
}

pub(crate) fn request_limits(state: &AppState) -> RequestLimits {
    RequestLimits {
        default_ttl: state.config.default_ttl,
        max_ttl: state.config.max_ttl,
        allow_private_addresses: state.config.allow_private_addresses,
    }
}

/// Submit a video job.
#[utoipa::path(post, path = "/v1/videos", request_body = VideoRequest,
    responses(
        (status = 202, description = "queued", body = JobView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody, description = "queue full; see Retry-After"),
    ),
    security(("bearer" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    Owner(owner): Owner,
    BaseUrl(base_url): BaseUrl,
    NativeJson(request): NativeJson<VideoRequest>,
) -> Result<Response, NativeError> {
    let mut resolved = request.validate(&state.capabilities, &request_limits(&state))?;
    // Output URLs in results and webhooks are absolute, on the address the client used.
    resolved.base_url = Some(base_url);
    let request_json = serde_json::to_value(&resolved).map_err(|e| NativeError::Internal {
        message: format!("cannot serialize the request: {e}"),
    })?;
    let job = state
        .store
        .submit(NewJob {
            id: None,
            owner,
            model: state.config.model_name.clone(),
            dialect: DIALECT.to_string(),
            request: request_json,
            webhook_url: resolved.webhook_url.clone(),
            max_attempts: None,
        })
        .await
        .map_err(|e| match e {
            JobError::QueueFull { .. } => NativeError::QueueFull {
                retry_after: state.config.retry_after_seconds,
            },
            other => other.into(),
        })?;
    state.work_ready.notify_one();
    let position = state.store.queue_position(&job.id).await?;
    let view = JobView::new(&job, position);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, view.links.self_.clone())],
        Json(view),
    )
        .into_response())
}

pub(crate) async fn load_view(
    state: &AppState,
    id: &str,
    owner: &str,
) -> Result<JobView, NativeError> {
    let job = state
        .store
        .get(id, Some(owner))
        .await?
        .ok_or_else(|| NativeError::not_found(format!("job {id}")))?;
    let position = if job.state == JobState::Queued {
        state.store.queue_position(&job.id).await?
    } else {
        None
    };
    Ok(JobView::new(&job, position))
}

/// Read a job.
#[utoipa::path(get, path = "/v1/videos/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get_job(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Json<JobView>, NativeError> {
    Ok(Json(load_view(&state, &id, &owner).await?))
}

/// List the caller's jobs, newest first.
#[utoipa::path(get, path = "/v1/videos", params(ListParams),
    responses((status = 200, body = JobList), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Query(params): Query<ListParams>,
) -> Result<Json<JobList>, NativeError> {
    let page = state
        .store
        .list(
            Some(&owner),
            PageRequest {
                cursor: params.cursor,
                limit: params.limit.unwrap_or(0),
            },
        )
        .await?;
    let mut data = Vec::with_capacity(page.items.len());
    for job in &page.items {
        let position = if job.state == JobState::Queued {
            state.store.queue_position(&job.id).await?
        } else {
            None
        };
        data.push(JobView::new(job, position));
    }
    Ok(Json(JobList {
        data,
        next_cursor: page.next_cursor,
    }))
}

/// Cancel a job: a queued one at once (200), a running one at its next step (202).
#[utoipa::path(post, path = "/v1/videos/{id}/cancel", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 202, body = JobView),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody, description = "already finished")),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Response, NativeError> {
    let outcome = state.store.request_cancel(&id, Some(&owner)).await?;
    let status = match outcome {
        CancelOutcome::Cancelled => StatusCode::OK,
        CancelOutcome::Requested => StatusCode::ACCEPTED,
        CancelOutcome::AlreadyFinished(s) => {
            return Err(NativeError::Conflict {
                message: format!("job {id} already ended ({s}); there is nothing to cancel"),
            })
        }
    };
    let job = state
        .store
        .get(&id, Some(&owner))
        .await?
        .ok_or_else(|| NativeError::not_found(format!("job {id}")))?;
    if outcome == CancelOutcome::Cancelled {
        crate::dialects::spawn_job_webhook(&state, &job);
    }
    // Cancelled or running: neither has a queue position.
    Ok((status, Json(JobView::new(&job, None))).into_response())
}

/// Liveness: the process answers and the store reads.
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok")))]
pub async fn healthz(State(state): State<AppState>) -> Result<Json<Value>, NativeError> {
    let counts = state.store.counts().await?;
    Ok(Json(serde_json::json!({
        "status": "ok",
        "model": state.config.model_name,
        "workers": state.config.workers,
        "queued": counts.queued,
        "running": counts.running,
    })))
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> Result<Response, NativeError> {
    let counts = state.store.counts().await?;
    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&counts),
    )
        .into_response())
}

pub async fn no_route() -> NativeError {
    NativeError::not_found("this route; the native API lives under /v1/videos (see /openapi.json)")
}
