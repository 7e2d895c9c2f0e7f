//! The Wan 2.1 VAE decoder's 3×3×3 convolutions at each of its four resolutions (a
//! 17×128×128 clip, decoded one latent frame at a time as the causal cache does), by the
//! direct GEMM convolution (`conv`) and by Winograd F(2×2, 3×3) (`winograd`), in f32 and
//! bf16. GFLOP/s counts the direct convolution's multiply-adds for both, so the Winograd
//! column reads as an effective rate; best of several interleaved runs, with the load.
//!
//! `cargo run --release -p kiln-kernels --example conv_bench [-- --quick]`

use std::time::{Duration, Instant};

use half::bf16;
use kiln_kernels::conv::{conv3d, conv3d_bf16, Conv3dShape};
use kiln_kernels::winograd::{conv3d_winograd, WinogradElement, WinogradWeights};

/// `(channels, side, frames in incl. the 2 cached)`, one call each.
const LEVELS: [(usize, usize, usize); 4] = [(384, 16, 3), (384, 32, 4), (192, 64, 6), (96, 128, 6)];

fn best(repeats: usize, mut f: impl FnMut()) -> Duration {
    f();
    (0..repeats)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn values<E: WinogradElement>(n: usize, seed: u32) -> Vec<E> {
    let f: Vec<f32> = (0..n)
        .map(|i| {
            let v = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8;
            (v % 2001) as f32 / 1000.0 - 1.0
        })
        .collect();
    let mut out = vec![E::default(); n];
    E::store(&f, &mut out);
    out
}

fn run<E: WinogradElement>(
    name: &str,
    repeats: usize,
    direct: impl Fn(&[E], &[E], &[f32], Conv3dShape, &mut [E]),
) {
    for (c, side, t) in LEVELS {
        let s = Conv3dShape {
            batch: 1,
            t,
            c_in: c,
            h: side,
            w: side,
            c_out: c,
            kernel: (3, 3, 3),
            pad_hw: 1,
        };
        let (t_out, ho, wo) = s.output_dims().expect("valid shape");
        let x = values::<E>(t * c * side * side, 1);
        let w = values::<E>(c * 27 * c, 2);
        let bias = vec![0.1f32; c];
        let u = WinogradWeights::new(&w, c, c, 3).expect("weights");
        let mut y = vec![E::default(); t_out * c * ho * wo];
        let flop = 2.0 * (t_out * c * c * 27 * ho * wo) as f64;
        let d = best(repeats, || direct(&x, &w, &bias, s, &mut y));
        let wg = best(repeats, || {
            conv3d_winograd(&x, &u, &bias, s, &mut y).expect("winograd")
        });
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        println!(
            "| {name} | {c}×{side}², {t_out} out | {:.1} ms | {:.0} | {:.1} ms | {:.0} | {:.2}× | {} |",
            d.as_secs_f64() * 1e3,
            flop / d.as_secs_f64() / 1e9,
            wg.as_secs_f64() * 1e3,
            flop / wg.as_secs_f64() / 1e9,
            d.as_secs_f64() / wg.as_secs_f64(),
            load.split_whitespace().next().unwrap_or("?")
        );
    }
}

fn main() {
    let repeats = if std::env::args().any(|a| a == "--quick") {
        2
    } else {
        5
    };
    println!("| dtype | conv | direct | GFLOP/s | winograd | eff. GFLOP/s | speed-up | load |");
    println!("|---|---|---|---|---|---|---|---|");
    run::<bf16>("bf16", repeats, |x, w, b, s, y| {
        conv3d_bf16(x, w, b, s, y).expect("direct")
    });
    run::<f32>("f32", repeats, |x, w, b, s, y| {
        conv3d(x, w, b, s, y).expect("direct")
    });
}
