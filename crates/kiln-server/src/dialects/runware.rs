//! The Runware dialect: `GET /v1` (WebSocket, what the official `runware` Python SDK uses)
//! and `POST /v1` (REST), both carrying JSON arrays of task objects and answering
//! `{"data":[...]}` and/or `{"errors":[...]}`.
//!
//! This module owns authentication (a WebSocket's first task, or `Authorization: Bearer`
//! over REST), the task kinds kiln runs (`ping`, `videoInference`, `getResponse`,
//! `imageUpload`, `mediaStorage`), Runware's error items and camelCase codes, and the
//! `webhookURL` body. `videoInference` is translated into a
//! [`VideoRequest`](crate::request::VideoRequest) in `video`;
//! the client's `taskUUID` is the job id. Uploads live in the shared
//! [`uploads`](super::uploads) folder, so an `imageUUID` works as a frame image.

mod media;
mod video;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kiln_jobs::{Job, JobState};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use super::{enqueue, resolved_of, BaseUrl, Submission, SubmitError};
use crate::auth::scheme_token;
use crate::delivery::{sign_body, OutboundWebhook, SIGNATURE_HEADER};
use crate::AppState;

pub(crate) const DIALECT: &str = "runware";

/// How long a WebSocket `getResponse` for an unfinished task waits for the task's end
/// before answering `processing`. The SDK drops `processing` items and only polls again
/// after its own 30 s timeout, so an answer held until the video exists (but sent before
/// that timeout) saves up to ~33 s per task.
pub(crate) const GET_RESPONSE_HOLD: Duration = Duration::from_secs(25);

const VIDEO_INFERENCE: &str = "videoInference";

pub(crate) fn router() -> Router<AppState> {
    Router::new().route("/v1", get(ws::upgrade).post(rest))
}

/// Everything that goes wrong with a Runware task, as an error item
/// `{code, message, parameter?, taskType, taskUUID?}`.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum RunwareError {
    #[error("Invalid API key: it is not one of the keys configured on this kiln server.")]
    InvalidApiKey,
    #[error("Missing API key: authenticate first with [{{\"taskType\":\"authentication\",\"apiKey\":\"<key>\"}}], or over REST send Authorization: Bearer <key>.")]
    MissingApiKey,
    #[error("{message}")]
    InvalidBody { message: String },
    #[error("the message is over the {limit}-byte limit; upload images with imageUpload first, or pass them as URLs")]
    PayloadTooLarge { limit: usize },
    #[error("taskType {task_type:?} is not run by this server; it runs authentication, ping, videoInference, getResponse, imageUpload and mediaStorage")]
    UnsupportedTaskType { task_type: String },
    #[error("{message}")]
    InvalidParameter { parameter: String, message: String },
    /// A control kiln cannot honour; refused rather than silently ignored.
    #[error("{message}")]
    UnsupportedParameter { parameter: String, message: String },
    #[error("model {model:?} is not served here; use {served}")]
    ModelNotFound { model: String, served: String },
    #[error("taskUUID {id} was already used; send a new UUID for each task")]
    ConflictTaskUuid { id: String },
    #[error("no task with taskUUID {id}; check the UUID (a task is visible only to the API key that created it)")]
    TaskNotFound { id: String },
    #[error("{message}")]
    TaskFailed { message: String },
    #[error("the task was cancelled before its video was made")]
    TaskCancelled,
    #[error("the task's videos passed their ttl and were deleted; run it again, with a longer ttl if needed")]
    TaskExpired,
    #[error("the queue is full; retry after {retry_after} seconds")]
    QueueFull { retry_after: u64 },
    #[error("GET /v1 is the WebSocket endpoint; connect with a WebSocket client (ws://…/v1), or POST a JSON array of tasks to /v1")]
    NotWebSocket,
    #[error("internal error: {message}")]
    Internal { message: String },
}

impl RunwareError {
    pub(crate) fn invalid(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        RunwareError::InvalidParameter {
            parameter: parameter.into(),
            message: message.into(),
        }
    }

