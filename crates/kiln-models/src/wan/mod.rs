//! The Wan 2.1 transformer and VAE.

pub mod transformer;
pub mod transformer_keys;
pub mod vae;
pub mod vae_keys;
