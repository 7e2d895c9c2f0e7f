//! Errors of the training code, each a one-line message with the cause.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: not a valid {what} ({message})")]
    Invalid {
        path: PathBuf,
        what: &'static str,
        message: String,
    },
    #[error("{0}")]
    Options(String),
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    #[error("scene rendering failed: {0}")]
    World(#[from] kiln_world::WorldError),
    #[error("{0}")]
    Tensor(#[from] candle_core::Error),
    #[error("{0}")]
    Load(#[from] kiln_models::LoadError),
}

pub type Result<T> = std::result::Result<T, TrainError>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.to_path_buf(),
        source,
    }
}
