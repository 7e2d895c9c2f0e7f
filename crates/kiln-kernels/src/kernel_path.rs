//! Which instruction set a kernel runs with, chosen once at run time from the CPU's features.

use std::sync::OnceLock;

/// An instruction-set path. Every kernel has all of them; [`KernelPath::best`] is what the
/// plain entry points use, and the `_with` entry points force one (tests, benchmarks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// AVX-512F plus AVX512-BF16: bf16 inputs go through `vdpbf16ps` (two products of
    /// adjacent k per f32 lane). f32 inputs run the [`KernelPath::Avx512`] kernels.
    Avx512Bf16,
    /// AVX-512F: bf16 inputs are widened to f32 while packing.
    Avx512,
    /// AVX2 and FMA with 256-bit vectors.
    Avx2Fma,
    /// Plain Rust; the path on CPUs without the above and on other architectures.
    Scalar,
}

impl KernelPath {
    /// All paths, fastest first.
    pub const ALL: [KernelPath; 4] = [
        KernelPath::Avx512Bf16,
        KernelPath::Avx512,
        KernelPath::Avx2Fma,
        KernelPath::Scalar,
    ];

    /// The fastest path this CPU (and this build) supports; detected once.
    pub fn best() -> KernelPath {
        static BEST: OnceLock<KernelPath> = OnceLock::new();
        *BEST.get_or_init(|| {
            Self::ALL
                .into_iter()
                .find(|path| path.is_supported())
                .unwrap_or(KernelPath::Scalar)
        })
    }

    /// The paths this CPU supports, fastest first.
    pub fn supported() -> Vec<KernelPath> {
        Self::ALL
            .into_iter()
            .filter(|path| path.is_supported())
            .collect()
    }

    /// Whether this CPU and build can run the path.
    pub fn is_supported(self) -> bool {
        match self {
            KernelPath::Avx512Bf16 => has_avx512bf16(),
            KernelPath::Avx512 => has_avx512f(),
            KernelPath::Avx2Fma => has_avx2_fma(),
            KernelPath::Scalar => true,
        }
    }
}

#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[allow(clippy::incompatible_msrv)] // compiled only on rustc >= 1.89, see build.rs
fn has_avx512bf16() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bf16")
}

#[cfg(all(target_arch = "x86_64", kiln_avx512))]
fn has_avx512f() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(all(target_arch = "x86_64", kiln_avx512)))]
fn has_avx512bf16() -> bool {
    false
}

#[cfg(not(all(target_arch = "x86_64", kiln_avx512)))]
fn has_avx512f() -> bool {
    false
}

#[cfg(target_arch = "x86_64")]
fn has_avx2_fma() -> bool {
    std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2_fma() -> bool {
    false
}

/// A task's loop, written once and compiled per vector width (see [`run_vectorised`]).
pub(crate) trait VectorTask {
    fn run(self);
}

/// Runs `task` inside a function compiled for the CPU's widest vectors, so its plain loops
/// (inlined there: implement `run` with `#[inline(always)]`) vectorise past the SSE2
/// baseline.
pub(crate) fn run_vectorised<T: VectorTask>(path: KernelPath, task: T) {
    match path {
        #[cfg(all(target_arch = "x86_64", kiln_avx512))]
        KernelPath::Avx512Bf16 | KernelPath::Avx512 => {
            // SAFETY: `KernelPath::best` only returns a path the CPU supports.
            unsafe { run_avx512(task) }
        }
        #[cfg(target_arch = "x86_64")]
        KernelPath::Avx2Fma => {
            // SAFETY: as above.
            unsafe { run_avx2(task) }
        }
        _ => task.run(),
    }
}

/// # Safety
/// The CPU has AVX-512F.
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[allow(clippy::incompatible_msrv)] // compiled only on rustc >= 1.89, see build.rs
#[target_feature(enable = "avx512f")]
unsafe fn run_avx512<T: VectorTask>(task: T) {
    task.run()
}

/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_avx2<T: VectorTask>(task: T) {
    task.run()
}
