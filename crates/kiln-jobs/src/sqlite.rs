//! The embedded store: one SQLite file in WAL mode.
//!
//! SQLite has one writer at a time, so every read-then-write runs in a `BEGIN IMMEDIATE`
//! transaction (the write lock is taken up front and waiters queue on `busy_timeout`), and
//! single-statement writes carry their own guard in the `WHERE` clause. The SQL stays close
//! to what Postgres accepts (`RETURNING`, subqueries) so a Postgres store can follow it.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};

use crate::clock::{duration_ms, Clock, SystemClock};
use crate::{
    CancelOutcome, HeartbeatOutcome, Job, JobCounts, JobError, JobState, JobStore, NewJob, Page,
    PageRequest, Progress, Reclaimed, Result, WebhookAttempt, WebhookOutcome,
};

/// Bumped with every schema change; `open` refuses files from a newer build.
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS jobs (
    id                  TEXT PRIMARY KEY NOT NULL,
    -- Queue order: strictly increasing, unlike wall-clock time.
    seq                 INTEGER NOT NULL UNIQUE,
    owner               TEXT NOT NULL,
    model               TEXT NOT NULL,
    dialect             TEXT NOT NULL,
    request             TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN
                            ('queued', 'running', 'succeeded', 'failed', 'cancelled', 'expired')),
    attempts            INTEGER NOT NULL DEFAULT 0,
    max_attempts        INTEGER NOT NULL,
    lease_owner         TEXT,
    lease_expires_at_ms INTEGER,
    progress            TEXT,
    result              TEXT,
    error               TEXT,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    created_at_ms       INTEGER NOT NULL,
    started_at_ms       INTEGER,
    finished_at_ms      INTEGER,
    expires_at_ms       INTEGER,
    webhook_url         TEXT
);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_by_lease ON jobs (state, lease_expires_at_ms);
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (state, expires_at_ms);

CREATE TABLE IF NOT EXISTS webhook_attempts (
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    attempt     INTEGER NOT NULL,
    url         TEXT NOT NULL,
    status_code INTEGER,
    error       TEXT,
    at_ms       INTEGER NOT NULL,
    PRIMARY KEY (job_id, attempt)
);
"#;

/// Settings a deployment may change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `submit` refuses with `QueueFull` once this many jobs are queued (the server's 429).
    pub max_queued: u64,
    /// Attempts for a job that does not name its own.
    pub default_max_attempts: u32,
    /// Pooled SQLite connections; writes still go one at a time.
    pub max_connections: u32,
    /// How long a write waits for the file lock before giving up with a storage error.
    pub busy_timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_queued: 1000,
            default_max_attempts: 3,
            max_connections: 4,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The job store in one SQLite file.
