//! The fal dialect over real HTTP with real generation on kiln's bundled model: the queue
//! host (submit, status polled and streamed, result, cancel, webhooks), the run host on its
//! own listener, `Authorization: Key` auth and fal's error shapes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::Engine;
use kiln_server::{ListenerScheme, Surface};
use serde_json::{json, Value};

mod common;

use common::{bundled_pipeline, start_on, TestServer};

const T2V: &str = "fal-ai/kling-video/v2.1/master/text-to-video";
const I2V: &str = "fal-ai/kling-video/v2.1/master/image-to-video";

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    let status = response.status();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    Answer {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// `Authorization: Key <key>`, as fal's SDK sends it.
fn with_key(request: reqwest::RequestBuilder, key: Option<&str>) -> reqwest::RequestBuilder {
    match key {
        Some(key) => request.header("authorization", format!("Key {key}")),
        None => request,
    }
}

async fn submit_to(
    t: &TestServer,
    base: &str,
    endpoint: &str,
    body: &Value,
    webhook: Option<&str>,
    key: Option<&str>,
) -> Answer {
    let mut request = t.http.post(format!("{base}/{endpoint}")).json(body);
    if let Some(url) = webhook {
        request = request.query(&[("fal_webhook", url)]);
    }
    answer(with_key(request, key).send().await.unwrap()).await
}

async fn submit(t: &TestServer, endpoint: &str, body: &Value) -> Answer {
    submit_to(t, &t.base, endpoint, body, None, None).await
}

async fn get(t: &TestServer, url: &str, key: Option<&str>) -> Answer {
    answer(with_key(t.http.get(url), key).send().await.unwrap()).await
}

async fn put(t: &TestServer, url: &str, key: Option<&str>) -> Answer {
    answer(with_key(t.http.put(url), key).send().await.unwrap()).await
}

/// Polls a status URL as the SDK does (`?logs=true`) until `COMPLETED`; every answer seen.
async fn poll_until_completed(t: &TestServer, status_url: &str) -> Vec<Answer> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = answer(
            t.http
                .get(status_url)
                .query(&[("logs", "true")])
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert!(a.status.is_success(), "{}: {}", a.status, a.body);
        let done = a.body["status"] == "COMPLETED";
        seen.push(a);
        if done {
            return seen;
        }
        assert!(Instant::now() < deadline, "never COMPLETED: {status_url}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_status(t: &TestServer, status_url: &str, want: &str) -> Answer {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = get(t, status_url, None).await;
        if a.body["status"] == want {
            return a;
        }
        assert!(Instant::now() < deadline, "never {want}: {}", a.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The data events of a server-sent event stream, read until it ends.
async fn read_sse_data(mut response: reqwest::Response) -> Vec<Value> {
    let mut text = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.chunk())
        .await
        .expect("events keep coming")
        .unwrap()
    {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    text.split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|line| line.strip_prefix("data:"))
                .and_then(|data| serde_json::from_str(data.trim()).ok())
        })
        .collect()
}

/// A second listener serving the `fal.run` surface of the same server.
async fn start_run_host(t: &TestServer) -> String {
    let router = t.server.router_for(Surface::FalRun, ListenerScheme("http"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn assert_mp4(t: &TestServer, video: &Value) {
    assert_eq!(video["content_type"], "video/mp4", "{video}");
    assert!(
        video["file_name"].as_str().unwrap().ends_with(".mp4"),
        "{video}"
    );
    let file = t
        .http
        .get(video["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    let bytes = file.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4 starts with its ftyp box");
    assert_eq!(video["file_size"].as_u64(), Some(bytes.len() as u64));
}

/// The native view of a job, to see what the fal request was translated into.
async fn native_job(t: &TestServer, id: &str) -> Value {
    get(t, &format!("{}/v1/videos/{id}", t.base), None)
        .await
        .body
}

fn detail_has(body: &Value, field: &str, kind: &str) -> bool {
    body["detail"].as_array().is_some_and(|errors| {
        errors
            .iter()
            .any(|e| e["loc"][1] == field && e["type"] == kind && e["msg"].is_string())
    })
}

fn assert_flat_error(a: &Answer, status: u16, error_type: &str) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.body["error_type"], error_type, "{}", a.body);
    assert!(
        a.body["detail"].as_str().is_some_and(|d| d.len() > 10),
        "{}",
        a.body
    );
    assert_eq!(a.header("x-fal-error-type"), Some(error_type));
    assert!(a.header("x-fal-request-id").is_some());
}

/// A small RGB PNG (stored deflate blocks), as `fal_client.encode_image` would send it.
fn png_data_uri(width: u32, height: u32) -> String {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = 0xFFFF_FFFFu32;
        for &b in bytes {
            c ^= u32::from(b);
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
        }
        !c
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend((data.len() as u32).to_be_bytes());
        let start = out.len();
        out.extend(kind);
        out.extend(data);
        let crc = crc32(&out[start..]);
        out.extend(crc.to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend([(x * 255 / width) as u8, (y * 255 / height) as u8, 96]);
        }
    }
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend(len.to_le_bytes());
        zlib.extend((!len).to_le_bytes());
        zlib.extend(*block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend(((b << 16) | a).to_be_bytes());
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &zlib);
    chunk(&mut png, b"IEND", &[]);
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(png)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_text_to_video_end_to_end() {
    let t = start_on(bundled_pipeline(), 40, |_| {}).await;
    // The first job holds the single worker so the second is seen waiting.
    let blocker = submit(&t, T2V, &json!({"prompt": "a blue square"})).await;
    assert_eq!(blocker.status, StatusCode::OK, "{}", blocker.body);
    let a = submit(
        &t,
        T2V,
        &json!({
            "prompt": "a red circle moves to the right",
            "duration": "5",
            "aspect_ratio": "16:9",
            "negative_prompt": "blur",
            "cfg_scale": 0.5,
        }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = a.body["request_id"].as_str().unwrap().to_string();
    assert_eq!(a.header("x-fal-request-id"), Some(id.as_str()));
    assert_eq!(a.body["status"], "IN_QUEUE");
    assert!(a.body["queue_position"].is_u64(), "{}", a.body);
    let response_url = format!("{}/fal-ai/kling-video/requests/{id}", t.base);
    assert_eq!(a.body["response_url"], response_url.as_str());
    assert_eq!(
        a.body["status_url"],
        format!("{response_url}/status").as_str()
    );
    assert_eq!(
        a.body["cancel_url"],
        format!("{response_url}/cancel").as_str()
    );
    let status_url = a.body["status_url"].as_str().unwrap().to_string();

    let queued = get(&t, &status_url, None).await;
    assert_eq!(queued.status, StatusCode::ACCEPTED, "{}", queued.body);
    assert_eq!(queued.body["status"], "IN_QUEUE", "{}", queued.body);
    assert!(queued.body["queue_position"].is_u64(), "{}", queued.body);
    assert_eq!(queued.body["logs"], Value::Null, "logs only when asked");
    assert_eq!(queued.header("x-fal-request-id"), Some(id.as_str()));

    let stream = t
        .http
        .get(format!("{status_url}/stream"))
        .query(&[("logs", "1")])
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    let events = tokio::spawn(read_sse_data(stream));

    // Free the worker: the blocker stops at its next step (or is dropped if still queued).
    let cancelled = put(&t, blocker.body["cancel_url"].as_str().unwrap(), None).await;
    assert!(
        matches!(cancelled.status.as_u16(), 200 | 202),
        "{}",
        cancelled.body
    );

    let seen = poll_until_completed(&t, &status_url).await;
    let running: Vec<&Answer> = seen
        .iter()
        .filter(|a| a.body["status"] == "IN_PROGRESS")
        .collect();
    assert!(!running.is_empty(), "never seen IN_PROGRESS");
    assert!(running.iter().all(|a| a.status == StatusCode::ACCEPTED));
    let step_logged = running.iter().any(|a| {
        a.body["logs"].as_array().is_some_and(|logs| {
            logs.iter().any(|l| {
                l["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("step ") && m.ends_with("/10"))
                    && l["timestamp"].is_string()
                    && l["level"] == "INFO"
            })
        })
    });
    assert!(
        step_logged,
        "no step log: {:?}",
        running.iter().map(|a| &a.body).collect::<Vec<_>>()
    );
    let done = seen.last().unwrap();
    assert_eq!(done.status, StatusCode::OK);
    assert!(
        done.body["metrics"]["inference_time"].as_f64().unwrap() > 0.0,
        "{}",
        done.body
    );
    assert!(done.body["logs"].is_array(), "{}", done.body);
    assert!(done.body.get("error").is_none(), "{}", done.body);

    let events = events.await.unwrap();
    let statuses: Vec<&str> = events
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.last(), Some(&"COMPLETED"), "{statuses:?}");
    assert!(statuses.contains(&"IN_PROGRESS"), "{statuses:?}");

    let result = get(&t, &response_url, None).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.body);
    assert_eq!(result.header("x-fal-request-id"), Some(id.as_str()));
    assert_mp4(&t, &result.body["video"]).await;

    let job = native_job(&t, &id).await;
    assert_eq!(job["request"]["negative_prompt"], "blur");
    assert_eq!(
        job["request"]["guidance_scale"], 5.0,
        "cfg 0.5 -> guidance 5"
    );
    assert_eq!(job["request"]["frames"], 41, "5 s");

    let blocker_status = blocker.body["status_url"].as_str().unwrap();
    let blocker_done = wait_for_status(&t, blocker_status, "COMPLETED").await;
    assert_eq!(blocker_done.body["error_type"], "request_cancelled");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_to_video_from_a_data_uri_with_host_derived_urls() {
    let t = start_on(bundled_pipeline(), 0, |c| c.public_url = None).await;
    let a = submit(
        &t,
        I2V,
        &json!({
            "prompt": "the gradient drifts slowly",
            "image_url": png_data_uri(64, 64),
            "duration": 5,
            "cfg_scale": 0.25,
        }),
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = a.body["request_id"].as_str().unwrap().to_string();
    // No public_url: the URLs come from the Host the client used.
    let status_url = a.body["status_url"].as_str().unwrap().to_string();
    assert_eq!(
        status_url,
        format!("{}/fal-ai/kling-video/requests/{id}/status", t.base)
    );
    let seen = poll_until_completed(&t, &status_url).await;
    let done = &seen.last().unwrap().body;
    assert!(done.get("error").is_none(), "{done}");
    let result = get(&t, a.body["response_url"].as_str().unwrap(), None).await;
    assert_eq!(result.status, StatusCode::OK, "{}", result.body);
    let video = &result.body["video"];
    assert!(
        video["url"].as_str().unwrap().starts_with(&t.base),
        "{video}"
    );
    assert_mp4(&t, video).await;

    let job = native_job(&t, &id).await;
    assert!(
        job["request"]["first_frame"]
            .as_str()
            .unwrap()
            .starts_with("data:image/png;base64,"),
        "{job}"
    );
    assert_eq!(job["request"]["guidance_scale"], 3.0, "cfg 0.25 -> 3");
    assert_eq!(
        job["request"]["negative_prompt"], "blur, distort, and low quality",
        "fal's default negative prompt"
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_host_answers_the_output() {
    let t = start_on(bundled_pipeline(), 0, |_| {}).await;
    let run = start_run_host(&t).await;
    let a = submit_to(
        &t,
        &run,
        T2V,
        &json!({"prompt": "a green ball bounces", "duration": "5", "aspect_ratio": "9:16"}),
        None,
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let id = a.header("x-fal-request-id").unwrap().to_string();
    assert_mp4(&t, &a.body["video"]).await;
    let job = native_job(&t, &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        job["request"]["height"].as_u64() > job["request"]["width"].as_u64(),
        "9:16 is portrait: {job}"
    );

    let unknown = submit_to(
        &t,
        &run,
        "fal-ai/flux/dev",
        &json!({"prompt": "x"}),
        None,
        None,
    )
    .await;
    assert_flat_error(&unknown, 404, "not_found");
    let invalid = submit_to(
        &t,
        &run,
        T2V,
        &json!({"prompt": "x", "duration": "7"}),
        None,
        None,
    )
    .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        detail_has(&invalid.body, "duration", "enum"),
        "{}",
        invalid.body
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_requests() {
    // Each progress report waits 250 ms: the first job holds the single worker for seconds.
    let t = start_on(bundled_pipeline(), 250, |_| {}).await;
    let run = start_run_host(&t).await;
    let first = submit(&t, T2V, &json!({"prompt": "a slow sunrise"})).await;
    let second = submit(&t, T2V, &json!({"prompt": "a slow sunset"})).await;
    let first_status = first.body["status_url"].as_str().unwrap().to_string();
    let second_status = second.body["status_url"].as_str().unwrap().to_string();
    wait_for_status(&t, &first_status, "IN_PROGRESS").await;

    let early = get(&t, first.body["response_url"].as_str().unwrap(), None).await;
    assert_flat_error(&early, 400, "request_in_progress");

    // A synchronous run that cannot start within its X-Fal-Request-Timeout is cancelled.
    let started = Instant::now();
    let timed_out = answer(
        t.http
            .post(format!("{run}/{T2V}"))
            .header("x-fal-request-timeout", "1.5")
            .json(&json!({"prompt": "never starts"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_flat_error(&timed_out, 504, "request_timeout");
    assert_eq!(timed_out.header("x-fal-request-timeout-type"), Some("user"));
    assert!(started.elapsed() >= Duration::from_millis(1500));
    let timed_out_id = timed_out.header("x-fal-request-id").unwrap().to_string();
    assert_eq!(native_job(&t, &timed_out_id).await["status"], "cancelled");

    let cancelled = put(&t, second.body["cancel_url"].as_str().unwrap(), None).await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.body);
    assert_eq!(cancelled.body, json!({"status": "OK"}));
    let stopping = put(&t, first.body["cancel_url"].as_str().unwrap(), None).await;
    assert_eq!(stopping.status, StatusCode::ACCEPTED, "{}", stopping.body);
    assert_eq!(stopping.body, json!({"status": "CANCELLATION_REQUESTED"}));

    for status_url in [&second_status, &first_status] {
        let done = wait_for_status(&t, status_url, "COMPLETED").await;
        assert_eq!(done.status, StatusCode::OK);
        assert_eq!(
            done.body["error_type"], "request_cancelled",
            "{}",
            done.body
        );
        assert!(done.body["error"].is_string(), "{}", done.body);
        assert!(done.body.get("logs").is_some(), "the SDK needs logs");
    }
    let result = get(&t, second.body["response_url"].as_str().unwrap(), None).await;
    assert_flat_error(&result, 400, "request_cancelled");
    let again = put(&t, second.body["cancel_url"].as_str().unwrap(), None).await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    assert_eq!(again.body, json!({"status": "ALREADY_COMPLETED"}));
    let missing = put(
        &t,
        &format!("{}/fal-ai/kling-video/requests/nope/cancel", t.base),
        None,
    )
    .await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(missing.body, json!({"status": "NOT_FOUND"}));
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_answer_fal_422s_and_unknown_ids_404() {
    let t = start_on(bundled_pipeline(), 0, |c| c.workers = 0).await;
    let a = submit(&t, T2V, &json!({})).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", a.body);
    assert!(detail_has(&a.body, "prompt", "missing"), "{}", a.body);
    assert_eq!(a.body["detail"][0]["loc"], json!(["body", "prompt"]));
    assert!(a.header("x-fal-request-id").is_some());

    let a = submit(
        &t,
        T2V,
        &json!({"prompt": "x", "duration": "7", "aspect_ratio": "4:3", "cfg_scale": 2}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["detail"].as_array().unwrap().len(), 3, "{}", a.body);
    assert!(detail_has(&a.body, "duration", "enum"), "{}", a.body);
    assert!(detail_has(&a.body, "aspect_ratio", "enum"), "{}", a.body);
    assert!(
        detail_has(&a.body, "cfg_scale", "less_than_equal"),
        "{}",
        a.body
    );

    let a = submit(
        &t,
        T2V,
        &json!({"prompt": "x", "image_url": "https://example.com/a.png"}),
    )
    .await;
    assert!(
        detail_has(&a.body, "image_url", "extra_forbidden"),
        "{}",
        a.body
    );
    let a = submit(&t, T2V, &json!({"prompt": "x", "seed": 3})).await;
    assert!(detail_has(&a.body, "seed", "extra_forbidden"), "{}", a.body);
    let a = submit(&t, I2V, &json!({"prompt": "x"})).await;
    assert!(detail_has(&a.body, "image_url", "missing"), "{}", a.body);
    let a = submit(
        &t,
        I2V,
        &json!({"prompt": "x", "image_url": "file:///etc/passwd"}),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        detail_has(&a.body, "image_url", "value_error"),
        "{}",
        a.body
    );
    let a = submit(&t, T2V, &json!({"prompt": "   "})).await;
    assert!(detail_has(&a.body, "prompt", "value_error"), "{}", a.body);
    let a = submit_to(
        &t,
        &t.base,
        T2V,
        &json!({"prompt": "x"}),
        Some("not a url"),
        None,
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        a.body["detail"][0]["loc"],
        json!(["query", "fal_webhook"]),
        "{}",
        a.body
    );
    let a = answer(
        t.http
            .post(format!("{}/{T2V}", t.base))
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["detail"][0]["type"], "json_invalid", "{}", a.body);

    let a = submit(
        &t,
        "fal-ai/kling-video/v1.6/pro/text-to-video",
        &json!({"prompt": "x"}),
    )
    .await;
    assert_flat_error(&a, 404, "not_found");
    let a = get(
        &t,
        &format!("{}/fal-ai/kling-video/requests/nope/status", t.base),
        None,
    )
    .await;
    assert_flat_error(&a, 404, "not_found");
    // The fal routes leave every other path to the native API's 404.
    for path in ["/v1/nothing", "/a/b/c/d/e"] {
        let a = get(&t, &format!("{}{path}", t.base), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(a.body["error"]["code"], "not_found", "{path}: {}", a.body);
    }
    t.server.shutdown().await;

    // Only the configured ids name the model; a full queue answers 429 before enqueueing.
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.workers = 0;
        c.model_ids = vec![T2V.into()];
        c.max_queued = 1;
        c.retry_after_seconds = 7;
    })
    .await;
    let a = submit(
        &t,
        I2V,
        &json!({"prompt": "x", "image_url": png_data_uri(8, 8)}),
    )
    .await;
    assert_flat_error(&a, 404, "not_found");
    let a = submit(&t, T2V, &json!({"prompt": "x"})).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = submit(&t, T2V, &json!({"prompt": "x"})).await;
    assert_flat_error(&a, 429, "queue_full");
    assert_eq!(a.header("retry-after"), Some("7"));
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_guard_requests() {
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.workers = 0;
        c.keys = vec!["k1".into(), "k2".into()];
    })
    .await;
    let body = json!({"prompt": "a fox"});
    let a = submit_to(&t, &t.base, T2V, &body, None, None).await;
    assert_flat_error(&a, 401, "unauthorized");
    let a = submit_to(&t, &t.base, T2V, &body, None, Some("nope")).await;
    assert_flat_error(&a, 401, "unauthorized");
    let a = submit_to(&t, &t.base, T2V, &body, None, Some("k1")).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let status_url = a.body["status_url"].as_str().unwrap();

    let bearer = answer(
        t.http
            .get(status_url)
            .bearer_auth("k1")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(bearer.status, StatusCode::ACCEPTED, "{}", bearer.body);
    assert_eq!(bearer.body["status"], "IN_QUEUE");
    let other = get(&t, status_url, Some("k2")).await;
    assert_flat_error(&other, 404, "not_found");
    let anonymous = get(&t, a.body["response_url"].as_str().unwrap(), None).await;
    assert_flat_error(&anonymous, 401, "unauthorized");
    let cancel = put(&t, a.body["cancel_url"].as_str().unwrap(), Some("k2")).await;
    assert_eq!(cancel.status, StatusCode::NOT_FOUND);
    assert_eq!(cancel.body, json!({"status": "NOT_FOUND"}));
    let cancel = put(&t, a.body["cancel_url"].as_str().unwrap(), Some("k1")).await;
    assert_eq!(cancel.body, json!({"status": "OK"}));
    t.server.shutdown().await;
}

#[derive(Default)]
struct Hooks {
    ok: Vec<Vec<u8>>,
    error: Vec<Vec<u8>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_carry_fal_payloads() {
    let hooks = Arc::new(Mutex::new(Hooks::default()));
    let (ok_state, error_state) = (hooks.clone(), hooks.clone());
    let receiver = axum::Router::new()
        .route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let state = ok_state.clone();
                async move {
                    let mut hooks = state.lock().unwrap();
                    hooks.ok.push(body.to_vec());
                    // Fails twice: the server must retry.
                    if hooks.ok.len() < 3 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/error-hook",
            post(move |body: axum::body::Bytes| {
                let state = error_state.clone();
                async move {
                    state.lock().unwrap().error.push(body.to_vec());
                    StatusCode::OK
                }
            }),
        )
        .route(
            "/missing.png",
            axum::routing::get(|| async { StatusCode::NOT_FOUND }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let t = start_on(bundled_pipeline(), 0, |_| {}).await;
    let ok = submit_to(
        &t,
        &t.base,
        T2V,
        &json!({"prompt": "a yellow star spins"}),
        Some(&format!("{receiver_base}/hook")),
        None,
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    let ok_id = ok.body["request_id"].as_str().unwrap().to_string();
    assert_eq!(ok.body["gateway_request_id"], ok_id.as_str());
    // An image the worker cannot download: the job fails, and says so in fal's terms.
    let failing = submit_to(
        &t,
        &t.base,
        I2V,
        &json!({"prompt": "x", "image_url": format!("{receiver_base}/missing.png")}),
        Some(&format!("{receiver_base}/error-hook")),
        None,
    )
    .await;
    assert_eq!(failing.status, StatusCode::OK, "{}", failing.body);
    let failing_id = failing.body["request_id"].as_str().unwrap().to_string();

    let store = t.server.store();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ok_attempts = store.webhook_attempts(&ok_id).await.unwrap();
        let error_attempts = store.webhook_attempts(&failing_id).await.unwrap();
        if ok_attempts.len() >= 3 && !error_attempts.is_empty() {
            let codes: Vec<Option<u16>> = ok_attempts.iter().map(|a| a.status_code).collect();
            assert_eq!(codes, vec![Some(500), Some(500), Some(200)]);
            break;
        }
        assert!(Instant::now() < deadline, "webhooks not delivered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ok_body, error_body) = {
        let hooks = hooks.lock().unwrap();
        assert_eq!(hooks.ok.len(), 3);
        assert_eq!(hooks.ok[0], hooks.ok[2], "each retry sends the same body");
        (
            serde_json::from_slice::<Value>(&hooks.ok[2]).unwrap(),
            serde_json::from_slice::<Value>(&hooks.error[0]).unwrap(),
        )
    };
    assert_eq!(ok_body["request_id"], ok_id.as_str());
    assert_eq!(ok_body["gateway_request_id"], ok_id.as_str());
    assert_eq!(ok_body["status"], "OK");
    assert_eq!(ok_body["error"], Value::Null);
    assert_mp4(&t, &ok_body["payload"]["video"]).await;

    assert_eq!(error_body["request_id"], failing_id.as_str());
    assert_eq!(error_body["status"], "ERROR");
    assert_eq!(error_body["error"], "Invalid status code: 422");
    assert!(
        detail_has(&error_body["payload"], "image_url", "file_download_error"),
        "{error_body}"
    );

    let status = get(&t, failing.body["status_url"].as_str().unwrap(), None).await;
    assert_eq!(status.body["status"], "COMPLETED");
    assert_eq!(status.body["error_type"], "file_download_error");
    let result = get(&t, failing.body["response_url"].as_str().unwrap(), None).await;
    assert_eq!(result.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        detail_has(&result.body, "image_url", "file_download_error"),
        "{}",
        result.body
    );
    t.server.shutdown().await;
}
