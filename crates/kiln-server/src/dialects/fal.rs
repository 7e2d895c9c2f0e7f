//! The fal dialect (see ../shared/api/dialects.md). Work in progress.

use axum::Router;
use kiln_jobs::Job;

use crate::delivery::OutboundWebhook;
use crate::AppState;

pub(crate) const DIALECT: &str = "fal";

pub(crate) fn queue_router() -> Router<AppState> {
    Router::new()
}

/// The webhook for a finished job of this dialect, if it asked for one.
pub(crate) fn webhook(_state: &AppState, _job: &Job) -> Option<OutboundWebhook> {
    None
}

/// The `fal.run` host: the same paths, answered synchronously.
pub(crate) fn run_router() -> Router<AppState> {
    Router::new()
}
