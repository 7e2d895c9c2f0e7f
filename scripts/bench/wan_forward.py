"""Wan2.1-1.3B-shaped transformer forward, VAE decode and whole generation: diffusers and kiln, one run.

Random weights, 17 frames at 128x128 (320 video tokens) and 512 text tokens by default.
The generation is 4 steps of UniPC (kiln's bundled scheduler_config.json, read by both
sides) with classifier-free guidance 5.0 (two transformer forwards per step: diffusers runs
them one after the other, kiln as one batch of two, as its pipeline does), then the VAE
decode to frames; the text encoder is skipped on both sides (random (1, 512, 4096) prompt and
negative-prompt embeddings). Each side's generation runs in its own process per dtype, so
its peak RSS is that dtype's. Prints seconds, kiln/diffusers ratios, GFLOP/s, peak RSS and
kiln's transformer GFLOP/s against the measured peak. Usage:
    bash scripts/bench/wan_forward.sh [--frames 17 --size 128 --repeats 2 --rounds 1 --skip-generation]
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import torch
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
# kiln's default scheduler (UniPC, flow sigmas, flow_shift 3.0); bench_generate includes the same file.
SCHEDULER = os.path.join(ROOT, "models", "kiln-bundled", "scheduler", "scheduler_config.json")
DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}

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


def vae_decode_flops(lf, ls, z=16, dims=(384, 384, 384, 192, 96), temporal=(True, True, False), res=3):
    """Multiply-adds x2 of the Wan2.1 VAE decode's convolutions (post_quant_conv and the decoder;
    the mid-block attention's 1x1 to_qkv/proj are counted, its scores, norms and upsampling not).

    Causal 3x3x3 convs count all 27 taps (the causal padding multiplies zeros). The decoder runs
    latent frame by latent frame: an upsample3d's time conv (dim -> 2 dim, 3x1x1) skips the first
    chunk, so t latent frames become 1 + 2 (t - 1).
    """
    conv = lambda cin, cout, taps, t, s: 2 * cin * cout * taps * t * s * s
    t, s = lf, ls
    flops = conv(z, z, 1, t, s) + conv(z, dims[0], 27, t, s)      # post_quant_conv, conv_in
    flops += 4 * conv(dims[0], dims[0], 27, t, s)                  # mid block: 2 residual blocks
    flops += conv(dims[0], 3 * dims[0], 1, t, s) + conv(dims[0], dims[0], 1, t, s)  # mid attention
    for i in range(len(dims) - 1):
        cin, out = (dims[i] if i == 0 else dims[i] // 2), dims[i + 1]   # in_dim halves after upsampling
        for j in range(res):                                       # residual blocks: conv1, conv2
            flops += conv(cin if j == 0 else out, out, 27, t, s) + conv(out, out, 27, t, s)
            if j == 0 and cin != out:
                flops += conv(cin, out, 1, t, s)                    # shortcut
        if i < len(dims) - 2:
            if temporal[i]:
                flops += conv(out, 2 * out, 3, t - 1, s)            # time_conv
                t = 1 + 2 * (t - 1)
            s *= 2
            flops += conv(out, out // 2, 9, t, s)                   # resample Conv2d after 2x nearest
    return flops + conv(dims[-1], 3, 27, t, s)                     # head


def best_of(repeats, fn):
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def generation_child(args):
    """diffusers' WanPipeline without a text encoder, in this process only (its peak RSS is the
    dtype's): prints one JSON line like kiln's bench_generate."""
    dt = DTYPES[args.generation_child]
    torch.manual_seed(0)
    with open(SCHEDULER) as f:
        sched_cfg = json.load(f)
    # Built in the target dtype (no f32 copy of the weights at the peak), then .to(dt) as the rows above.
    torch.set_default_dtype(dt)
    transformer = WanTransformer3DModel(**TRANSFORMER).to(dt).eval()
    vae = AutoencoderKLWan().to(dt).eval()
    torch.set_default_dtype(torch.float32)
    weights = sum(t.numel() * t.element_size() for m in (transformer, vae) for t in m.parameters())
    pipe = WanPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                       scheduler=UniPCMultistepScheduler.from_config(sched_cfg))
    pipe.set_progress_bar_config(disable=True)
    cond = torch.randn(1, 512, 4096)
    uncond = torch.randn(1, 512, 4096)
    marks = []

    def on_step_end(_pipe, i, t, kwargs):
        marks.append(time.perf_counter())
        return kwargs

    best = (float("inf"), 0.0, 0.0)
    with torch.no_grad():
        for _ in range(args.repeats):
            marks.clear()
            start = time.perf_counter()
            pipe(prompt_embeds=cond, negative_prompt_embeds=uncond, height=args.size, width=args.size,
                 num_frames=args.frames, num_inference_steps=args.steps, guidance_scale=args.guidance,
                 generator=torch.Generator().manual_seed(0), output_type="np", callback_on_step_end=on_step_end)
            end = time.perf_counter()
            if end - start < best[0]:
                best = (end - start, marks[-1] - start, end - marks[-1])
    print(json.dumps({"what": "generation", "dtype": args.generation_child, "seconds": best[0],
                      "denoise_seconds": best[1], "decode_seconds": best[2],
                      "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                      "weights_bytes": weights, "flow_shift": sched_cfg["flow_shift"]}))


def keep_best(table, key, seconds):
    table[key] = min(seconds, table.get(key, float("inf")))


def compare_once(args, lf, ls, ref, kiln, peak, gen):
    """One round: diffusers then kiln, forward and decode, then the generations; each
    table keeps its best time per key (and the generation row of that best run)."""
    with torch.no_grad():
        for name, dt in [("f32", torch.float32), ("bf16", torch.bfloat16)]:
            model = WanTransformer3DModel(**TRANSFORMER).to(dt).eval()
            x = torch.randn(1, 16, lf, ls, ls, dtype=dt)
            text = torch.randn(1, 512, 4096, dtype=dt)
            t = torch.tensor([500.0])
            model(x, t, text)  # warm-up
            keep_best(ref, ("transformer_forward", name), best_of(args.repeats, lambda: model(x, t, text)))
            del model
            vae = AutoencoderKLWan().to(dt).eval()
            z = torch.randn(1, 16, lf, ls, ls, dtype=dt)
            keep_best(ref, ("vae_decode", name), best_of(args.repeats, lambda: vae.decode(z)))
            del vae
    out = subprocess.run([args.kiln, "--frames", str(args.frames), "--size", str(args.size),
                          "--repeats", str(args.repeats), "--dtypes", "f32,bf16"],
                         check=True, capture_output=True, text=True).stdout
    for r in map(json.loads, out.strip().splitlines()):
        if r["what"] == "peak":
            peak[r["dtype"]] = max(r["gflops"], peak.get(r["dtype"], 0.0))
        else:
            keep_best(kiln, (r["what"], r["dtype"]), r["seconds"])
    # The whole generation, one process per side and dtype (interleaved, so both see the same machine).
    if not args.skip_generation:
        common = ["--frames", str(args.frames), "--size", str(args.size), "--repeats", str(args.repeats),
                  "--steps", str(args.steps), "--guidance", str(args.guidance)]
        for name in DTYPES:
            for side, cmd in [("diffusers", [sys.executable, os.path.abspath(__file__), "--generation-child", name]),
                              ("kiln", [args.kiln_generate, "--dtypes", name])]:
                proc = subprocess.run(cmd + common, capture_output=True, text=True)
                if proc.returncode != 0:
                    sys.stderr.write(proc.stderr)
                    proc.check_returncode()
                run = json.loads(proc.stdout.strip().splitlines()[-1])
                ref_or_kiln = ref if side == "diffusers" else kiln
                if run["seconds"] < ref_or_kiln.get(("generation", name), float("inf")):
                    gen[(side, name)] = run
                keep_best(ref_or_kiln, ("generation", name), run["seconds"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=17)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--guidance", type=float, default=5.0)
    ap.add_argument("--kiln", default="target/release/examples/bench_wan")
    ap.add_argument("--kiln-generate", default="target/release/examples/bench_generate")
    ap.add_argument("--skip-generation", action="store_true")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole diffusers-then-kiln comparison and keep each side's best: "
                         "a burst of outside load then spoils one round of one side, not the ratio")
    ap.add_argument("--generation-child", choices=sorted(DTYPES), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.generation_child:
        return generation_child(args)
    torch.manual_seed(0)
    lf, ls = (args.frames - 1) // 4 + 1, args.size // 8
    n_tokens = lf * (ls // 2) * (ls // 2)
    ref, kiln, peak, gen = {}, {}, {}, {}
    for _ in range(args.rounds):
        compare_once(args, lf, ls, ref, kiln, peak, gen)
    flops = transformer_flops(n_tokens)
    vae_flops = vae_decode_flops(lf, ls)
    work = {"transformer_forward": flops, "vae_decode": vae_flops,
            "generation": 2 * args.steps * flops + vae_flops}
    print(f"shapes: {args.frames} frames at {args.size}x{args.size} -> {n_tokens} video tokens, 512 text tokens; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; transformer {flops / 1e9:.0f} GFLOP, "
          f"VAE decode {vae_flops / 1e9:.0f} GFLOP (convolutions), generation {work['generation'] / 1e9:.0f} GFLOP "
          f"({args.steps} steps x 2 forwards + decode)")
    # Peak RSS is measured for the generation rows only (one process per side and dtype).
    gib = lambda what, side, dt: (f"{gen[(side, dt)]['peak_rss_bytes'] / 2**30:.2f}"
                                  if what == "generation" and (side, dt) in gen else "")
    print(f"{'what':<22}{'dtype':<7}{'diffusers s':>12}{'kiln s':>10}{'kiln/diff':>11}{'diff GF/s':>11}"
          f"{'kiln GF/s':>11}{'diff RSS GiB':>13}{'kiln RSS GiB':>13}")
    for key in sorted(ref, key=lambda k: (list(work).index(k[0]), k[1])):
        what, dt = key
        d, k = ref[key], kiln.get(key, float("nan"))
        gf = lambda s: f"{work[what] / s / 1e9:11.1f}"
        print(f"{what:<22}{dt:<7}{d:12.3f}{k:10.3f}{k / d:11.2f}{gf(d)}{gf(k)}{gib(what, 'diffusers', dt):>13}"
              f"{gib(what, 'kiln', dt):>13}".rstrip())
    if peak:
        pct = lambda s, dt: f"{100 * flops / s / 1e9 / peak[dt]:.0f}%" if peak.get(dt) else "-"
        print("measured peak (kiln_kernels::peak, registers only): "
              + ", ".join(f"{dt} {g:.0f} GFLOP/s" for dt, g in peak.items())
              + "; transformer forward at "
              + ", ".join(f"{dt}: kiln {pct(kiln[('transformer_forward', dt)], dt)}, "
                          f"diffusers {pct(ref[('transformer_forward', dt)], dt)}"
                          for dt in peak if ("transformer_forward", dt) in kiln) + " of it")
    if gen:
        print(f"generation: text encoder skipped on both sides (random (1, 512, 4096) prompt and negative-prompt "
              f"embeddings); {args.steps} UniPC steps, flow_shift {gen[('kiln', 'f32')]['flow_shift']}, guidance "
              f"{args.guidance} (2 forwards a step; kiln batches them), VAE decode, frames to [0, 1]; peak RSS is each process's whole "
              "peak (imports and random-weight build included)")
        for dt in DTYPES:
            d, k = gen[("diffusers", dt)], gen[("kiln", dt)]
            print(f"  {dt}: denoise diffusers {d['denoise_seconds']:.3f} s, kiln {k['denoise_seconds']:.3f} s; "
                  f"decode diffusers {d['decode_seconds']:.3f} s, kiln {k['decode_seconds']:.3f} s; weights "
                  f"diffusers {d['weights_bytes'] / 2**30:.2f} GiB, kiln {k['weights_bytes'] / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
