//! The Runware dialect over a real WebSocket (what the `runware` SDK uses) and over REST
//! `POST /v1`, with real generation on kiln's bundled model (it takes first frames).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;

use common::{bundled_pipeline, start_on, TestServer};

const MODEL: &str = "klingai:5@3";

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket client speaking Runware's framing: JSON arrays out, JSON objects in.
struct Client {
    socket: Socket,
}

impl Client {
    async fn connect(t: &TestServer) -> Client {
        let url = format!("{}/v1", t.base.replacen("http", "ws", 1));
        let (socket, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Client { socket }
    }

    async fn send(&mut self, tasks: Value) {
        self.socket
            .send(Message::text(tasks.to_string()))
            .await
            .unwrap();
    }

    /// The next JSON message (control frames skipped).
    async fn recv(&mut self) -> Value {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(60), self.socket.next())
                .await
                .expect("the server answers within 60 s")
                .expect("the socket stays open")
                .unwrap();
            if let Message::Text(text) = message {
                return serde_json::from_str(text.as_str()).unwrap();
            }
        }
    }

    async fn call(&mut self, tasks: Value) -> Value {
        self.send(tasks).await;
        self.recv().await
    }

    /// The next message about `task_uuid` (in `data` or `errors`); others are skipped.
    async fn recv_for(&mut self, task_uuid: &str) -> Value {
        loop {
            let message = self.recv().await;
            if items(&message).any(|item| item["taskUUID"] == task_uuid) {
                return message;
            }
        }
    }

    async fn authenticate(&mut self, key: &str) -> Value {
        self.call(json!([{"taskType": "authentication", "apiKey": key}]))
            .await
    }
}

fn items(message: &Value) -> impl Iterator<Item = &Value> {
    let data = message["data"].as_array().into_iter().flatten();
    data.chain(message["errors"].as_array().into_iter().flatten())
}

fn task_uuid() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn text_to_video(uuid: &str, extra: Value) -> Value {
    let mut task = json!({
        "taskType": "videoInference",
        "taskUUID": uuid,
        "deliveryMethod": "async",
        "model": MODEL,
        "positivePrompt": "a red ball rolls across a wooden table",
        "duration": 5,
        "CFGScale": 0.5,
        "seed": 11,
    });
    if let (Some(t), Some(e)) = (task.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            t.insert(k.clone(), v.clone());
        }
    }
    task
}

/// The one error item of a message, checked for Runware's shape.
fn error_item(message: &Value) -> &Value {
    let errors = message["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("{message}"));
    assert_eq!(errors.len(), 1, "{message}");
    let item = &errors[0];
    assert!(item["code"].is_string(), "{message}");
    assert!(item["message"].as_str().unwrap().len() > 10, "{message}");
    item
}

/// A 112x64 JPEG gradient (the bundled model's 16:9 size).
fn jpeg() -> Vec<u8> {
    let (w, h) = (112usize, 64usize);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            rgb.extend_from_slice(&[(x * 2) as u8, (y * 4) as u8, 128]);
        }
    }
    kiln_media::video_out::encode_poster_jpeg(&rgb, w, h, 90).unwrap()
}

