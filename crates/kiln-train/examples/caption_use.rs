//! How much an exported model's transformer uses its caption: the flow-matching error on
//! text-only single frames of held-out-style scenes with the true caption, with the empty
//! caption, and with another scene's caption, at fixed σ and noise.
//!
//! `cargo run --release -p kiln-train --example caption_use -- MODEL_DIR [FRAMES] [SAMPLES] [POOL] [MAX_OBJECTS]`
//!
//! With POOL, scenes (the other captions too) come from the first POOL scene seeds, as
//! `kiln train --scene-pool POOL` draws them: a model over-fitted to them must read which
//! scene its caption names; `all` is the endless stream. With MAX_OBJECTS, scenes hold at
//! most that many objects, as `kiln train --max-objects` draws them.
//!
//! Prints the mean squared error over all latent cells and over the cells that hold part
//! of an object, per σ. A model that reads its caption has a clearly lower error with the
//! true caption than with the empty or a wrong one; equal errors mean the text is unused.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kiln_models::umt5::{self, UMT5EncoderModel};
use kiln_models::wan::transformer::{self, WanTransformer};
use kiln_models::wan::vae::{self, WanVae};
use kiln_train::data::{clip_batch, gaussian, rng_for, Stream};
use kiln_train::stages::{encode_text, latent_object_weights};
use kiln_train::{CaptionTokenizer, ClipGeometry, CAMERA_DIM, REFERENCE_TEXT_LEN};

fn load(dir: &std::path::Path, file: &str, dev: &Device) -> anyhow::Result<VarBuilder<'static>> {
    let tensors = candle_core::safetensors::load(dir.join(file), dev)?;
    Ok(VarBuilder::from_tensors(tensors, DType::F32, dev))
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = std::path::PathBuf::from(
        args.next()
            .expect("usage: caption_use MODEL_DIR [FRAMES] [SAMPLES] [POOL] [MAX_OBJECTS]"),
    );
    let frames: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let samples: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(24);
    let scene_pool: Option<u64> = args
        .next()
        .filter(|s| s != "all")
        .map(|s| s.parse())
        .transpose()?;
    let max_objects: Option<usize> = args.next().map(|s| s.parse()).transpose()?;
    let dev = Device::Cpu;
    let te_cfg: umt5::Config =
        kiln_models::read_config(&model.join("text_encoder/config.json"), "UMT5 config")?;
    let tr_cfg: transformer::Config =
        kiln_models::read_config(&model.join("transformer/config.json"), "transformer")?;
    let vae_cfg: vae::Config = kiln_models::read_config(&model.join("vae/config.json"), "VAE")?;
    let text_encoder = UMT5EncoderModel::new(
        &te_cfg,
        load(&model, "text_encoder/model.safetensors", &dev)?,
    )?;
    let dit = WanTransformer::new(
        &tr_cfg,
        load(
            &model,
            "transformer/diffusion_pytorch_model.safetensors",
            &dev,
        )?,
    )?;
    let vae = WanVae::new(
        &vae_cfg,
        load(&model, "vae/diffusion_pytorch_model.safetensors", &dev)?,
    )?;
    let tokenizer = CaptionTokenizer::from_file(&model.join("tokenizer/tokenizer.json"))?;
    let index: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(model.join("model_index.json"))?)?;
    let text_len = index["kiln_defaults"]["max_sequence_length"]
        .as_u64()
        .map_or(REFERENCE_TEXT_LEN, |n| n as usize);
    let geometry = ClipGeometry {
        frame_counts: vec![frames],
        scene_pool,
        max_objects,
        ..ClipGeometry::bundled()
    };
    let (spatial, temporal) = (8, 4);
    let sigmas = [0.3f32, 0.5, 0.7, 0.9];
    // [sigma][true, empty, other] × [all cells, object cells]
    let mut sums = vec![[[0f64; 2]; 3]; sigmas.len()];
    for i in 0..samples {
        let batch = clip_batch(&geometry, 7, i, 1, Stream::Scenes, &dev)?;
        let other = clip_batch(&geometry, 7, i + 100_000, 1, Stream::Scenes, &dev)?;
        let x0 = vae.normalize(&vae.encode(&batch.video)?)?;
        let blank = vae.normalize(&vae.encode(&batch.video.zeros_like()?)?)?;
        let (_, z, lf, lh, lw) = x0.dims5()?;
        let mask = Tensor::zeros((1, temporal, lf, lh, lw), DType::F32, &dev)?;
        // 1 on the latent cells holding part of an object, as the DiT stage weighs them.
        let cells = (latent_object_weights(&batch, 2.0, spatial, temporal, &dev)? - 1.0)?;
        let object_cells = cells.sum_all()?.to_scalar::<f32>()? as f64 * z as f64;
        let embeddings = [
            batch.captions[0].clone(),
            String::new(),
            other.captions[0].clone(),
        ]
        .iter()
        .map(|text| {
            encode_text(
                &tokenizer,
                &text_encoder,
                std::slice::from_ref(text),
                text_len,
                &dev,
            )
        })
        .collect::<Result<Vec<_>, _>>()?;
        let camera = Tensor::zeros((1, CAMERA_DIM), DType::F32, &dev)?;
        let mut rng = rng_for(7, i, Stream::Noise);
        let noise = Tensor::from_vec(gaussian(&mut rng, x0.elem_count()), x0.shape(), &dev)?;
        let target = (&noise - &x0)?;
        for (s, &sigma) in sigmas.iter().enumerate() {
            let noisy = ((&x0 * (1.0 - sigma) as f64)? + (&noise * sigma as f64)?)?;
            let input = Tensor::cat(&[&noisy, &mask, &blank], 1)?;
            let t = Tensor::new(&[sigma * 1000.0], &dev)?;
            for (k, emb) in embeddings.iter().enumerate() {
                let pred =
                    dit.forward_with_text_padding(&input, &t, emb, text_len, Some(&camera))?;
                let err = (pred - &target)?.sqr()?;
                sums[s][k][0] += err.mean_all()?.to_scalar::<f32>()? as f64;
                if object_cells > 0.0 {
                    let on = err.broadcast_mul(&cells)?.sum_all()?.to_scalar::<f32>()? as f64;
                    sums[s][k][1] += on / object_cells;
                }
            }
        }
    }
    println!("{samples} text-only clips of {frames} frame(s), text length {text_len}");
    println!("| σ | all: true | empty | other | objects: true | empty | other |");
    println!("|---|---|---|---|---|---|---|");
    let n = samples as f64;
    for (s, sigma) in sigmas.iter().enumerate() {
        let r = &sums[s];
        println!(
            "| {sigma} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} | {:.4} |",
            r[0][0] / n,
            r[1][0] / n,
            r[2][0] / n,
            r[0][1] / n,
            r[1][1] / n,
            r[2][1] / n
        );
    }
    Ok(())
}
