//! Reconstruction quality of an exported VAE on held-out renders: the ceiling of every
//! pixel-level measure of `kiln eval` (first/last-frame PSNR, static drift).
//!
//! `cargo run --release -p kiln-train --example vae_recon -- MODEL_DIR [CLIPS] [FRAMES]`
//!
//! Prints the mean PSNR of the first frame, the last frame and the whole clip, then of
//! each latent frame's group of pixel frames (1, then 4 each), which shows where in a
//! clip the causal decoder loses detail. Then the detector's adherence scores (colour,
//! shape, direction, camera; `kiln eval`'s accuracies) on the reconstructions against the
//! renders' own: the most any transformer can reach through this VAE.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kiln_models::wan::vae::{Config, WanVae};
use kiln_train::data::frames_to_chw;
use kiln_world::{
    detect, psnr, render, sample_scene, score, static_region_drift, still_region, PromptIntent,
    ScoreInputs, Scores, Split, SplitMix64,
};

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let model = std::path::PathBuf::from(args.next().expect("usage: vae_recon MODEL_DIR [CLIPS]"));
    let clips: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(12);
    let dev = Device::Cpu;
    let cfg: Config = kiln_models::read_config(&model.join("vae/config.json"), "VAE config")?;
    let tensors = candle_core::safetensors::load(
        model.join("vae/diffusion_pytorch_model.safetensors"),
        &dev,
    )?;
    let vae = WanVae::new(&cfg, VarBuilder::from_tensors(tensors, DType::F32, &dev))?;
    let sizes = [(112u32, 64u32), (64, 112), (64, 64)];
    let (mut first, mut all, mut last) = (0.0, 0.0, 0.0);
    let frames: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(41);
    anyhow::ensure!(
        frames % 4 == 1,
        "FRAMES must be of the form 4k+1, like 17 or 41"
    );
    let mut groups = vec![0.0; frames.div_ceil(4)];
    // [colour, shape, direction, camera] counts: reconstructions, then the renders.
    let (mut recon_ok, mut render_ok) = ([0usize; 4], [0usize; 4]);
    // Static drift of the reconstructions over a still region of the still-camera clips
    // (`still_region`, where `kiln eval`'s static masks come from): the floor under that
    // target.
    let (mut drift, mut still_clips) = (0.0, 0usize);
    let tally = |counts: &mut [usize; 4], s: &Scores| {
        for (c, ok) in counts
            .iter_mut()
            .zip([s.colour_ok, s.shape_ok, s.direction_ok, s.camera_ok])
        {
            *c += usize::from(ok);
        }
    };
    for i in 0..clips {
        let (w, h) = sizes[i % 3];
        let spec = sample_scene(1000 + i as u64, Split::HeldOut);
        let clip = render(&spec, w, h, frames, 8.0)?;
        let video = Tensor::from_vec(
            frames_to_chw(&clip.frames, frames, h as usize, w as usize),
            (1, 3, frames, h as usize, w as usize),
            &dev,
        )?;
        let recon = vae.decode(&vae.encode(&video)?)?;
        let rgb: Vec<u8> = ((recon.squeeze(0)?.permute((1, 2, 3, 0))? + 1.0)? * 127.5)?
            .clamp(0f32, 255f32)?
            .round()?
            .flatten_all()?
            .to_vec1::<f32>()?
            .into_iter()
            .map(|v| v as u8)
            .collect();
        let n = (w * h * 3) as usize;
        if let Ok(dir) = std::env::var("VAE_RECON_DUMP") {
            // Original frames 0 and 40 above their reconstructions, as a PPM.
            let mut ppm = format!("P6 {} {} 255\n", 2 * w, 2 * h).into_bytes();
            for row in 0..2 * h as usize {
                for half in 0..2 {
                    let t = if half == 0 { 0 } else { frames - 1 };
                    let src: &[u8] = if row < h as usize {
                        clip.frame(t)
                    } else {
                        &rgb[t * n..(t + 1) * n]
                    };
                    let y = row % h as usize;
                    ppm.extend_from_slice(&src[y * w as usize * 3..(y + 1) * w as usize * 3]);
                }
            }
            std::fs::write(format!("{dir}/recon{i}.ppm"), ppm)?;
        }
        let intent = PromptIntent::from_spec(&spec);
        for (frames_rgb, counts) in [(&rgb, &mut recon_ok), (&clip.frames, &mut render_ok)] {
            let detection = detect(frames_rgb, w, h, frames, 8.0)?;
            let scores = score(&intent, &detection, frames_rgb, &ScoreInputs::default())?;
            tally(counts, &scores);
        }
        if spec.camera.axes().is_zero() {
            let mask = still_region(
                &clip.object_ids,
                w as usize,
                h as usize,
                frames,
                &mut SplitMix64::new(i as u64),
            );
            if mask.iter().any(|&m| m) {
                drift += static_region_drift(&rgb, w, h, frames, &mask)?;
                still_clips += 1;
            }
        }
        first += psnr(&rgb[..n], clip.frame(0))?;
        last += psnr(&rgb[(frames - 1) * n..], clip.frame(frames - 1))?;
        all += psnr(&rgb, &clip.frames)?;
        for (g, sum) in groups.iter_mut().enumerate() {
            let (a, b) = if g == 0 {
                (0, 1)
            } else {
                (4 * g - 3, 4 * g + 1)
            };
            *sum += psnr(&rgb[a * n..b * n], &clip.frames[a * n..b * n])?;
        }
    }
    let c = clips as f64;
    println!(
        "VAE reconstruction over {clips} held-out {frames}-frame clips: PSNR first frame {:.2} dB, last frame {:.2} dB, whole clip {:.2} dB",
        first / c,
        last / c,
        all / c
    );
    let per_group: Vec<String> = groups.iter().map(|s| format!("{:.1}", s / c)).collect();
    println!("PSNR per latent frame (dB): {}", per_group.join(" "));
    if still_clips > 0 {
        println!(
            "static drift of the reconstructions over {still_clips} still-camera clips: {:.2} / 255",
            drift / still_clips as f64
        );
    }
    let pct = |counts: [usize; 4]| counts.map(|k| format!("{:.0}%", 100.0 * k as f64 / c));
    for (what, counts) in [("reconstructions", recon_ok), ("renders", render_ok)] {
        let [colour, shape, direction, camera] = pct(counts);
        println!("detector on the {what}: colour {colour}, shape {shape}, direction {direction}, camera {camera}");
    }
    Ok(())
}
