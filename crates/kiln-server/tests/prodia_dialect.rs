//! The Prodia v2 dialect over real HTTP, with real generation on kiln's bundled model:
//! the sync job (JSON or multipart in; multipart, raw video or job JSON out, as the
//! `prodia/v2` JS SDK negotiates), the async family, and Prodia's error forms.

use std::collections::HashMap;
use std::time::Duration;

use axum::extract::{FromRequest, Multipart};
use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{json, Value};

mod common;

use common::{bundled_pipeline, start_on, TestServer};

/// What the JS SDK sends with `{accept: "video/mp4"}`.
const SDK_ACCEPT: &str = "multipart/form-data; video/mp4";

/// A part of a multipart answer: (filename, content type, bytes).
type Parts = HashMap<String, (Option<String>, Option<String>, Vec<u8>)>;

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn content_type(&self) -> &str {
        self.headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The parts by name, parsed with axum's own multipart reader.
    async fn parts(&self) -> Parts {
        assert!(
            self.content_type().starts_with("multipart/form-data"),
            "{}",
            self.content_type()
        );
        let request = axum::http::Request::builder()
            .header(header::CONTENT_TYPE, self.content_type())
            .body(axum::body::Body::from(self.body.clone()))
            .unwrap();
        let mut multipart = Multipart::from_request(request, &()).await.unwrap();
        let mut parts = HashMap::new();
        while let Some(field) = multipart.next_field().await.unwrap() {
            let name = field.name().unwrap().to_string();
            let file_name = field.file_name().map(str::to_string);
            let content_type = field.content_type().map(str::to_string);
            let bytes = field.bytes().await.unwrap().to_vec();
            parts.insert(name, (file_name, content_type, bytes));
        }
        parts
    }
}

async fn answer(response: reqwest::Response) -> Answer {
    Answer {
        status: response.status(),
        headers: response.headers().clone(),
        body: response.bytes().await.unwrap().to_vec(),
    }
}

impl TestServer {
    async fn post_job(
        &self,
        path: &str,
        token: Option<&str>,
        accept: Option<&str>,
        job: &Value,
    ) -> Answer {
        let mut request = self.http.post(format!("{}{path}", self.base)).json(job);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(accept) = accept {
            request = request.header(header::ACCEPT, accept);
        }
        answer(request.send().await.unwrap()).await
    }

    /// A multipart job as the JS SDK sends it: `input` parts, then the `job` part.
    async fn post_multipart_job(
        &self,
        token: Option<&str>,
        accept: &str,
        job: &Value,
        inputs: &[(&str, Vec<u8>)],
    ) -> Answer {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in inputs {
            form = form.part(
                "input",
                reqwest::multipart::Part::bytes(bytes.clone())
                    .file_name(name.to_string())
                    .mime_str("image/jpeg")
                    .unwrap(),
            );
        }
        form = form.part(
            "job",
            reqwest::multipart::Part::text(job.to_string())
                .file_name("job.json")
                .mime_str("application/json")
                .unwrap(),
        );
        let mut request = self
            .http
            .post(format!("{}/v2/job", self.base))
            .header(header::ACCEPT, accept)
            .multipart(form);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
    }

