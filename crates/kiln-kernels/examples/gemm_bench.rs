//! GFLOP/s of kiln's GEMM against candle's CPU matmul on 2048³ and the Wan transformer's
//! linear-layer shapes, in f32 and bf16, next to the machine's measured peak. Every number
//! is the best of several runs after a warm-up, kiln and candle interleaved so both see the
//! same machine; the machine may be shared, so the load average is printed with them.
//!
//! `cargo run --release -p kiln-kernels --example gemm_bench [-- --quick]`

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use half::bf16;
use kiln_kernels::peak::{peak_gflops, PeakKind};
use kiln_kernels::{
    candle_ops, gemm_batched, gemm_prepacked, BatchRef, GemmInput, KernelPath, MatRef, PackedRhs,
};

/// One benchmarked product: `batch` times `x[m×k] · rhs`, where `rhs` is `w[n×k]ᵀ` (how
/// candle's `Linear` and attention's `q · kᵀ` multiply) or a row-major `[k×n]` (`p · v`).
struct Case {
    label: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    rhs_transposed: bool,
}

const fn linear(label: &'static str, m: usize, k: usize, n: usize) -> Case {
    Case {
        label,
        batch: 1,
        m,
        k,
        n,
        rhs_transposed: true,
    }
}

/// 2048³ and the Wan 2.1 1.3B transformer's products (320 video tokens, 512 text tokens,
/// width 1536, FFN 8960, text width 4096, 12 heads of 128).
const CASES: &[Case] = &[
    linear("2048^3", 2048, 2048, 2048),
    linear("320x1536 . 1536x1536", 320, 1536, 1536),
    linear("320x1536 . 1536x8960", 320, 1536, 8960),
    linear("320x8960 . 8960x1536", 320, 8960, 1536),
    linear("512x4096 . 4096x1536", 512, 4096, 1536),
    Case {
        label: "attn 12x 320x128.k^T",
        batch: 12,
        m: 320,
        k: 128,
        n: 320,
        rhs_transposed: true,
    },
    Case {
        label: "attn 12x 320x320.v",
        batch: 12,
        m: 320,
        k: 320,
        n: 128,
        rhs_transposed: false,
    },
    Case {
        label: "xattn 12x 320x128.k^T",
        batch: 12,
        m: 320,
        k: 128,
        n: 512,
        rhs_transposed: true,
    },
];

