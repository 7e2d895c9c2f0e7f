//! The SQLite store's behaviour on a real file, with time moved by hand.

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use common::{default_fixture, fixture, new_job, START_MS};
use kiln_jobs::{
    CancelOutcome, HeartbeatOutcome, JobError, JobState, JobStore, ManualClock, PageRequest,
    Progress, Reclaimed, SqliteStore, StoreConfig, WebhookOutcome,
};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);
const PAST_LEASE: Duration = Duration::from_secs(31);

#[tokio::test]
async fn submitted_job_is_stored_as_queued() {
    let f = default_fixture().await;
    let mut new = new_job("key-a", 1);
    new.webhook_url = Some("https://example.test/hook".into());
    let job = f.store.submit(new.clone()).await.unwrap();
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.owner, "key-a");
    assert_eq!(job.model, "kiln-bundled");
    assert_eq!(job.dialect, "native");
    assert_eq!(job.request, new.request);
    assert_eq!(
        job.webhook_url.as_deref(),
        Some("https://example.test/hook")
    );
    assert_eq!((job.attempts, job.max_attempts), (0, 3));
    assert_eq!(job.created_at_ms, START_MS);
    assert!(!job.cancel_requested);
    assert_eq!(
        f.store.get(&job.id, Some("key-a")).await.unwrap(),
        Some(job)
    );
}

#[tokio::test]
async fn claim_takes_jobs_in_submission_order() {
    let f = default_fixture().await;
    let mut submitted = Vec::new();
    for n in 0..5 {
        submitted.push(f.store.submit(new_job("key-a", n)).await.unwrap().id);
    }
    let mut claimed = Vec::new();
    while let Some(job) = f.store.claim("worker-1", LEASE).await.unwrap() {
        assert_eq!(job.state, JobState::Running);
        assert_eq!(job.attempts, 1);
        assert_eq!(job.lease_owner.as_deref(), Some("worker-1"));
        assert_eq!(job.lease_expires_at_ms, Some(START_MS + 30_000));
        assert_eq!(job.started_at_ms, Some(START_MS));
        claimed.push(job.id);
    }
    assert_eq!(claimed, submitted);
}

#[tokio::test]
async fn queue_position_counts_queued_jobs_ahead() {
    let f = default_fixture().await;
    let a = f.store.submit(new_job("key-a", 0)).await.unwrap();
    let b = f.store.submit(new_job("key-b", 1)).await.unwrap();
    let c = f.store.submit(new_job("key-a", 2)).await.unwrap();
    assert_eq!(f.store.queue_position(&a.id).await.unwrap(), Some(0));
    assert_eq!(f.store.queue_position(&b.id).await.unwrap(), Some(1));
    assert_eq!(f.store.queue_position(&c.id).await.unwrap(), Some(2));

    f.store.claim("worker-1", LEASE).await.unwrap();
    assert_eq!(
        f.store.queue_position(&a.id).await.unwrap(),
        None,
        "running"
    );
    assert_eq!(f.store.queue_position(&b.id).await.unwrap(), Some(0));
    f.store.request_cancel(&b.id, None).await.unwrap();
    assert_eq!(f.store.queue_position(&c.id).await.unwrap(), Some(0));
    assert_eq!(f.store.queue_position("no-such-job").await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claimers_never_get_the_same_job() {
    let f = default_fixture().await;
    const JOBS: usize = 60;
    const CLAIMERS: usize = 12;
    for n in 0..JOBS {
        f.store.submit(new_job("key-a", n as u32)).await.unwrap();
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(CLAIMERS));
    let mut tasks = Vec::new();
    for w in 0..CLAIMERS {
        let store = f.store.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let worker = format!("worker-{w}");
            let mut mine = Vec::new();
            while let Some(job) = store.claim(&worker, LEASE).await.unwrap() {
                assert_eq!(job.lease_owner.as_deref(), Some(worker.as_str()));
                mine.push(job.id);
            }
            mine
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), JOBS, "every job claimed exactly once");
    assert_eq!(unique.len(), JOBS, "no job claimed twice");
    assert_eq!(f.store.counts().await.unwrap().running, JOBS as u64);
}

#[tokio::test]
async fn expired_lease_sends_job_back_to_the_queue_with_another_attempt() {
    let f = default_fixture().await;
    let first = f.store.submit(new_job("key-a", 0)).await.unwrap();
    let second = f.store.submit(new_job("key-a", 1)).await.unwrap();
    let job = f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    assert_eq!(job.id, first.id);
    f.store
        .set_progress(
            &job.id,
            "worker-1",
            &Progress {
                step: 3,
                steps: 10,
                phase: "sampling".into(),
            },
        )
        .await
        .unwrap();

    // Still inside the lease: nothing to reclaim, the next claim takes the second job.
    f.clock.advance(Duration::from_secs(29));
    assert_eq!(
        f.store.reclaim_expired().await.unwrap(),
        Reclaimed::default()
    );

    f.clock.advance(Duration::from_secs(2));
    assert_eq!(
        f.store.reclaim_expired().await.unwrap(),
        Reclaimed {
            requeued: 1,
            failed: 0,
            cancelled: 0
        }
    );
    let back = f.store.get(&first.id, None).await.unwrap().unwrap();
    assert_eq!(back.state, JobState::Queued);
    assert_eq!(back.lease_owner, None);
    assert_eq!(back.progress, None, "a restarted job starts over");
    // It keeps its place ahead of jobs submitted after it.
    assert_eq!(f.store.queue_position(&first.id).await.unwrap(), Some(0));
    assert_eq!(f.store.queue_position(&second.id).await.unwrap(), Some(1));

    let again = f.store.claim("worker-2", LEASE).await.unwrap().unwrap();
    assert_eq!(again.id, first.id);
    assert_eq!(again.attempts, 2);
    assert_eq!(again.lease_owner.as_deref(), Some("worker-2"));
}

#[tokio::test]
async fn claim_itself_reclaims_expired_leases() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    assert_eq!(f.store.claim("worker-2", LEASE).await.unwrap(), None);
    f.clock.advance(PAST_LEASE);
    let again = f.store.claim("worker-2", LEASE).await.unwrap().unwrap();
    assert_eq!((again.id.as_str(), again.attempts), (job.id.as_str(), 2));
}

