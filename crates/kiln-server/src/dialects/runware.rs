//! The runware dialect (see ../shared/api/dialects.md). Work in progress.

use axum::Router;
use kiln_jobs::Job;

use crate::delivery::OutboundWebhook;
use crate::AppState;

pub(crate) const DIALECT: &str = "runware";

pub(crate) fn router() -> Router<AppState> {
    Router::new()
}

/// The webhook for a finished job of this dialect, if it asked for one.
pub(crate) fn webhook(_state: &AppState, _job: &Job) -> Option<OutboundWebhook> {
    None
}
