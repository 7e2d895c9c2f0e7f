//! Every kernel path against a naive triple loop in f64 on odd shapes: 1 × 1 × 1, one row,
//! one column, k = 1, sizes that are multiples of no block, several cache blocks deep and
//! wide, empty dimensions, transposed and padded strides, with and without accumulation.
//!
//! Tolerance: a dot product of length k summed in f32 is within `(k + 2) · ε · Σ|a·b|` of
//! the exact value (ε = 2⁻²³, plus one rounding for the accumulate add, scaled by |C₀|).
//! bf16 inputs are compared against the f64 product of the same bf16 values, so the bound
//! is the same: bf16 × bf16 is exact in f32 and only the f32 summation rounds.

use half::bf16;
use kiln_kernels::{
    gemm, gemm_batched_with, gemm_prepacked, gemm_prepacked_bf16, gemm_with, BatchRef, Epilogue,
    GemmInput, KernelError, KernelPath, MatRef, PackedRhs,
};

/// Deterministic values in [-1, 1) from a 64-bit LCG (no dependency on `rand`).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// How an operand is laid out in memory.
#[derive(Debug, Clone, Copy)]
enum Storage {
    /// Row-major, contiguous.
    RowMajor,
    /// Stored as the transpose (column-major): the layout of candle's `w.t()`.
    Transposed,
    /// Row-major with 3 unused elements after each row and every other column.
    Padded,
}

/// A `rows × cols` operand with values `v(i, j)` laid out as `storage` says; returns the
/// backing vector and its strides.
fn lay_out<E: Copy + Default>(
    rows: usize,
    cols: usize,
    storage: Storage,
    v: impl Fn(usize, usize) -> E,
) -> (Vec<E>, usize, usize) {
    let (len, rs, cs) = match storage {
        Storage::RowMajor => (rows * cols, cols, 1),
        Storage::Transposed => (rows * cols, 1, rows),
        Storage::Padded => (rows * (2 * cols + 3), 2 * cols + 3, 2),
    };
    let mut data = vec![E::default(); len.max(1)];
    for i in 0..rows {
        for j in 0..cols {
            data[i * rs + j * cs] = v(i, j);
        }
    }
    (data, rs, cs)
}

/// Runs one case on one path and checks every element against the f64 reference.
fn check_case<E: GemmInput + Default>(
    path: KernelPath,
    (m, n, k): (usize, usize, usize),
    (a_storage, b_storage): (Storage, Storage),
    accumulate: bool,
    from_f32: impl Fn(f32) -> E,
) {
    let a_vals = values(m * k, (m * 31 + k) as u64);
    let b_vals = values(k * n, (n * 17 + k) as u64 + 7);
    let a_at = |i: usize, p: usize| from_f32(a_vals[i * k + p]);
    let b_at = |p: usize, j: usize| from_f32(b_vals[p * n + j]);
    let (a_data, a_rs, a_cs) = lay_out(m, k, a_storage, a_at);
    let (b_data, b_rs, b_cs) = lay_out(k, n, b_storage, b_at);
    let a = MatRef::new(&a_data, m, k, a_rs, a_cs).unwrap();
    let b = MatRef::new(&b_data, k, n, b_rs, b_cs).unwrap();
    let c0 = values(m * n, 99);
    let mut c = if accumulate {
        c0.clone()
    } else {
        vec![f32::NAN; m * n]
    };
    gemm_with(path, a, b, &mut c, accumulate).unwrap();
    for i in 0..m {
        for j in 0..n {
            let (mut exact, mut magnitude) = (0.0f64, 0.0f64);
            for p in 0..k {
                let prod = a_at(i, p).to_f32() as f64 * b_at(p, j).to_f32() as f64;
                exact += prod;
                magnitude += prod.abs();
            }
            if accumulate {
                exact += c0[i * n + j] as f64;
                magnitude += (c0[i * n + j] as f64).abs();
            }
            let tolerance = (k as f64 + 2.0) * f32::EPSILON as f64 * magnitude;
            let got = c[i * n + j] as f64;
            assert!(
                (got - exact).abs() <= tolerance,
                "{path:?} {m}x{n}x{k} {a_storage:?}/{b_storage:?} acc={accumulate}: \
                 C[{i},{j}] = {got}, expected {exact} ± {tolerance}"
            );
        }
    }
}