#[tokio::test]
async fn job_that_keeps_losing_its_worker_fails_after_max_attempts() {
    let f = default_fixture().await;
    let mut new = new_job("key-a", 0);
    new.max_attempts = Some(2);
    let job = f.store.submit(new).await.unwrap();
    for attempt in 1..=2 {
        let claimed = f.store.claim("worker", LEASE).await.unwrap().unwrap();
        assert_eq!(claimed.attempts, attempt);
        f.clock.advance(PAST_LEASE); // the worker dies without a word
    }
    assert_eq!(f.store.claim("worker", LEASE).await.unwrap(), None);
    let failed = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempts, 2);
    assert_eq!(failed.finished_at_ms, Some(START_MS + 2 * 31_000));
    let error = failed.error.unwrap();
    assert!(
        error.starts_with("gave up after 2 attempts: the worker stopped (crash or kill) each time"),
        "{error}"
    );
}

#[tokio::test]
async fn heartbeat_keeps_the_lease_alive() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    for _ in 0..5 {
        f.clock.advance(Duration::from_secs(20));
        let outcome = f.store.heartbeat(&job.id, "worker-1", LEASE).await.unwrap();
        assert_eq!(outcome, HeartbeatOutcome::Continue);
    }
    assert_eq!(
        f.store.reclaim_expired().await.unwrap(),
        Reclaimed::default()
    );
    let running = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(
        running.lease_expires_at_ms,
        Some(START_MS + 100_000 + 30_000)
    );
}

#[tokio::test]
async fn stale_worker_is_refused_after_its_job_was_reclaimed() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-old", LEASE).await.unwrap().unwrap();
    f.clock.advance(PAST_LEASE);
    f.store.claim("worker-new", LEASE).await.unwrap().unwrap();

    let lost = |r: Result<(), JobError>| matches!(r, Err(JobError::LostLease { .. }));
    let progress = Progress {
        step: 1,
        steps: 2,
        phase: "sampling".into(),
    };
    assert!(lost(
        f.store.set_progress(&job.id, "worker-old", &progress).await
    ));
    assert!(lost(
        f.store
            .complete(&job.id, "worker-old", &json!({}), LEASE)
            .await
    ));
    assert!(lost(f.store.fail(&job.id, "worker-old", "boom").await));
    assert!(lost(f.store.mark_cancelled(&job.id, "worker-old").await));
    assert_eq!(
        f.store
            .heartbeat(&job.id, "worker-old", LEASE)
            .await
            .unwrap(),
        HeartbeatOutcome::LostLease
    );
    let err = f
        .store
        .fail(&job.id, "worker-old", "boom")
        .await
        .unwrap_err();
    assert!(err.to_string().contains("drop its output"), "{err}");

    // The new holder is untouched and can finish.
    f.store
        .complete(&job.id, "worker-new", &json!({"video": "k"}), LEASE)
        .await
        .unwrap();
    let done = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    // After the end, even the former holder is refused.
    assert!(lost(f.store.fail(&job.id, "worker-new", "late").await));
    assert!(matches!(
        f.store.fail("no-such-job", "worker-new", "x").await,
        Err(JobError::NotFound { .. })
    ));
}

