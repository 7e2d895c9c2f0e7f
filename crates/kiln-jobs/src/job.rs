use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where a job stands. `queued` and `running` are live; the rest are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Succeeded once; its outputs passed their TTL and were deleted (the server answers 410).
    Expired,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::Expired,
    ];

    /// The spelling stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::Expired => "expired",
        }
    }

    pub fn is_final(self) -> bool {
        !matches!(self, JobState::Queued | JobState::Running)
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| format!("unknown job state {s:?}"))
    }
}

/// What a client asked for, as the server accepted it. The store never looks inside
/// `request`: it is the server's typed request, serialized.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// An id the client chose (Runware's `taskUUID`); `None` draws a random UUID. A taken
    /// id is refused with [`crate::JobError::DuplicateId`].
    #[serde(default)]
    pub id: Option<String>,
    /// The hashed API key id that submitted the job; only that key can see it.
    pub owner: String,
    pub model: String,
    /// Which API surface created the job (fal, runware, native…), so answers use its shape.
    pub dialect: String,
    pub request: Value,
    /// Where to POST the result when the job ends.
    pub webhook_url: Option<String>,
    /// How many times a worker may take the job before the store gives up on it; `None`
    /// uses the store's default. Values below 1 count as 1.
    pub max_attempts: Option<u32>,
}

/// How far a running job has got, as its worker last reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u32,
    pub steps: u32,
    /// What the worker is doing: "encoding text", "sampling", "decoding", "encoding video"…
    pub phase: String,
}

/// A job as stored. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub owner: String,
    pub model: String,
    pub dialect: String,
    pub request: Value,
    pub state: JobState,
    /// How many times a worker has taken the job (a crash-requeue counts).
    pub attempts: u32,
    pub max_attempts: u32,
    /// The worker holding the job while it runs.
    pub lease_owner: Option<String>,
    pub lease_expires_at_ms: Option<i64>,
    pub progress: Option<Progress>,
    /// What the worker produced (output keys, cost…), opaque to the store.
    pub result: Option<Value>,
    pub error: Option<String>,
    /// The client asked to cancel; the worker stops at its next step.
    pub cancel_requested: bool,
    pub created_at_ms: i64,
    /// When the latest attempt started.
    pub started_at_ms: Option<i64>,
    pub finished_at_ms: Option<i64>,
    /// When the outputs of a succeeded job are due for deletion.
    pub expires_at_ms: Option<i64>,
    pub webhook_url: Option<String>,
}

/// Which page of a listing to read. Listings run newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageRequest {
    /// `next_cursor` from the previous page; `None` for the first page.
    pub cursor: Option<String>,
    /// At most this many items; clamped to 1..=[`PageRequest::MAX_LIMIT`], 0 means the default.
    pub limit: u32,
}

impl PageRequest {
    pub const DEFAULT_LIMIT: u32 = 50;
    pub const MAX_LIMIT: u32 = 1000;

    pub fn first(limit: u32) -> Self {
        Self {
            cursor: None,
            limit,
        }
    }

    pub(crate) fn effective_limit(&self) -> u32 {
        match self.limit {
            0 => Self::DEFAULT_LIMIT,
            n => n.min(Self::MAX_LIMIT),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// Pass back in [`PageRequest::cursor`] for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// What a worker learns from renewing its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Keep going; the lease runs until now + the lease asked for.
    Continue,
    /// The client asked to cancel: stop at the next step and call `mark_cancelled`.
    CancelRequested,
    /// The job is no longer this worker's (reclaimed after the lease ran out, or ended):
    /// stop and drop the output.
    LostLease,
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was waiting and is now cancelled.
    Cancelled,
    /// The job is running; its worker will stop it at the next step.
    Requested,
    /// The job had already ended in this state; nothing changed.
    AlreadyFinished(JobState),
}

/// What `reclaim_expired` did with running jobs whose worker stopped renewing its lease.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Reclaimed {
    /// Back in the queue at their old position, to be taken again.
    pub requeued: u64,
    /// Out of attempts: failed with an error saying so.
    pub failed: u64,
    /// Cancel had been requested: cancelled rather than run again.
    pub cancelled: u64,
}

/// Jobs in each state, for metrics; `queued` is the queue depth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobCounts {
    pub queued: u64,
    pub running: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub cancelled: u64,
    pub expired: u64,
}

impl JobCounts {
    pub fn get(&self, state: JobState) -> u64 {
        match state {
            JobState::Queued => self.queued,
            JobState::Running => self.running,
            JobState::Succeeded => self.succeeded,
            JobState::Failed => self.failed,
            JobState::Cancelled => self.cancelled,
            JobState::Expired => self.expired,
        }
    }

    pub(crate) fn slot(&mut self, state: JobState) -> &mut u64 {
        match state {
            JobState::Queued => &mut self.queued,
            JobState::Running => &mut self.running,
            JobState::Succeeded => &mut self.succeeded,
            JobState::Failed => &mut self.failed,
            JobState::Cancelled => &mut self.cancelled,
            JobState::Expired => &mut self.expired,
        }
    }
}

/// How one webhook delivery went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookOutcome {
    /// The receiver answered with this HTTP status.
    Status(u16),
    /// No answer: connection refused, timeout, TLS failure…
    Error(String),
}

/// One recorded webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAttempt {
    pub job_id: String,
    /// 1 for the first delivery of this job, counting up.
    pub attempt: u32,
    pub url: String,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub at_ms: i64,
}
