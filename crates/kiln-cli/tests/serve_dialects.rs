//! The real `kiln serve` binary on 127.0.0.1, driven in every dialect over HTTP and
//! WebSocket with API keys in each dialect's header form: text- and image-to-video, a bad
//! input in each error shape, cancel, a webhook receiver that fails twice before accepting,
//! an upload receiver, and TTL expiry. (Every route in depth: kiln-server's tests.)

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::routing::{post, put};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "test-key";

struct Kiln {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Kiln {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start(dir: &Path) -> Kiln {
    let config = dir.join("kiln.toml");
    // Private addresses allowed: the webhook and upload receivers live on loopback.
    std::fs::write(
        &config,
        format!(
            "keys = [\"{KEY}\"]\nallow_private_addresses = true\nsweep_seconds = 1\nwebhook_secret = \"whsec_abc\"\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data"])
        .arg(dir.join("data"))
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("kiln serve starts");
    let kiln = Kiln {
        child,
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(r) = kiln.http.get(format!("{}/healthz", kiln.base)).send().await {
            if r.status().is_success() {
                return kiln;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("kiln serve did not become healthy");
}

fn png_data_uri() -> String {
    let mut img = image::RgbImage::from_pixel(64, 64, image::Rgb([128, 128, 128]));
    for y in 20..40 {
        for x in 10..30 {
            img.put_pixel(x, y, image::Rgb([220, 30, 30]));
        }
    }
    let mut bytes = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    use base64::Engine;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

async fn is_mp4(kiln: &Kiln, url: &str) {
    let bytes = kiln
        .http
        .get(url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[4..8], b"ftyp", "{url} is not an MP4");
}

#[derive(Default)]
struct Received {
    hooks: Vec<(Option<String>, Vec<u8>)>,
    uploads: Vec<Vec<u8>>,
}

/// POST /hook fails twice, then accepts; PUT /upload accepts.
async fn receiver(received: Arc<Mutex<Received>>) -> String {
    let hooks = received.clone();
    let router = axum::Router::new()
        .route(
            "/hook",
            post(
                move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                    let hooks = hooks.clone();
                    async move {
                        let mut r = hooks.lock().unwrap();
                        let signature = headers
                            .get("webhook-signature")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string);
                        r.hooks.push((signature, body.to_vec()));
                        if r.hooks.len() < 3 {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        }
                    }
                },
            ),
        )
        .route(
            "/upload",
            put(move |body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    received.lock().unwrap().uploads.push(body.to_vec());
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let kiln = start(dir.path()).await;
    let received = Arc::new(Mutex::new(Received::default()));
    let hooks_base = receiver(received.clone()).await;
    let http = &kiln.http;
    let base = &kiln.base;

    // fal: a wrong key is fal's 401; a bad cfg_scale is fal's 422 naming it.
    let t2v = format!("{base}/fal-ai/kling-video/v2.1/master/text-to-video");
    let r = http
        .post(&t2v)
        .header("authorization", "Key nope")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .post(&t2v)
        .header("authorization", format!("Key {KEY}"))
        .json(&json!({"prompt": "a red circle moves right", "cfg_scale": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body["detail"][0]["loc"],
        json!(["body", "cfg_scale"]),
        "{body}"
    );
    // fal: two jobs; the second is cancelled while queued behind the first.
    let submit = |prompt: &'static str| {
        http.post(&t2v)
            .header("authorization", format!("Key {KEY}"))
            .json(&json!({"prompt": prompt, "aspect_ratio": "1:1"}))
            .send()
    };
    let first: Value = submit("a red circle moves right")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let second: Value = submit("a blue square moves left")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = http
        .put(second["cancel_url"].as_str().unwrap())
        .header("authorization", format!("Key {KEY}"))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "cancel: {}", r.status());
    let mut status = Value::Null;
    for _ in 0..600 {
        status = http
            .get(first["status_url"].as_str().unwrap())
            .header("authorization", format!("Key {KEY}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if status["status"] == "COMPLETED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status["status"], "COMPLETED", "{status}");
    let result: Value = http
        .get(first["response_url"].as_str().unwrap())
        .header("authorization", format!("Key {KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    is_mp4(&kiln, result["video"]["url"].as_str().unwrap()).await;
    let cancelled: Value = http
        .get(second["status_url"].as_str().unwrap())
        .header("authorization", format!("Key {KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["status"], "COMPLETED");
    assert!(cancelled["error"].is_string(), "{cancelled}");

    // Runware over WebSocket: authenticate, image-to-video, getResponse until success.
    let ws_url = format!("{}/v1", base.replace("http://", "ws://"));
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url).await.unwrap();
    let mut call = async |message: Value| -> Value {
        ws.send(Message::text(message.to_string())).await.unwrap();
        loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                _ => continue,
            }
        }
    };
    let auth = call(json!([{"taskType": "authentication", "apiKey": KEY}])).await;
    assert!(
        auth["data"][0]["connectionSessionUUID"].is_string(),
        "{auth}"
    );
    let bad = call(
        json!([{"taskType": "videoInference", "taskUUID": uuid::Uuid::new_v4().to_string(),
        "model": "klingai:5@3", "positivePrompt": "a ball", "duration": 7}]),
    )
    .await;
    assert_eq!(bad["errors"][0]["parameter"], "duration", "{bad}");
    let task = uuid::Uuid::new_v4().to_string();
    let ack = call(json!([{"taskType": "videoInference", "taskUUID": task, "model": "klingai:5@3",
        "positivePrompt": "the red square moves right", "width": 1080, "height": 1080, "duration": 5,
        "inputs": {"frameImages": [{"image": png_data_uri(), "frame": "first"}]}}])).await;
    assert_eq!(ack["data"][0]["taskUUID"], task.as_str(), "{ack}");
    let mut video = Value::Null;
    for _ in 0..20 {
        let reply = call(json!([{"taskType": "getResponse", "taskUUID": task}])).await;
        if reply["data"][0]["status"] == "success" {
            video = reply["data"][0].clone();
            break;
        }
    }
    is_mp4(&kiln, video["videoURL"].as_str().expect("a Runware video")).await;

    // Runware REST with an upload endpoint.
    let r = http.post(format!("{base}/v1")).bearer_auth(KEY).json(&json!([{
        "taskType": "videoInference", "taskUUID": uuid::Uuid::new_v4().to_string(), "model": "klingai:5@3",
        "positivePrompt": "a green triangle moves up", "width": 1080, "height": 1080,
        "deliveryMethod": "sync", "uploadEndpoint": format!("{hooks_base}/upload")}])).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let sync: Value = r.json().await.unwrap();
    assert_eq!(sync["data"][0]["status"], "success", "{sync}");
    assert_eq!(received.lock().unwrap().uploads.len(), 1);
    assert_eq!(&received.lock().unwrap().uploads[0][4..8], b"ftyp");

    // WaveSpeed with a signed webhook that fails twice.
    let r = http
        .post(format!(
            "{base}/api/v3/kwaivgi/kling-v2.1-t2v-master?webhook={hooks_base}/hook"
        ))
        .bearer_auth(KEY)
        .json(&json!({"prompt": "a yellow circle grows", "aspect_ratio": "9:16", "duration": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let id = r.json::<Value>().await.unwrap()["data"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut prediction = Value::Null;
    for _ in 0..600 {
        prediction = http
            .get(format!("{base}/api/v3/predictions/{id}/result"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if prediction["data"]["status"] == "completed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    is_mp4(
        &kiln,
        prediction["data"]["outputs"][0]
            .as_str()
            .expect("a WaveSpeed output"),
    )
    .await;
    for _ in 0..200 {
        if received.lock().unwrap().hooks.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    {
        let r = received.lock().unwrap();
        assert_eq!(r.hooks.len(), 3, "two failures, then delivered");
        let (signature, body) = &r.hooks[2];
        assert!(
            signature.as_deref().is_some_and(|s| s.starts_with("v3,")),
            "{signature:?}"
        );
        let hook: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            (hook["id"].as_str(), hook["status"].as_str()),
            (Some(id.as_str()), Some("completed"))
        );
    }
    let r = http
        .post(format!("{base}/api/v3/kwaivgi/kling-v2.1-t2v-master"))
        .bearer_auth(KEY)
        .json(&json!({"prompt": "x", "guidance_scale": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let envelope: Value = r.json().await.unwrap();
    assert!(
        envelope["message"]
            .as_str()
            .unwrap()
            .contains("guidance_scale"),
        "{envelope}"
    );

    // Prodia: image-to-video from a multipart input part, raw MP4 back.
    let job = json!({"type": "inference.kling.img2vid.v1",
        "config": {"model_name": "kling-v2-1-master", "image": "first.png", "prompt": "the square slides right"}});
    let png = {
        use base64::Engine;
        let uri = png_data_uri();
        base64::engine::general_purpose::STANDARD
            .decode(uri.split_once(",").unwrap().1)
            .unwrap()
    };
    let form = reqwest::multipart::Form::new()
        .part(
            "input",
            reqwest::multipart::Part::bytes(png)
                .file_name("first.png")
                .mime_str("image/png")
                .unwrap(),
        )
        .part(
            "job",
            reqwest::multipart::Part::text(job.to_string())
                .file_name("job.json")
                .mime_str("application/json")
                .unwrap(),
        );
    let r = http
        .post(format!("{base}/v2/job"))
        .bearer_auth(KEY)
        .header("accept", "video/mp4")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[4..8], b"ftyp");
    let r = http.post(format!("{base}/v2/job")).bearer_auth(KEY).header("accept", "application/json")
        .json(&json!({"type": "inference.kling.txt2vid.v1", "config": {"prompt": "x", "cfg_scale": 5}}))
        .send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("cfg_scale"));

    // Native: a one-second TTL; the output answers 410 once the sweeper has run.
    let r = http
        .post(format!("{base}/v1/videos"))
        .bearer_auth(KEY)
        .json(&json!({"prompt": "a red circle", "aspect_ratio": "1:1", "ttl": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let id = r.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut url = None;
    for _ in 0..600 {
        let job: Value = http
            .get(format!("{base}/v1/videos/{id}"))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if let Some(u) = job["result"]["outputs"][0]["url"].as_str() {
            url = Some(u.to_string());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = url.expect("the native job succeeds");
    let mut gone = 0;
    for _ in 0..100 {
        gone = http.get(&url).send().await.unwrap().status().as_u16();
        if gone == 410 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(gone, 410, "the output is gone after its TTL");
}
