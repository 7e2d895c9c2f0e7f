"""Wan2.1-1.3B-shaped transformer forward and VAE decode: diffusers and kiln, one run.

Random weights, 17 frames at 128x128 (320 video tokens) and 512 text tokens by default.
Prints seconds, kiln/diffusers ratios and GFLOP/s. Usage:
    bash scripts/bench/wan_forward.sh [--frames 17 --size 128 --repeats 2]
"""
import argparse
import json
import os
import subprocess
import time

import torch
from diffusers import AutoencoderKLWan, WanTransformer3DModel

TRANSFORMER = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16,
                   out_channels=16, text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30,
                   cross_attn_norm=True, qk_norm="rms_norm_across_heads", eps=1e-6)


def transformer_flops(n, text=512, d=1536, ffn=8960, layers=30, c=16, patch=4, freq=256):
    """Multiply-adds x2 of the matrix products in one forward (norms and RoPE left out)."""
    per_block = (
        2 * n * d * d * 4          # self-attention q, k, v, o
        + 2 * 2 * n * n * d        # self-attention scores and weighted sum
        + 2 * n * d * d * 2        # cross-attention q, o
        + 2 * text * d * d * 2     # cross-attention k, v over the text
        + 2 * 2 * n * text * d     # cross-attention scores and weighted sum
        + 2 * n * d * ffn * 2      # feed-forward
    )
    embed = 2 * n * c * patch * d + 2 * text * 4096 * d + 2 * text * d * d + 2 * (freq * d + d * d + d * 6 * d)
    head = 2 * n * d * c * patch
    return layers * per_block + embed + head


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--kiln", default="target/release/examples/bench_wan")
    args = ap.parse_args()
    torch.manual_seed(0)
    lf, ls = (args.frames - 1) // 4 + 1, args.size // 8
    n_tokens = lf * (ls // 2) * (ls // 2)
    ref = {}
    with torch.no_grad():
        for name, dt in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
            model = WanTransformer3DModel(**TRANSFORMER).to(dt).eval()
            x = torch.randn(1, 16, lf, ls, ls, dtype=dt)
            text = torch.randn(1, 512, 4096, dtype=dt)
            t = torch.tensor([500.0])
            model(x, t, text)  # warm-up
            ref[("transformer_forward", name)] = best_of(args.repeats, lambda: model(x, t, text))
            del model
            vae = AutoencoderKLWan().to(dt).eval()
            z = torch.randn(1, 16, lf, ls, ls, dtype=dt)
            ref[("vae_decode", name)] = best_of(args.repeats, lambda: vae.decode(z))
            del vae
    out = subprocess.run([args.kiln, "--frames", str(args.frames), "--size", str(args.size),
                          "--repeats", str(args.repeats), "--dtypes", "f32,bf16"],
                         check=True, capture_output=True, text=True).stdout
    kiln = {(r["what"], r["dtype"]): r["seconds"] for r in map(json.loads, out.strip().splitlines())}
    flops = transformer_flops(n_tokens)
    print(f"shapes: {args.frames} frames at {args.size}x{args.size} -> {n_tokens} video tokens, 512 text tokens; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; transformer {flops / 1e9:.0f} GFLOP")
    print(f"{'what':<22}{'dtype':<7}{'diffusers s':>12}{'kiln s':>10}{'kiln/diff':>11}{'diff GF/s':>11}{'kiln GF/s':>11}")
    for key in sorted(ref):
        what, dt = key
        d, k = ref[key], kiln.get(key, float("nan"))
        gf = lambda s: f"{flops / s / 1e9:11.1f}" if what == "transformer_forward" else f"{'':>11}"
        print(f"{what:<22}{dt:<7}{d:12.3f}{k:10.3f}{k / d:11.2f}{gf(d)}{gf(k)}")


if __name__ == "__main__":
    main()
