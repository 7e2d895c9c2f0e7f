//! The native API over real HTTP, with real generation on the tiny fixture checkpoint
//! (text-only, 9 frames at 48x32, 2-4 steps).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use kiln_server::{sign_body, ServerConfig};
use serde_json::{json, Value};

mod common;

use common::{start, TestServer, WEBHOOK_SECRET};

fn small(extra: Value) -> Value {
    let mut body = json!({
        "prompt": "a red circle moves to the right",
        "frames": 9, "width": 48, "height": 32, "steps": 2, "seed": 7,
    });
    if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            b.insert(k.clone(), v.clone());
        }
    }
    body
}

impl TestServer {
    async fn submit(&self, body: &Value) -> (StatusCode, HeaderMap, Value) {
        self.submit_as(None, body).await
    }

    async fn submit_as(&self, key: Option<&str>, body: &Value) -> (StatusCode, HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/videos", self.base))
            .json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (status, headers, response.json().await.unwrap())
    }

    async fn get_json(&self, path: &str) -> (StatusCode, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn wait_status(&self, id: &str, want: &[&str]) -> Value {
        for _ in 0..600 {
            let (_, job) = self.get_json(&format!("/v1/videos/{id}")).await;
            if want.contains(&job["status"].as_str().unwrap_or("")) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("job {id} never reached {want:?}");
    }
}

/// Reads server-sent events until the stream ends: (event name, data).
async fn read_events(mut response: reqwest::Response) -> Vec<(String, Value)> {
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
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    name = Some(v.trim().to_string());
                }
                if let Some(v) = line.strip_prefix("data:") {
                    data = serde_json::from_str(v.trim()).ok();
                }
            }
            Some((name?, data.unwrap_or(Value::Null)))
        })
        .collect()
}

