//! `imageUpload` and `mediaStorage`: client media kept in the shared uploads folder, so the
//! UUID (or URL) handed back works as a frame image in a later `videoInference`.

use std::time::Duration;

use kiln_media::image_in::{read_source_bytes, FetchLimits, ImageSource};
use serde_json::{json, Map, Value};

use super::{Caller, RunwareError};
use crate::address::image_address_policy;
use crate::dialects::uploads;
use crate::AppState;

/// A slow or huge remote file must not hold a task for the fetcher's default 5 minutes.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// `{taskType:"imageUpload", taskUUID, image}` → `{imageUUID, imageURL}`.
pub(crate) async fn image_upload(
    state: &AppState,
    caller: &Caller,
    task: &Map<String, Value>,
    task_uuid: &str,
) -> Result<Value, RunwareError> {
    let source = required_string(task, "image", "an image as a data URI, base64 or URL")?;
    let bytes = read_media(state, source, "image").await?;
    let content_type = image_type(&bytes).ok_or_else(|| {
        RunwareError::invalid(
            "image",
            "the upload is not a PNG, JPEG, WebP or GIF image; give one of those",
        )
    })?;
    let key = save(state, &bytes, content_type).await?;
    Ok(json!({
        "taskType": "imageUpload",
        "taskUUID": task_uuid,
        "imageUUID": upload_uuid(&key),
        "imageURL": uploads::url(&caller.base_url, &key),
    }))
}

/// `{taskType:"mediaStorage", taskUUID, operation:"upload", media}` → `{mediaUUID}`.
pub(crate) async fn media_storage(
    state: &AppState,
    task: &Map<String, Value>,
    task_uuid: &str,
) -> Result<Value, RunwareError> {
    match task.get("operation") {
        None | Some(Value::Null) => {}
        Some(Value::String(op)) if op == "upload" => {}
        Some(other) => {
            return Err(RunwareError::unsupported(
                "operation",
                format!("operation {other}; this server stores media with operation upload only"),
            ))
        }
    }
    let source = required_string(task, "media", "the file as base64, a data URI or a URL")?;
    let bytes = read_media(state, source, "media").await?;
    let content_type = image_type(&bytes).unwrap_or(if bytes.get(4..8) == Some(b"ftyp") {
        "video/mp4"
    } else {
        "application/octet-stream"
    });
    let key = save(state, &bytes, content_type).await?;
    Ok(json!({
        "taskType": "mediaStorage",
        "taskUUID": task_uuid,
        "mediaUUID": upload_uuid(&key),
    }))
}

fn required_string<'a>(
    task: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<&'a str, RunwareError> {
    task.get(key)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| RunwareError::invalid(key, format!("{key} is required: {what}")))
}

async fn save(state: &AppState, bytes: &[u8], content_type: &str) -> Result<String, RunwareError> {
    uploads::save(state, bytes, content_type)
        .await
        .map_err(|e| RunwareError::Internal {
            message: format!("cannot store the upload: {e}"),
        })
}

/// The UUID part of an upload key (`<uuid>.<ext>`).
fn upload_uuid(key: &str) -> &str {
    key.split_once('.').map_or(key, |(id, _)| id)
}

/// The bytes of a data URI, base64 text, a URL, or an earlier upload of this server.
/// Never a path: a client must not read the server's files.
async fn read_media(state: &AppState, source: &str, field: &str) -> Result<Vec<u8>, RunwareError> {
    let inlined = uploads::inline(state, source).await;
    let lower: String = inlined
        .chars()
        .take(8)
        .collect::<String>()
        .to_ascii_lowercase();
    let parsed = if lower.starts_with("data:") {
        ImageSource::DataUri(inlined)
    } else if lower.starts_with("http://") || lower.starts_with("https://") {
        ImageSource::Url(inlined)
    } else if uuid::Uuid::parse_str(&inlined).is_ok() {
        return Err(RunwareError::invalid(
            field,
            format!(
                "no upload has UUID {inlined}; give the file itself (base64 or data URI) or a URL"
            ),
        ));
    } else {
        ImageSource::Base64(inlined)
    };
    let mut limits = FetchLimits {
        max_bytes: state.config.max_body_bytes as u64,
        total_timeout: FETCH_TIMEOUT,
        ..FetchLimits::default()
    };
    if !state.config.allow_private_addresses {
        limits.address_policy = Some(image_address_policy());
    }
    tokio::task::spawn_blocking(move || read_source_bytes(&parsed, &limits))
        .await
        .map_err(|e| RunwareError::Internal {
            message: format!("the upload reader crashed: {e}"),
        })?
        .map_err(|e| RunwareError::invalid(field, e.to_string()))
}

/// The MIME type of an image kiln can decode, by its first bytes.
fn image_type(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() > 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}
