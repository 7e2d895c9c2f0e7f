//! Times one Wan2.1-1.3B-shaped transformer forward and one VAE decode with random
//! weights, printing one JSON line per measurement. `scripts/bench/wan_forward.py` runs
//! this beside diffusers on the same shapes and prints the ratios. After each dtype's
//! transformer forward it also prints the machine's measured arithmetic peak for that dtype
//! (`kiln_kernels::peak`, registers only) as `{"what":"peak","dtype":...,"gflops":...}`.
//!
//! cargo run --release -p kiln-models --example bench_wan -- [--frames 17 --size 128 --repeats 2 --dtypes f32,bf16]

use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use kiln_kernels::peak::{peak_gflops, PeakKind};
use kiln_kernels::KernelPath;
use kiln_models::wan::{transformer, vae};
use kiln_models::RandomWeights;

mod support;
use support::{arg, parse_dtype};

const TRANSFORMER_1_3B: &str = include_str!("configs/wan2.1_t2v_1.3b_transformer.json");

const VAE_2_1: &str = include_str!("configs/wan2.1_vae.json");

fn best_of(repeats: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..repeats {
        let t = Instant::now();
        let out = f()?;
        out.flatten_all()?
            .sum(0)?
            .to_dtype(DType::F32)?
            .to_scalar::<f32>()?;
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(best)
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let frames: usize = arg(&args, "--frames", "17").parse().unwrap_or(17);
    let size: usize = arg(&args, "--size", "128").parse().unwrap_or(128);
    let repeats: usize = arg(&args, "--repeats", "2").parse().unwrap_or(2);
    let dtypes = arg(&args, "--dtypes", "f32,bf16");
    let what = arg(&args, "--what", "transformer,vae");
    let dev = Device::Cpu;
    let lat_f = (frames - 1) / 4 + 1;
    let lat_s = size / 8;
    for name in dtypes.split(',') {
        let dtype = parse_dtype(name)?;
        if what.contains("transformer") {
            let cfg: transformer::Config =
                serde_json::from_str(TRANSFORMER_1_3B).map_err(candle_core::Error::wrap)?;
            let vb = RandomWeights::new(0.02).var_builder(dtype, &dev);
            let model = transformer::WanTransformer::new(&cfg, vb)?;
            let x =
                Tensor::randn(0f32, 1.0, (1, 16, lat_f, lat_s, lat_s), &dev)?.to_dtype(dtype)?;
            let t = Tensor::new(&[500f32], &dev)?;
            let text = Tensor::randn(0f32, 1.0, (1, 512, 4096), &dev)?.to_dtype(dtype)?;
            let secs = best_of(repeats, || model.forward(&x, &t, &text))?;
            println!(
                "{{\"what\":\"transformer_forward\",\"dtype\":\"{name}\",\"seconds\":{secs}}}"
            );
            // What the big GEMMs can be read against: bf16 pair dot products where the
            // path has them, f32 FMA otherwise (as gemm_bench measures it).
            let kind = if dtype == DType::BF16 {
                PeakKind::Bf16
            } else {
                PeakKind::F32
            };
            let peak = peak_gflops(KernelPath::best(), kind, 2_000_000);
            println!("{{\"what\":\"peak\",\"dtype\":\"{name}\",\"gflops\":{peak}}}");
        }
        if what.contains("vae") {
            let cfg: vae::Config =
                serde_json::from_str(VAE_2_1).map_err(candle_core::Error::wrap)?;
            let vb = RandomWeights::new(0.02).var_builder(dtype, &dev);
            let model = vae::WanVae::new(&cfg, vb)?;
            let z =
                Tensor::randn(0f32, 1.0, (1, 16, lat_f, lat_s, lat_s), &dev)?.to_dtype(dtype)?;
            let secs = best_of(repeats, || model.decode(&z))?;
            println!("{{\"what\":\"vae_decode\",\"dtype\":\"{name}\",\"seconds\":{secs}}}");
        }
    }
    Ok(())
}
