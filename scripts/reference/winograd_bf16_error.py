"""Error of one bf16 Winograd convolution F(m×m, 3×3) against the exact sum, per variant.

Simulates what kiln's Winograd kernel does in bf16: inputs and weights are bf16, the
transformed inputs V = Bᵀ d B and weights U = G g Gᵀ are computed in f32 and rounded to
bf16 once each, their products are summed exactly enough (f64 here; f32 in the kernel) over
C = 288 terms (96 channels × 3 temporal taps, the VAE's finest stage), and the output
transform is applied. Prints the mean and rms absolute error of the outputs (which have
rms about 1) for F(2×2) and F(4×4), kiln's two variants, and F(3×3) on several point sets,
derived here by Toom-Cook and checked against the direct correlation.

Run: $KILN_REF_VENV/bin/python scripts/reference/winograd_bf16_error.py  (numpy only)
"""

import numpy as np


def toom_cook_3(points):
    """AT (3×5), G (5×3), BT (5×5) of F(3, 3) on four finite points and ∞."""
    m, r, n = 3, 3, 5
    at, g = np.zeros((m, n)), np.zeros((n, r))
    for j, p in enumerate(points):
        at[:, j] = [p**i for i in range(m)]
        norm = np.prod([p - q for q in points if q != p])
        g[j] = [p**k / norm for k in range(r)]
    at[m - 1, n - 1] = 1
    g[n - 1, r - 1] = 1
    # BT solves Σ_j AT[i][j] G[j][k] BT[j][l] = [l == i + k] for every i, k, l.
    rows, rhs = [], []
    for i in range(m):
        for k in range(r):
            for l in range(n):
                row = np.zeros(n * n)
                for j in range(n):
                    row[j * n + l] = at[i, j] * g[j, k]
                rows.append(row)
                rhs.append(1.0 if l == i + k else 0.0)
    bt = np.linalg.lstsq(np.array(rows), np.array(rhs), rcond=None)[0].reshape(n, n)
    return at, g, bt


def bf16(x):
    """Round f32 to bf16 (nearest, ties to even), returned as f32."""
    bits = np.asarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
    return rounded.astype(np.uint32).view(np.float32)


F2 = (
    np.array([[1, 1, 1, 0], [0, 1, -1, -1]], float),
    np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]]),
    np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], float),
)
F4 = (
    np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float),
    np.array(
        [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6],
         [1 / 24, 1 / 12, 1 / 6], [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]
    ),
    np.array(
        [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        float,
    ),
)


def main():
    variants = {"F(2x2)": F2, "F(4x4)": F4}
    for last in (2, -2, 0.5, -0.5):
        variants[f"F(3x3) points 0,1,-1,{last}"] = toom_cook_3([0, 1, -1, last])
    rng = np.random.default_rng(1)
    terms = 96 * 3
    for name, (at, g, bt) in variants.items():
        m = at.shape[0]
        n = m + 2
        # The transforms are exact in f64: check them on one random tile first.
        d, w = rng.standard_normal((n, n)), rng.standard_normal((3, 3))
        direct = [[np.sum(d[i:i + 3, j:j + 3] * w) for j in range(m)] for i in range(m)]
        assert np.abs(at @ ((g @ w @ g.T) * (bt @ d @ bt.T)) @ at.T - direct).max() < 1e-9
        errors = []
        for _ in range(30):
            d = bf16(rng.standard_normal((terms, n, n)).astype(np.float32))
            w = bf16((rng.standard_normal((terms, 3, 3)) / np.sqrt(terms * 9)).astype(np.float32))
            exact = np.array(
                [[np.sum(d[:, i:i + 3, j:j + 3].astype(np.float64) * w) for j in range(m)]
                 for i in range(m)]
            )
            v = bf16(np.einsum("ab,cbd,ed->cae", bt, d, bt).astype(np.float32))
            u = bf16(np.einsum("ab,cbd,ed->cae", g, w, g).astype(np.float32))
            y = at @ np.sum(u.astype(np.float64) * v, axis=0) @ at.T
            errors.append(np.abs(y - exact).ravel())
        e = np.concatenate(errors)
        print(f"{name:28s} mean abs error {e.mean():.4f}  rms {np.sqrt((e ** 2).mean()):.4f}")


if __name__ == "__main__":
    main()
