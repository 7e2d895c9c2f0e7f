//! Errors raised while reading a scheduler configuration or a guidance setting. Each message is
//! one line that names where the value came from, the field, and how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SamplingError {
    #[error("{path}: cannot read ({source}); check the path and its permissions")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a valid scheduler config ({source}); \
         use the scheduler/scheduler_config.json that ships with the checkpoint"
    )]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// A configuration diffusers accepts but kiln does not implement (or that diffusers itself
    /// cannot run to a finite result).
    #[error("{origin}: {field} = {value} is not supported; {fix}")]
    Unsupported {
        origin: String,
        field: &'static str,
        value: String,
        fix: String,
    },
    #[error(
        "cfg_scale {0} is outside [0, 1]; \
         pass a value from 0 (no guidance) to 1 (strongest guidance)"
    )]
    CfgScaleOutOfRange(f64),
}

pub type Result<T> = std::result::Result<T, SamplingError>;
