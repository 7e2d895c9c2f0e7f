//! Outputs on local disk under `<data>/files/<key>`, and `GET /files/{key}`. Keys are
//! `<job id>_<n>.<ext>`, unguessable because job ids are random, so file URLs need no key
//! (webhook receivers and browsers fetch them directly).

use std::path::{Path as FsPath, PathBuf};

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use kiln_jobs::JobState;

use crate::error::NativeError;
use crate::{AppState, ServerError};

#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

impl FileStore {
    pub fn create(root: PathBuf) -> Result<Self, ServerError> {
        std::fs::create_dir_all(&root).map_err(|source| ServerError::DataDir {
            path: root.display().to_string(),
            source,
        })?;
        Ok(Self { root })
    }

    /// The key of output `index` of a job, with its extension.
    pub fn key(job_id: &str, index: u32, extension: &str) -> String {
        format!("{job_id}_{index}.{extension}")
    }

    /// The file of a key, or `None` when the key could name something outside the folder.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        let safe = !key.is_empty()
            && !key.starts_with('.')
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        safe.then(|| self.root.join(key))
    }

    pub fn root(&self) -> &FsPath {
        &self.root
    }

    /// Removes a key's file; a missing file is already removed.
    pub async fn delete(&self, key: &str) -> std::io::Result<()> {
        let Some(path) = self.path(key) else {
            return Ok(());
        };
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// The job id in a key (`<id>_<n>.<ext>`).
fn job_id_of(key: &str) -> Option<&str> {
    key.rsplit_once('_').map(|(id, _)| id)
}

fn content_type_of(key: &str) -> &'static str {
    match key.rsplit_once('.').map(|(_, ext)| ext) {
        Some("mp4") => "video/mp4",
        Some("mov") => "video/quicktime",
        Some("webm") => "video/webm",
        Some("jpg") => "image/jpeg",
        _ => "application/octet-stream",
    }
}

/// Download an output: 404 for a key never issued, 410 once its TTL has passed. A single
/// `Range: bytes=…` is honoured (206), as video players seek with it.
#[utoipa::path(get, path = "/files/{key}", params(("key" = String, Path)),
    responses((status = 200, description = "the file"), (status = 206, description = "the requested byte range"),
        (status = 404, body = crate::error::ErrorBody), (status = 410, body = crate::error::ErrorBody),
        (status = 416, description = "the range lies outside the file")))]
pub async fn get_file(
    State(state): State<AppState>,
    Path(key): Path<String>,
    headers: HeaderMap,
) -> Result<Response, NativeError> {
    let not_found = || NativeError::not_found(format!("file {key}"));
    let path = state.files.path(&key).ok_or_else(not_found)?;
    let job_id = job_id_of(&key).ok_or_else(not_found)?;
    let job = state.store.get(job_id, None).await?.ok_or_else(not_found)?;
    if job.state == JobState::Expired {
        return Err(NativeError::Gone {
            what: format!("file {key}"),
        });
    }
    // Whole-file reads: clips are a few MB.
    let bytes = tokio::fs::read(&path).await.map_err(|_| not_found())?;
    let common = [
        (header::CONTENT_TYPE, content_type_of(&key).to_string()),
        (header::CACHE_CONTROL, "private, max-age=3600".to_string()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
    ];
    let range = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map(|v| byte_range(v, bytes.len()));
    Ok(match range {
        None | Some(RangeAnswer::Whole) => (common, bytes).into_response(),
        Some(RangeAnswer::Part(start, end)) => (
            StatusCode::PARTIAL_CONTENT,
            common,
            [(
                header::CONTENT_RANGE,
                format!("bytes {start}-{end}/{}", bytes.len()),
            )],
            bytes[start..=end].to_vec(),
        )
            .into_response(),
        Some(RangeAnswer::Unsatisfiable) => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{}", bytes.len()))],
        )
            .into_response(),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum RangeAnswer {
    /// No usable single range (several ranges, another unit, bad syntax): send it all.
    Whole,
    /// Inclusive byte offsets.
    Part(usize, usize),
    Unsatisfiable,
}

/// One `bytes=a-b`, `bytes=a-` or `bytes=-n` range against a file of `len` bytes.
fn byte_range(value: &str, len: usize) -> RangeAnswer {
    let Some(spec) = value.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Whole;
    };
    if spec.contains(',') {
        return RangeAnswer::Whole;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Whole;
    };
    let (a, b) = (a.trim(), b.trim());
    let parse = |t: &str| t.parse::<usize>().ok();
    let (start, end) = match (a.is_empty(), b.is_empty()) {
        (true, false) => match parse(b) {
            Some(0) => return RangeAnswer::Unsatisfiable,
            Some(n) => (len.saturating_sub(n), len.saturating_sub(1)),
            None => return RangeAnswer::Whole,
        },
        (false, _) => match (
            parse(a),
            if b.is_empty() {
                Some(usize::MAX)
            } else {
                parse(b)
            },
        ) {
            (Some(s), Some(e)) if s <= e => (s, e.min(len.saturating_sub(1))),
            _ => return RangeAnswer::Whole,
        },
        (true, true) => return RangeAnswer::Whole,
    };
    if len == 0 || start >= len {
        RangeAnswer::Unsatisfiable
    } else {
        RangeAnswer::Part(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_cannot_escape_the_folder() {
        let store = FileStore {
            root: PathBuf::from("/data/files"),
        };
        assert!(store.path("abc_0.mp4").is_some());
        for bad in ["../jobs.sqlite", ".hidden", "a/b", "", "a\\b"] {
            assert!(store.path(bad).is_none(), "{bad}");
        }
        assert_eq!(job_id_of("1234-abcd_0.mp4"), Some("1234-abcd"));
    }

    #[test]
    fn byte_ranges_follow_rfc_9110() {
        use RangeAnswer::*;
        assert_eq!(byte_range("bytes=0-99", 1000), Part(0, 99));
        assert_eq!(byte_range("bytes=900-", 1000), Part(900, 999));
        assert_eq!(byte_range("bytes=-100", 1000), Part(900, 999));
        assert_eq!(byte_range("bytes=-5000", 1000), Part(0, 999));
        assert_eq!(byte_range("bytes=990-5000", 1000), Part(990, 999));
        assert_eq!(byte_range("bytes=1000-", 1000), Unsatisfiable);
        assert_eq!(byte_range("bytes=-0", 1000), Unsatisfiable);
        assert_eq!(byte_range("bytes=5-1", 1000), Whole);
        assert_eq!(byte_range("bytes=0-1,5-9", 1000), Whole);
        assert_eq!(byte_range("items=0-1", 1000), Whole);
        assert_eq!(byte_range("bytes=0-0", 0), Unsatisfiable);
    }
}
