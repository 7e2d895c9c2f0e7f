//! Plays an MP4, a MOV and a WEBM from kiln in headless Chromium (Debian's `chromium`
//! package). The test serves a page and the clips on 127.0.0.1; the page plays each clip
//! muted and posts what the `<video>` element saw back to the server: `loadedmetadata`
//! with its duration and size, and `currentTime` before and after a stretch of playback.
//! The browser is only a client here, so no DevTools connection is needed.

mod video_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kiln_media::video_out::{encode_video, EncodeOptions, VideoFormat};
use video_support::{scratch_dir, synthetic_clip};

const WIDTH: usize = 160;
const HEIGHT: usize = 96;
const FRAMES: usize = 121;
const FPS: u32 = 24;

const PAGE: &str = r#"<!doctype html>
<html><body>
<script>
const clips = __CLIPS__;
function play(clip) {
  return new Promise((resolve) => {
    const result = { name: clip.name, mime: clip.mime, canPlayType: document.createElement('video').canPlayType(clip.mime) };
    const video = document.createElement('video');
    video.muted = true;
    video.autoplay = true;
    video.playsInline = true;
    let done = false;
    const finish = () => { if (!done) { done = true; video.pause(); resolve(result); } };
    video.addEventListener('loadedmetadata', () => {
      result.loadedmetadata = true;
      result.duration = video.duration;
      result.videoWidth = video.videoWidth;
      result.videoHeight = video.videoHeight;
    });
    video.addEventListener('playing', () => {
      result.playing = true;
      const start = video.currentTime;
      setTimeout(() => {
        result.startTime = start;
        result.laterTime = video.currentTime;
        const quality = video.getVideoPlaybackQuality();
        result.decodedFrames = quality.totalVideoFrames;
        finish();
      }, 1000);
    });
    video.addEventListener('error', () => {
      result.error = video.error ? (video.error.code + ': ' + video.error.message) : 'unknown';
      finish();
    });
    setTimeout(() => { result.timeout = true; result.readyState = video.readyState; finish(); }, 10000);
    video.src = clip.url;
    document.body.appendChild(video);
  });
}
(async () => {
  const results = [];
  for (const clip of clips) results.push(await play(clip));
  await fetch('/result', { method: 'POST', body: JSON.stringify(results) });
})();
</script>
</body></html>
"#;

/// Serves `routes` (path → content type, body) and forwards the POSTed result.
fn serve(
    listener: TcpListener,
    routes: Vec<(String, &'static str, Vec<u8>)>,
    results: mpsc::Sender<String>,
) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let routes = routes.clone();
        let results = results.clone();
        std::thread::spawn(move || {
            let _ = handle(stream, &routes, &results);
        });
    }
}

fn handle(
    mut stream: TcpStream,
    routes: &[(String, &'static str, Vec<u8>)],
    results: &mpsc::Sender<String>,
) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut parts = request_line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut content_length = 0usize;
        let mut range: Option<(usize, Option<usize>)> = None;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header)?;
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            let value = value.trim();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => content_length = value.parse().unwrap_or(0),
                "range" => {
                    if let Some((start, end)) =
                        value.strip_prefix("bytes=").and_then(|r| r.split_once('-'))
                    {
                        range = start.parse().ok().map(|s| (s, end.parse().ok()));
                    }
                }
                _ => {}
            }
        }
        if method == "POST" {
            let mut body = vec![0; content_length];
            reader.read_exact(&mut body)?;
            let _ = results.send(String::from_utf8_lossy(&body).into_owned());
            stream.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        }
        let Some((_, content_type, body)) = routes.iter().find(|(route, _, _)| *route == path)
        else {
            stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")?;
            continue;
        };
        // Media elements fetch with Range requests; answer them properly.
        match range {
            Some((start, end)) if start < body.len() => {
                let end = end.unwrap_or(body.len() - 1).min(body.len() - 1);
                let head = format!(
                    "HTTP/1.1 206 Partial Content\r\nContent-Type: {content_type}\r\nAccept-Ranges: bytes\r\nContent-Range: bytes {start}-{end}/{}\r\nContent-Length: {}\r\n\r\n",
                    body.len(),
                    end + 1 - start
                );
                stream.write_all(head.as_bytes())?;
                stream.write_all(&body[start..=end])?;
            }
            _ => {
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nAccept-Ranges: bytes\r\nContent-Length: {}\r\n\r\n",
                    body.len()
                );
                stream.write_all(head.as_bytes())?;
                stream.write_all(body)?;
            }
        }
    }
}

