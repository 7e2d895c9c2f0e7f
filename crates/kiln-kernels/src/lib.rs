//! CPU compute kernels for kiln. This crate owns the hot numeric loops, written with
//! `std::arch` (for now GEMM in f32, and in bf16 with f32 accumulation), and the run-time
//! choice of instruction set by CPU features: AVX512-BF16, AVX-512F, AVX2+FMA, or portable
//! Rust ([`KernelPath`]). [`candle_ops`] exposes the kernels to candle tensors. It must not
//! know model architectures or weights and does no I/O: callers hand it slices or tensors.
//!
//! - [`gemm`] / [`gemm_with`]: `C (+)= A · B` for [`MatRef`] views with any strides, so a
//!   linear layer's `x · wᵀ` is `gemm(MatRef::row_major(&x, m, k)?, MatRef::row_major(&w,
//!   n, k)?.t(), &mut c, false)` with no copy of `w`.
//! - [`gemm_batched`] / [`gemm_batched_with`]: a batch of products over [`BatchRef`] views
//!   (attention's per-head `q · kᵀ` and `p · v`).
//! - [`PackedRhs`] + [`gemm_prepacked`]: B (a weight) packed once and reused.
//! - [`candle_ops::matmul`]: the same for candle tensors, with gradients.
//! - [`f32_to_bf16`]: vectorised rounding of results to bf16.
//! - [`conv`]: stride-1 3D (and 2D) convolution of channel-first frames as GEMMs read
//!   straight from the padded input.
//! - [`winograd`]: the same for `(kt, 3, 3)` kernels in the Winograd F(2×2, 3×3) domain,
//!   4 multiplies per output pixel and tap instead of 9.
//! - [`norm`]: LayerNorm fused with its affine or adaLN modulation, and the gated residual.
//! - [`rope`]: interleaved-pair rotary embedding in one pass.
//! - [`activation`]: GELU (tanh form) over slices, vectorised and threaded.
//! - [`attention`]: fused attention `softmax(q · kᵀ / √D) · v` (online softmax over key
//!   blocks, no Lq × Lk score matrix), on slices and on candle tensors.
//! - [`im2col`]: a strided 3-D convolution's im2col columns as one differentiable op, for
//!   training (its backward is one col2im pass).
//! - [`train_ops`]: the VAE's channel RMS norm and per-channel bias add for training, each
//!   with a one-pass backward.
//! - [`peak`]: the machine's measured multiply-add peak, to read GFLOP/s against.
//!
//! The AVX-512 paths need rustc 1.89 or newer (see build.rs); older compilers build the
//! AVX2 and portable paths only.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod activation;
pub mod attention;
pub mod candle_ops;
pub mod conv;
mod convert;
mod error;
mod gemm;
pub mod im2col;
mod kernel_path;
mod matrix;
pub mod norm;
pub mod peak;
pub mod rope;
pub mod train_ops;
pub mod winograd;

pub use convert::f32_to_bf16;
pub use error::{KernelError, Result};
pub use gemm::{
    gemm, gemm_batched, gemm_batched_with, gemm_prepacked, gemm_prepacked_bf16, gemm_with,
    Epilogue, GemmInput, PackedRhs,
};
pub use kernel_path::KernelPath;
pub use matrix::{BatchRef, MatRef};

#[cfg(test)]
mod test_values {
    /// `n` fixed values in [−1, 1] from a multiplicative hash of the index and `seed`.
    pub(crate) fn hashed(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let v = (i as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(seed.wrapping_mul(40_503));
                ((v >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }
}