fn assert_error(status: StatusCode, body: &Value, want_status: u16, field: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().len() > 10,
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_poll_events_and_files() {
    let t = start(150, |_| {}).await;
    let (status, headers, job) = t.submit(&small(json!({"steps": 3}))).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "queued");
    assert_eq!(job["queue_position"], 0);
    let id = job["id"].as_str().unwrap().to_string();
    assert_eq!(headers["location"], format!("/v1/videos/{id}"));
    assert_eq!(job["links"]["events"], format!("/v1/videos/{id}/events"));
    assert_eq!(job["request"]["frames"], 9);

    let events = t
        .http
        .get(format!("{}/v1/videos/{id}/events", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let events = read_events(events).await;
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        events
            .iter()
            .any(|(n, d)| n == "running" && d["phase"] == "denoising" && d["steps"] == 3),
        "{events:?}"
    );
    assert_eq!(names.last(), Some(&"completed"), "{names:?}");
    let outputs = &events.last().unwrap().1["outputs"];
    assert_eq!(outputs[0]["frames"], 9);

    let job = t.wait_status(&id, &["succeeded"]).await;
    let output = &job["result"]["outputs"][0];
    assert_eq!(output["content_type"], "video/mp4");
    assert_eq!(
        (output["width"].as_u64(), output["height"].as_u64()),
        (Some(48), Some(32))
    );
    assert_eq!(job["result"]["seed"], 7);
    let url = output["url"].as_str().unwrap();
    let file = t.http.get(url).send().await.unwrap();
    assert_eq!(file.status(), StatusCode::OK);
    assert_eq!(file.headers()["content-type"], "video/mp4");
    let bytes = file.bytes().await.unwrap();
    assert_eq!(&bytes[4..8], b"ftyp", "an MP4 starts with its ftyp box");
    // Players seek with byte ranges.
    let part = t
        .http
        .get(url)
        .header("range", "bytes=4-7")
        .send()
        .await
        .unwrap();
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 4-7/{}", bytes.len()).as_str()
    );
    assert_eq!(&part.bytes().await.unwrap()[..], b"ftyp");
    let poster = t
        .http
        .get(output["poster_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(
        &poster.bytes().await.unwrap()[..2],
        &[0xFF, 0xD8],
        "JPEG poster"
    );

    let (status, missing) = t.get_json("/files/nope_0.mp4").await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );

    let (status, list) = t.get_json("/v1/videos?limit=10").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["data"][0]["id"], id.as_str());

    let metrics = t
        .http
        .get(format!("{}/metrics", t.base))
        .send()
        .await
        .unwrap();
    let metrics = metrics.text().await.unwrap();
    assert!(metrics.contains("kiln_queue_depth 0"), "{metrics}");
    assert!(
        metrics.contains("kiln_jobs{state=\"succeeded\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("kiln_step_seconds_count 3"), "{metrics}");
    assert!(
        metrics.contains("kiln_http_request_duration_seconds_count{method=\"POST\",route=\"/v1/videos\",status=\"202\"} 1"),
        "{metrics}"
    );
    let (status, doc) = t.get_json("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(doc["paths"]["/v1/videos"]["post"].is_object(), "{doc}");
    assert!(
        doc["components"]["schemas"]["VideoRequest"]["properties"]["camera_control"].is_object()
    );
    let (status, health) = t.get_json("/healthz").await;
    assert_eq!((status, &health["status"]), (StatusCode::OK, &json!("ok")));
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_queued_and_running_jobs() {
    let t = start(250, |_| {}).await;
    let (_, _, running) = t.submit(&small(json!({"steps": 4}))).await;
    let (_, _, queued) = t.submit(&small(json!({}))).await;
    let running_id = running["id"].as_str().unwrap();
    let queued_id = queued["id"].as_str().unwrap();
    // 0 or 1: the first job may already have been claimed.
    assert!(queued["queue_position"].is_u64(), "{queued}");
    t.wait_status(running_id, &["running"]).await;

    let response = t
        .http
        .post(format!("{}/v1/videos/{queued_id}/cancel", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap()["status"],
        "cancelled"
    );

    let response = t
        .http
        .post(format!("{}/v1/videos/{running_id}/cancel", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let job = t
        .wait_status(running_id, &["cancelled", "succeeded", "failed"])
        .await;
    assert_eq!(job["status"], "cancelled", "{job}");
    let step = job["progress"]["step"].as_u64().unwrap_or(0);
    assert!(step < 4, "stopped before the last step: {job}");

    let response = t
        .http
        .post(format!("{}/v1/videos/{running_id}/cancel", t.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CONFLICT);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_name_their_field() {
    let t = start(0, |c| {
        c.workers = 0;
        c.max_body_bytes = 4096;
    })
    .await;
    let (s, _, b) = t.submit(&small(json!({"prompt": "  "}))).await;
    assert_error(s, &b, 422, "prompt");
    let (s, _, b) = t.submit(&small(json!({"cfg_scale": 2}))).await;
    assert_error(s, &b, 422, "cfg_scale");
    let (s, _, b) = t
        .submit(&small(json!({"camera_control": {"type": "spin"}})))
        .await;
    assert_error(s, &b, 422, "camera_control.type");
    let (s, _, b) = t
        .submit(&small(
            json!({"images": [{"image": "https://example.com/a.png", "frame": "first"}]}),
        ))
        .await;
    assert_error(s, &b, 422, "images");
    assert_eq!(b["error"]["code"], "unsupported_by_model");
    let (s, _, b) = t
        .submit(&small(
            json!({"camera_control": {"type": "simple", "config": {"pan": 3}}}),
        ))
        .await;
    assert_error(s, &b, 422, "camera_control");
    let (s, _, b) = t.submit(&small(json!({"frames": 10}))).await;
    assert_error(s, &b, 422, "frames");
    let (s, _, b) = t.submit(&small(json!({"promt": "typo"}))).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    assert!(
        b["error"]["message"].as_str().unwrap().contains("promt"),
        "{b}"
    );

    let response = t
        .http
        .post(format!("{}/v1/videos", t.base))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = t
        .http
        .post(format!("{}/v1/videos", t.base))
        .json(&small(json!({"prompt": "x".repeat(5000)})))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
    let (s, b) = t.get_json("/v1/nothing").await;
    assert_eq!(
        (s, &b["error"]["code"]),
        (StatusCode::NOT_FOUND, &json!("not_found"))
    );
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_see_only_their_own_jobs() {
    let t = start(0, |c| {
        c.workers = 0;
        c.keys = vec!["alpha".into(), "beta".into()];
    })
    .await;
    let (s, h, b) = t.submit(&small(json!({}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(h["www-authenticate"], "Bearer");
    let (s, _, _) = t.submit_as(Some("gamma"), &small(json!({}))).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, job) = t.submit_as(Some("alpha"), &small(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let url = format!("{}/v1/videos/{}", t.base, job["id"].as_str().unwrap());
    let as_beta = t.http.get(&url).bearer_auth("beta").send().await.unwrap();
    assert_eq!(as_beta.status(), StatusCode::NOT_FOUND);
    let as_alpha = t.http.get(&url).bearer_auth("alpha").send().await.unwrap();
    assert_eq!(as_alpha.status(), StatusCode::OK);
    let list = t
        .http
        .get(format!("{}/v1/videos", t.base))
        .bearer_auth("beta")
        .send()
        .await
        .unwrap();
    assert_eq!(list.json::<Value>().await.unwrap()["data"], json!([]));
    let nonloopback = ServerConfig::default();
    assert!(kiln_server::bind_allowed("0.0.0.0:80".parse().unwrap(), &nonloopback).is_err());
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_answers_429_with_retry_after() {
    let t = start(0, |c| {
        c.workers = 0;
        c.max_queued = 1;
        c.retry_after_seconds = 7;
    })
    .await;
    let (s, _, _) = t.submit(&small(json!({}))).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, h, b) = t.submit(&small(json!({}))).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{b}");
    assert_eq!(h["retry-after"], "7");
    assert_eq!(b["error"]["code"], "queue_full");
    t.server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_outputs_answer_410() {
    let t = start(0, |_| {}).await;
    let (_, _, job) = t.submit(&small(json!({"ttl": 1}))).await;
    let id = job["id"].as_str().unwrap();
    let job = t.wait_status(id, &["succeeded"]).await;
    let url = job["result"]["outputs"][0]["url"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        t.http.get(&url).send().await.unwrap().status(),
        StatusCode::OK
    );
    let job = t.wait_status(id, &["expired"]).await;
    assert_eq!(job["status"], "expired");
    let response = t.http.get(&url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::GONE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "expired");
    t.server.shutdown().await;
}

#[derive(Default)]
struct Received {
    hooks: Vec<(Option<String>, Vec<u8>)>,
    uploads: Vec<(Option<String>, Vec<u8>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_and_upload_put() {
    let received = Arc::new(Mutex::new(Received::default()));
    let hook_state = received.clone();
    let upload_state = received.clone();
    let receiver = axum::Router::new()
        .route(
            "/hook",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = hook_state.clone();
                async move {
                    let mut r = state.lock().unwrap();
                    let signature = headers
                        .get("x-kiln-signature")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    r.hooks.push((signature, body.to_vec()));
                    if r.hooks.len() < 3 {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/upload",
            put(move |headers: HeaderMap, body: axum::body::Bytes| {
                let state = upload_state.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    state
                        .lock()
                        .unwrap()
                        .uploads
                        .push((content_type, body.to_vec()));
                    StatusCode::CREATED
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    let t = start(0, |_| {}).await;
    let (s, _, job) = t
        .submit(&small(json!({
            "webhook_url": format!("{receiver_base}/hook"),
            "upload_endpoint": format!("{receiver_base}/upload"),
            "include_cost": true,
        })))
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let job = t.wait_status(id, &["succeeded", "failed"]).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["result"]["upload"]["ok"], true, "{job}");
    assert!(job["result"]["cost"]["amount"].is_number(), "{job}");

    let store = t.server.store();
    let mut attempts = Vec::new();
    for _ in 0..200 {
        attempts = store.webhook_attempts(id).await.unwrap();
        if attempts.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let codes: Vec<Option<u16>> = attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, vec![Some(500), Some(500), Some(200)]);

    let r = received.lock().unwrap();
    assert_eq!(r.hooks.len(), 3);
    let (signature, body) = &r.hooks[2];
    assert_eq!(
        signature.as_deref(),
        Some(sign_body(WEBHOOK_SECRET, body).as_str())
    );
    let delivered: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        (delivered["id"].as_str(), &delivered["status"]),
        (Some(id), &json!("succeeded"))
    );
    assert_eq!(r.uploads.len(), 1);
    let (content_type, bytes) = &r.uploads[0];
    assert_eq!(content_type.as_deref(), Some("video/mp4"));
    assert_eq!(&bytes[4..8], b"ftyp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_delivery_urls_are_refused_by_default() {
    let t = start(0, |c| {
        c.workers = 0;
        c.allow_private_addresses = false;
    })
    .await;
    let (s, _, b) = t
        .submit(&small(json!({"webhook_url": "http://127.0.0.1:9/hook"})))
        .await;
    assert_error(s, &b, 422, "webhook_url");
    let (s, _, b) = t
        .submit(&small(json!({"upload_endpoint": "http://[::1]:9/up"})))
        .await;
    assert_error(s, &b, 422, "upload_endpoint");
    t.server.shutdown().await;
}