/// Kills the browser (this test's own child) when the test ends, pass or fail.
struct Browser(Child);

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn chromium_binary() -> String {
    std::env::var("KILN_CHROMIUM").unwrap_or_else(|_| "chromium".to_string())
}

/// Plays `clips` (format, file name, MIME type) and returns the page's JSON report.
fn play_in_chromium(clips: &[(VideoFormat, &str, &'static str)]) -> serde_json::Value {
    let mut routes = Vec::new();
    let mut clip_list = Vec::new();
    let frames = synthetic_clip(FRAMES, WIDTH, HEIGHT);
    for &(format, name, mime) in clips {
        let options = EncodeOptions {
            format,
            fps: FPS,
            quality: 90,
        };
        let bytes = encode_video(&frames, FRAMES, WIDTH, HEIGHT, &options).expect("encode");
        routes.push((format!("/{name}"), mime, bytes));
        clip_list
            .push(serde_json::json!({ "name": name, "url": format!("/{name}"), "mime": mime }));
    }
    let page = PAGE.replace(
        "__CLIPS__",
        &serde_json::Value::Array(clip_list).to_string(),
    );
    routes.push((
        "/".to_string(),
        "text/html; charset=utf-8",
        page.into_bytes(),
    ));

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
    let port = listener.local_addr().unwrap().port();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || serve(listener, routes, sender));

    let profile = scratch_dir(&format!("chromium_profile_{}", clips[0].1));
    let child = Command::new(chromium_binary())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--mute-audio",
            "--autoplay-policy=no-user-gesture-required",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|err| {
            panic!("cannot start chromium ({err}); run 'apt-get install -y chromium'")
        });
    let _browser = Browser(child);
    let started = Instant::now();
    let report = receiver
        .recv_timeout(Duration::from_secs(90))
        .unwrap_or_else(|_| panic!("no report from chromium after {:?}", started.elapsed()));
    serde_json::from_str(&report).expect("report JSON")
}

fn assert_played(result: &serde_json::Value) {
    let name = result["name"].as_str().unwrap_or("?");
    assert!(
        result["error"].is_null(),
        "{name}: media error {}",
        result["error"]
    );
    assert_eq!(
        result["loadedmetadata"], true,
        "{name}: no loadedmetadata: {result}"
    );
    let duration = result["duration"].as_f64().unwrap_or(f64::NAN);
    let expected = FRAMES as f64 / f64::from(FPS);
    // 121 frames at 24 fps: 5.041667 s, the last frame keeping its 1/24 s.
    assert!(
        (duration - expected).abs() < 0.002,
        "{name}: duration {duration} != {expected}"
    );
    assert_eq!(result["videoWidth"], WIDTH, "{name}: {result}");
    assert_eq!(result["videoHeight"], HEIGHT, "{name}: {result}");
    assert_eq!(result["playing"], true, "{name}: never played: {result}");
    let start = result["startTime"].as_f64().unwrap_or(f64::NAN);
    let later = result["laterTime"].as_f64().unwrap_or(f64::NAN);
    assert!(
        later > start + 0.3,
        "{name}: currentTime went {start} -> {later} in 1 s"
    );
    let decoded = result["decodedFrames"].as_u64().unwrap_or(0);
    assert!(
        decoded >= 10,
        "{name}: only {decoded} frames decoded in 1 s of playback"
    );
}

#[test]
fn chromium_plays_mp4_mov_and_webm() {
    let clips = [
        (VideoFormat::Mp4, "clip.mp4", VideoFormat::Mp4.mime_type()),
        (VideoFormat::Mov, "clip.mov", VideoFormat::Mov.mime_type()),
        (
            VideoFormat::Webm,
            "clip.webm",
            VideoFormat::Webm.mime_type(),
        ),
    ];
    let report = play_in_chromium(&clips);
    eprintln!("chromium report: {report:#}");
    let results = report.as_array().expect("one result per clip");
    assert_eq!(results.len(), clips.len());
    for result in results {
        assert_played(result);
    }
}