#[tokio::test]
async fn cancelling_a_queued_job_ends_it_at_once() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    assert_eq!(
        f.store
            .request_cancel(&job.id, Some("key-a"))
            .await
            .unwrap(),
        CancelOutcome::Cancelled
    );
    let cancelled = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.finished_at_ms, Some(START_MS));
    assert_eq!(
        f.store.claim("worker-1", LEASE).await.unwrap(),
        None,
        "never runs"
    );
    assert_eq!(
        f.store
            .request_cancel(&job.id, Some("key-a"))
            .await
            .unwrap(),
        CancelOutcome::AlreadyFinished(JobState::Cancelled)
    );
}

#[tokio::test]
async fn cancelling_a_running_job_reaches_its_worker() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    assert_eq!(
        f.store.heartbeat(&job.id, "worker-1", LEASE).await.unwrap(),
        HeartbeatOutcome::Continue
    );
    assert_eq!(
        f.store
            .request_cancel(&job.id, Some("key-a"))
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    let flagged = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(
        (flagged.state, flagged.cancel_requested),
        (JobState::Running, true)
    );

    assert_eq!(
        f.store.heartbeat(&job.id, "worker-1", LEASE).await.unwrap(),
        HeartbeatOutcome::CancelRequested
    );
    f.store.mark_cancelled(&job.id, "worker-1").await.unwrap();
    let cancelled = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.lease_owner, None);
}

#[tokio::test]
async fn cancelled_job_whose_worker_died_is_not_run_again() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    f.store.request_cancel(&job.id, None).await.unwrap();
    f.clock.advance(PAST_LEASE);
    assert_eq!(
        f.store.reclaim_expired().await.unwrap(),
        Reclaimed {
            requeued: 0,
            failed: 0,
            cancelled: 1
        }
    );
    assert_eq!(
        f.store.get(&job.id, None).await.unwrap().unwrap().state,
        JobState::Cancelled
    );
}

#[tokio::test]
async fn progress_and_result_are_stored() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    for step in 1..=3 {
        let progress = Progress {
            step,
            steps: 10,
            phase: "sampling".into(),
        };
        f.store
            .set_progress(&job.id, "worker-1", &progress)
            .await
            .unwrap();
        let seen = f.store.get(&job.id, Some("key-a")).await.unwrap().unwrap();
        assert_eq!(seen.progress, Some(progress));
    }
    let result = json!({ "outputs": ["jobs/x/video.mp4"], "seconds": 12.5 });
    f.clock.advance(Duration::from_secs(5));
    f.store
        .complete(&job.id, "worker-1", &result, Duration::from_secs(3600))
        .await
        .unwrap();
    let done = f.store.get(&job.id, Some("key-a")).await.unwrap().unwrap();
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result, Some(result));
    assert_eq!(done.finished_at_ms, Some(START_MS + 5_000));
    assert_eq!(done.expires_at_ms, Some(START_MS + 5_000 + 3_600_000));
    assert_eq!(done.lease_owner, None);
}

#[tokio::test]
async fn worker_failure_is_final_and_keeps_its_message() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    f.store
        .fail(&job.id, "worker-1", "frames must be 4n+1; got 10")
        .await
        .unwrap();
    let failed = f.store.get(&job.id, None).await.unwrap().unwrap();
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.error.as_deref(), Some("frames must be 4n+1; got 10"));
    f.clock.advance(PAST_LEASE);
    assert_eq!(
        f.store.claim("worker-1", LEASE).await.unwrap(),
        None,
        "not retried"
    );
}

