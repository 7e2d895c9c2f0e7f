//! Deletes outputs whose TTL has passed and marks their jobs expired (files answer 410).

use tokio::sync::watch;

use crate::AppState;

pub async fn run_sweeper(state: AppState, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!("TTL sweep failed: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(state.config.sweep_interval) => {}
            _ = shutdown.changed() => return,
        }
    }
}

async fn sweep_once(state: &AppState) -> Result<(), kiln_jobs::JobError> {
    loop {
        let due = state.store.expired(100).await?;
        if due.is_empty() {
            return Ok(());
        }
        for job in due {
            let keys = output_keys(job.result.as_ref());
            let mut all_deleted = true;
            for key in &keys {
                if let Err(e) = state.files.delete(key).await {
                    tracing::warn!(job = %job.id, "cannot delete {key}: {e}");
                    all_deleted = false;
                }
            }
            // Mark only once the files are gone, so a failed delete is retried next sweep.
            if all_deleted {
                state.store.mark_expired(&job.id).await?;
            } else {
                return Ok(());
            }
        }
    }
}

/// The video and poster keys a result names.
fn output_keys(result: Option<&serde_json::Value>) -> Vec<String> {
    let mut keys = Vec::new();
    let outputs = result
        .and_then(|r| r.get("outputs"))
        .and_then(|o| o.as_array());
    for output in outputs.into_iter().flatten() {
        for field in ["key", "poster_key"] {
            if let Some(key) = output.get(field).and_then(|v| v.as_str()) {
                keys.push(key.to_string());
            }
        }
    }
    keys
}