    pub(crate) fn unsupported(parameter: impl Into<String>, message: impl Into<String>) -> Self {
        RunwareError::UnsupportedParameter {
            parameter: parameter.into(),
            message: message.into(),
        }
    }

    /// Runware's camelCase code.
    pub(crate) fn code(&self) -> String {
        match self {
            RunwareError::InvalidApiKey => "invalidApiKey".into(),
            RunwareError::MissingApiKey => "missingApiKey".into(),
            RunwareError::InvalidBody { .. } => "invalidRequestBody".into(),
            RunwareError::PayloadTooLarge { .. } => "payloadTooLarge".into(),
            RunwareError::UnsupportedTaskType { .. } => "unsupportedTaskType".into(),
            RunwareError::InvalidParameter { parameter, .. } => invalid_code(parameter),
            RunwareError::UnsupportedParameter { .. } => "unsupportedParameter".into(),
            RunwareError::ModelNotFound { .. } => "invalidModel".into(),
            RunwareError::ConflictTaskUuid { .. } => "conflictTaskUUID".into(),
            RunwareError::TaskNotFound { .. } => "taskNotFound".into(),
            RunwareError::TaskFailed { .. } => "providerError".into(),
            RunwareError::TaskCancelled => "taskCancelled".into(),
            RunwareError::TaskExpired => "taskExpired".into(),
            RunwareError::QueueFull { .. } => "tooManyRequests".into(),
            RunwareError::NotWebSocket => "invalidProtocol".into(),
            RunwareError::Internal { .. } => "internalError".into(),
        }
    }

    pub(crate) fn parameter(&self) -> Option<&str> {
        match self {
            RunwareError::InvalidApiKey | RunwareError::MissingApiKey => Some("apiKey"),
            RunwareError::UnsupportedTaskType { .. } => Some("taskType"),
            RunwareError::InvalidParameter { parameter, .. }
            | RunwareError::UnsupportedParameter { parameter, .. } => Some(parameter),
            RunwareError::ModelNotFound { .. } => Some("model"),
            RunwareError::ConflictTaskUuid { .. } | RunwareError::TaskNotFound { .. } => {
                Some("taskUUID")
            }
            _ => None,
        }
    }

    /// The REST status when this is the answer's only kind of error.
    pub(crate) fn status(&self) -> StatusCode {
        match self {
            RunwareError::InvalidApiKey | RunwareError::MissingApiKey => StatusCode::UNAUTHORIZED,
            RunwareError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RunwareError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            RunwareError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
            // The request was fine; the task's outcome is the news.
            RunwareError::TaskFailed { .. }
            | RunwareError::TaskCancelled
            | RunwareError::TaskExpired => StatusCode::OK,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The error item, in the context of one task.
    pub(crate) fn item(&self, task_type: Option<&str>, task_uuid: Option<&str>) -> Value {
        let mut item = Map::new();
        item.insert("code".into(), json!(self.code()));
        item.insert("message".into(), json!(self.to_string()));
        if let Some(parameter) = self.parameter() {
            item.insert("parameter".into(), json!(parameter));
        }
        let default_type = match self {
            RunwareError::InvalidApiKey | RunwareError::MissingApiKey => Some("authentication"),
            _ => None,
        };
        if let Some(task_type) = task_type.or(default_type) {
            item.insert("taskType".into(), json!(task_type));
        }
        if let Some(uuid) = task_uuid {
            item.insert("taskUUID".into(), json!(uuid));
        }
        Value::Object(item)
    }

    fn from_submit(e: SubmitError, task: &video::VideoTask) -> Self {
        match e {
            SubmitError::Request(e) => task.request_error(e),
            SubmitError::QueueFull { retry_after } => RunwareError::QueueFull { retry_after },
            SubmitError::DuplicateId { id } => RunwareError::ConflictTaskUuid { id },
            SubmitError::Internal(message) => RunwareError::Internal { message },
        }
    }
}

/// `invalid` + the parameter's name: `CFGScale` → `invalidCFGScale`,
/// `inputs.frameImages[0].image` → `invalidFrameImages`.
fn invalid_code(parameter: &str) -> String {
    const CONTAINERS: [&str; 4] = ["inputs", "providerSettings", "klingai", "safety"];
    let names: Vec<&str> = parameter
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    let name = names
        .iter()
        .find(|s| !CONTAINERS.contains(s))
        .or(names.last())
        .copied()
        .unwrap_or("Parameter");
    let mut chars = name.chars();
    let first = chars.next().map(|c| c.to_ascii_uppercase());
    format!(
        "invalid{}{}",
        first.map(String::from).unwrap_or_default(),
        chars.as_str()
    )
}

impl IntoResponse for RunwareError {
    fn into_response(self) -> Response {
        if let RunwareError::Internal { message } = &self {
            tracing::error!(%message, "internal error");
        }
        let mut response = (
            self.status(),
            Json(json!({ "errors": [self.item(None, None)] })),
        )
            .into_response();
        if let RunwareError::QueueFull { retry_after } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, (*retry_after).into());
        }
        response
    }
}