#[derive(Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    path: PathBuf,
    config: StoreConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the store at `path`, on the wall clock.
    pub async fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        Self::open_with_clock(path, config, Arc::new(SystemClock)).await
    }

    /// Opens the store reading time from `clock`, so tests can move time.
    pub async fn open_with_clock(
        path: impl AsRef<Path>,
        config: StoreConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder).map_err(|err| JobError::Storage {
                operation: "open",
                reason: format!("cannot create the data folder {}: {err}", folder.display()),
            })?;
        }
        // synchronous=FULL syncs the WAL on every commit: an accepted job survives power
        // loss too, not only a killed process.
        let options = SqliteConnectOptions::new()
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(config.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(config.max_connections.max(1))
            .connect_with(options)
            .await
            .map_err(|err| JobError::Storage {
                operation: "open",
                reason: format!("cannot open {}: {err}", path.display()),
            })?;
        let store = Self {
            pool,
            path,
            config,
            clock,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the pooled connections, waiting for calls in flight.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        let mut tx = self.write_tx("open").await?;
        let found: i64 = sqlx::query_scalar("PRAGMA user_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(JobError::storage("open"))?;
        if found > SCHEMA_VERSION {
            return Err(JobError::SchemaTooNew {
                path: self.path.display().to_string(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        sqlx::raw_sql(SCHEMA)
            .execute(&mut *tx)
            .await
            .map_err(JobError::storage("open"))?;
        // PRAGMA takes no bound parameters; the value is our own constant.
        sqlx::raw_sql(&format!("PRAGMA user_version = {SCHEMA_VERSION}"))
            .execute(&mut *tx)
            .await
            .map_err(JobError::storage("open"))?;
        tx.commit().await.map_err(JobError::storage("open"))
    }

    /// A transaction that holds the write lock from its first statement, so its reads
    /// cannot go stale before its writes.
    async fn write_tx(&self, operation: &'static str) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(JobError::storage(operation))
    }

    fn now(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Explains why a worker call changed nothing: the job is gone, or not this worker's.
    async fn refused_worker_call(&self, id: &str, worker_id: &str) -> JobError {
        match self.get(id, None).await {
            Ok(Some(_)) => JobError::LostLease {
                id: id.to_owned(),
                worker_id: worker_id.to_owned(),
            },
            Ok(None) => JobError::NotFound { id: id.to_owned() },
            Err(err) => err,
        }
    }

    async fn reclaim_in(tx: &mut Transaction<'static, Sqlite>, now: i64) -> Result<Reclaimed> {
        let op = "reclaim";
        let cancelled = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at_ms = ?1,
                 lease_owner = NULL, lease_expires_at_ms = NULL
             WHERE state = 'running' AND lease_expires_at_ms <= ?1 AND cancel_requested = 1",
        )
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(JobError::storage(op))?
        .rows_affected();
        let failed = sqlx::query(
            "UPDATE jobs SET state = 'failed', finished_at_ms = ?1,
                 lease_owner = NULL, lease_expires_at_ms = NULL,
                 error = 'gave up after ' || attempts || ' attempts: the worker stopped (crash or kill) each time; check the server log (running out of memory is the usual cause) and resubmit'
             WHERE state = 'running' AND lease_expires_at_ms <= ?1 AND attempts >= max_attempts",
        )
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(JobError::storage(op))?
        .rows_affected();
        // The job keeps its seq, so it goes back ahead of everything submitted after it.
        let requeued = sqlx::query(
            "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires_at_ms = NULL,
                 progress = NULL
             WHERE state = 'running' AND lease_expires_at_ms <= ?1",
        )
        .bind(now)
        .execute(&mut **tx)
        .await
        .map_err(JobError::storage(op))?
        .rows_affected();
        Ok(Reclaimed {
            requeued,
            failed,
            cancelled,
        })
    }
}

#[async_trait::async_trait]
impl JobStore for SqliteStore {
    async fn submit(&self, job: NewJob) -> Result<Job> {
        let request = job.request.to_string();
        let id = job
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let max_attempts = job
            .max_attempts
            .unwrap_or(self.config.default_max_attempts)
            .max(1);
        let max_queued = i64::try_from(self.config.max_queued).unwrap_or(i64::MAX);
        // One statement, so the depth check and the insert cannot be split by another writer.
        // `fetch_all`, not `fetch_optional`: see `heartbeat`.
        let rows = sqlx::query(
            "INSERT INTO jobs (id, seq, owner, model, dialect, request, state, attempts,
                 max_attempts, cancel_requested, created_at_ms, webhook_url)
             SELECT ?1, COALESCE((SELECT MAX(seq) FROM jobs), 0) + 1, ?2, ?3, ?4, ?5, 'queued', 0,
                 ?6, 0, ?7, ?8
             WHERE (SELECT COUNT(*) FROM jobs WHERE state = 'queued') < ?9
             RETURNING *",
        )
        .bind(&id)
        .bind(&job.owner)
        .bind(&job.model)
        .bind(&job.dialect)
        .bind(request)
        .bind(i64::from(max_attempts))
        .bind(self.now())
        .bind(&job.webhook_url)
        .bind(max_queued)
        .fetch_all(&self.pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                JobError::DuplicateId { id: id.clone() }
            }
            _ => JobError::storage("submit")(e),
        })?;
        match rows.first() {
            Some(row) => job_from_row(row),
            None => Err(JobError::QueueFull {
                max: self.config.max_queued,
            }),
        }
    }

    async fn get(&self, id: &str, owner: Option<&str>) -> Result<Option<Job>> {
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)")
            .bind(id)
            .bind(owner)
            .fetch_optional(&self.pool)
            .await
            .map_err(JobError::storage("get"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    async fn list(&self, owner: Option<&str>, page: PageRequest) -> Result<Page<Job>> {
        let before = match &page.cursor {
            None => i64::MAX,
            Some(cursor) => cursor
                .parse::<i64>()
                .ok()
                .filter(|seq| *seq > 0)
                .ok_or_else(|| JobError::InvalidCursor {
                    cursor: cursor.clone(),
                })?,
        };
        let limit = page.effective_limit();
        // One extra row tells whether another page follows.
        let fetch = i64::from(limit) + 1;
        let query = match owner {
            Some(owner) => sqlx::query(
                "SELECT * FROM jobs WHERE owner = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )
            .bind(owner)
            .bind(before)
            .bind(fetch),
            None => sqlx::query("SELECT * FROM jobs WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2")
                .bind(before)
                .bind(fetch),
        };
        let rows = query
            .fetch_all(&self.pool)
            .await
            .map_err(JobError::storage("list"))?;
        let more = rows.len() > limit as usize;
        let mut items = Vec::with_capacity(rows.len().min(limit as usize));
        let mut last_seq = None;
        for row in rows.iter().take(limit as usize) {
            items.push(job_from_row(row)?);
            last_seq = Some(
                row.try_get::<i64, _>("seq")
                    .map_err(JobError::storage("list"))?,
            );
        }
        let next_cursor = if more {
            last_seq.map(|seq| seq.to_string())
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    async fn queue_position(&self, id: &str) -> Result<Option<u64>> {
        let ahead: Option<i64> = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM jobs ahead WHERE ahead.state = 'queued' AND ahead.seq < job.seq)
             FROM jobs job WHERE job.id = ?1 AND job.state = 'queued'",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(JobError::storage("queue_position"))?;
        Ok(ahead.map(|n| n as u64))
    }

    async fn claim(&self, worker_id: &str, lease: Duration) -> Result<Option<Job>> {
        let now = self.now();
        let mut tx = self.write_tx("claim").await?;
        Self::reclaim_in(&mut tx, now).await?;
        let row = sqlx::query(
            "UPDATE jobs SET state = 'running', attempts = attempts + 1, lease_owner = ?1,
                 lease_expires_at_ms = ?2, started_at_ms = ?3
             WHERE id = (SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1)
             RETURNING *",
        )
        .bind(worker_id)
        .bind(now.saturating_add(duration_ms(lease)))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(JobError::storage("claim"))?;
        let job = row.as_ref().map(job_from_row).transpose()?;
        tx.commit().await.map_err(JobError::storage("claim"))?;
        Ok(job)
    }

    async fn reclaim_expired(&self) -> Result<Reclaimed> {
        let now = self.now();
        let mut tx = self.write_tx("reclaim").await?;
        let reclaimed = Self::reclaim_in(&mut tx, now).await?;
        tx.commit().await.map_err(JobError::storage("reclaim"))?;
        Ok(reclaimed)
    }

    async fn heartbeat(
        &self,
        id: &str,
        worker_id: &str,
        lease: Duration,
    ) -> Result<HeartbeatOutcome> {
        // A lease that ran out but was not yet reclaimed is still this worker's to renew.
        // An autocommit `RETURNING` statement must be stepped to its end (`fetch_all`): one
        // cut short commits on reset, which skips SQLite's WAL auto-checkpoint, and the WAL
        // then grows without bound.
        let cancel_requested: Vec<bool> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at_ms = ?1
             WHERE id = ?2 AND state = 'running' AND lease_owner = ?3
             RETURNING cancel_requested",
        )
        .bind(self.now().saturating_add(duration_ms(lease)))
        .bind(id)
        .bind(worker_id)
        .fetch_all(&self.pool)
        .await
        .map_err(JobError::storage("heartbeat"))?;
        Ok(match cancel_requested.first() {
            None => HeartbeatOutcome::LostLease,
            Some(true) => HeartbeatOutcome::CancelRequested,
            Some(false) => HeartbeatOutcome::Continue,
        })
    }

    async fn set_progress(&self, id: &str, worker_id: &str, progress: &Progress) -> Result<()> {
        let progress = serde_json::to_string(progress).expect("Progress serializes");
        let changed = sqlx::query(
            "UPDATE jobs SET progress = ?1
             WHERE id = ?2 AND state = 'running' AND lease_owner = ?3",
        )
        .bind(progress)
        .bind(id)
        .bind(worker_id)
        .execute(&self.pool)
        .await
        .map_err(JobError::storage("set_progress"))?
        .rows_affected();
        if changed == 0 {
            return Err(self.refused_worker_call(id, worker_id).await);
        }
        Ok(())
    }

    async fn complete(
        &self,
        id: &str,
        worker_id: &str,
        result: &Value,
        ttl: Duration,
    ) -> Result<()> {
        let now = self.now();
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'succeeded', result = ?1, finished_at_ms = ?2,
                 expires_at_ms = ?3, lease_owner = NULL, lease_expires_at_ms = NULL
             WHERE id = ?4 AND state = 'running' AND lease_owner = ?5",
        )
        .bind(result.to_string())
        .bind(now)
        .bind(now.saturating_add(duration_ms(ttl)))
        .bind(id)
        .bind(worker_id)
        .execute(&self.pool)
        .await
        .map_err(JobError::storage("complete"))?
        .rows_affected();
        if changed == 0 {
            return Err(self.refused_worker_call(id, worker_id).await);
        }
        Ok(())
    }

    async fn fail(&self, id: &str, worker_id: &str, error: &str) -> Result<()> {
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'failed', error = ?1, finished_at_ms = ?2,
                 lease_owner = NULL, lease_expires_at_ms = NULL
             WHERE id = ?3 AND state = 'running' AND lease_owner = ?4",
        )
        .bind(error)
        .bind(self.now())
        .bind(id)
        .bind(worker_id)
        .execute(&self.pool)
        .await
        .map_err(JobError::storage("fail"))?
        .rows_affected();
        if changed == 0 {
            return Err(self.refused_worker_call(id, worker_id).await);
        }
        Ok(())
    }

    async fn mark_cancelled(&self, id: &str, worker_id: &str) -> Result<()> {
        let changed = sqlx::query(
            "UPDATE jobs SET state = 'cancelled', finished_at_ms = ?1,
                 lease_owner = NULL, lease_expires_at_ms = NULL
             WHERE id = ?2 AND state = 'running' AND lease_owner = ?3",
        )
        .bind(self.now())
        .bind(id)
        .bind(worker_id)
        .execute(&self.pool)
        .await
        .map_err(JobError::storage("mark_cancelled"))?
        .rows_affected();
        if changed == 0 {
            return Err(self.refused_worker_call(id, worker_id).await);
        }
        Ok(())
    }

    async fn request_cancel(&self, id: &str, owner: Option<&str>) -> Result<CancelOutcome> {
        let op = "request_cancel";
        let mut tx = self.write_tx(op).await?;
        let state: Option<String> = sqlx::query_scalar(
            "SELECT state FROM jobs WHERE id = ?1 AND (?2 IS NULL OR owner = ?2)",
        )
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await
        .map_err(JobError::storage(op))?;
        let Some(state) = state else {
            return Err(JobError::NotFound { id: id.to_owned() });
        };
        let state = parse_state(id, &state)?;
        let outcome = match state {
            JobState::Queued => {
                sqlx::query(
                    "UPDATE jobs SET state = 'cancelled', cancel_requested = 1, finished_at_ms = ?1
                     WHERE id = ?2",
                )
                .bind(self.now())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(JobError::storage(op))?;
                CancelOutcome::Cancelled
            }
            JobState::Running => {
                sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(JobError::storage(op))?;
                CancelOutcome::Requested
            }
            finished => CancelOutcome::AlreadyFinished(finished),
        };
        tx.commit().await.map_err(JobError::storage(op))?;
        Ok(outcome)
    }

    async fn expired(&self, limit: u32) -> Result<Vec<Job>> {
        let rows = sqlx::query(
            "SELECT * FROM jobs WHERE state = 'succeeded' AND expires_at_ms <= ?1
             ORDER BY expires_at_ms, seq LIMIT ?2",
        )
        .bind(self.now())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(JobError::storage("expired"))?;
        rows.iter().map(job_from_row).collect()
    }

    async fn mark_expired(&self, id: &str) -> Result<()> {
        let changed =
            sqlx::query("UPDATE jobs SET state = 'expired' WHERE id = ?1 AND state = 'succeeded'")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(JobError::storage("mark_expired"))?
                .rows_affected();
        if changed > 0 {
            return Ok(());
        }
        match self.get(id, None).await? {
            None => Err(JobError::NotFound { id: id.to_owned() }),
            Some(job) if job.state == JobState::Expired => Ok(()),
            Some(job) => Err(JobError::InvalidState {
                id: id.to_owned(),
                state: job.state,
                action: "expire",
            }),
        }
    }

    async fn record_webhook_attempt(
        &self,
        job_id: &str,
        url: &str,
        outcome: &WebhookOutcome,
    ) -> Result<WebhookAttempt> {
        let op = "record_webhook_attempt";
        let (status_code, error) = match outcome {
            WebhookOutcome::Status(code) => (Some(i64::from(*code)), None),
            WebhookOutcome::Error(error) => (None, Some(error.as_str())),
        };
        let mut tx = self.write_tx(op).await?;
        let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM jobs WHERE id = ?1")
            .bind(job_id)
            .fetch_optional(&mut *tx)
            .await
            .map_err(JobError::storage(op))?;
        if exists.is_none() {
            return Err(JobError::NotFound {
                id: job_id.to_owned(),
            });
        }
        let row = sqlx::query(
            "INSERT INTO webhook_attempts (job_id, attempt, url, status_code, error, at_ms)
             SELECT ?1, COALESCE(MAX(attempt), 0) + 1, ?2, ?3, ?4, ?5
             FROM webhook_attempts WHERE job_id = ?1
             RETURNING *",
        )
        .bind(job_id)
        .bind(url)
        .bind(status_code)
        .bind(error)
        .bind(self.now())
        .fetch_one(&mut *tx)
        .await
        .map_err(JobError::storage(op))?;
        let attempt = webhook_attempt_from_row(&row)?;
        tx.commit().await.map_err(JobError::storage(op))?;
        Ok(attempt)
    }

    async fn webhook_attempts(&self, job_id: &str) -> Result<Vec<WebhookAttempt>> {
        let rows = sqlx::query("SELECT * FROM webhook_attempts WHERE job_id = ?1 ORDER BY attempt")
            .bind(job_id)
            .fetch_all(&self.pool)
            .await
            .map_err(JobError::storage("webhook_attempts"))?;
        rows.iter().map(webhook_attempt_from_row).collect()
    }

    async fn counts(&self) -> Result<JobCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM jobs GROUP BY state")
                .fetch_all(&self.pool)
                .await
                .map_err(JobError::storage("counts"))?;
        let mut counts = JobCounts::default();
        for (state, n) in rows {
            *counts.slot(parse_state("(counts)", &state)?) = n as u64;
        }
        Ok(counts)
    }

    fn max_queued(&self) -> u64 {
        self.config.max_queued
    }
}

fn parse_state(id: &str, state: &str) -> Result<JobState> {
    JobState::from_str(state).map_err(|reason| JobError::Corrupt {
        id: id.to_owned(),
        column: "state",
        reason,
    })
}

fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let id: String = row.try_get("id").map_err(JobError::storage("read job"))?;
    let read = JobRow { row, id: &id };
    let state: String = read.column("state")?;
    Ok(Job {
        state: parse_state(&id, &state)?,
        owner: read.column("owner")?,
        model: read.column("model")?,
        dialect: read.column("dialect")?,
        request: read.json("request")?.unwrap_or(Value::Null),
        attempts: read.column::<i64>("attempts")? as u32,
        max_attempts: read.column::<i64>("max_attempts")? as u32,
        lease_owner: read.column("lease_owner")?,
        lease_expires_at_ms: read.column("lease_expires_at_ms")?,
        progress: read.json("progress")?,
        result: read.json("result")?,
        error: read.column("error")?,
        cancel_requested: read.column("cancel_requested")?,
        created_at_ms: read.column("created_at_ms")?,
        started_at_ms: read.column("started_at_ms")?,
        finished_at_ms: read.column("finished_at_ms")?,
        expires_at_ms: read.column("expires_at_ms")?,
        webhook_url: read.column("webhook_url")?,
        id: id.clone(),
    })
}

/// One job's row, read column by column; a value that does not decode names its column.
struct JobRow<'r> {
    row: &'r SqliteRow,
    id: &'r str,
}

