//! Training of kiln's bundled model. This crate owns the training data stream (scenes of
//! `kiln-world` rendered on the fly, a pure function of seed and step), the caption
//! tokenizer, the Wan image-to-video conditioning used in training, seeded initialisation,
//! AdamW, the VAE and DiT training loops, resumable checkpoints and the export into the
//! diffusers folder layout that `kiln-pipeline` loads.
//!
//! It must not hold architecture code (the models are `kiln-models`' own, built over a
//! `VarMap` so candle's autograd trains them), sampling, or anything of the CLI; it runs
//! on the CPU and writes only under the run folder it is given.

pub mod checkpoint;
pub mod conditioning;
pub mod data;
pub mod error;
pub mod init;
pub mod optim;
pub mod sizes;
pub mod stages;
pub mod tokenizer;

pub use conditioning::ConditionRates;
pub use error::{Result, TrainError};
pub use optim::{AdamW, AdamWConfig, LrScale};
pub use sizes::{ClipGeometry, ModelSizes, CAMERA_DIM, REFERENCE_TEXT_LEN};
pub use stages::{train_dit, train_vae, Stage, StepReport, TrainOptions, TrainSummary, FLOW_SHIFT};
pub use tokenizer::CaptionTokenizer;
