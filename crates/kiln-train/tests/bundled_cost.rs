//! Size and speed of the bundled model at random weights: parameter counts, one
//! transformer forward at the 5 s 112x64 shape and one VAE decode. Ignored by default (it
//! is a measurement, not a check): `cargo test -p kiln-train --test bundled_cost
//! -- --ignored --nocapture`.

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use kiln_models::umt5::UMT5EncoderModel;
use kiln_models::wan::transformer::WanTransformer;
use kiln_models::wan::vae::WanVae;
use kiln_train::{CaptionTokenizer, ModelSizes, CAMERA_DIM};

fn parameters(map: &VarMap) -> usize {
    map.all_vars().iter().map(|v| v.elem_count()).sum()
}

#[test]
#[ignore]
fn bundled_model_cost() {
    let device = Device::Cpu;
    let sizes = ModelSizes::bundled();
    let z = sizes.vae_z_dim;
    let vocab = CaptionTokenizer::from_grammar().unwrap().vocab_size();

    let te_map = VarMap::new();
    let te_cfg = sizes.text_encoder_config(vocab).unwrap();
    UMT5EncoderModel::new(
        &te_cfg,
        VarBuilder::from_varmap(&te_map, DType::F32, &device),
    )
    .unwrap();
    let tr_map = VarMap::new();
    let tr_cfg = sizes.transformer_config().unwrap();
    // Plain tensors (not variables) so the timing is of inference, not of a training graph.
    WanTransformer::new(
        &tr_cfg,
        VarBuilder::from_varmap(&tr_map, DType::F32, &device),
    )
    .unwrap();
    let vae_map = VarMap::new();
    let vae_cfg = sizes.vae_config(&vec![0.0; z], &vec![1.0; z]).unwrap();
    WanVae::new(
        &vae_cfg,
        VarBuilder::from_varmap(&vae_map, DType::F32, &device),
    )
    .unwrap();
    let (te, tr, vae) = (
        parameters(&te_map),
        parameters(&tr_map),
        parameters(&vae_map),
    );
    eprintln!(
        "parameters: text encoder {te}, transformer {tr}, VAE {vae}; total {} ({:.1} MB in f32)",
        te + tr + vae,
        (te + tr + vae) as f64 * 4.0 / 1e6
    );

    let plain = |map: &VarMap| {
        let tensors = map
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_tensor().detach()))
            .collect();
        VarBuilder::from_tensors(tensors, DType::F32, &device)
    };
    let transformer = WanTransformer::new(&tr_cfg, plain(&tr_map)).unwrap();
    let vae_model = WanVae::new(&vae_cfg, plain(&vae_map)).unwrap();
    // 41 frames of 112x64: latents (1, z, 11, 8, 14).
    let x = Tensor::randn(0f32, 1., (1, 2 * z + 4, 11, 8, 14), &device).unwrap();
    let t = Tensor::new(&[500f32], &device).unwrap();
    let text = Tensor::randn(0f32, 1., (1, sizes.text_len, sizes.text_d_model), &device).unwrap();
    let camera = Tensor::zeros((1, CAMERA_DIM), DType::F32, &device).unwrap();
    transformer
        .forward_with_camera(&x, &t, &text, Some(&camera))
        .unwrap();
    let start = Instant::now();
    for _ in 0..3 {
        transformer
            .forward_with_camera(&x, &t, &text, Some(&camera))
            .unwrap();
    }
    let forward = start.elapsed().as_secs_f64() / 3.0;
    let latents = Tensor::randn(0f32, 1., (1, z, 11, 8, 14), &device).unwrap();
    let start = Instant::now();
    let video = vae_model.decode(&latents).unwrap();
    let decode = start.elapsed().as_secs_f64();
    eprintln!(
        "transformer forward (308 tokens): {forward:.3} s; VAE decode to {:?}: {decode:.3} s",
        video.dims()
    );
}
