//! Wall time of kiln's fused attention against the composite candle form (q·kᵀ, softmax
//! from candle ops, ·v, all in f32) on the Wan 2.1 1.3B transformer's shapes: 12 heads of
//! 128, 320 video tokens, self-attention and cross-attention to 512 text tokens. Best of 5
//! runs after a warm-up, the two interleaved so both see the same machine; the machine may
//! be shared, so the load average is printed with them.
//!
//! `cargo run --release -p kiln-kernels --example attention_bench`

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use kiln_kernels::attention::{attention, attention_composite};
use kiln_kernels::KernelPath;

const RUNS: usize = 5;

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Best time in seconds of each of the two, run in turns after one warm-up each.
fn best_of(fused: impl Fn(), composite: impl Fn()) -> (f64, f64) {
    fused();
    composite();
    let time = |f: &dyn Fn()| {
        let start = Instant::now();
        f();
        start.elapsed().as_secs_f64()
    };
    let (mut best_fused, mut best_composite) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..RUNS {
        best_fused = best_fused.min(time(&fused));
        best_composite = best_composite.min(time(&composite));
    }
    (best_fused, best_composite)
}

fn main() -> candle_core::Result<()> {
    println!(
        "kiln-kernels attention_bench: path {:?}, {} threads, load average {}",
        KernelPath::best(),
        rayon::current_num_threads(),
        load_average()
    );
    println!(
        "{:<34} {:>5} {:>10} {:>14} {:>7}",
        "case (B, H, L, D)", "dtype", "fused ms", "composite ms", "ratio"
    );
    let device = Device::Cpu;
    let (heads, q_len, d) = (12, 320, 128);
    for (label, kv_len) in [
        ("self  (1,12,320,128)", 320),
        ("cross (1,12,320,128)x(512)", 512),
    ] {
        let q = Tensor::randn(0f32, 1.0, (1, heads, q_len, d), &device)?;
        let k = Tensor::randn(0f32, 1.0, (1, heads, kv_len, d), &device)?;
        let v = Tensor::randn(0f32, 1.0, (1, heads, kv_len, d), &device)?;
        for dtype in [DType::F32, DType::BF16] {
            let (q, k, v) = (q.to_dtype(dtype)?, k.to_dtype(dtype)?, v.to_dtype(dtype)?);
            let (fused, composite) = best_of(
                || {
                    attention(&q, &k, &v).expect("fused attention");
                },
                || {
                    attention_composite(&q, &k, &v).expect("composite attention");
                },
            );
            println!(
                "{:<34} {:>5} {:>10.3} {:>14.3} {:>6.2}x",
                label,
                format!("{dtype:?}").to_lowercase(),
                fused * 1e3,
                composite * 1e3,
                composite / fused
            );
        }
    }
    println!("ratio = composite / fused (above 1: the fused kernel is faster)");
    println!("load average after: {}", load_average());
    Ok(())
}
