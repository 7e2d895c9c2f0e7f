//! The native API's error: one enum, mapped to `{"error": {"code", "message", "field"}}` and
//! its HTTP status. Dialect surfaces get their own error types with their own wire shapes.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kiln_jobs::JobError;
use serde::Serialize;
use utoipa::ToSchema;

use crate::request::RequestError;

#[derive(Debug, thiserror::Error)]
pub enum NativeError {
    /// The body is not JSON, or not JSON of the request's shape at the syntax level.
    #[error("{message}")]
    InvalidJson { message: String },
    /// A field has a value the API does not accept.
    #[error("{message}")]
    InvalidParameter { field: String, message: String },
    /// A control the loaded model cannot honour (images on a text-only model, camera…).
    #[error("{message}")]
    Unsupported { field: String, message: String },
    #[error("missing or unknown API key; send `Authorization: Bearer <key>` with a key configured on this server")]
    Unauthorized,
    #[error("{what} not found; check the id (a job is visible only to the key that created it)")]
    NotFound { what: String },
    #[error("{message}")]
    Conflict { message: String },
    #[error("{what} has expired and was deleted; generate it again, or ask for a longer `ttl`")]
    Gone { what: String },
    #[error("the request body is over the {limit}-byte limit; send images as URLs instead of data URIs, or smaller images")]
    PayloadTooLarge { limit: usize },
    #[error("the queue is full; retry after {retry_after} seconds")]
    QueueFull { retry_after: u64 },
    #[error("internal error: {message}")]
    Internal { message: String },
}

/// The body of every native error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable, machine-readable: `invalid_json`, `invalid_parameter`, `unsupported_by_model`,
    /// `unauthorized`, `not_found`, `conflict`, `expired`, `payload_too_large`, `queue_full`,
    /// `internal`.
    pub code: &'static str,
    /// The cause and the fix, for people.
    pub message: String,
    /// The request field at fault, as a path (`camera_control.type`, `images[0].image`).
    pub field: Option<String>,
}

impl NativeError {
    pub fn status(&self) -> StatusCode {
        match self {
            NativeError::InvalidJson { .. } => StatusCode::BAD_REQUEST,
            NativeError::InvalidParameter { .. } | NativeError::Unsupported { .. } => {
                StatusCode::UNPROCESSABLE_ENTITY
            }
            NativeError::Unauthorized => StatusCode::UNAUTHORIZED,
            NativeError::NotFound { .. } => StatusCode::NOT_FOUND,
            NativeError::Conflict { .. } => StatusCode::CONFLICT,
            NativeError::Gone { .. } => StatusCode::GONE,
            NativeError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            NativeError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            NativeError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            NativeError::InvalidJson { .. } => "invalid_json",
            NativeError::InvalidParameter { .. } => "invalid_parameter",
            NativeError::Unsupported { .. } => "unsupported_by_model",
            NativeError::Unauthorized => "unauthorized",
            NativeError::NotFound { .. } => "not_found",
            NativeError::Conflict { .. } => "conflict",
            NativeError::Gone { .. } => "expired",
            NativeError::PayloadTooLarge { .. } => "payload_too_large",
            NativeError::QueueFull { .. } => "queue_full",
            NativeError::Internal { .. } => "internal",
        }
    }

    fn field(&self) -> Option<String> {
        match self {
            NativeError::InvalidParameter { field, .. }
            | NativeError::Unsupported { field, .. } => Some(field.clone()),
            _ => None,
        }
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.to_string(),
                field: self.field(),
            },
        }
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        NativeError::NotFound { what: what.into() }
    }
}

impl IntoResponse for NativeError {
    fn into_response(self) -> Response {
        if let NativeError::Internal { message } = &self {
            tracing::error!(%message, "internal error");
        }
        let mut response = (self.status(), Json(self.body())).into_response();
        if let NativeError::QueueFull { retry_after } = &self {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
        }
        if let NativeError::Unauthorized = &self {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

impl From<RequestError> for NativeError {
    fn from(e: RequestError) -> Self {
        match e {
            RequestError::Invalid { field, message } => {
                NativeError::InvalidParameter { field, message }
            }
            RequestError::Unsupported { field, message } => {
                NativeError::Unsupported { field, message }
            }
        }
    }
}

/// Store errors on the native surface. `QueueFull` needs the configured Retry-After, so the
/// submit handler maps it itself.
impl From<JobError> for NativeError {
    fn from(e: JobError) -> Self {
        match e {
            JobError::NotFound { id } => NativeError::not_found(format!("job {id}")),
            JobError::QueueFull { .. } => NativeError::QueueFull { retry_after: 30 },
            JobError::InvalidState { .. } => NativeError::Conflict {
                message: e.to_string(),
            },
            JobError::InvalidCursor { .. } => NativeError::InvalidParameter {
                field: "cursor".into(),
                message: e.to_string(),
            },
            other => NativeError::Internal {
                message: other.to_string(),
            },
        }
    }
}
