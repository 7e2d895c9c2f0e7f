//! The durable job store and queue behind `kiln serve` and its workers.
//!
//! This crate owns the life of a job once the server has accepted it: the queue (FIFO, with
//! a depth limit so a full queue can be refused), worker leases with heartbeats, bounded
//! retries after a crash, cancel requests, progress, results, output TTLs, webhook delivery
//! attempts, and per-owner visibility. A job survives a `kill -9` at any moment once
//! [`JobStore::submit`] has returned.
//!
//! It must not know HTTP, API dialects, or models: a job's request and result are opaque
//! JSON, its dialect and model are opaque strings, and its owner is an already hashed key id.
//! It runs no work itself; workers claim jobs from it.
//!
//! [`SqliteStore`] is the embedded default (one file under the data folder). A Postgres store
//! (row leases with `FOR UPDATE SKIP LOCKED`) is meant to sit beside it behind [`JobStore`].

mod clock;
mod error;
mod job;
mod sqlite;

use std::time::Duration;

use serde_json::Value;

pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{JobError, Result};
pub use job::{
    CancelOutcome, HeartbeatOutcome, Job, JobCounts, JobState, NewJob, Page, PageRequest, Progress,
    Reclaimed, WebhookAttempt, WebhookOutcome,
};
pub use sqlite::{SqliteStore, StoreConfig};

/// A durable job queue. `owner: None` means an internal or admin caller that sees every job;
/// `Some(key)` sees only that key's jobs, and another key's job reads as not found.
///
/// Worker calls (`heartbeat`, `set_progress`, `complete`, `fail`, `mark_cancelled`) succeed
/// only for the worker that holds the job's lease; a worker whose job was reclaimed gets
/// [`JobError::LostLease`]. A `worker_id` must therefore be unique per worker run (for
/// example host, process id and slot).
#[async_trait::async_trait]
pub trait JobStore: Send + Sync {
    /// Queues a job. Fails with [`JobError::QueueFull`] when `max_queued` jobs already wait.
    /// Once this returns `Ok`, the job is on disk.
    async fn submit(&self, job: NewJob) -> Result<Job>;

    async fn get(&self, id: &str, owner: Option<&str>) -> Result<Option<Job>>;

    /// Jobs newest first, a page at a time.
    async fn list(&self, owner: Option<&str>, page: PageRequest) -> Result<Page<Job>>;

    /// How many queued jobs are ahead of this one (0: next to run); `None` unless it is queued.
    async fn queue_position(&self, id: &str) -> Result<Option<u64>>;

    /// Takes the oldest queued job for `worker_id` under a lease of `lease`, counting an
    /// attempt. First reclaims running jobs whose lease ran out (see [`Self::reclaim_expired`]).
    /// `None` when nothing is queued. Two callers never get the same job.
    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Job>>;

    /// Deals with running jobs whose lease ran out (their worker crashed or was killed):
    /// those with a cancel request become cancelled, those out of attempts become failed,
    /// the rest go back to the queue at their old position.
    async fn reclaim_expired(&self) -> Result<Reclaimed>;

    /// Renews the lease to now + `lease` and tells the worker whether to go on.
    async fn heartbeat(
        &self,
        id: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<HeartbeatOutcome>;

    async fn set_progress(&self, id: &str, worker_id: &str, progress: &Progress) -> Result<()>;

    /// Ends the job as succeeded with `result`; its outputs are kept for `ttl`.
    async fn complete(
        &self,
        id: &str,
        worker_id: &str,
        result: &Value,
        ttl: Duration,
    ) -> Result<()>;

    /// Ends the job as failed. Not retried: a worker-reported failure would fail again.
    async fn fail(&self, id: &str, worker_id: &str, error: &str) -> Result<()>;

    /// Ends a running job as cancelled, after its worker saw the cancel request.
    async fn mark_cancelled(&self, id: &str, worker_id: &str) -> Result<()>;

    /// A queued job is cancelled at once; a running one is flagged for its worker to stop.
    async fn request_cancel(&self, id: &str, owner: Option<&str>) -> Result<CancelOutcome>;

    /// Succeeded jobs whose TTL has passed, oldest expiry first, at most `limit`: delete their
    /// outputs, then call [`Self::mark_expired`].
    async fn expired(&self, limit: u32) -> Result<Vec<Job>>;

    /// Marks a succeeded job's outputs as gone. Idempotent.
    async fn mark_expired(&self, id: &str) -> Result<()>;

    /// Records one webhook delivery for a job, numbered after the ones before it.
    async fn record_webhook_attempt(
        &self,
        job_id: &str,
        url: &str,
        outcome: &WebhookOutcome,
    ) -> Result<WebhookAttempt>;

    /// A job's webhook deliveries, first to last.
    async fn webhook_attempts(&self, job_id: &str) -> Result<Vec<WebhookAttempt>>;

    async fn counts(&self) -> Result<JobCounts>;

    /// The queue depth at which `submit` refuses.
    fn max_queued(&self) -> u64;
}