impl JobRow<'_> {
    fn corrupt(&self, column: &'static str, reason: String) -> JobError {
        JobError::Corrupt {
            id: self.id.to_owned(),
            column,
            reason,
        }
    }

    fn column<'r, T>(&'r self, column: &'static str) -> Result<T>
    where
        T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>,
    {
        self.row
            .try_get(column)
            .map_err(|err| self.corrupt(column, err.to_string()))
    }

    fn json<T: serde::de::DeserializeOwned>(&self, column: &'static str) -> Result<Option<T>> {
        let text: Option<String> = self.column(column)?;
        text.map(|text| {
            serde_json::from_str(&text).map_err(|err| self.corrupt(column, err.to_string()))
        })
        .transpose()
    }
}

fn webhook_attempt_from_row(row: &SqliteRow) -> Result<WebhookAttempt> {
    let read = || JobError::storage("read webhook attempt");
    let attempt: i64 = row.try_get("attempt").map_err(read())?;
    let status_code: Option<i64> = row.try_get("status_code").map_err(read())?;
    Ok(WebhookAttempt {
        job_id: row.try_get("job_id").map_err(read())?,
        attempt: attempt as u32,
        url: row.try_get("url").map_err(read())?,
        status_code: status_code.map(|code| code as u16),
        error: row.try_get("error").map_err(read())?,
        at_ms: row.try_get("at_ms").map_err(read())?,
    })
}