/// (m, n, k): degenerate, odd, and several cache blocks in each direction.
const SHAPES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 70, 33),
    (45, 1, 80),
    (20, 30, 1),
    (17, 33, 65),
    (129, 7, 300),
    (6, 64, 256),
    (13, 130, 1100),
    (400, 77, 40),
    (3, 4200, 5),
    (390, 4100, 2),
    (70, 150, 530),
];

const STORAGES: &[(Storage, Storage)] = &[
    (Storage::RowMajor, Storage::RowMajor),
    (Storage::RowMajor, Storage::Transposed),
    (Storage::Transposed, Storage::RowMajor),
    (Storage::Transposed, Storage::Transposed),
    (Storage::Padded, Storage::Padded),
];

fn check_path<E: GemmInput + Default>(path: KernelPath, from_f32: impl Fn(f32) -> E + Copy) {
    if !path.is_supported() {
        eprintln!("skipping {path:?}: not supported on this CPU/build");
        return;
    }
    for &shape in SHAPES {
        for &storages in STORAGES {
            for accumulate in [false, true] {
                check_case(path, shape, storages, accumulate, from_f32);
            }
        }
    }
}

fn f32_input(x: f32) -> f32 {
    x
}

#[test]
fn f32_avx512bf16_path_matches_naive() {
    check_path(KernelPath::Avx512Bf16, f32_input);
}

#[test]
fn f32_avx512_path_matches_naive() {
    check_path(KernelPath::Avx512, f32_input);
}

#[test]
fn f32_avx2_path_matches_naive() {
    check_path(KernelPath::Avx2Fma, f32_input);
}

#[test]
fn f32_scalar_path_matches_naive() {
    check_path(KernelPath::Scalar, f32_input);
}

#[test]
fn bf16_avx512bf16_path_matches_naive() {
    check_path(KernelPath::Avx512Bf16, bf16::from_f32);
}

#[test]
fn bf16_avx512_path_matches_naive() {
    check_path(KernelPath::Avx512, bf16::from_f32);
}

#[test]
fn bf16_avx2_path_matches_naive() {
    check_path(KernelPath::Avx2Fma, bf16::from_f32);
}

#[test]
fn bf16_scalar_path_matches_naive() {
    check_path(KernelPath::Scalar, bf16::from_f32);
}

/// A prepacked B runs the same kernel over the same packed values as packing on the fly,
/// so the results are bit for bit equal.
fn check_prepacked<E: GemmInput + Default>(from_f32: impl Fn(f32) -> E + Copy) {
    for path in KernelPath::supported() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (17, 33, 65),
            (400, 77, 530),
            (13, 130, 1100),
            (5, 0, 3),
            (4, 6, 0),
        ] {
            for &(a_storage, b_storage) in STORAGES {
                let a_vals = values(m * k, 3);
                let b_vals = values(k * n, 4);
                let (a_data, a_rs, a_cs) =
                    lay_out(m, k, a_storage, |i, p| from_f32(a_vals[i * k + p]));
                let (b_data, b_rs, b_cs) =
                    lay_out(k, n, b_storage, |p, j| from_f32(b_vals[p * n + j]));
                let a = MatRef::new(&a_data, m, k, a_rs, a_cs).unwrap();
                let b = MatRef::new(&b_data, k, n, b_rs, b_cs).unwrap();
                let packed = PackedRhs::with_path(path, b).unwrap();
                assert_eq!((packed.rows(), packed.cols(), packed.path()), (k, n, path));
                for accumulate in [false, true] {
                    let mut expected = values(m * n, 5);
                    let mut got = expected.clone();
                    gemm_with(path, a, b, &mut expected, accumulate).unwrap();
                    gemm_prepacked(a, &packed, &mut got, accumulate).unwrap();
                    assert_eq!(
                        got, expected,
                        "{path:?} {m}x{n}x{k} {a_storage:?}/{b_storage:?}"
                    );
                }
                let wrong = MatRef::new(&a_data, m, k.saturating_sub(1), a_rs, a_cs).unwrap();
                if k > 0 {
                    assert!(gemm_prepacked(wrong, &packed, &mut vec![0.0; m * n], false).is_err());
                }
            }
        }
    }
}

