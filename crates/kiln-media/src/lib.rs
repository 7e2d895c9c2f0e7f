//! Media at kiln's edges: finished frames leave as video files (MP4 and MOV with H.264,
//! WEBM) with a poster image, and conditioning images arrive from paths, URLs, data URIs
//! or bare base64, decoded, oriented and fitted to the target size.
//!
//! This crate owns pixels and containers. It must not know about models, jobs or HTTP
//! servers; it takes frames as plain RGB buffers and returns plain RGB buffers.

pub mod image_in;
pub mod video_out;
