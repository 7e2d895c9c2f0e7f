//! The WaveSpeed dialect over real HTTP, with real generation on kiln's bundled model:
//! the wire format the `wavespeed` Python SDK 2.0.5 reads (envelope, statuses, uploads,
//! sync mode) and WaveSpeed's signed webhook.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

mod common;

use common::{bundled_pipeline, start_on, TestServer};

const T2V: &str = "kwaivgi/kling-v2.1-t2v-master";
const I2V: &str = "kwaivgi/kling-v2.1-i2v-master";

impl TestServer {
    async fn post_json(
        &self,
        path: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        (
            status,
            headers,
            response.json().await.unwrap_or(Value::Null),
        )
    }

    async fn get_url(&self, url: &str, key: Option<&str>) -> (StatusCode, Value) {
        // The SDK sends its JSON content type on GETs too.
        let mut request = self
            .http
            .get(url)
            .header("content-type", "application/json");
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        (
            response.status(),
            response.json().await.unwrap_or(Value::Null),
        )
    }

    /// Polls `urls.get` as the SDK does until a terminal status; returns every status seen
    /// and the final `data`.
    async fn wait_prediction(&self, get_url: &str, key: Option<&str>) -> (Vec<String>, Value) {
        let mut seen = Vec::new();
        for _ in 0..1200 {
            let (status, body) = self.get_url(get_url, key).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert_eq!(
                (body["code"].as_u64(), &body["message"]),
                (Some(200), &json!("success"))
            );
            let data = body["data"].clone();
            let current = data["status"].as_str().unwrap().to_string();
            if seen.last() != Some(&current) {
                seen.push(current.clone());
            }
            if ["completed", "failed", "cancelled", "deleted"].contains(&current.as_str()) {
                return (seen, data);
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("prediction at {get_url} never ended");
    }

    async fn download_mp4(&self, url: &str) {
        let file = self.http.get(url).send().await.unwrap();
        assert_eq!(file.status(), StatusCode::OK, "{url}");
        let bytes = file.bytes().await.unwrap();
        assert_eq!(&bytes[4..8], b"ftyp", "an MP4 starts with its ftyp box");
    }
}

/// A 96x64 JPEG with a gradient, made with kiln's own poster encoder.
fn test_jpeg() -> Vec<u8> {
    let (w, h) = (96, 64);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 255 / w) as u8, (y * 255 / h) as u8, 128]);
        }
    }
    kiln_media::video_out::encode_poster_jpeg(&rgb, w, h, 90).unwrap()
}