#[test]
fn f32_prepacked_equals_packing_on_the_fly() {
    check_prepacked(f32_input);
}

#[test]
fn bf16_prepacked_equals_packing_on_the_fly() {
    check_prepacked(bf16::from_f32);
}

#[test]
fn empty_dimensions() {
    for path in KernelPath::supported() {
        // m = 0 and n = 0: nothing to write, any data.
        let mut c: Vec<f32> = vec![];
        let a = MatRef::<f32>::row_major(&[], 0, 5).unwrap();
        let b = MatRef::row_major(&[1.0; 15], 5, 3).unwrap();
        gemm_with(path, a, b, &mut c, false).unwrap();
        let a = MatRef::row_major(&[1.0; 10], 2, 5).unwrap();
        let b = MatRef::<f32>::row_major(&[], 5, 0).unwrap();
        gemm_with(path, a, b, &mut c, true).unwrap();
        // k = 0: C becomes zeros, or stays as it was when accumulating.
        let a = MatRef::<f32>::row_major(&[], 2, 0).unwrap();
        let b = MatRef::<f32>::row_major(&[], 0, 3).unwrap();
        let mut c = vec![7.0f32; 6];
        gemm_with(path, a, b, &mut c, true).unwrap();
        assert_eq!(c, vec![7.0; 6], "{path:?}");
        gemm_with(path, a, b, &mut c, false).unwrap();
        assert_eq!(c, vec![0.0; 6], "{path:?}");
    }
}

#[test]
fn batched_matches_one_by_one() {
    let (batch, m, n, k) = (5, 19, 23, 37);
    let a_data = values(batch * m * k, 1);
    let b_data = values(batch * k * n, 2);
    for path in KernelPath::supported() {
        // A contiguous per entry; B stored transposed per entry; and B shared (stride 0).
        let a = BatchRef::contiguous(&a_data, batch, m, k).unwrap();
        let b = BatchRef::contiguous(&b_data, batch, n, k).unwrap().t();
        let shared_b = BatchRef::new(&b_data, [batch, k, n], [0, n, 1]).unwrap();
        for (b, name) in [(b, "per-entry B"), (shared_b, "shared B")] {
            let mut c = vec![0.0f32; batch * m * n];
            gemm_batched_with(path, a, b, &mut c, false).unwrap();
            for e in 0..batch {
                let a_e = MatRef::row_major(&a_data[e * m * k..], m, k).unwrap();
                let b_e = if name == "shared B" {
                    MatRef::row_major(&b_data, k, n).unwrap()
                } else {
                    MatRef::row_major(&b_data[e * k * n..], n, k).unwrap().t()
                };
                let mut c_e = vec![0.0f32; m * n];
                gemm_with(path, a_e, b_e, &mut c_e, false).unwrap();
                assert_eq!(
                    &c[e * m * n..(e + 1) * m * n],
                    &c_e[..],
                    "{path:?} {name} entry {e}"
                );
            }
        }
    }
}

#[test]
fn bad_shapes_are_errors() {
    let data = vec![0.0f32; 12];
    let a = MatRef::row_major(&data, 3, 4).unwrap();
    let b = MatRef::row_major(&data, 3, 4).unwrap();
    let mut c = vec![0.0f32; 12];
    assert_eq!(
        gemm(a, b, &mut c, false),
        Err(KernelError::InnerDim {
            a_cols: 4,
            b_rows: 3
        })
    );
    let b = MatRef::row_major(&data, 4, 3).unwrap();
    let mut short = vec![0.0f32; 8];
    assert_eq!(
        gemm(a, b, &mut short, false),
        Err(KernelError::OutputLen {
            expected: 9,
            found: 8
        })
    );
    assert!(matches!(
        MatRef::new(&data, 3, 4, 5, 1),
        Err(KernelError::OutOfBounds {
            last_index: 13,
            len: 12,
            ..
        })
    ));
    assert!(matches!(
        MatRef::new(&data, 3, 4, usize::MAX, 1),
        Err(KernelError::Overflow { .. })
    ));
    let a3 = BatchRef::contiguous(&data, 3, 2, 2).unwrap();
    let b2 = BatchRef::contiguous(&data, 2, 2, 2).unwrap();
    let mut c = vec![0.0f32; 12];
    assert_eq!(
        gemm_batched_with(KernelPath::Scalar, a3, b2, &mut c, false),
        Err(KernelError::BatchMismatch { a: 3, b: 2 })
    );
    for path in KernelPath::ALL {
        let result = gemm_with(path, a, b, &mut [0.0f32; 9], false);
        if path.is_supported() {
            assert_eq!(result, Ok(()));
        } else {
            assert_eq!(result, Err(KernelError::PathUnavailable { path }));
        }
    }
}

