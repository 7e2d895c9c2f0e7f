//! Peak memory and time of one Wan2.1 VAE decode (random weights) at a given clip size,
//! tiled as the pipeline does or whole: the issue-6 check that 81 frames at 832×480 decode
//! in at most 6 GB. Prints one JSON line; run each configuration in its own process, since
//! the peak (VmHWM) is per process.
//!
//! cargo run --release -p kiln-models --example vae_memory -- [--frames 81 --width 832
//!   --height 480 --dtype bf16 --untiled]

use std::time::Instant;

use candle_core::{Device, Result, Tensor};
use kiln_models::wan::vae::{Config, DecodeTiling, WanVae};
use kiln_models::RandomWeights;

mod support;
use support::{arg, parse_dtype, peak_rss_bytes};

const VAE_2_1: &str = include_str!("configs/wan2.1_vae.json");

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let num = |name: &str, default: &str| -> Result<usize> {
        arg(&args, name, default)
            .parse()
            .map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))
    };
    let (frames, width, height) = (
        num("--frames", "81")?,
        num("--width", "832")?,
        num("--height", "480")?,
    );
    let dtype = parse_dtype(&arg(&args, "--dtype", "bf16"))?;
    let tiled = !args.iter().any(|a| a == "--untiled");
    let dev = Device::Cpu;
    let cfg: Config = serde_json::from_str(VAE_2_1).map_err(candle_core::Error::wrap)?;
    let vae = WanVae::new(&cfg, RandomWeights::new(0.02).var_builder(dtype, &dev))?;
    let weights_rss = peak_rss_bytes();
    let z = Tensor::randn(
        0f32,
        1.0,
        (1, 16, (frames - 1) / 4 + 1, height / 8, width / 8),
        &dev,
    )?
    .to_dtype(dtype)?;
    let t = Instant::now();
    let video = if tiled {
        vae.decode_tiled(&z, DecodeTiling::default())?
    } else {
        vae.decode(&z)?
    };
    let seconds = t.elapsed().as_secs_f64();
    println!(
        "{{\"what\":\"vae_decode_memory\",\"frames\":{frames},\"width\":{width},\"height\":{height},\
         \"dtype\":\"{dtype:?}\",\"tiled\":{tiled},\"seconds\":{seconds:.2},\"out\":{:?},\
         \"rss_after_load_bytes\":{weights_rss},\"peak_rss_bytes\":{}}}",
        video.dims(),
        peak_rss_bytes()
    );
    Ok(())
}
