//! Seeded initialisation of fresh variables. The model code asks its `VarBuilder` for
//! weights with candle's default hints, which are zeros for plain `get` (the VAE's convs
//! and norm gains, UMT5's norm weights) and draw from an unseeded generator elsewhere, so
//! the training code sets every variable itself: reproducible from the seed, and alive.

use candle_core::Tensor;
use candle_nn::VarMap;
use kiln_world::SplitMix64;

use crate::error::Result;

/// Sets every variable of `map`, in name order, from `rng`:
/// norm gains (`gamma`, `*norm*.weight` of rank 1) 1; biases and other vectors 0;
/// `scale_shift_table` N(0, 1/dim) as diffusers initialises it; the camera embedder's
/// output layer 0 (a fresh embedder is a no-op); token and relative-position tables
/// N(0, 1); other matrices and conv kernels U(±√(3 / fan_in)) (unit output variance),
/// a tenth of that for the output layers (`conv_out`, `proj_out`) so that a fresh model
/// starts near a grey picture / zero velocity instead of saturating the VAE's clamp.
pub fn initialise(map: &VarMap, rng: &mut SplitMix64) -> Result<()> {
    let data = map.data().lock().expect("var map lock poisoned");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let dims = var.dims().to_vec();
        let n: usize = dims.iter().product();
        let leaf = name.rsplit('.').next().unwrap_or(name);
        let values: Vec<f32> =
            if leaf == "gamma" || (dims.len() == 1 && leaf == "weight" && name.contains("norm")) {
                vec![1.0; n]
            } else if name.contains("camera_embedder.linear_2") {
                vec![0.0; n]
            } else if leaf == "scale_shift_table" {
                let std = 1.0 / (*dims.last().unwrap_or(&1) as f32).sqrt();
                (0..n).map(|_| rng.gaussian() * std).collect()
            } else if name.contains("shared") || name.contains("embed_tokens") {
                (0..n).map(|_| rng.gaussian()).collect()
            } else if name.contains("relative_attention_bias") {
                (0..n).map(|_| rng.gaussian() * 0.1).collect()
            } else if dims.len() >= 2 {
                let fan_in: usize = dims[1..].iter().product();
                let output_layer = name.ends_with("conv_out.weight") || name == "proj_out.weight";
                let gain = if output_layer { 0.1 } else { 1.0 };
                let bound = gain * (3.0 / fan_in.max(1) as f32).sqrt();
                (0..n).map(|_| rng.range(-bound, bound)).collect()
            } else {
                vec![0.0; n]
            };
        let t = Tensor::from_vec(values, dims, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}
