//! Packing bodies shared by the paths. They are `#[inline(always)]` so each path's
//! `#[target_feature]` wrapper compiles them with its own vector width.

use super::GemmInput;

/// Packs a micro-panel as f32: `dst[p * width + l] = src[l * lane_stride + p * k_stride]`,
/// zero for lanes `lanes..width`.
///
/// # Safety
/// As `MicroKernel::pack` with one k per packed element.
#[inline(always)]
pub(crate) unsafe fn pack_widened<E: GemmInput>(
    src: *const E,
    lane_stride: usize,
    k_stride: usize,
    lanes: usize,
    width: usize,
    kc: usize,
    dst: *mut f32,
) {
    // SAFETY: the caller guarantees that src is readable at every lane < `lanes`, k < `kc`
    // and that dst holds `kc * width` elements; the indices below stay in those ranges.
    unsafe {
        if lane_stride == 1 {
            // Lanes contiguous (row-major B, column-major A): copy a row of lanes per k.
            for p in 0..kc {
                let from = std::slice::from_raw_parts(src.add(p * k_stride), lanes);
                let to = std::slice::from_raw_parts_mut(dst.add(p * width), width);
                for (t, &f) in to.iter_mut().zip(from) {
                    *t = f.to_f32();
                }
                to[lanes..].fill(0.0);
            }
        } else {
            // Lanes strided (row-major A, transposed B): walk each lane along k, which is the
            // contiguous direction when k_stride is 1.
            for l in 0..lanes {
                let lane = src.add(l * lane_stride);
                for p in 0..kc {
                    *dst.add(p * width + l) = (*lane.add(p * k_stride)).to_f32();
                }
            }
            if lanes < width {
                for p in 0..kc {
                    std::slice::from_raw_parts_mut(dst.add(p * width + lanes), width - lanes)
                        .fill(0.0);
                }
            }
        }
    }
}

/// Packs a micro-panel of bf16 pairs: `dst[q * width + l]` holds k = 2q in its low half and
/// k = 2q + 1 in its high half (zero past `kc`), as `vdpbf16ps` multiplies them.
///
/// # Safety
/// As `MicroKernel::pack` with two k per packed element.
#[cfg(all(target_arch = "x86_64", kiln_avx512))]
#[inline(always)]
pub(crate) unsafe fn pack_bf16_pairs(
    src: *const half::bf16,
    lane_stride: usize,
    k_stride: usize,
    lanes: usize,
    width: usize,
    kc: usize,
    dst: *mut u32,
) {
    let pairs = kc / 2;
    // SAFETY: the caller guarantees that src is readable at every lane < `lanes`, k < `kc`
    // and that dst holds `kc.div_ceil(2) * width` elements; the indices below stay in those
    // ranges.
    unsafe {
        let bits = |ptr: *const half::bf16| (*ptr).to_bits() as u32;
        if lane_stride == 1 {
            for q in 0..pairs {
                let even = std::slice::from_raw_parts(src.add(2 * q * k_stride), lanes);
                let odd = std::slice::from_raw_parts(src.add((2 * q + 1) * k_stride), lanes);
                let to = std::slice::from_raw_parts_mut(dst.add(q * width), width);
                for ((t, e), o) in to.iter_mut().zip(even).zip(odd) {
                    *t = e.to_bits() as u32 | (o.to_bits() as u32) << 16;
                }
                to[lanes..].fill(0);
            }
            if kc % 2 == 1 {
                let even = std::slice::from_raw_parts(src.add(2 * pairs * k_stride), lanes);
                let to = std::slice::from_raw_parts_mut(dst.add(pairs * width), width);
                for (t, e) in to.iter_mut().zip(even) {
                    *t = e.to_bits() as u32;
                }
                to[lanes..].fill(0);
            }
        } else {
            for l in 0..lanes {
                let lane = src.add(l * lane_stride);
                for q in 0..pairs {
                    *dst.add(q * width + l) = bits(lane.add(2 * q * k_stride))
                        | bits(lane.add((2 * q + 1) * k_stride)) << 16;
                }
                if kc % 2 == 1 {
                    *dst.add(pairs * width + l) = bits(lane.add(2 * pairs * k_stride));
                }
            }
            if lanes < width {
                for q in 0..kc.div_ceil(2) {
                    std::slice::from_raw_parts_mut(dst.add(q * width + lanes), width - lanes)
                        .fill(0);
                }
            }
        }
    }
}
