//! What the benchmark examples share: flag parsing without a CLI crate and the process's
//! peak memory. Included by `bench_wan`, `vae_memory` and kiln-pipeline's `bench_generate`.
#![allow(dead_code)]

/// The value after `name` in `args`, or `default`.
pub fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_string())
}

/// The process's peak resident set (Linux VmHWM) in bytes; 0 where /proc is not there.
pub fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// `f32`, `bf16` or `f16` as a candle dtype.
pub fn parse_dtype(name: &str) -> candle_core::Result<candle_core::DType> {
    match name {
        "f32" => Ok(candle_core::DType::F32),
        "bf16" => Ok(candle_core::DType::BF16),
        "f16" => Ok(candle_core::DType::F16),
        other => candle_core::bail!("unknown dtype {other}: use f32, bf16 or f16"),
    }
}
