//! Model definitions for the Wan 2.1 family: the UMT5 text encoder, the Wan transformer
//! (DiT with full spatio-temporal attention) and the Wan 3D causal VAE, each with a serde
//! `Config` read from the checkpoint and built from a candle `VarBuilder`, plus the key
//! maps for the single-file weight layouts people download.
//!
//! This crate owns architecture and weight layout only. It must not sample, schedule,
//! tokenize or do I/O beyond reading configs and tensors.

pub mod error;
pub mod kernel_linear;
pub mod umt5;
pub mod wan;
pub mod weights;

pub use error::LoadError;
pub use weights::{component_files, read_config, KeyMap, WeightSource};
