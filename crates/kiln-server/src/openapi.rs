//! `GET /openapi.json`, generated from the request and response types and the handlers'
//! annotations, so the document cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::native::{JobLinks, JobList, JobView};
use crate::request::{
    AspectRatio, CameraAxes, CameraControl, CameraType, DurationSeconds, DynamicMaskInput,
    FrameImage, FramePosition, Mode, OutputFormat, TrajectoryPoint, VideoRequest,
};

#[derive(OpenApi)]
#[openapi(
    info(title = "kiln native API", description = "Self-hosted video generation: submit a job, follow it, fetch the clip."),
    paths(
        crate::native::submit,
        crate::native::list,
        crate::native::get_job,
        crate::native::cancel,
        crate::events::job_events,
        crate::files::get_file,
        crate::native::healthz,
        crate::native::metrics,
    ),
    components(schemas(
        VideoRequest, DurationSeconds, AspectRatio, FrameImage, FramePosition, CameraControl,
        CameraType, CameraAxes, DynamicMaskInput, TrajectoryPoint, Mode, OutputFormat,
        JobView, JobLinks, JobList, ErrorBody, ErrorDetail,
    )),
    modifiers(&BearerAuth),
)]
struct NativeApi;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The native API's OpenAPI 3.1 document.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    NativeApi::openapi()
}

pub async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi_document())
}