#[tokio::test]
async fn outputs_past_their_ttl_are_listed_then_marked_expired() {
    let f = default_fixture().await;
    let ttl_short = Duration::from_secs(60);
    let ttl_long = Duration::from_secs(600);
    let mut ids = Vec::new();
    for (n, ttl) in [ttl_long, ttl_short].into_iter().enumerate() {
        let job = f.store.submit(new_job("key-a", n as u32)).await.unwrap();
        f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
        f.store
            .complete(&job.id, "worker-1", &json!({"n": n}), ttl)
            .await
            .unwrap();
        ids.push(job.id);
    }
    let unfinished = f.store.submit(new_job("key-a", 9)).await.unwrap();

    assert!(f.store.expired(100).await.unwrap().is_empty());
    f.clock.advance(Duration::from_secs(60));
    let due: Vec<_> = f
        .store
        .expired(100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(due, vec![ids[1].clone()]);
    f.clock.advance(Duration::from_secs(600));
    let due: Vec<_> = f
        .store
        .expired(100)
        .await
        .unwrap()
        .into_iter()
        .map(|j| j.id)
        .collect();
    assert_eq!(
        due,
        vec![ids[1].clone(), ids[0].clone()],
        "oldest expiry first"
    );
    assert_eq!(f.store.expired(1).await.unwrap().len(), 1, "limit");

    for id in &ids {
        f.store.mark_expired(id).await.unwrap();
        f.store.mark_expired(id).await.unwrap(); // idempotent
    }
    assert!(f.store.expired(100).await.unwrap().is_empty());
    let gone = f.store.get(&ids[0], Some("key-a")).await.unwrap().unwrap();
    assert_eq!(
        gone.state,
        JobState::Expired,
        "still readable, so the server can answer 410"
    );
    assert!(matches!(
        f.store.mark_expired(&unfinished.id).await,
        Err(JobError::InvalidState {
            state: JobState::Queued,
            ..
        })
    ));
    assert!(matches!(
        f.store.mark_expired("no-such-job").await,
        Err(JobError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_key_sees_only_its_own_jobs() {
    let f = default_fixture().await;
    let a = f.store.submit(new_job("key-a", 0)).await.unwrap();
    let b = f.store.submit(new_job("key-b", 1)).await.unwrap();

    assert!(f.store.get(&a.id, Some("key-a")).await.unwrap().is_some());
    assert_eq!(f.store.get(&a.id, Some("key-b")).await.unwrap(), None);
    assert!(
        f.store.get(&a.id, None).await.unwrap().is_some(),
        "admin sees all"
    );

    let listed = f
        .store
        .list(Some("key-b"), PageRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed.items.iter().map(|j| &j.id).collect::<Vec<_>>(),
        vec![&b.id]
    );
    let everyone = f.store.list(None, PageRequest::default()).await.unwrap();
    assert_eq!(everyone.items.len(), 2);

    assert!(matches!(
        f.store.request_cancel(&a.id, Some("key-b")).await,
        Err(JobError::NotFound { .. })
    ));
    assert_eq!(
        f.store.get(&a.id, None).await.unwrap().unwrap().state,
        JobState::Queued
    );
}

#[tokio::test]
async fn list_pages_newest_first() {
    let f = default_fixture().await;
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(f.store.submit(new_job("key-a", n)).await.unwrap().id);
        f.store.submit(new_job("key-other", n)).await.unwrap();
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut page = PageRequest::first(3);
    loop {
        let got = f.store.list(Some("key-a"), page.clone()).await.unwrap();
        assert!(got.items.len() <= 3);
        seen.extend(got.items.into_iter().map(|j| j.id));
        match got.next_cursor {
            Some(cursor) => page.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ids);
    let bad = PageRequest {
        cursor: Some("not-a-cursor".into()),
        limit: 3,
    };
    assert!(matches!(
        f.store.list(Some("key-a"), bad).await,
        Err(JobError::InvalidCursor { .. })
    ));
}

#[tokio::test]
async fn full_queue_refuses_new_jobs_until_one_leaves() {
    let f = fixture(StoreConfig {
        max_queued: 3,
        ..StoreConfig::default()
    })
    .await;
    assert_eq!(f.store.max_queued(), 3);
    for n in 0..3 {
        f.store.submit(new_job("key-a", n)).await.unwrap();
    }
    let err = f.store.submit(new_job("key-a", 3)).await.unwrap_err();
    assert!(matches!(err, JobError::QueueFull { max: 3 }), "{err:?}");
    assert!(err.to_string().contains("retry later"), "{err}");
    assert_eq!(f.store.counts().await.unwrap().queued, 3);

    // Running jobs do not count against the queue.
    f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    f.store.submit(new_job("key-a", 4)).await.unwrap();
    assert!(matches!(
        f.store.submit(new_job("key-a", 5)).await,
        Err(JobError::QueueFull { .. })
    ));
}

#[tokio::test]
async fn counts_follow_every_state() {
    let f = default_fixture().await;
    let mut ids = Vec::new();
    for n in 0..6 {
        ids.push(f.store.submit(new_job("key-a", n)).await.unwrap().id);
    }
    f.store.request_cancel(&ids[5], None).await.unwrap();
    for _ in 0..4 {
        f.store.claim("worker-1", LEASE).await.unwrap().unwrap();
    }
    f.store
        .complete(&ids[0], "worker-1", &json!({}), Duration::ZERO)
        .await
        .unwrap();
    f.store
        .complete(&ids[1], "worker-1", &json!({}), Duration::from_secs(60))
        .await
        .unwrap();
    f.store.mark_expired(&ids[0]).await.unwrap();
    f.store.fail(&ids[2], "worker-1", "boom").await.unwrap();
    let counts = f.store.counts().await.unwrap();
    assert_eq!(counts.queued, 1);
    assert_eq!(counts.running, 1);
    assert_eq!(counts.succeeded, 1);
    assert_eq!(counts.failed, 1);
    assert_eq!(counts.cancelled, 1);
    assert_eq!(counts.expired, 1);
    assert_eq!(counts.get(JobState::Running), 1);
}

#[tokio::test]
async fn webhook_attempts_are_numbered_and_kept() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    let other = f.store.submit(new_job("key-a", 1)).await.unwrap();
    let url = "https://example.test/hook";
    let first = f
        .store
        .record_webhook_attempt(
            &job.id,
            url,
            &WebhookOutcome::Error("connection refused".into()),
        )
        .await
        .unwrap();
    f.clock.advance(Duration::from_secs(2));
    f.store
        .record_webhook_attempt(&other.id, url, &WebhookOutcome::Status(200))
        .await
        .unwrap();
    let second = f
        .store
        .record_webhook_attempt(&job.id, url, &WebhookOutcome::Status(503))
        .await
        .unwrap();
    assert_eq!((first.attempt, second.attempt), (1, 2));

    let attempts = f.store.webhook_attempts(&job.id).await.unwrap();
    assert_eq!(attempts, vec![first, second]);
    assert_eq!(attempts[0].error.as_deref(), Some("connection refused"));
    assert_eq!(attempts[0].status_code, None);
    assert_eq!(attempts[1].status_code, Some(503));
    assert_eq!(attempts[1].at_ms, START_MS + 2_000);
    assert_eq!(f.store.webhook_attempts(&other.id).await.unwrap().len(), 1);
    assert!(matches!(
        f.store
            .record_webhook_attempt("no-such-job", url, &WebhookOutcome::Status(200))
            .await,
        Err(JobError::NotFound { .. })
    ));
}

#[tokio::test]
async fn reopening_keeps_jobs_and_refuses_a_newer_schema() {
    let f = default_fixture().await;
    let job = f.store.submit(new_job("key-a", 0)).await.unwrap();
    f.store.close().await;

    let clock = Arc::new(ManualClock::new(START_MS));
    let reopened = SqliteStore::open_with_clock(&f.path, StoreConfig::default(), clock.clone())
        .await
        .unwrap();
    assert_eq!(reopened.get(&job.id, None).await.unwrap(), Some(job));
    reopened.close().await;

    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", f.path.display()))
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, 1, "schema version recorded");
    sqlx::query("PRAGMA user_version = 99")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let err = SqliteStore::open_with_clock(&f.path, StoreConfig::default(), clock)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            JobError::SchemaTooNew {
                found: 99,
                supported: 1,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn write_ahead_log_stays_bounded_under_a_burst_of_submits() {
    // SQLite checkpoints the WAL every ~1000 pages (4 MB), but only after statements that
    // run to completion; this burst (about 12 MB of WAL frames) catches one that does not.
    let f = fixture(StoreConfig {
        max_queued: u64::MAX,
        ..StoreConfig::default()
    })
    .await;
    for n in 0..400 {
        f.store.submit(new_job("key-a", n)).await.unwrap();
    }
    let wal = f.path.with_extension("sqlite-wal");
    let wal_bytes = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert!(
        wal_bytes < 6 << 20,
        "WAL grew to {wal_bytes} bytes: auto-checkpoint is not running"
    );
}

#[tokio::test]
async fn client_chosen_ids_are_kept_and_never_reused() {
    let f = default_fixture().await;
    let mut new = new_job("key-a", 1);
    new.id = Some("9c1f3e2a-0000-4000-8000-000000000001".into());
    let job = f.store.submit(new.clone()).await.unwrap();
    assert_eq!(job.id, "9c1f3e2a-0000-4000-8000-000000000001");
    // The same id again, even from another key, is refused and the first job is untouched.
    let mut again = new_job("key-b", 2);
    again.id = new.id.clone();
    match f.store.submit(again).await {
        Err(JobError::DuplicateId { id }) => assert_eq!(id, job.id),
        other => panic!("expected DuplicateId, got {other:?}"),
    }
    assert_eq!(f.store.get(&job.id, None).await.unwrap(), Some(job));
}