    async fn get_async(&self, id: &str, tail: &str, token: Option<&str>) -> Answer {
        let mut request = self
            .http
            .get(format!("{}/v2/job/async/{id}/{tail}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        answer(request.send().await.unwrap()).await
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

/// A white square on black, the size of [`test_jpeg`]: a mask.
fn mask_jpeg() -> Vec<u8> {
    let (w, h) = (96, 64);
    let mut rgb = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            let v = if (16..40).contains(&x) && (16..40).contains(&y) {
                255
            } else {
                0
            };
            rgb.extend_from_slice(&[v, v, v]);
        }
    }
    kiln_media::video_out::encode_poster_jpeg(&rgb, w, h, 90).unwrap()
}

fn data_uri(jpeg: &[u8]) -> String {
    format!(
        "data:image/jpeg;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(jpeg)
    )
}

fn assert_mp4(bytes: &[u8]) {
    assert!(
        bytes.len() > 8 && &bytes[4..8] == b"ftyp",
        "an MP4 starts with its ftyp box"
    );
}

fn assert_timestamps(job: &Value) {
    for field in ["created_at", "updated_at", "expires_at"] {
        let text = job[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} in {job}"));
        assert!(
            text.ends_with('Z') && text.as_bytes()[10] == b'T',
            "{field}: {text}"
        );
    }
}

/// A sync error as the SDK reads it: that status, multipart, a `job` part whose `error`
/// names `needle`.
async fn assert_multipart_error(a: &Answer, want: u16, needle: &str) {
    assert_eq!(
        a.status.as_u16(),
        want,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let parts = a.parts().await;
    let (file_name, content_type, bytes) = &parts["job"];
    assert_eq!(file_name.as_deref(), Some("job.json"));
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let job: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(job["state"]["current"], "failed", "{job}");
    assert!(job["id"].is_string(), "{job}");
    let error = job["error"].as_str().unwrap();
    assert!(error.contains(needle), "{needle:?} not in {error:?}");
}

/// A plain error: that status, `{"error": "..."}` naming `needle`.
fn assert_json_error(a: &Answer, want: u16, needle: &str) {
    assert_eq!(
        a.status.as_u16(),
        want,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(
        a.content_type().starts_with("application/json"),
        "{}",
        a.content_type()
    );
    let error = a.json()["error"].as_str().unwrap().to_string();
    assert!(error.contains(needle), "{needle:?} not in {error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_json_job_answers_multipart() {
    let t = start_on(bundled_pipeline(), 0, |_| {}).await;
    let job = json!({"type": "inference.kling.txt2vid.v1",
        "config": {"prompt": "A golden retriever running through a sunlit meadow",
                   "model": "kling-v2-1-master", "mode": "std", "aspect_ratio": "16:9",
                   "duration": "5", "negative_prompt": "blur", "cfg_scale": 0.5,
                   "camera_control": {"type": "simple", "config": {"horizontal": 3, "zoom": 2}}}});
    let a = t
        .post_job("/v2/job", Some("local-test-key"), Some(SDK_ACCEPT), &job)
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let parts = a.parts().await;
    let (file_name, content_type, bytes) = &parts["job"];
    assert_eq!(
        (file_name.as_deref(), content_type.as_deref()),
        (Some("job.json"), Some("application/json"))
    );
    let view: Value = serde_json::from_slice(bytes).unwrap();
    assert_eq!(view["state"]["current"], "processed", "{view}");
    assert_eq!(view["type"], "inference.kling.txt2vid.v1");
    assert_eq!(view["config"], job["config"], "the config as sent");
    assert!(view.get("error").is_none(), "{view}");
    assert!(view["metrics"]["elapsed"].as_f64().unwrap() > 0.0, "{view}");
    assert_timestamps(&view);
    let (file_name, content_type, video) = &parts["output"];
    assert_eq!(
        (file_name.as_deref(), content_type.as_deref()),
        (Some("video.mp4"), Some("video/mp4"))
    );
    assert_mp4(video);

    // A sync job is readable through the async routes too.
    let id = view["id"].as_str().unwrap();
    let state = t
        .get_async(id, "job.state.current", Some("local-test-key"))
        .await;
    assert_eq!(String::from_utf8_lossy(&state.body), "processed");
    let download = t
        .get_async(id, "output/video.mp4", Some("local-test-key"))
        .await;
    assert_eq!(&download.body, video);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_multipart_img2vid_answers_raw_video() {
    let t = start_on(bundled_pipeline(), 0, |c| c.keys = vec!["k1".into()]).await;
    // No prompt: Prodia's img2vid leaves the motion to the model when none is given.
    let job = json!({"type": "inference.kling.img2vid.v1",
        "config": {"model_name": "kling-v2-1-master", "image": "first.jpg", "duration": "5"}});
    let a = t
        .post_multipart_job(Some("k1"), "video/mp4", &job, &[("first.jpg", test_jpeg())])
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    assert_eq!(a.content_type(), "video/mp4");
    assert_mp4(&a.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_masks_answer_job_json() {
    let t = start_on(bundled_pipeline(), 0, |_| {}).await;
    // Images as data URIs in a JSON body; the answer is the job JSON alone.
    let job = json!({"type": "inference.kling.img2vid.v1",
        "config": {"image": data_uri(&test_jpeg()), "prompt": "the square slides right", "mode": "std",
                   "dynamic_masks": [{"mask": data_uri(&mask_jpeg()),
                                      "trajectories": [{"x": 28, "y": 28}, {"x": 70, "y": 30}]}]}});
    let a = t
        .post_job(
            "/v2/job",
            Some("local-test-key"),
            Some("application/json"),
            &job,
        )
        .await;
    assert_eq!(
        a.status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let view = a.json();
    assert_eq!(view["state"]["current"], "processed", "{view}");
    assert_eq!(view["type"], "inference.kling.img2vid.v1");
    let outputs = t
        .get_async(
            view["id"].as_str().unwrap(),
            "output",
            Some("local-test-key"),
        )
        .await;
    assert_eq!(outputs.json(), json!(["video.mp4"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_create_poll_and_download() {
    let t = start_on(bundled_pipeline(), 30, |c| c.keys = vec!["k1".into()]).await;
    let job = json!({"type": "inference.kling.txt2vid.v1",
        "config": {"prompt": "a red fox in snow", "model": "kling-v2-1-master", "duration": 5, "aspect_ratio": "9:16"}});
    let a = t.post_job("/v2/job/async", Some("k1"), None, &job).await;
    assert_eq!(
        a.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&a.body)
    );
    let created = a.json();
    assert_eq!(created["state"]["current"], "processing");
    assert_eq!(created["config"], job["config"]);
    assert_timestamps(&created);
    let id = created["id"].as_str().unwrap().to_string();

    let outputs = t.get_async(&id, "output", Some("k1")).await;
    assert_eq!(
        (outputs.status, outputs.json()),
        (StatusCode::OK, json!([]))
    );
    let mut seen = Vec::new();
    for _ in 0..1200 {
        let state = t.get_async(&id, "job.state.current", Some("k1")).await;
        assert_eq!(state.status, StatusCode::OK);
        assert!(
            state.content_type().starts_with("text/plain"),
            "{}",
            state.content_type()
        );
        let current = String::from_utf8(state.body).unwrap();
        if seen.last() != Some(&current) {
            seen.push(current.clone());
        }
        if current != "processing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(seen, vec!["processing", "processed"]);

    let view = t.get_async(&id, "job.json", Some("k1")).await.json();
    assert_eq!(
        (&view["id"], &view["state"]["current"]),
        (&json!(id), &json!("processed"))
    );
    assert!(view["metrics"]["elapsed"].as_f64().unwrap() > 0.0, "{view}");
    let outputs = t.get_async(&id, "output", Some("k1")).await;
    assert_eq!(outputs.json(), json!(["video.mp4"]));
    let video = t.get_async(&id, "output/video.mp4", Some("k1")).await;
    assert_eq!(
        (video.status, video.content_type()),
        (StatusCode::OK, "video/mp4")
    );
    assert_mp4(&video.body);

    assert_json_error(
        &t.get_async(&id, "output/other.mp4", Some("k1")).await,
        404,
        "other.mp4",
    );
    for tail in [
        "job.state.current",
        "job.json",
        "output",
        "output/video.mp4",
    ] {
        assert_json_error(
            &t.get_async("no-such-job", tail, Some("k1")).await,
            404,
            "no-such-job",
        );
    }
    assert_json_error(&t.get_async(&id, "job.json", None).await, 401, "Bearer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_jobs_auth_and_capacity() {
    let t = start_on(bundled_pipeline(), 0, |c| {
        c.keys = vec!["k1".into()];
        c.workers = 0;
        c.max_queued = 1;
        c.retry_after_seconds = 3;
    })
    .await;
    let t2v = |config: Value| json!({"type": "inference.kling.txt2vid.v1", "config": config});

    // Sync errors a multipart client gets as a failed job part (the SDK's ProdiaUserError).
    let a = t
        .post_job(
            "/v2/job",
            Some("k1"),
            Some(SDK_ACCEPT),
            &t2v(json!({"prompt": "x", "cfg_scale": 2})),
        )
        .await;
    assert_multipart_error(&a, 400, "config.cfg_scale").await;
    let img2vid = json!({"type": "inference.kling.img2vid.v1",
        "config": {"image": "first.jpg", "prompt": "x"}});
    let a = t
        .post_multipart_job(Some("k1"), SDK_ACCEPT, &img2vid, &[])
        .await;
    assert_multipart_error(&a, 400, "config.image").await;
    let a = t
        .post_multipart_job(
            Some("k1"),
            SDK_ACCEPT,
            &img2vid,
            &[("other.jpg", test_jpeg())],
        )
        .await;
    assert_multipart_error(&a, 400, "first.jpg").await;
    let a = t
        .post_job(
            "/v2/job",
            Some("k1"),
            Some(SDK_ACCEPT),
            &json!({"type": "inference.flux.txt2img.v1", "config": {"prompt": "x"}}),
        )
        .await;
    assert_multipart_error(&a, 400, "type").await;
    let a = t
        .post_job(
            "/v2/job",
            None,
            Some(SDK_ACCEPT),
            &t2v(json!({"prompt": "x"})),
        )
        .await;
    assert_multipart_error(&a, 401, "Bearer").await;
    assert_eq!(a.headers["www-authenticate"], "Bearer");

    // The same errors as plain JSON for other clients.
    let cases = [
        (
            t2v(json!({"prompt": "x", "duration": "7"})),
            "config.duration",
        ),
        (
            t2v(json!({"prompt": "x", "model": "kling-v1"})),
            "config.model",
        ),
        (
            t2v(json!({"prompt": "x", "aspect_ratio": "4:3"})),
            "config.aspect_ratio",
        ),
        (t2v(json!({"prompt": "x", "mode": "turbo"})), "config.mode"),
        (t2v(json!({"prompt": "x", "seed": 4})), "seed"),
        (
            t2v(
                json!({"prompt": "x", "camera_control": {"type": "simple", "config": {"zoom": 11}}}),
            ),
            "config.camera_control.config.zoom",
        ),
        (t2v(json!({"negative_prompt": "blur"})), "config.prompt"),
        (
            json!({"type": "inference.kling.img2vid.v1", "config": {"prompt": "x"}}),
            "config.image",
        ),
    ];
    for (job, needle) in cases {
        let a = t
            .post_job("/v2/job", Some("k1"), Some("application/json"), &job)
            .await;
        assert_json_error(&a, 400, needle);
    }
    let a = t
        .post_job(
            "/v2/job",
            Some("k1"),
            Some("image/png"),
            &t2v(json!({"prompt": "x"})),
        )
        .await;
    assert_json_error(&a, 406, "image/png");
    let a = t
        .post_job(
            "/v2/job/async",
            Some("wrong"),
            None,
            &t2v(json!({"prompt": "x"})),
        )
        .await;
    assert_json_error(&a, 401, "token");

    // One queued job (no workers) fills the queue: 429 with Retry-After, sync and async.
    let a = t
        .post_job(
            "/v2/job/async",
            Some("k1"),
            None,
            &t2v(json!({"prompt": "x"})),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let a = t
        .post_job(
            "/v2/job/async",
            Some("k1"),
            None,
            &t2v(json!({"prompt": "x"})),
        )
        .await;
    assert_json_error(&a, 429, "retry after 3");
    assert_eq!(a.headers["retry-after"], "3");
    let a = t
        .post_job(
            "/v2/job",
            Some("k1"),
            Some(SDK_ACCEPT),
            &t2v(json!({"prompt": "x"})),
        )
        .await;
    assert_multipart_error(&a, 429, "queue is full").await;
    assert_eq!(a.headers["retry-after"], "3");
    t.server.shutdown().await;
}