/// A task's error with the task it belongs to.
#[derive(Debug, Clone)]
pub(crate) struct TaskError {
    error: RunwareError,
    task_type: Option<String>,
    task_uuid: Option<String>,
}

impl TaskError {
    fn item(&self) -> Value {
        self.error
            .item(self.task_type.as_deref(), self.task_uuid.as_deref())
    }
}

/// What one or more tasks answer: `{"data":[...]}` and/or `{"errors":[...]}`.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    data: Vec<Value>,
    errors: Vec<TaskError>,
}

impl Reply {
    fn data(item: Value) -> Self {
        Reply {
            data: vec![item],
            errors: Vec::new(),
        }
    }

    fn error(error: RunwareError, task_type: Option<&str>, task_uuid: Option<&str>) -> Self {
        Reply {
            data: Vec::new(),
            errors: vec![TaskError {
                error,
                task_type: task_type.map(str::to_string),
                task_uuid: task_uuid.map(str::to_string),
            }],
        }
    }

    fn is_empty(&self) -> bool {
        self.data.is_empty() && self.errors.is_empty()
    }

    fn extend(&mut self, other: Reply) {
        self.data.extend(other.data);
        self.errors.extend(other.errors);
    }

    fn message(&self) -> Value {
        let mut message = Map::new();
        if !self.data.is_empty() {
            message.insert("data".into(), Value::Array(self.data.clone()));
        }
        if !self.errors.is_empty() {
            message.insert(
                "errors".into(),
                self.errors.iter().map(TaskError::item).collect(),
            );
        }
        Value::Object(message)
    }

    /// REST status: 200 when any task answered data; else the first error's.
    fn status(&self) -> StatusCode {
        if !self.data.is_empty() {
            return StatusCode::OK;
        }
        self.errors
            .first()
            .map_or(StatusCode::OK, |e| e.error.status())
    }
}

/// Who sent the tasks and how their answers travel.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    owner: String,
    base_url: String,
    /// How long `getResponse` may wait for an unfinished task (zero: answer at once).
    hold: Duration,
}

/// A task whose answer comes when its job ends (sync delivery) or a `getResponse` hold.
#[derive(Debug)]
pub(crate) struct Wait {
    task_uuid: String,
    /// `None`: until the job ends; else at most this long.
    hold: Option<Duration>,
}

pub(crate) enum Step {
    Reply(Reply),
    Wait(Wait),
}

/// The JSON array of tasks in a message (a lone object counts as one task).
pub(crate) fn parse_tasks(bytes: &[u8]) -> Result<Vec<Value>, RunwareError> {
    match serde_json::from_slice::<Value>(bytes) {
        Ok(Value::Array(tasks)) => Ok(tasks),
        Ok(task @ Value::Object(_)) => Ok(vec![task]),
        Ok(_) => Err(RunwareError::InvalidBody {
            message: "the message must be a JSON array of task objects, e.g. [{\"taskType\":\"ping\",\"ping\":true}]".into(),
        }),
        Err(e) => Err(RunwareError::InvalidBody {
            message: format!("the message is not valid JSON ({e}); send a JSON array of task objects"),
        }),
    }
}

