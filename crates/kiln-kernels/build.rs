//! The AVX-512 intrinsics and target features became stable in Rust 1.89, above the
//! workspace's 1.87 minimum. This script sets `cfg(kiln_avx512)` when the compiler is new
//! enough, so the crate still builds on 1.87 (AVX2 and scalar paths only) and gets the
//! AVX-512 paths everywhere else.

use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kiln_avx512)");
    println!("cargo::rerun-if-changed=build.rs");
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string());
    let version = Command::new(&rustc)
        .arg("--version")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok());
    match version.as_deref().and_then(minor_version) {
        Some(minor) if minor >= 89 => println!("cargo::rustc-cfg=kiln_avx512"),
        Some(_) => {}
        None => println!(
            "cargo::warning=kiln-kernels: cannot read the version of {rustc}; AVX-512 kernels are off"
        ),
    }
}

/// The minor version from `rustc 1.95.0 (59807616e 2026-04-14)`.
fn minor_version(text: &str) -> Option<u32> {
    let release = text.split_whitespace().nth(1)?;
    let mut parts = release.split('.');
    if parts.next()? != "1" {
        return None;
    }
    parts.next()?.parse().ok()
}