/// Best wall time of each contender, run in turns (one warm-up each) until `budget` has
/// passed and every one ran at least 3 times.
fn best_times(contenders: &mut [&mut dyn FnMut()], budget: Duration) -> Vec<f64> {
    for run in contenders.iter_mut() {
        run();
    }
    let start = Instant::now();
    let mut best = vec![f64::INFINITY; contenders.len()];
    let mut rounds = 0;
    while rounds < 3 || (start.elapsed() < budget && rounds < 30) {
        for (run, best) in contenders.iter_mut().zip(&mut best) {
            let t = Instant::now();
            run();
            *best = best.min(t.elapsed().as_secs_f64());
        }
        rounds += 1;
    }
    best
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Seconds for `x · rhs`, `rhs` being `w` or `wᵀ` (a transposed view, no copy): kiln's
/// GEMM, kiln's GEMM with B packed beforehand (single products only), kiln's candle op,
/// and candle's matmul.
fn time_case<E: GemmInput + candle_core::WithDType>(
    case: &Case,
    x: &Tensor,
    w: &Tensor,
    budget: Duration,
) -> candle_core::Result<[Option<f64>; 4]> {
    let Case { batch, m, k, n, .. } = *case;
    let (xs, ws) = (
        x.flatten_all()?.to_vec1::<E>()?,
        w.flatten_all()?.to_vec1::<E>()?,
    );
    let a = BatchRef::contiguous(&xs, batch, m, k).expect("x fits");
    let b = if case.rhs_transposed {
        BatchRef::contiguous(&ws, batch, n, k).expect("w fits").t()
    } else {
        BatchRef::contiguous(&ws, batch, k, n).expect("w fits")
    };
    let mut c = vec![0.0f32; batch * m * n];
    let mut c_prepacked = c.clone();
    let rhs = if case.rhs_transposed {
        w.t()?
    } else {
        w.clone()
    };
    let mut kiln_gemm = || gemm_batched(a, b, &mut c, false).expect("valid shapes");
    let mut kiln_op = || {
        candle_ops::matmul(x, &rhs).expect("kiln matmul");
    };
    let mut candle = || {
        x.matmul(&rhs).expect("candle matmul");
    };
    if batch > 1 {
        let t = best_times(&mut [&mut kiln_gemm, &mut kiln_op, &mut candle], budget);
        return Ok([Some(t[0]), None, Some(t[1]), Some(t[2])]);
    }
    let a = MatRef::row_major(&xs, m, k).expect("x fits");
    let packed = PackedRhs::new(MatRef::row_major(&ws, n, k).expect("w fits").t()).expect("packs");
    let mut kiln_prepacked =
        || gemm_prepacked(a, &packed, &mut c_prepacked, false).expect("valid shapes");
    let t = best_times(
        &mut [
            &mut kiln_gemm,
            &mut kiln_prepacked,
            &mut kiln_op,
            &mut candle,
        ],
        budget,
    );
    Ok([Some(t[0]), Some(t[1]), Some(t[2]), Some(t[3])])
}

fn main() -> candle_core::Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    let budget = Duration::from_millis(if quick { 300 } else { 2000 });
    let path = KernelPath::best();
    let threads = rayon::current_num_threads();
    println!(
        "kiln-kernels gemm_bench: path {path:?}, {threads} threads, load average {}",
        load_average()
    );
    let peak = |kind| peak_gflops(path, kind, 2_000_000);
    let (mut peak_f32, mut peak_bf16) = (peak(PeakKind::F32), peak(PeakKind::Bf16));

    let device = Device::Cpu;
    let mut rows = Vec::new();
    for case in CASES {
        let Case { batch, m, k, n, .. } = *case;
        let flops = 2.0 * (batch * m * n * k) as f64;
        let (x_dims, w_dims) = match (batch, case.rhs_transposed) {
            (1, _) => (vec![m, k], vec![n, k]),
            (_, true) => (vec![batch, m, k], vec![batch, n, k]),
            (_, false) => (vec![batch, m, k], vec![batch, k, n]),
        };
        let x = Tensor::randn(0f32, 1.0, x_dims, &device)?;
        let w = Tensor::randn(0f32, 1.0, w_dims, &device)?;
        for dtype in [DType::F32, DType::BF16] {
            let (x, w) = (x.to_dtype(dtype)?, w.to_dtype(dtype)?);
            let times = match dtype {
                DType::F32 => time_case::<f32>(case, &x, &w, budget)?,
                _ => time_case::<bf16>(case, &x, &w, budget)?,
            };
            rows.push((case.label, dtype, times.map(|t| t.map(|t| flops / t / 1e9))));
        }
    }
    // The peak again at the end: a shared machine gives different shares over time, and
    // the better of the two is closer to what the hardware can do.
    peak_f32 = peak_f32.max(peak(PeakKind::F32));
    peak_bf16 = peak_bf16.max(peak(PeakKind::Bf16));

    println!("measured peak (registers only, {threads} threads): f32 {peak_f32:.0} GFLOP/s, bf16 {peak_bf16:.0} GFLOP/s");
    println!();
    println!(
        "GFLOP/s. kiln gemm: packs B per call; prepacked: B (the weight) packed once; kiln op: \
         candle_ops::matmul, tensors in and out; ratio = kiln op / candle"
    );
    println!(
        "{:<22} {:>5} {:>10} {:>7} {:>10} {:>7} {:>8} {:>8} {:>6}",
        "shape",
        "dtype",
        "kiln gemm",
        "% peak",
        "prepacked",
        "% peak",
        "kiln op",
        "candle",
        "ratio"
    );
    let show = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    for (label, dtype, [gemm, prepacked, op, candle]) in rows {
        let peak = if dtype == DType::F32 {
            peak_f32
        } else {
            peak_bf16
        };
        let percent =
            |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.0}%", 100.0 * v / peak));
        let ratio = op
            .zip(candle)
            .map(|(op, candle)| op / candle)
            .unwrap_or(f64::NAN);
        println!(
            "{:<22} {:>5} {:>10} {:>7} {:>10} {:>7} {:>8} {:>8} {:>5.2}x",
            label,
            format!("{dtype:?}").to_lowercase(),
            show(gemm),
            percent(gemm),
            show(prepacked),
            percent(prepacked),
            show(op),
            show(candle),
            ratio
        );
    }
    println!();
    println!("load average after: {}", load_average());
    Ok(())
}