fn task_type_of(task: &Value) -> Option<&str> {
    task.get("taskType").and_then(Value::as_str)
}

fn pong() -> Value {
    json!({ "taskType": "ping", "pong": true })
}

/// The taskUUID of a task that needs one: present and a UUID (it becomes a job id and a
/// file name).
fn task_uuid_of(task: &Map<String, Value>) -> Result<String, RunwareError> {
    match task.get("taskUUID") {
        Some(Value::String(id)) if uuid::Uuid::parse_str(id.trim()).is_ok() => {
            Ok(id.trim().to_string())
        }
        Some(Value::String(id)) => Err(RunwareError::invalid(
            "taskUUID",
            format!("taskUUID {id:?} is not a UUID; generate a UUIDv4 for each task"),
        )),
        _ => Err(RunwareError::invalid(
            "taskUUID",
            "taskUUID is required: a UUIDv4 you generate for each task",
        )),
    }
}

/// Runs one task up to its first answer (or the wait that will produce it). Authentication
/// and ping are the transport's business and are answered before this.
pub(crate) async fn task_step(state: &AppState, caller: &Caller, task: &Value) -> Step {
    let Some(object) = task.as_object() else {
        return Step::Reply(Reply::error(
            RunwareError::InvalidBody {
                message: "each task must be a JSON object with a taskType".into(),
            },
            None,
            None,
        ));
    };
    let task_type = task_type_of(task).unwrap_or_default().to_string();
    let given_uuid = object.get("taskUUID").and_then(Value::as_str);
    let refuse = |e| Step::Reply(Reply::error(e, Some(&task_type), given_uuid));
    match task_type.as_str() {
        "ping" => return Step::Reply(Reply::data(pong())),
        VIDEO_INFERENCE | "getResponse" | "imageUpload" | "mediaStorage" => {}
        // The transports take authentication before any other task.
        "authentication" => return refuse(RunwareError::invalid(
            "taskType",
            "authenticate once, as the first task of the connection (or with Authorization: Bearer over REST)",
        )),
        "" => return refuse(RunwareError::invalid(
            "taskType",
            "each task needs a taskType, e.g. videoInference",
        )),
        other => return refuse(RunwareError::UnsupportedTaskType {
            task_type: other.to_string(),
        }),
    }
    let uuid = match task_uuid_of(object) {
        Ok(uuid) => uuid,
        Err(e) => return refuse(e),
    };
    let reply = |result: Result<Value, RunwareError>| {
        Step::Reply(match result {
            Ok(item) => Reply::data(item),
            Err(e) => Reply::error(e, Some(&task_type), Some(&uuid)),
        })
    };
    match task_type.as_str() {
        VIDEO_INFERENCE => match submit_video(state, caller, object, &uuid).await {
            Ok(step) => step,
            Err(e) => Step::Reply(Reply::error(e, Some(VIDEO_INFERENCE), Some(&uuid))),
        },
        "getResponse" => Step::Wait(Wait {
            task_uuid: uuid,
            hold: Some(caller.hold),
        }),
        "imageUpload" => reply(media::image_upload(state, caller, object, &uuid).await),
        _ => reply(media::media_storage(state, object, &uuid).await),
    }
}

async fn submit_video(
    state: &AppState,
    caller: &Caller,
    task: &Map<String, Value>,
    uuid: &str,
) -> Result<Step, RunwareError> {
    let translated = video::translate(state, task).await?;
    let (job, _) = enqueue(
        state,
        Submission {
            owner: caller.owner.clone(),
            dialect: DIALECT,
            id: Some(uuid.to_string()),
            request: translated.request.clone(),
            base_url: caller.base_url.clone(),
            meta: json!({ "taskType": VIDEO_INFERENCE }),
        },
    )
    .await
    .map_err(|e| RunwareError::from_submit(e, &translated))?;
    // With a webhook the SDK waits for the ack even for sync delivery.
    if translated.sync && translated.request.webhook_url.is_none() {
        return Ok(Step::Wait(Wait {
            task_uuid: job.id,
            hold: None,
        }));
    }
    Ok(Step::Reply(Reply::data(
        json!({ "taskType": VIDEO_INFERENCE, "taskUUID": job.id }),
    )))
}

