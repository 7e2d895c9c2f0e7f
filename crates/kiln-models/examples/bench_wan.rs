//! Times one Wan2.1-1.3B-shaped transformer forward and one VAE decode with random
//! weights, printing one JSON line per measurement. `scripts/bench/wan_forward.py` runs
//! this beside diffusers on the same shapes and prints the ratios.
//!
//! cargo run --release -p kiln-models --example bench_wan -- [--frames 17 --size 128 --repeats 2 --dtypes f32,bf16]

use std::time::Instant;

use candle_core::{DType, Device, Result, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use kiln_models::wan::{transformer, vae};

/// Random weights of whatever shape the model asks for.
struct RandomWeights;

impl SimpleBackend for RandomWeights {
    fn get(
        &self,
        s: Shape,
        _: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> Result<Tensor> {
        Tensor::randn(0f32, 0.02, s, dev)?.to_dtype(dtype)
    }
    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> Result<Tensor> {
        candle_core::bail!("bench weights need a shape for {name}")
    }
    fn contains_tensor(&self, _: &str) -> bool {
        true
    }
}

const TRANSFORMER_1_3B: &str = r#"{"_class_name":"WanTransformer3DModel","patch_size":[1,2,2],"num_attention_heads":12,
"attention_head_dim":128,"in_channels":16,"out_channels":16,"text_dim":4096,"freq_dim":256,"ffn_dim":8960,
"num_layers":30,"cross_attn_norm":true,"qk_norm":"rms_norm_across_heads","eps":1e-6,"image_dim":null,
"added_kv_proj_dim":null,"rope_max_seq_len":1024}"#;

const VAE_2_1: &str = r#"{"_class_name":"AutoencoderKLWan","base_dim":96,"z_dim":16,"dim_mult":[1,2,4,4],
"num_res_blocks":2,"attn_scales":[],"temperal_downsample":[false,true,true],"dropout":0.0,
"latents_mean":[-0.7571,-0.7089,-0.9113,0.1075,-0.1745,0.9653,-0.1517,1.5508,0.4134,-0.0715,0.5517,-0.3632,-0.1922,-0.9497,0.2503,-0.2921],
"latents_std":[2.8184,1.4541,2.3275,2.6558,1.2196,1.7708,2.6052,2.0743,3.2687,2.1526,2.8652,1.5579,1.6382,1.1253,2.8251,1.916]}"#;

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

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
        let dtype = match name {
            "f32" => DType::F32,
            "bf16" => DType::BF16,
            "f16" => DType::F16,
            other => candle_core::bail!("unknown dtype {other}"),
        };
        if what.contains("transformer") {
            let cfg: transformer::Config =
                serde_json::from_str(TRANSFORMER_1_3B).map_err(candle_core::Error::wrap)?;
            let vb = VarBuilder::from_backend(Box::new(RandomWeights), dtype, dev.clone());
            let model = transformer::WanTransformer::new(&cfg, vb)?;
            let x =
                Tensor::randn(0f32, 1.0, (1, 16, lat_f, lat_s, lat_s), &dev)?.to_dtype(dtype)?;
            let t = Tensor::new(&[500f32], &dev)?;
            let text = Tensor::randn(0f32, 1.0, (1, 512, 4096), &dev)?.to_dtype(dtype)?;
            let secs = best_of(repeats, || model.forward(&x, &t, &text))?;
            println!(
                "{{\"what\":\"transformer_forward\",\"dtype\":\"{name}\",\"seconds\":{secs}}}"
            );
        }
        if what.contains("vae") {
            let cfg: vae::Config =
                serde_json::from_str(VAE_2_1).map_err(candle_core::Error::wrap)?;
            let vb = VarBuilder::from_backend(Box::new(RandomWeights), dtype, dev.clone());
            let model = vae::WanVae::new(&cfg, vb)?;
            let z =
                Tensor::randn(0f32, 1.0, (1, 16, lat_f, lat_s, lat_s), &dev)?.to_dtype(dtype)?;
            let secs = best_of(repeats, || model.decode(&z))?;
            println!("{{\"what\":\"vae_decode\",\"dtype\":\"{name}\",\"seconds\":{secs}}}");
        }
    }
    Ok(())
}
