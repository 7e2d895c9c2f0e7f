use crate::JobState;

/// Everything a job store call can fail with. Each message names the cause and the fix, so the
/// server can log it as is and map the variant to its wire status (404, 409, 429, 500).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error("job {id} not found: it never existed, belongs to another key, or was removed; check the id")]
    NotFound { id: String },

    #[error("a job with id {id} already exists; choose a new id (a fresh UUID) for each job")]
    DuplicateId { id: String },

    #[error("the queue is full ({max} jobs waiting); retry later, or raise the queue limit in the server configuration")]
    QueueFull { max: u64 },

    #[error("job {id} is no longer leased to worker {worker_id}: the lease expired and the job was reclaimed or ended; stop working on it and drop its output")]
    LostLease { id: String, worker_id: String },

    #[error("cannot {action} job {id}: it is {state}; read the job again to see where it stands")]
    InvalidState {
        id: String,
        state: JobState,
        action: &'static str,
    },

    #[error("the page cursor {cursor:?} is not one this store issued; pass `next_cursor` from the previous page unchanged, or omit it for the first page")]
    InvalidCursor { cursor: String },

    #[error("the job store at {path} was written by a newer kiln (schema {found}; this build knows up to {supported}); upgrade kiln or point it at another data folder")]
    SchemaTooNew {
        path: String,
        found: i64,
        supported: i64,
    },

    #[error("job {id} has an unreadable {column} in the store ({reason}); the file was edited by hand or by a newer kiln: upgrade kiln or restore the data folder from a backup")]
    Corrupt {
        id: String,
        column: &'static str,
        reason: String,
    },

    #[error("job store {operation} failed: {reason}; check that the data folder is writable, has free space, and is on a local disk (SQLite needs working file locks)")]
    Storage {
        operation: &'static str,
        reason: String,
    },
}

impl JobError {
    pub(crate) fn storage(operation: &'static str) -> impl FnOnce(sqlx::Error) -> JobError {
        move |err| JobError::Storage {
            operation,
            reason: err.to_string(),
        }
    }
}

pub type Result<T, E = JobError> = std::result::Result<T, E>;
