//! `kiln serve` killed with SIGKILL mid-work: 20 accepted jobs, three kills at random
//! moments, three restarts on the same data folder; every job completes exactly once, with
//! its output, and nothing else is left behind.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

const JOBS: usize = 20;
const KILLS: usize = 3;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills the server when dropped, so a failed assertion leaves no process behind.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_server(data: &Path, port: u16) -> Server {
    // A short lease: a killed server's running job goes back to the queue 3 s later.
    let config = data.with_extension("toml");
    std::fs::write(&config, "lease_seconds = 3\nheartbeat_seconds = 1\n").unwrap();
    Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(data)
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Server)
        .expect("kiln serve starts")
}

async fn wait_healthy(http: &reqwest::Client, base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = http.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kiln serve did not answer /healthz within 60 s");
}

/// A tiny xorshift so the kill moments are random but replayable from the printed seed.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, lo: u64, hi: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        lo + self.0 % (hi - lo)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_three_times_loses_and_repeats_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("kill moments seed: {seed}");
    let mut moments = Moments(seed);

    let mut server = spawn_server(&data, port);
    wait_healthy(&http, &base).await;
    let mut ids = Vec::new();
    for n in 0..JOBS {
        let response = http
            .post(format!("{base}/v1/videos"))
            .json(&json!({
                "prompt": format!("a red circle moves right, job {n}"),
                "frames": 5, "aspect_ratio": "1:1", "steps": 2, "seed": n,
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
    }

    for kill in 0..KILLS {
        let wait = moments.next_ms(200, 1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        server.0.kill().unwrap(); // SIGKILL
        server.0.wait().unwrap();
        eprintln!("kill {} after {wait} ms", kill + 1);
        server = spawn_server(&data, port);
        wait_healthy(&http, &base).await;
    }

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut states = BTreeMap::new();
    loop {
        states.clear();
        for id in &ids {
            let job: Value = http
                .get(format!("{base}/v1/videos/{id}"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            states.insert(id.clone(), job);
        }
        let done = states
            .values()
            .filter(|j| !matches!(j["status"].as_str(), Some("queued" | "running")))
            .count();
        if done == JOBS || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every accepted job exists once, succeeded, and serves its one output.
    let listed: Value = http
        .get(format!("{base}/v1/videos?limit=100"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), JOBS);
    for (id, job) in &states {
        assert_eq!(job["status"], "succeeded", "job {id}: {job}");
        let outputs = job["result"]["outputs"].as_array().unwrap();
        assert_eq!(outputs.len(), 1, "job {id}");
        let video = http
            .get(outputs[0]["url"].as_str().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(video.status(), 200, "job {id}");
        let bytes = video.bytes().await.unwrap();
        assert_eq!(&bytes[4..8], b"ftyp", "job {id}: not an MP4");
    }
    // Exactly the finished outputs on disk: a re-run overwrote, never duplicated.
    let mut files: Vec<String> = std::fs::read_dir(data.join("files"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".mp4"))
        .collect();
    files.sort();
    let mut expected: Vec<String> = ids.iter().map(|id| format!("{id}_0.mp4")).collect();
    expected.sort();
    assert_eq!(files, expected);
}