/// A WaveSpeed error: that HTTP status, the same `code`, `data: null`, a message naming `needle`.
fn assert_error(status: StatusCode, body: &Value, want: u16, needle: &str) {
    assert_eq!(status.as_u16(), want, "{body}");
    assert_eq!(body["code"].as_u64(), Some(u64::from(want)), "{body}");
    assert!(body["data"].is_null(), "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains(needle), "{needle:?} not in {message:?}");
}

fn is_iso_timestamp(text: &str) -> bool {
    // 2023-04-01T12:34:56.789Z
    text.len() == 24 && text.ends_with('Z') && text.as_bytes()[10] == b'T'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t2v_submit_poll_and_download() {
    // URLs from the Host header, as a server without public_url hands them out.
    let t = start_on(bundled_pipeline(), 30, |c| c.public_url = None).await;
    let (status, _, body) = t
        .post_json(
            &format!("/api/v3/{T2V}"),
            Some("local-test-key"),
            &json!({"prompt": "a red fox in snow", "negative_prompt": "blur", "aspect_ratio": "16:9",
                    "duration": 5, "guidance_scale": 0.5}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the SDK takes 200 only: {body}");
    assert_eq!(body["code"], 200);
    assert_eq!(body["message"], "success");
    let data = &body["data"];
    let id = data["id"].as_str().unwrap().to_string();
    assert_eq!(data["model"], T2V);
    assert_eq!(data["status"], "created");
    assert_eq!(data["outputs"], json!([]));
    assert_eq!(data["has_nsfw_contents"], json!([]));
    assert_eq!(data["error"], "");
    assert_eq!(data["executionTime"], 0);
    assert_eq!(data["timings"]["inference"], 0);
    assert!(
        is_iso_timestamp(data["created_at"].as_str().unwrap()),
        "{data}"
    );
    let get_url = data["urls"]["get"].as_str().unwrap().to_string();
    assert_eq!(
        get_url,
        format!("{}/api/v3/predictions/{id}/result", t.base)
    );

    let (seen, data) = t.wait_prediction(&get_url, Some("local-test-key")).await;
    assert_eq!(seen.last().map(String::as_str), Some("completed"), "{data}");
    assert!(
        seen.iter()
            .all(|s| ["created", "processing", "completed"].contains(&s.as_str())),
        "{seen:?}"
    );
    assert!(seen.contains(&"processing".to_string()), "{seen:?}");
    let outputs = data["outputs"].as_array().unwrap();
    assert_eq!(outputs.len(), 1, "{data}");
    let url = outputs[0].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/files/", t.base)), "{url}");
    assert_eq!(data["has_nsfw_contents"], json!([false]));
    assert!(data["timings"]["inference"].as_u64().unwrap() > 0, "{data}");
    assert!(data["executionTime"].as_u64().unwrap() > 0, "{data}");
    assert_eq!(data["error"], "");
    t.download_mp4(url).await;

    // The older poll URL answers the same prediction.
    let (status, alias) = t
        .get_url(
            &format!("{}/api/v3/predictions/{id}", t.base),
            Some("local-test-key"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&alias["data"]["id"], &alias["data"]["status"]),
        (&json!(id), &json!("completed"))
    );
    assert_eq!(alias["data"]["outputs"], data["outputs"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn i2v_from_an_uploaded_image() {
    let t = start_on(bundled_pipeline(), 0, |c| c.keys = vec!["k1".into()]).await;
    let jpeg = test_jpeg();

    // SDK upload(): a ticket, then a PUT with the ticket's headers only (no key).
    let (status, _, ticket) = t
        .post_json(
            "/api/v3/media/uploads",
            Some("k1"),
            &json!({"filename": "first.jpg", "size": jpeg.len(), "content_type": "image/jpeg"}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ticket}");
    assert_eq!(ticket["code"], 200);
    let upload = &ticket["data"]["upload"];
    assert_eq!(upload["method"], "PUT");
    assert_eq!(upload["headers"], json!({}));
    let put_url = upload["url"].as_str().unwrap();
    let download_url = ticket["data"]["download_url"].as_str().unwrap().to_string();

    // Submitting before the PUT names the empty upload.
    let (status, _, body) = t
        .post_json(
            &format!("/api/v3/{I2V}"),
            Some("k1"),
            &json!({"prompt": "the scene comes alive", "image": download_url}),
        )
        .await;
    assert_error(status, &body, 400, "image");

    let put = t.http.put(put_url).body(jpeg.clone()).send().await.unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let again = t.http.put(put_url).body(jpeg.clone()).send().await.unwrap();
    assert_eq!(
        again.status(),
        StatusCode::CONFLICT,
        "an upload is written once"
    );
    let fetched = t.http.get(&download_url).send().await.unwrap();
    assert_eq!(fetched.headers()["content-type"], "image/jpeg");
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), jpeg.as_slice());

    // i2v needs its image.
    let (status, _, body) = t
        .post_json(
            &format!("/api/v3/{I2V}"),
            Some("k1"),
            &json!({"prompt": "the scene comes alive"}),
        )
        .await;
    assert_error(status, &body, 400, "image");

    let (status, _, body) = t
        .post_json(
            &format!("/api/v3/{I2V}"),
            Some("k1"),
            &json!({"prompt": "the scene comes alive", "image": download_url, "duration": 5, "guidance_scale": 0.4}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"]["model"], I2V);
    let get_url = body["data"]["urls"]["get"].as_str().unwrap().to_string();
    let (_, data) = t.wait_prediction(&get_url, Some("k1")).await;
    assert_eq!(data["status"], "completed", "{data}");
    t.download_mp4(data["outputs"][0].as_str().unwrap()).await;
    // A key the server does not know gets 401.
    let (status, body) = t.get_url(&get_url, Some("k2")).await;
    assert_error(status, &body, 401, "API key");

    // The legacy multipart upload.
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(jpeg.clone())
            .file_name("legacy.jpg")
            .mime_str("image/jpeg")
            .unwrap(),
    );
    let response = t
        .http
        .post(format!("{}/api/v3/media/upload/binary", t.base))
        .bearer_auth("k1")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let legacy: Value = response.json().await.unwrap();
    assert_eq!(legacy["code"], 200);
    assert_eq!(legacy["data"]["type"], "image");
    assert_eq!(legacy["data"]["filename"], "legacy.jpg");
    assert_eq!(legacy["data"]["size"], jpeg.len());
    let fetched = t
        .http
        .get(legacy["data"]["download_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), jpeg.as_slice());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_answers_when_done() {
    let t = start_on(bundled_pipeline(), 0, |_| {}).await;
    let (status, _, body) = t
        .post_json(
            &format!("/api/v3/{T2V}"),
            Some("local-test-key"),
            &json!({"prompt": "waves on a beach", "aspect_ratio": "1:1", "enable_sync_mode": true}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let data = &body["data"];
    assert_eq!(data["status"], "completed", "{body}");
    assert_eq!(data["has_nsfw_contents"], json!([false]));
    t.download_mp4(data["outputs"][0].as_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_auth_and_full_queue() {
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.keys = vec!["k1".into()];
        c.workers = 0;
        c.max_queued = 1;
        c.retry_after_seconds = 7;
    })
    .await;
    let submit = format!("/api/v3/{T2V}");
    let ok = json!({"prompt": "a lighthouse at dusk"});

    let (s, h, b) = t.post_json(&submit, None, &ok).await;
    assert_error(s, &b, 401, "Bearer");
    assert_eq!(h["www-authenticate"], "Bearer");
    let (s, _, b) = t.post_json(&submit, Some("wrong"), &ok).await;
    assert_error(s, &b, 401, "API key");

    let cases = [
        (
            json!({"prompt": "x", "guidance_scale": 2}),
            "guidance_scale",
        ),
        (json!({"prompt": "x", "duration": 7}), "duration"),
        (json!({"prompt": "x", "duration": "ten"}), "duration"),
        (
            json!({"prompt": "x", "aspect_ratio": "4:3"}),
            "aspect_ratio",
        ),
        (
            json!({"prompt": "x", "guidance_scale": "high"}),
            "guidance_scale",
        ),
        (json!({"prompt": "x", "num_frames": 9}), "num_frames"),
        (json!({"prompt": "x", "image": "/etc/passwd"}), "image"),
        (json!({"negative_prompt": "blur"}), "prompt"),
    ];
    for (body, field) in cases {
        let (s, _, b) = t.post_json(&submit, Some("k1"), &body).await;
        assert_error(s, &b, 400, field);
    }
    let (s, _, b) = t
        .post_json(&format!("{submit}?webhook=not-a-url"), Some("k1"), &ok)
        .await;
    assert_error(s, &b, 400, "webhook");
    let response = t
        .http
        .post(format!("{}{submit}", t.base))
        .bearer_auth("k1")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    let status = response.status();
    assert_error(status, &response.json().await.unwrap(), 400, "JSON");

    let (s, _, b) = t
        .post_json("/api/v3/acme/unknown-model", Some("k1"), &ok)
        .await;
    assert_error(s, &b, 404, "acme/unknown-model");
    let (s, b) = t
        .get_url(
            &format!("{}/api/v3/predictions/nope/result", t.base),
            Some("k1"),
        )
        .await;
    assert_error(s, &b, 404, "nope");

    // One job queued (no workers) fills the queue; the next is 429 with Retry-After.
    let (s, _, b) = t.post_json(&submit, Some("k1"), &ok).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = t
        .get_url(b["data"]["urls"]["get"].as_str().unwrap(), Some("k1"))
        .await;
    assert_eq!(
        (s, &b["data"]["status"]),
        (StatusCode::OK, &json!("created"))
    );
    let (s, h, b) = t.post_json(&submit, Some("k1"), &ok).await;
    assert_error(s, &b, 429, "retry after 7");
    assert_eq!(h["retry-after"], "7");
    t.server.shutdown().await;
}

#[derive(Default)]
struct Received {
    hooks: Vec<(HeaderMap, Vec<u8>)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhook_is_retried() {
    let received = Arc::new(Mutex::new(Received::default()));
    let hook_state = received.clone();
    let receiver = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let state = hook_state.clone();
            async move {
                let mut r = state.lock().unwrap();
                r.hooks.push((headers, body.to_vec()));
                if r.hooks.len() < 3 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::OK
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, receiver).await });

    // WaveSpeed secrets carry a whsec_ prefix that is not part of the HMAC key.
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.webhook.secret = Some("whsec_wavespeed-test".into());
    })
    .await;
    let prompt = json!({"prompt": "a paper boat on a stream", "duration": 5});
    let (status, _, body) = t
        .post_json(
            &format!("/api/v3/{T2V}?webhook={hook_url}"),
            Some("local-test-key"),
            &prompt,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["data"]["id"].as_str().unwrap().to_string();

    let store = t.server.store();
    let mut codes = Vec::new();
    for _ in 0..600 {
        codes = store
            .webhook_attempts(&id)
            .await
            .unwrap()
            .iter()
            .map(|a| a.status_code)
            .collect();
        if codes.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(codes, vec![Some(500), Some(500), Some(200)]);

    // The last delivery, copied out so no lock is held across the download below.
    let (headers, body) = received.lock().unwrap().hooks[2].clone();
    let body = body.as_slice();
    let header = |name: &str| headers[name].to_str().unwrap().to_string();
    assert_eq!(header("webhook-id"), id);
    let timestamp = header("webhook-timestamp");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        now.abs_diff(timestamp.parse().unwrap()) < 300,
        "{timestamp}"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(b"wavespeed-test").unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    assert_eq!(
        header("webhook-signature"),
        format!("v3,{}", hex::encode(mac.finalize().into_bytes()))
    );

    // The data object itself, not the envelope.
    let data: Value = serde_json::from_slice(body).unwrap();
    assert!(data.get("code").is_none(), "{data}");
    assert_eq!(
        (&data["id"], &data["status"], &data["model"]),
        (&json!(id), &json!("completed"), &json!(T2V))
    );
    assert_eq!(data["input"], prompt);
    assert_eq!(data["has_nsfw_contents"], json!([false]));
    assert_eq!(
        data["urls"]["get"],
        format!("{}/api/v3/predictions/{id}/result", t.base)
    );
    t.download_mp4(data["outputs"][0].as_str().unwrap()).await;
}
