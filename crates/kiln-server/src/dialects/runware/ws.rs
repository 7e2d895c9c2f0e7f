//! `GET /v1`: the WebSocket the SDK lives on. Authentication and pings are answered as they
//! are read; every other message runs on its own task, so a held `getResponse` or a sync
//! delivery never delays the pong the SDK needs within 30 s. Answers leave through one
//! queue; closing the socket stops the connection's waits (never its jobs).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;

use super::{
    finish, parse_tasks, pong, task_step, task_type_of, Caller, Reply, RunwareError, Step,
    GET_RESPONSE_HOLD,
};
use crate::dialects::BaseUrl;
use crate::AppState;

/// The `getResponse` answers a connection holds, by taskUUID. A newer request for the same
/// task releases the older one (answered `processing`): the SDK only polls again after
/// giving up on its previous poll.
type Holds = Arc<Mutex<HashMap<String, Arc<Notify>>>>;

pub(crate) async fn upgrade(
    State(state): State<AppState>,
    BaseUrl(base_url): BaseUrl,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let Ok(upgrade) = upgrade else {
        return RunwareError::NotWebSocket.into_response();
    };
    // Messages up to twice the body limit are read and refused with an error item, keeping
    // the connection; larger ones end it.
    let frame_limit = state.config.max_body_bytes.saturating_mul(2);
    upgrade
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        .on_upgrade(move |socket| serve(socket, state, base_url))
}

struct Connection {
    state: AppState,
    base_url: String,
    /// The API key's owner once authenticated.
    owner: Option<String>,
    session: Option<String>,
    outbox: mpsc::UnboundedSender<String>,
    holds: Holds,
}

async fn serve(mut socket: WebSocket, state: AppState, base_url: String) {
    let (outbox, mut outgoing) = mpsc::unbounded_channel::<String>();
    let mut connection = Connection {
        state,
        base_url,
        owner: None,
        session: None,
        outbox,
        holds: Holds::default(),
    };
    // Dropping the set at the end aborts the connection's unfinished waits.
    let mut running = JoinSet::new();
    loop {
        while running.try_join_next().is_some() {}
        tokio::select! {
            incoming = socket.recv() => {
                let work = match incoming {
                    Some(Ok(Message::Text(text))) => connection.receive(text.as_str().as_bytes()),
                    Some(Ok(Message::Binary(bytes))) => connection.receive(&bytes),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                };
                if let Some(work) = work {
                    running.spawn(work);
                }
            }
            Some(text) = outgoing.recv() => {
                if socket.send(Message::text(text)).await.is_err() {
                    break;
                }
            }
        }
    }
}

fn send(outbox: &mpsc::UnboundedSender<String>, reply: &Reply) {
    if !reply.is_empty() {
        // A closed outbox means the socket is gone; there is nobody left to tell.
        let _ = outbox.send(reply.message().to_string());
    }
}

impl Connection {
    /// Answers what can be answered now; the rest of the message comes back as work to
    /// run beside the connection.
    fn receive(&mut self, bytes: &[u8]) -> Option<impl Future<Output = ()> + Send + 'static> {
        let limit = self.state.config.max_body_bytes;
        if bytes.len() > limit {
            send(
                &self.outbox,
                &Reply::error(RunwareError::PayloadTooLarge { limit }, None, None),
            );
            return None;
        }
        let tasks = match parse_tasks(bytes) {
            Ok(tasks) => tasks,
            Err(e) => {
                send(&self.outbox, &Reply::error(e, None, None));
                return None;
            }
        };
        let mut work = Vec::new();
        for task in tasks {
            match task_type_of(&task) {
                Some("authentication") => {
                    let reply = self.authenticate(&task);
                    send(&self.outbox, &reply);
                }
                // The SDK reads the pong as `data[0]` of its own message.
                Some("ping") => send(&self.outbox, &Reply::data(pong())),
                _ => work.push(task),
            }
        }
        if work.is_empty() {
            return None;
        }
        let Some(owner) = self.owner.clone() else {
            let mut reply = Reply::default();
            for task in &work {
                let uuid = task.get("taskUUID").and_then(Value::as_str);
                reply.extend(Reply::error(
                    RunwareError::MissingApiKey,
                    task_type_of(task),
                    uuid,
                ));
            }
            send(&self.outbox, &reply);
            return None;
        };
        let caller = Caller {
            owner,
            base_url: self.base_url.clone(),
            hold: GET_RESPONSE_HOLD,
        };
        let state = self.state.clone();
        let outbox = self.outbox.clone();
        let holds = self.holds.clone();
        Some(run_message(state, caller, work, outbox, holds))
    }

    fn authenticate(&mut self, task: &Value) -> Reply {
        let key = task.get("apiKey").and_then(Value::as_str);
        let Some(owner) = self.state.keys.owner_for_key(key) else {
            self.owner = None;
            let error = match key {
                Some(_) => RunwareError::InvalidApiKey,
                None => RunwareError::MissingApiKey,
            };
            return Reply::error(error, Some("authentication"), None);
        };
        self.owner = Some(owner);
        // A client resuming a session keeps its UUID.
        let resumed = task
            .get("connectionSessionUUID")
            .and_then(Value::as_str)
            .filter(|s| uuid::Uuid::parse_str(s).is_ok())
            .map(str::to_string);
        let session = resumed
            .or_else(|| self.session.clone())
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.session = Some(session.clone());
        Reply::data(json!({
            "taskType": "authentication",
            "connectionSessionUUID": session,
        }))
    }
}

/// Runs a message's tasks in order; their waits run side by side until answered.
async fn run_message(
    state: AppState,
    caller: Caller,
    tasks: Vec<Value>,
    outbox: mpsc::UnboundedSender<String>,
    holds: Holds,
) {
    let mut waits = JoinSet::new();
    for task in &tasks {
        match task_step(&state, &caller, task).await {
            Step::Reply(reply) => send(&outbox, &reply),
            Step::Wait(wait) => {
                let superseded = wait.hold.map(|_| hold(&holds, &wait.task_uuid));
                let (state, caller) = (state.clone(), caller.clone());
                let (outbox, holds) = (outbox.clone(), holds.clone());
                waits.spawn(async move {
                    let reply = finish(&state, &caller, &wait, superseded.clone()).await;
                    if let Some(mine) = &superseded {
                        release(&holds, &wait.task_uuid, mine);
                    }
                    send(&outbox, &reply);
                });
            }
        }
    }
    while waits.join_next().await.is_some() {}
}

fn hold(holds: &Holds, task_uuid: &str) -> Arc<Notify> {
    let mine = Arc::new(Notify::new());
    let mut held = holds.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(older) = held.insert(task_uuid.to_string(), mine.clone()) {
        // `notify_one` keeps a permit, so an older wait between polls still sees it.
        older.notify_one();
    }
    mine
}

fn release(holds: &Holds, task_uuid: &str, mine: &Arc<Notify>) {
    let mut held = holds.lock().unwrap_or_else(PoisonError::into_inner);
    if held.get(task_uuid).is_some_and(|n| Arc::ptr_eq(n, mine)) {
        held.remove(task_uuid);
    }
}