/// Answers a wait: the job's outcome once it ends, or `processing` when the hold runs out
/// or `superseded` fires (a newer `getResponse` for the same task took over).
pub(crate) async fn finish(
    state: &AppState,
    caller: &Caller,
    wait: &Wait,
    superseded: Option<Arc<Notify>>,
) -> Reply {
    let deadline = wait.hold.map(|h| tokio::time::Instant::now() + h);
    let id = wait.task_uuid.as_str();
    let error = |e: RunwareError, task_type: &str| Reply::error(e, Some(task_type), Some(id));
    loop {
        let job = match state.store.get(id, Some(&caller.owner)).await {
            Ok(Some(job)) => job,
            Ok(None) => return error(RunwareError::TaskNotFound { id: id.into() }, "getResponse"),
            Err(e) => {
                let message = e.to_string();
                return error(RunwareError::Internal { message }, VIDEO_INFERENCE);
            }
        };
        if job.state.is_final() {
            return job_reply(&job);
        }
        let now = tokio::time::Instant::now();
        let pause = match deadline {
            Some(d) if now >= d => return job_reply(&job),
            Some(d) => state.config.events_poll.min(d - now),
            None => state.config.events_poll,
        };
        match &superseded {
            Some(newer) => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = newer.notified() => return job_reply(&job),
                }
            }
            None => tokio::time::sleep(pause).await,
        }
    }
}

/// The job as Runware tells it: result items, an error, or `processing`.
fn job_reply(job: &Job) -> Reply {
    let id = Some(job.id.as_str());
    let error = |e| Reply::error(e, Some(VIDEO_INFERENCE), id);
    match job.state {
        JobState::Queued | JobState::Running => Reply::data(json!({
            "taskType": VIDEO_INFERENCE, "taskUUID": job.id, "status": "processing",
        })),
        JobState::Succeeded => {
            let items = result_items(job);
            if items.is_empty() {
                return error(RunwareError::Internal {
                    message: "the task succeeded but recorded no video".into(),
                });
            }
            Reply {
                data: items,
                errors: Vec::new(),
            }
        }
        JobState::Failed => error(RunwareError::TaskFailed {
            message: job
                .error
                .clone()
                .unwrap_or_else(|| "the video could not be generated".into()),
        }),
        JobState::Cancelled => error(RunwareError::TaskCancelled),
        JobState::Expired => error(RunwareError::TaskExpired),
    }
}

/// One `success` item per video of a succeeded job.
fn result_items(job: &Job) -> Vec<Value> {
    let Some(result) = &job.result else {
        return Vec::new();
    };
    let outputs = result
        .get("outputs")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let include_cost = resolved_of(job).is_some_and(|r| r.include_cost);
    // The worker prices the whole job; Runware prices each video.
    let cost_each = result
        .get("cost")
        .and_then(|c| c.get("amount"))
        .and_then(Value::as_f64)
        .map(|amount| amount / outputs.len().max(1) as f64);
    outputs
        .iter()
        .enumerate()
        .map(|(index, output)| {
            let mut item = json!({
                "taskType": VIDEO_INFERENCE,
                "taskUUID": job.id,
                "status": "success",
                "videoUUID": video_uuid(&job.id, index),
                "videoURL": output.get("url").cloned().unwrap_or(Value::Null),
                "seed": output.get("seed").cloned().unwrap_or(Value::Null),
            });
            if include_cost {
                item["cost"] = json!(cost_each.unwrap_or(0.0));
            }
            item
        })
        .collect()
}

