//! A `kill -9` at any moment loses no accepted job, and a job that was running when its
//! process died runs again and finishes.
//!
//! The child processes are this test binary run again on one ignored test, told what to do
//! through environment variables; they report on stdout, and the parent kills them with
//! SIGKILL.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kiln_jobs::{
    Clock, JobState, JobStore, ManualClock, Progress, SqliteStore, StoreConfig, SystemClock,
};
use serde_json::json;

const CHILD_ROLE: &str = "KILN_JOBS_CHILD_ROLE";
const CHILD_DB: &str = "KILN_JOBS_CHILD_DB";
const CHILD_LEASE: Duration = Duration::from_secs(5);
/// Bounds a child that nobody kills (a parent that died first), so it cannot write forever.
const CHILD_MAX_JOBS: u32 = 20_000;

/// Runs `child_process` in a fresh copy of this binary.
fn spawn_child(role: &str, db: &Path) -> ChildGuard {
    let child = Command::new(std::env::current_exe().expect("test binary path"))
        .args([
            "child_process",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ROLE, role)
        .env(CHILD_DB, db)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child test process");
    ChildGuard(Some(child))
}

/// Reads the child's reports (`report <word> <job id>`, among libtest's own lines) until
/// `enough` of them say `word`.
fn read_reports(child: &mut ChildGuard, word: &str, enough: usize) -> Vec<String> {
    let stdout = child
        .0
        .as_mut()
        .and_then(|c| c.stdout.take())
        .expect("piped stdout");
    let mut ids = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("child stdout");
        // libtest may print `test child_process ... ` ahead of the first report on its line.
        let report = line
            .split_once("report ")
            .and_then(|(_, rest)| rest.strip_prefix(word));
        if let Some(id) = report.and_then(|rest| rest.strip_prefix(' ')) {
            ids.push(id.to_owned());
            if ids.len() >= enough {
                break;
            }
        }
    }
    ids
}

fn kill_hard(mut child: ChildGuard) {
    let mut child = child.0.take().expect("child not yet reaped");
    child.kill().expect("SIGKILL the child"); // std sends SIGKILL on Unix
    let status = child.wait().expect("reap the child");
    assert!(
        !status.success(),
        "the child was killed, not finished: {status:?}"
    );
}

/// Kills the child if the test fails before it does, so no writer is left running.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            child.kill().ok();
            child.wait().ok();
        }
    }
}

#[tokio::test]
async fn killed_while_submitting_loses_no_accepted_job() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite");
    let mut child = spawn_child("submit", &db);
    let accepted = read_reports(&mut child, "accepted", 40);
    assert_eq!(accepted.len(), 40, "the child stopped early");
    kill_hard(child); // mid-stream: the child is submitting without pause

    let store = SqliteStore::open(&db, StoreConfig::default())
        .await
        .unwrap();
    for id in &accepted {
        let job = store.get(id, Some("key-a")).await.unwrap();
        let job = job.unwrap_or_else(|| panic!("accepted job {id} was lost"));
        assert_eq!(job.state, JobState::Queued);
    }
    let queued = store.counts().await.unwrap().queued;
    assert!(
        queued >= accepted.len() as u64,
        "{queued} < {}",
        accepted.len()
    );
}

#[tokio::test]
async fn running_job_killed_mid_way_runs_again_and_finishes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("jobs.sqlite");
    let mut child = spawn_child("run", &db);
    let running = read_reports(&mut child, "running", 1);
    assert_eq!(running.len(), 1, "the child stopped early");
    kill_hard(child);

    // Restart after the dead worker's lease ran out.
    let after_lease = SystemClock.now_ms() + 2 * CHILD_LEASE.as_millis() as i64;
    let clock = Arc::new(ManualClock::new(after_lease));
    let store = SqliteStore::open_with_clock(&db, StoreConfig::default(), clock)
        .await
        .unwrap();
    let before = store.get(&running[0], None).await.unwrap().unwrap();
    assert_eq!(before.state, JobState::Running);
    assert_eq!(
        before.progress.as_ref().map(|p| p.step),
        Some(2),
        "progress was stored"
    );

    let job = store
        .claim("worker-after-restart", CHILD_LEASE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(job.id, running[0]);
    assert_eq!(job.attempts, 2);
    store
        .complete(
            &job.id,
            "worker-after-restart",
            &json!({"video": "out.mp4"}),
            CHILD_LEASE,
        )
        .await
        .unwrap();
    let done = store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
}

/// The child side; does nothing unless run by the tests above.
#[tokio::test]
#[ignore = "run in a child process by the durability tests"]
async fn child_process() {
    let (Ok(role), Ok(db)) = (std::env::var(CHILD_ROLE), std::env::var(CHILD_DB)) else {
        return;
    };
    let store = SqliteStore::open(
        &db,
        StoreConfig {
            max_queued: u64::MAX,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut out = std::io::stdout();
    match role.as_str() {
        "submit" => {
            // Submits until killed; a job is reported only after `submit` returned Ok.
            for n in 0..CHILD_MAX_JOBS {
                let job = store.submit(common::new_job("key-a", n)).await.unwrap();
                writeln!(out, "report accepted {}", job.id).unwrap();
                out.flush().unwrap();
            }
        }
        "run" => {
            for n in 0..3 {
                store.submit(common::new_job("key-a", n)).await.unwrap();
            }
            let job = store
                .claim("worker-before-kill", CHILD_LEASE)
                .await
                .unwrap()
                .unwrap();
            let progress = Progress {
                step: 2,
                steps: 10,
                phase: "sampling".into(),
            };
            store
                .set_progress(&job.id, "worker-before-kill", &progress)
                .await
                .unwrap();
            writeln!(out, "report running {}", job.id).unwrap();
            out.flush().unwrap();
            // Keep submitting so the kill lands mid-write.
            for n in 3..CHILD_MAX_JOBS {
                store.submit(common::new_job("key-a", n)).await.unwrap();
            }
        }
        other => panic!("unknown child role {other}"),
    }
}
