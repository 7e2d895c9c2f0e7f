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

/// The compute dtype to use when the user names none: bf16 where the CPU multiplies bf16
/// natively (AVX512-BF16: twice the f32 rate, half the memory traffic), f32 elsewhere, where
/// bf16 would only be widened again.
pub fn default_cpu_dtype() -> candle_core::DType {
    if kiln_kernels::KernelPath::best() == kiln_kernels::KernelPath::Avx512Bf16 {
        candle_core::DType::BF16
    } else {
        candle_core::DType::F32
    }
}
pub use weights::{component_files, read_config, KeyMap, RandomWeights, WeightSource};
