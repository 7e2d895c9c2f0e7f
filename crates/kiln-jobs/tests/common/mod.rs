#![allow(dead_code)] // each test binary uses a different part

use std::path::PathBuf;
use std::sync::Arc;

use kiln_jobs::{ManualClock, NewJob, SqliteStore, StoreConfig};
use serde_json::json;
use tempfile::TempDir;

/// A store in a fresh temp folder on a clock that starts at 1_000_000 ms and moves only
/// when the test says so.
pub struct Fixture {
    pub dir: TempDir,
    pub path: PathBuf,
    pub clock: ManualClock,
    pub store: SqliteStore,
}

pub const START_MS: i64 = 1_000_000;

pub async fn fixture(config: StoreConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("data").join("jobs.sqlite");
    let clock = ManualClock::new(START_MS);
    let store = SqliteStore::open_with_clock(&path, config, Arc::new(clock.clone()))
        .await
        .expect("open store");
    Fixture {
        dir,
        path,
        clock,
        store,
    }
}

pub async fn default_fixture() -> Fixture {
    fixture(StoreConfig::default()).await
}

pub fn new_job(owner: &str, n: u32) -> NewJob {
    NewJob {
        id: None,
        owner: owner.to_owned(),
        model: "kiln-bundled".to_owned(),
        dialect: "native".to_owned(),
        request: json!({ "prompt": format!("job {n}"), "seed": n }),
        webhook_url: None,
        max_attempts: None,
    }
}