async fn download(t: &TestServer, url: &str) -> Vec<u8> {
    let response = t.http.get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK, "{url}");
    response.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_auth_ping_and_bad_parameters() {
    // No workers: queued tasks stay queued, so nothing here generates.
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.keys = vec!["k1".into()];
        c.workers = 0;
        c.max_body_bytes = 256 * 1024;
    })
    .await;
    // GET /v1 without an upgrade, and REST bodies over the limit.
    let response = t.http.get(format!("{}/v1", t.base)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.unwrap();
    assert_eq!(error_item(&body)["code"], "invalidProtocol");
    let huge = "x".repeat(300 * 1024);
    let (status, body) = rest(&t, Some("k1"), json!([{"taskType": "ping", "pad": huge}])).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(error_item(&body)["code"], "payloadTooLarge");

    let mut ws = Client::connect(&t).await;

    let early = task_uuid();
    let reply = ws.call(json!([text_to_video(&early, json!({}))])).await;
    let item = error_item(&reply);
    assert_eq!(item["code"], "missingApiKey", "{reply}");
    assert_eq!(item["taskUUID"], early.as_str(), "{reply}");

    let pong = ws.call(json!([{"taskType": "ping", "ping": true}])).await;
    assert_eq!(pong, json!({"data": [{"taskType": "ping", "pong": true}]}));

    let reply = ws.authenticate("wrong").await;
    let item = error_item(&reply);
    assert_eq!(
        (&item["code"], &item["parameter"], &item["taskType"]),
        (
            &json!("invalidApiKey"),
            &json!("apiKey"),
            &json!("authentication")
        ),
        "{reply}"
    );

    let reply = ws.authenticate("k1").await;
    assert_eq!(reply["data"][0]["taskType"], "authentication", "{reply}");
    let session = reply["data"][0]["connectionSessionUUID"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(session).is_ok(), "{reply}");

    let pong = ws.call(json!([{"taskType": "ping", "ping": true}])).await;
    assert_eq!(pong, json!({"data": [{"taskType": "ping", "pong": true}]}));

    // One array: each bad task gets its own error, the good one its ack.
    let cases: Vec<(Value, &str, &str)> = vec![
        (json!({"CFGScale": 3}), "invalidCFGScale", "CFGScale"),
        (json!({"duration": 7}), "invalidDuration", "duration"),
        (json!({"model": "foo:1@1"}), "invalidModel", "model"),
        (
            json!({"numberResults": 9}),
            "invalidNumberResults",
            "numberResults",
        ),
        (json!({"ttl": 30}), "invalidTtl", "ttl"),
        (
            json!({"positivePrompt": "a"}),
            "invalidPositivePrompt",
            "positivePrompt",
        ),
        (json!({"width": 100, "height": 64}), "invalidWidth", "width"),
        (
            json!({"outputType": "base64Data"}),
            "unsupportedParameter",
            "outputType",
        ),
        (
            json!({"outputFormat": "GIF"}),
            "invalidOutputFormat",
            "outputFormat",
        ),
        (
            json!({"safety": {"checkContent": true, "mode": "fast"}}),
            "unsupportedParameter",
            "safety.checkContent",
        ),
        (
            json!({"lora": [{"model": "x", "weight": 1}]}),
            "unsupportedParameter",
            "lora",
        ),
        (json!({"madeUp": 1}), "unsupportedParameter", "madeUp"),
        (
            json!({"inputs": {"frameImages": [{"image": task_uuid(), "frame": "first"}]}}),
            "invalidFrameImages",
            "inputs.frameImages[0].image",
        ),
        (
            json!({"frameImages": [{"inputImage": "not an image", "frame": "first"}]}),
            "invalidFrameImages",
            "frameImages[0].inputImage",
        ),
        (
            json!({"providerSettings": {"klingai": {"cameraControl": {"type": "orbit"}}}}),
            "invalidCameraControl",
            "providerSettings.klingai.cameraControl.type",
        ),
        (
            json!({"providerSettings": {"klingai": {"cameraControl": {"type": "simple", "config": {"zoom": 30}}}}}),
            "invalidCameraControl",
            "providerSettings.klingai.cameraControl.config.zoom",
        ),
    ];
    let mut tasks = Vec::new();
    let mut expected = Vec::new();
    for (extra, code, parameter) in &cases {
        let uuid = task_uuid();
        tasks.push(text_to_video(&uuid, extra.clone()));
        expected.push((uuid, *code, *parameter));
    }
    let good = task_uuid();
    tasks.push(text_to_video(&good, json!({"includeCost": true})));
    let unknown = task_uuid();
    tasks.push(json!({"taskType": "imageInference", "taskUUID": unknown}));
    let missing = task_uuid();
    tasks.push(json!({"taskType": "getResponse", "taskUUID": missing}));
    tasks.push(json!({"taskType": "videoInference", "taskUUID": "not-a-uuid", "model": MODEL}));
    ws.send(Value::Array(tasks)).await;

    let mut replies = Vec::new();
    for _ in 0..expected.len() + 4 {
        replies.push(ws.recv().await);
    }
    let about = |uuid: &str| {
        replies
            .iter()
            .find(|m| items(m).any(|i| i["taskUUID"] == uuid))
            .unwrap_or_else(|| panic!("no answer for {uuid}: {replies:?}"))
    };
    for (uuid, code, parameter) in &expected {
        let reply = about(uuid);
        let item = error_item(reply);
        assert_eq!(
            (&item["code"], &item["parameter"], &item["taskType"]),
            (&json!(code), &json!(parameter), &json!("videoInference")),
            "{reply}"
        );
    }
    assert_eq!(
        about(&good),
        &json!({"data": [{"taskType": "videoInference", "taskUUID": good}]})
    );
    assert_eq!(error_item(about(&unknown))["code"], "unsupportedTaskType");
    let item = error_item(about(&missing));
    assert_eq!(
        (&item["code"], &item["parameter"]),
        (&json!("taskNotFound"), &json!("taskUUID"))
    );
    let item = error_item(about("not-a-uuid"));
    assert_eq!(item["code"], "invalidTaskUUID");

    // A taskUUID names one task for good.
    let reply = ws.call(json!([text_to_video(&good, json!({}))])).await;
    let item = error_item(&reply);
    assert_eq!(
        (&item["code"], &item["taskUUID"]),
        (&json!("conflictTaskUUID"), &json!(good)),
        "{reply}"
    );

    // Not an image, and not JSON at all.
    let upload = task_uuid();
    let reply = ws
        .call(json!([{"taskType": "imageUpload", "taskUUID": upload, "image": "data:image/png;base64,aGVsbG8gd29ybGQ="}]))
        .await;
    assert_eq!(error_item(&reply)["code"], "invalidImage", "{reply}");
    ws.socket.send(Message::text("{not json")).await.unwrap();
    let reply = ws.recv().await;
    assert_eq!(error_item(&reply)["code"], "invalidRequestBody", "{reply}");
    ws.send(json!([{"taskType": "ping", "pad": huge}])).await;
    let reply = ws.recv().await;
    assert_eq!(error_item(&reply)["code"], "payloadTooLarge", "{reply}");
    // The connection survives all of it.
    let pong = ws.call(json!([{"taskType": "ping", "ping": true}])).await;
    assert_eq!(pong["data"][0]["pong"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_text_to_video_async_then_get_response() {
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.prices.per_output_second = 0.01;
    })
    .await;
    let received = Arc::new(Mutex::new(Received::default()));
    let receiver_base = receiver(received.clone()).await;
    let mut ws = Client::connect(&t).await;
    // No keys configured: any key is accepted.
    let reply = ws.authenticate("anything").await;
    assert!(
        reply["data"][0]["connectionSessionUUID"].is_string(),
        "{reply}"
    );

    let uuid = task_uuid();
    let ack = ws
        .call(json!([text_to_video(
            &uuid,
            json!({"numberResults": 2, "includeCost": true, "outputFormat": "MP4", "outputQuality": 90, "ttl": 3600,
                   "webhookURL": format!("{receiver_base}/hook")})
        )]))
        .await;
    assert_eq!(
        ack,
        json!({"data": [{"taskType": "videoInference", "taskUUID": uuid}]})
    );

    // getResponse is held until the task ends, so the first answer normally has the videos.
    let mut videos = Vec::new();
    for _ in 0..10 {
        ws.send(json!([{"taskType": "getResponse", "taskUUID": uuid}]))
            .await;
        let reply = ws.recv_for(&uuid).await;
        assert!(reply.get("errors").is_none(), "{reply}");
        let data = reply["data"].as_array().unwrap().clone();
        if data.iter().all(|i| i["status"] == "success") {
            videos = data;
            break;
        }
        assert_eq!(data[0]["status"], "processing", "{reply}");
    }
    assert_eq!(videos.len(), 2, "{videos:?}");
    for (index, video) in videos.iter().enumerate() {
        assert_eq!(video["taskType"], "videoInference");
        assert_eq!(video["taskUUID"], uuid.as_str());
        assert!(uuid::Uuid::parse_str(video["videoUUID"].as_str().unwrap()).is_ok());
        assert_eq!(video["seed"], 11 + index as u64, "{video}");
        assert!(video["cost"].as_f64().unwrap() > 0.0, "{video}");
        let bytes = download(&t, video["videoURL"].as_str().unwrap()).await;
        assert_eq!(&bytes[4..8], b"ftyp");
    }
    assert_ne!(videos[0]["videoUUID"], videos[1]["videoUUID"]);
    assert_ne!(videos[0]["videoURL"], videos[1]["videoURL"]);

    // Asking again names the same videos.
    ws.send(json!([{"taskType": "getResponse", "taskUUID": uuid}]))
        .await;
    let again = ws.recv_for(&uuid).await;
    assert_eq!(again["data"].as_array().unwrap(), &videos);

    // The webhook delivers the videos one POST each, as Runware does for batches (the
    // receiver refuses the first two calls, so retries are in here too).
    let expected: std::collections::BTreeSet<String> = videos
        .iter()
        .map(|v| json!({"data": [v]}).to_string())
        .collect();
    let mut bodies = std::collections::BTreeSet::new();
    for _ in 0..200 {
        bodies = received
            .lock()
            .unwrap()
            .hooks
            .iter()
            .map(|b| serde_json::from_slice::<Value>(b).unwrap().to_string())
            .collect();
        if bodies == expected && received.lock().unwrap().hooks.len() >= 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(bodies, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_image_to_video_from_upload_with_sync_delivery() {
    let t = start_on(bundled_pipeline(), 0, |_| {}).await;
    let mut ws = Client::connect(&t).await;
    ws.authenticate("anything").await;

    let image = jpeg();
    let data_uri = format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&image)
    );
    let upload = task_uuid();
    let reply = ws
        .call(json!([{"taskType": "imageUpload", "taskUUID": upload, "image": data_uri}]))
        .await;
    let uploaded = &reply["data"][0];
    assert_eq!(
        (&uploaded["taskType"], &uploaded["taskUUID"]),
        (&json!("imageUpload"), &json!(upload)),
        "{reply}"
    );
    let image_uuid = uploaded["imageUUID"].as_str().unwrap().to_string();
    assert!(uuid::Uuid::parse_str(&image_uuid).is_ok(), "{reply}");
    let image_url = uploaded["imageURL"].as_str().unwrap();
    assert_eq!(image_url, format!("{}/uploads/{image_uuid}.jpg", t.base));
    assert_eq!(download(&t, image_url).await, image);

    let media = task_uuid();
    let reply = ws
        .call(json!([{
            "taskType": "mediaStorage", "taskUUID": media, "operation": "upload",
            "media": base64::engine::general_purpose::STANDARD.encode(&image),
        }]))
        .await;
    assert_eq!(reply["data"][0]["taskType"], "mediaStorage", "{reply}");
    assert!(reply["data"][0]["mediaUUID"].is_string(), "{reply}");

    // Sync delivery: no ack, the videos themselves arrive when done.
    let uuid = task_uuid();
    let reply = ws
        .call(json!([text_to_video(
            &uuid,
            json!({
                "deliveryMethod": "sync",
                "positivePrompt": "the scene slowly comes to life",
                "inputs": {"frameImages": [{"image": image_uuid, "frame": "first"}]},
            })
        )]))
        .await;
    let video = &reply["data"][0];
    assert_eq!(
        (&video["taskUUID"], &video["status"]),
        (&json!(uuid), &json!("success")),
        "{reply}"
    );
    assert!(video["videoUUID"].is_string(), "{reply}");
    assert!(video.get("cost").is_none(), "{reply}");
    let bytes = download(&t, video["videoURL"].as_str().unwrap()).await;
    assert_eq!(&bytes[4..8], b"ftyp");

    // The job ran on the uploaded image itself, inlined at submit.
    let job: Value = t
        .http
        .get(format!("{}/v1/videos/{uuid}", t.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(job["request"]["first_frame"]
        .as_str()
        .unwrap()
        .starts_with("data:image/jpeg;base64,"));
}

#[derive(Default)]
struct Received {
    hooks: Vec<Vec<u8>>,
    uploads: Vec<(Option<String>, Vec<u8>)>,
}

/// A receiver whose webhook fails twice before accepting, and an upload endpoint.
async fn receiver(received: Arc<Mutex<Received>>) -> String {
    let hooks = received.clone();
    let router = axum::Router::new()
        .route(
            "/hook",
            post(move |body: axum::body::Bytes| {
                let hooks = hooks.clone();
                async move {
                    let mut r = hooks.lock().unwrap();
                    r.hooks.push(body.to_vec());
                    if r.hooks.len() < 3 {
                        StatusCode::SERVICE_UNAVAILABLE
                    } else {
                        StatusCode::OK
                    }
                }
            }),
        )
        .route(
            "/upload",
            put(move |headers: HeaderMap, body: axum::body::Bytes| {
                let received = received.clone();
                async move {
                    let content_type = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_string);
                    received
                        .lock()
                        .unwrap()
                        .uploads
                        .push((content_type, body.to_vec()));
                    StatusCode::OK
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    base
}

async fn rest(t: &TestServer, key: Option<&str>, tasks: Value) -> (StatusCode, Value) {
    let mut request = t.http.post(format!("{}/v1", t.base)).json(&tasks);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_text_to_video_with_webhook_and_upload_endpoint() {
    let received = Arc::new(Mutex::new(Received::default()));
    let receiver_base = receiver(received.clone()).await;
    // A short pause per step keeps the task running long enough to be seen processing.
    let t = start_on(bundled_pipeline(), 30, |c| {
        c.keys = vec!["k1".into(), "k2".into()];
    })
    .await;
    let ping = json!([{"taskType": "ping", "ping": true}]);

    let (status, body) = rest(&t, None, ping.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(error_item(&body)["code"], "missingApiKey");
    let (status, body) = rest(&t, Some("wrong"), ping.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let item = error_item(&body);
    assert_eq!(
        (&item["code"], &item["parameter"]),
        (&json!("invalidApiKey"), &json!("apiKey"))
    );
    // The key may also come as an authentication task first in the array.
    let (status, body) = rest(
        &t,
        None,
        json!([{"taskType": "authentication", "apiKey": "k1"}, {"taskType": "ping", "ping": true}]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"data": [{"taskType": "ping", "pong": true}]}));

    // Only bad tasks: 400. A bad task beside a good one: 200 with both.
    let bad = task_uuid();
    let bad_task = text_to_video(&bad, json!({"CFGScale": 3}));
    let (status, body) = rest(&t, Some("k1"), json!([bad_task])).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(error_item(&body)["parameter"], "CFGScale");
    let (status, body) = rest(
        &t,
        Some("k1"),
        json!([{"taskType": "ping", "ping": true}, text_to_video(&task_uuid(), json!({"duration": 7}))]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["data"][0]["pong"], true, "{body}");
    assert_eq!(error_item(&body)["parameter"], "duration", "{body}");

    let uuid = task_uuid();
    let (status, ack) = rest(
        &t,
        Some("k1"),
        json!([text_to_video(&uuid, json!({
            "webhookURL": format!("{receiver_base}/hook"),
            "uploadEndpoint": format!("{receiver_base}/upload"),
            "safety": {"checkContent": false, "mode": "none"},
            "acceleration": "none",
            "providerSettings": {"klingai": {"cameraControl": {"type": "simple", "config": {"horizontal": 3, "zoom": 2}}}},
        }))]),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    assert_eq!(
        ack,
        json!({"data": [{"taskType": "videoInference", "taskUUID": uuid}]})
    );

    // Over REST getResponse answers at once.
    let poll = json!([{"taskType": "getResponse", "taskUUID": uuid}]);
    let (status, first) = rest(&t, Some("k1"), poll.clone()).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(
        first,
        json!({"data": [{"taskType": "videoInference", "taskUUID": uuid, "status": "processing"}]})
    );
    let mut video = Value::Null;
    for _ in 0..600 {
        let (_, body) = rest(&t, Some("k1"), poll.clone()).await;
        if body["data"][0]["status"] == "success" {
            video = body["data"][0].clone();
            break;
        }
        assert_eq!(body["data"][0]["status"], "processing", "{body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(video["taskUUID"], uuid.as_str(), "{video}");
    assert_eq!(video["seed"], 11);
    let bytes = download(&t, video["videoURL"].as_str().unwrap()).await;
    assert_eq!(&bytes[4..8], b"ftyp");
    // The camera move reached the job.
    let job: Value = t
        .http
        .get(format!("{}/v1/videos/{uuid}", t.base))
        .bearer_auth("k1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        job["request"]["camera"],
        json!([3.0, 0.0, 0.0, 0.0, 0.0, 2.0]),
        "{job}"
    );
    // Another key cannot see the task.
    let (status, other) = rest(&t, Some("k2"), poll.clone()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{other}");
    assert_eq!(error_item(&other)["code"], "taskNotFound");

    // The webhook: two failures, then {"data":[item]} like getResponse's.
    let mut hooks = Vec::new();
    for _ in 0..200 {
        hooks = received.lock().unwrap().hooks.clone();
        if hooks.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(hooks.len(), 3);
    let delivered: Value = serde_json::from_slice(&hooks[2]).unwrap();
    assert_eq!(delivered, json!({"data": [video]}));

    let r = received.lock().unwrap();
    assert_eq!(r.uploads.len(), 1);
    let (content_type, uploaded) = &r.uploads[0];
    assert_eq!(content_type.as_deref(), Some("video/mp4"));
    assert_eq!(uploaded, &bytes);
}
