//! Errors raised while locating and reading a checkpoint. Each message is one line that
//! names the file (or key), what was expected, what was found, and how to fix it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot read ({source}); check the path and its permissions")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path}: not a valid {what} ({source}); use the config.json that ships with the checkpoint"
    )]
    Config {
        path: PathBuf,
        what: &'static str,
        source: serde_json::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{0}")]
    Weights(#[from] candle_core::Error),
}

pub type Result<T> = std::result::Result<T, LoadError>;