/// A stable UUID per video, so every `getResponse` and the webhook name it alike.
fn video_uuid(job_id: &str, index: usize) -> String {
    let digest = Sha256::digest(format!("kiln-runware-video:{job_id}:{index}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// `POST /v1`: the same tasks over HTTP. Auth is `Authorization: Bearer <key>` or an
/// authentication task first in the array; sync deliveries answer when the videos exist;
/// `getResponse` answers at once.
async fn rest(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, RunwareError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            RunwareError::PayloadTooLarge {
                limit: state.config.max_body_bytes,
            }
        } else {
            RunwareError::InvalidBody {
                message: format!("cannot read the request body: {rejection}"),
            }
        }
    })?;
    let tasks = parse_tasks(&body)?;
    let header_key = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| scheme_token(v, "bearer"));
    let task_key = tasks
        .first()
        .filter(|t| task_type_of(t) == Some("authentication"))
        .and_then(|t| t.get("apiKey"))
        .and_then(Value::as_str);
    let key = header_key.or(task_key);
    let owner = state.keys.owner_for_key(key).ok_or(match key {
        Some(_) => RunwareError::InvalidApiKey,
        None => RunwareError::MissingApiKey,
    })?;
    let caller = Caller {
        owner,
        base_url,
        hold: Duration::ZERO,
    };
    let mut steps = Vec::with_capacity(tasks.len());
    for task in &tasks {
        if task_type_of(task) == Some("authentication") {
            continue;
        }
        steps.push(task_step(&state, &caller, task).await);
    }
    let answers = futures_util::future::join_all(steps.into_iter().map(|step| {
        let (state, caller) = (&state, &caller);
        async move {
            match step {
                Step::Reply(reply) => reply,
                Step::Wait(wait) => finish(state, caller, &wait, None).await,
            }
        }
    }))
    .await;
    let mut reply = Reply::default();
    for answer in answers {
        reply.extend(answer);
    }
    Ok((reply.status(), Json(reply.message())).into_response())
}

/// The webhook calls for a finished job: one `{"data":[item]}` POST per video (Runware
/// delivers batch results item by item), or one `{"errors":[…]}` when it failed or was
/// cancelled. Signed with `X-Kiln-Signature` when a secret is configured (Runware itself
/// signs nothing).
pub(crate) fn webhooks(state: &AppState, job: &Job) -> Vec<OutboundWebhook> {
    let Some(url) = job
        .webhook_url
        .clone()
        .or_else(|| resolved_of(job).and_then(|r| r.webhook_url))
    else {
        return Vec::new();
    };
    let reply = match job.state {
        JobState::Succeeded | JobState::Failed | JobState::Cancelled => job_reply(job),
        _ => return Vec::new(),
    };
    let bodies: Vec<Value> = if reply.errors.is_empty() {
        reply
            .data
            .iter()
            .map(|item| json!({ "data": [item] }))
            .collect()
    } else {
        vec![reply.message()]
    };
    bodies
        .iter()
        .filter_map(|body| serde_json::to_vec(body).ok())
        .map(|body| {
            let headers = state
                .delivery
                .webhook_secret()
                .map(|secret| vec![(SIGNATURE_HEADER.to_string(), sign_body(secret, &body))])
                .unwrap_or_default();
            OutboundWebhook {
                job_id: job.id.clone(),
                url: url.clone(),
                body,
                headers,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_codes_name_the_parameter() {
        assert_eq!(invalid_code("CFGScale"), "invalidCFGScale");
        assert_eq!(invalid_code("duration"), "invalidDuration");
        assert_eq!(
            invalid_code("inputs.frameImages[0].image"),
            "invalidFrameImages"
        );
        assert_eq!(
            invalid_code("providerSettings.klingai.cameraControl.config.zoom"),
            "invalidCameraControl"
        );
    }

    #[test]
    fn video_uuids_are_stable_and_distinct() {
        let a = video_uuid("00000000-0000-4000-8000-000000000000", 0);
        assert_eq!(a, video_uuid("00000000-0000-4000-8000-000000000000", 0));
        assert_ne!(a, video_uuid("00000000-0000-4000-8000-000000000000", 1));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