#[test]
fn best_path_is_supported_and_listed() {
    let best = KernelPath::best();
    assert!(best.is_supported());
    assert_eq!(KernelPath::supported().first(), Some(&best));
    eprintln!("best kernel path on this machine: {best:?}");
}

/// The bf16 linear form rounds each finished tile with its bias: bit for bit the f32
/// product, plus the bias, rounded by `half`, on every path, with and without a bias, on
/// shapes that leave partial tiles and several depth blocks.
#[test]
fn bf16_prepacked_rounded_equals_product_plus_bias_rounded() {
    for path in KernelPath::supported() {
        for &(m, n, k) in &[
            (1, 1, 1),
            (17, 33, 65),
            (400, 77, 530),
            (13, 130, 1100),
            (320, 200, 1536),
            (5, 0, 3),
            (0, 4, 3),
            (4, 6, 0),
        ] {
            let a_vals: Vec<bf16> = values(m * k, 7).into_iter().map(bf16::from_f32).collect();
            let b_vals: Vec<bf16> = values(k * n, 8).into_iter().map(bf16::from_f32).collect();
            let bias = values(n, 9);
            let a = MatRef::row_major(&a_vals, m, k).unwrap();
            let packed =
                PackedRhs::with_path(path, MatRef::row_major(&b_vals, k, n).unwrap()).unwrap();
            let mut sums = vec![0f32; m * n];
            gemm_prepacked(a, &packed, &mut sums, false).unwrap();
            for with_bias in [false, true] {
                let b = with_bias.then_some(&bias[..]);
                let expected: Vec<bf16> = sums
                    .iter()
                    .enumerate()
                    .map(|(i, &s)| bf16::from_f32(s + b.map_or(0.0, |b| b[i % n.max(1)])))
                    .collect();
                let mut scratch = values(m * n, 10);
                let got = gemm_prepacked_bf16(a, &packed, b, Epilogue::Round, &mut scratch);
                assert_eq!(
                    bits(&got.unwrap()),
                    bits(&expected),
                    "{path:?} {m}x{n}x{k} bias {with_bias}"
                );
                // The fused GELU equals the separate layer on the rounded output.
                let mut expected_gelu = vec![bf16::ZERO; expected.len()];
                kiln_kernels::activation::gelu_tanh_bf16(&expected, &mut expected_gelu).unwrap();
                let mut scratch = values(m * n, 11);
                let got = gemm_prepacked_bf16(a, &packed, b, Epilogue::RoundGeluTanh, &mut scratch);
                assert_eq!(
                    bits(&got.unwrap()),
                    bits(&expected_gelu),
                    "{path:?} {m}x{n}x{k} bias {with_bias}, GELU"
                );
            }
            assert!(
                gemm_prepacked_bf16(
                    a,
                    &packed,
                    Some(&bias[..n.saturating_sub(1)]),
                    Epilogue::Round,
                    &mut vec![0.0; m * n]
                )
                .is_err()
                    || n == 0
            );
            let mut too_long = vec![0.0; m * n + 1];
            assert!(gemm_prepacked_bf16(a, &packed, None, Epilogue::Round, &mut too_long).is_err());
        }
    }
}

fn bits(values: &[bf16]) -> Vec<u16> {
    values.iter().map(|v| v.to_bits()).collect()
}
