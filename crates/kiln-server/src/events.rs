//! `GET /v1/videos/{id}/events`: server-sent events read from the store's stored progress,
//! so they work whichever process runs the job. The store keeps the latest progress only:
//! a step shorter than the poll interval may be skipped, never reordered.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use kiln_jobs::{Job, JobState};
use serde_json::{json, Value};

use crate::auth::Owner;
use crate::error::NativeError;
use crate::worker::PHASE_ENCODING_VIDEO;
use crate::AppState;

struct Watch {
    state: AppState,
    id: String,
    owner: String,
    /// The last event sent, to send only changes.
    last: Option<(String, Value)>,
    pending: VecDeque<Event>,
    finished: bool,
    first: bool,
}

/// What the job looks like as an event: (name, data); final states end the stream.
async fn describe(state: &AppState, job: &Job) -> (String, Value) {
    match job.state {
        JobState::Queued => {
            let position = state.store.queue_position(&job.id).await.ok().flatten();
            ("queued".into(), json!({ "position": position }))
        }
        JobState::Running => match &job.progress {
            Some(p) if p.phase == PHASE_ENCODING_VIDEO => ("encoding".into(), json!({})),
            Some(p) => (
                "running".into(),
                json!({ "step": p.step, "steps": p.steps, "phase": p.phase }),
            ),
            None => (
                "running".into(),
                json!({ "step": 0, "steps": null, "phase": "starting" }),
            ),
        },
        JobState::Succeeded => {
            let result = job.result.clone().unwrap_or(Value::Null);
            (
                "completed".into(),
                json!({ "outputs": result.get("outputs").cloned().unwrap_or(Value::Null), "result": result }),
            )
        }
        JobState::Failed => ("failed".into(), json!({ "error": job.error })),
        JobState::Cancelled => ("cancelled".into(), json!({})),
        JobState::Expired => ("expired".into(), json!({})),
    }
}

async fn next_event(mut w: Watch) -> Option<(Result<Event, Infallible>, Watch)> {
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
        let job = match w.state.store.get(&w.id, Some(&w.owner)).await {
            Ok(Some(job)) => job,
            Ok(None) => {
                w.finished = true;
                continue;
            }
            Err(e) => {
                w.pending.push_back(
                    Event::default()
                        .event("error")
                        .data(json!({ "error": e.to_string() }).to_string()),
                );
                w.finished = true;
                continue;
            }
        };
        let (name, data) = describe(&w.state, &job).await;
        if job.state.is_final() {
            w.finished = true;
        }
        if w.last.as_ref() != Some(&(name.clone(), data.clone())) {
            w.pending
                .push_back(Event::default().event(&name).data(data.to_string()));
            w.last = Some((name, data));
        }
    }
}

/// Stream a job's progress as server-sent events: `queued {position}`, `running {step,
/// steps, phase}`, `encoding`, then one of `completed {outputs}`, `failed {error}`,
/// `cancelled`, `expired`, after which the stream ends.
#[utoipa::path(get, path = "/v1/videos/{id}/events", params(("id" = String, Path)),
    responses((status = 200, description = "text/event-stream", content_type = "text/event-stream"),
        (status = 404, body = crate::error::ErrorBody)),
    security(("bearer" = [])))]
pub async fn job_events(
    State(state): State<AppState>,
    Owner(owner): Owner,
    Path(id): Path<String>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, NativeError> {
    // 404 before the stream starts, so a wrong id is an HTTP error rather than an empty stream.
    state
        .store
        .get(&id, Some(&owner))
        .await?
        .ok_or_else(|| NativeError::not_found(format!("job {id}")))?;
    let watch = Watch {
        state,
        id,
        owner,
        last: None,
        pending: VecDeque::new(),
        finished: false,
        first: true,
    };
    Ok(Sse::new(stream::unfold(watch, next_event))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
