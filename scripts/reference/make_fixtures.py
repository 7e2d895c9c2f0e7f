#!/usr/bin/env python3
"""Build tiny random-weight Wan 2.1 checkpoints and record what diffusers computes on them.

Writes tests/fixtures/wan/<case>/ as described in tests/fixtures/README.md:
a diffusers-layout checkpoint (model/), the generation parameters (case.json),
the reference tensors (reference.safetensors) and, for tiny_cfg, the same weights
in the single-file layouts people download (single_file/).

Everything runs on CPU in float32 with fixed seeds, so a re-run reproduces the files.
Usage: python scripts/reference/make_fixtures.py [--out DIR] [--case NAME ...]
"""

import os

# Offline and single-threaded before torch/tokenizers load: no hub access, and a fixed
# reduction order so that re-runs on one machine give identical bytes.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import T5Tokenizer, UMT5Config, UMT5EncoderModel

import diffusers
from diffusers import (
    AutoencoderKLWan,
    FlowMatchEulerDiscreteScheduler,
    UniPCMultistepScheduler,
    WanPipeline,
    WanTransformer3DModel,
)
from diffusers.loaders.single_file_utils import (
    convert_wan_transformer_to_diffusers,
    convert_wan_vae_to_diffusers,
)
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from diffusers.utils import is_ftfy_available

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO_ROOT / "tests" / "fixtures" / "wan"
MAX_SEQUENCE_LENGTH = 512

# Corpus for the tiny tokenizer: words of the prompts plus ordinary video-prompt vocabulary.
# The letter z and accented letters do not occur, so "zebra" and "café" in tiny_nocfg
# produce <unk>, and rare words such as "quixotic" split into several pieces.
TOKENIZER_CORPUS = """
a red circle moves to the right
blur, distort, and low quality
a small cat and a big dog are playing on the green grass in the garden
the camera slowly pans left while the sun sets over the ocean
bright colorful light, high quality, detailed, cinematic, beautiful scene
a blue square jumps up and down, then it turns around and stops
static, overexposed, worst quality, ugly, deformed, still picture, bad hands
a white bird flies above the mountains at sunrise, soft shadows, warm tones
three children run along the beach; the water is calm and the sand is golden
an old man reads a book in a dim room with a lamp and a wooden table
the city at night: neon signs, rain on the street, people with umbrellas
a robot dances in the middle of a stage under spotlights, smooth motion
flowers bloom in spring, petals fall slowly, gentle wind, shallow depth of field
a horse gallops across the field, dust rises behind it, dramatic clouds
close up portrait of a woman smiling, natural light, sharp focus
a train crosses a bridge over a river, morning fog, aerial shot
the ball rolls from the left side to the right side of the table
a triangle spins in the center of the frame, simple shapes, plain background
ocean waves crash on the rocks, slow motion, foam and spray in the air
a candle burns on a dark table, the flame flickers, small particles float
the painting comes to life, colors mix and flow, abstract patterns
birds sing in the tall trees, sunlight passes through the green leaves
a person walks down a long hallway, the door opens, bright light pours in
rain falls on a window, drops slide down the glass, blurred city lights
a small boat sails on a lake surrounded by hills, reflections on the water
the moon rises over the desert, stars appear, the sand glows silver
a chef cooks in a busy restaurant, steam rises from the pots and pans
a girl and her mother plant a tree in the garden, happy, sunny afternoon
snow falls on a quiet village, smoke rises from the chimneys, blue hour
fire, smoke, explosion, sparks, cinematic lighting, epic, dramatic angle
a yellow balloon drifts upward past tall buildings, the sky turns orange
two friends laugh and talk while sitting on a bench beside a fountain
a butterfly lands on a purple flower, its wings open and close, macro lens
the ship's captain steers through a storm, lightning strikes, heavy rain
autumn forest path covered in orange and brown leaves, mist between trunks
a musician plays the guitar on a street corner, a crowd gathers to listen
a painter draws a portrait with charcoal, the hand moves in short strokes
a black car drives along a coastal road at sunset, tracking shot
an elephant walks slowly through the savanna, birds follow behind
a dancer spins on one foot, her dress flows outward, studio lighting
children build a sandcastle, a wave washes it away, they start again
a family eats dinner together, plates, glasses, soft conversation
astronaut floats inside a space station, earth visible through the window
an owl turns its head at midnight, the branch moves, silent forest
steam trains, old stations, sepia tones, film grain, historic footage
"""

CASES = {
    "tiny_cfg": dict(
        seed=20251,
        umt5=dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2),
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=32,
            ffn_dim=48,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        ),
        # num_res_blocks 2 as every released Wan 2.1 VAE: diffusers' single-file converter
        # hard-codes that decoder layout (3 residual blocks per up block), and this case
        # carries the single-file copies. base_dim 4 keeps the two VAE copies small.
        vae=dict(
            base_dim=4,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        ),
        scheduler=dict(kind="unipc", shift=3.0),
        generation=dict(
            prompt="a red circle moves to the right",
            negative_prompt="blur, distort, and low quality",
            num_frames=9,
            height=32,
            width=48,
            num_inference_steps=4,
            guidance_scale=5.0,
        ),
        transformer_timestep=875.0,
        single_file=True,
    ),
    "tiny_nocfg": dict(
        seed=20252,
        umt5=dict(d_model=48, d_kv=16, num_heads=3, d_ff=96, num_layers=3),
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=3,
            attention_head_dim=16,
            in_channels=4,
            out_channels=4,
            text_dim=48,
            freq_dim=16,
            ffn_dim=64,
            num_layers=3,
            cross_attn_norm=False,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        ),
        # base_dim 6 (not a power of two) keeps the fixture small and catches hard-coded widths.
        vae=dict(
            base_dim=6,
            z_dim=4,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=1,
            attn_scales=[],
            temperal_downsample=[False, True, True],
            latents_mean=[0.25, -0.5, 0.125, 0.75],
            latents_std=[1.5, 0.5, 2.0, 0.8],
        ),
        scheduler=dict(kind="unipc", shift=5.0),
        generation=dict(
            prompt=(
                "  A small cat &amp; a big dog,\tplaying   on the green grass!\n"
                "Then: they run &amp;amp; jump&nbsp;near a quixotic zebra &quot;Bob&quot; "
                "at the caf\u00e9 &lt;3 &#39;ok&#39;...   "
            ),
            negative_prompt="this is ignored, because guidance is 1",
            num_frames=5,
            height=48,
            width=32,
            num_inference_steps=3,
            guidance_scale=1.0,
        ),
        transformer_timestep=412.0,
        single_file=False,
    ),
    "tiny_euler": dict(
        seed=20253,
        umt5=dict(d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2),
        transformer=dict(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=32,
            freq_dim=32,
            ffn_dim=48,
            num_layers=2,
            cross_attn_norm=True,
            qk_norm="rms_norm_across_heads",
            eps=1e-6,
        ),
        vae=dict(
            base_dim=4,
            z_dim=16,
            dim_mult=[1, 2, 4, 4],
            num_res_blocks=2,
            attn_scales=[],
            temperal_downsample=[False, True, True],
        ),
        scheduler=dict(kind="euler", shift=5.0),
        generation=dict(
            prompt="the camera slowly pans left while the sun sets over the ocean",
            # Empty: the pipeline's own default negative prompt, a lone </s>.
            negative_prompt="",
            num_frames=1,
            height=16,
            width=32,
            num_inference_steps=3,
            guidance_scale=3.0,
        ),
        transformer_timestep=937.5,
        single_file=False,
    ),
}


# --------------------------------------------------------------------------- helpers


def stats(name, t):
    t = torch.as_tensor(t).float()
    print(
        f"    {name:28s} shape={tuple(t.shape)} mean={t.mean().item():+.4f} "
        f"std={t.std().item() if t.numel() > 1 else 0.0:.4f} "
        f"min={t.min().item():+.4f} max={t.max().item():+.4f}"
    )


def require(cond, msg):
    if not cond:
        raise SystemExit(f"make_fixtures: {msg}")


def randn(gen, *shape):
    return torch.randn(*shape, generator=gen, dtype=torch.float32)


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer():
    """A tiny UMT5-style tokenizer: Unigram, Metaspace, <pad>=0 </s>=1 <unk>=2, appends </s>.

    The Unigram pieces are trained with the `tokenizers` library; transformers' T5Tokenizer
    then assembles the same pipeline (pre-tokenizer, decoder, post-processor) that it builds
    for google/umt5-xxl, minus the SentencePiece precompiled normalizer.
    """
    trainer_tok = Tokenizer(models.Unigram())
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always", split=True),
        ]
    )
    trainer = trainers.UnigramTrainer(
        vocab_size=360,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        shrinking_factor=0.75,
        max_piece_length=12,
        n_sub_iterations=2,
        show_progress=False,
    )
    lines = [line for line in TOKENIZER_CORPUS.strip().splitlines() if line.strip()]
    trainer_tok.train_from_iterator(lines, trainer=trainer)
    vocab = [(piece, float(score)) for piece, score in json.loads(trainer_tok.to_str())["model"]["vocab"]]
    require([p for p, _ in vocab[:3]] == ["<pad>", "</s>", "<unk>"], f"special tokens not first: {vocab[:3]}")
    # The trainer sums in hash-map order, so scores vary in the last bits from run to run;
    # round them and fix the order so that ids and segmentations are reproducible.
    pieces = sorted(((p, round(s, 2)) for p, s in vocab[3:]), key=lambda ps: (-ps[1], ps[0]))
    vocab = vocab[:3] + pieces
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=MAX_SEQUENCE_LENGTH)
    # The saved tokenizer.json must carry no padding/truncation state, like the real one.
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    return tokenizer


# --------------------------------------------------------------------------- models


def perturb_common(model, gen):
    """Give every norm weight and bias a non-trivial value, so a wrong path shows up."""
    with torch.no_grad():
        for module_name, module in model.named_modules():
            cls = type(module).__name__
            for pname, p in module.named_parameters(recurse=False):
                if pname == "bias":
                    p.copy_(0.05 * randn(gen, *p.shape))
                elif pname == "gamma" or (pname == "weight" and "Norm" in cls):
                    p.copy_(1.0 + 0.1 * randn(gen, *p.shape))


def build_text_encoder(cfg, vocab_size, gen):
    config = UMT5Config(
        vocab_size=vocab_size,
        d_model=cfg["d_model"],
        d_kv=cfg["d_kv"],
        d_ff=cfg["d_ff"],
        num_layers=cfg["num_layers"],
        num_decoder_layers=cfg["num_layers"],
        num_heads=cfg["num_heads"],
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        dropout_rate=0.0,
        layer_norm_epsilon=1e-6,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    model = UMT5EncoderModel(config).eval()
    perturb_common(model, gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("relative_attention_bias.weight"):
                p.copy_(0.5 * randn(gen, *p.shape))
    return model


def build_transformer(cfg, gen):
    model = WanTransformer3DModel(**cfg).eval()
    perturb_common(model, gen)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("scale_shift_table"):
                p.copy_(0.3 * randn(gen, *p.shape))
    return model


def build_vae(cfg, gen):
    model = AutoencoderKLWan(**cfg).eval()
    perturb_common(model, gen)
    # PyTorch's default conv init shrinks the signal by ~1/sqrt(3) per conv; scale the
    # convolutions up so the decoder output is O(0.5) rather than vanishing.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight") and p.dim() >= 4:
                p.mul_(1.6)
    return model


def build_scheduler(cfg):
    if cfg["kind"] == "unipc":
        # Wan 2.1 as released in diffusers format (Wan-AI/Wan2.1-T2V-*-Diffusers).
        return UniPCMultistepScheduler(
            num_train_timesteps=1000,
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            flow_shift=cfg["shift"],
            solver_order=2,
            solver_type="bh2",
            lower_order_final=True,
            predict_x0=True,
            final_sigmas_type="zero",
            timestep_spacing="linspace",
        )
    if cfg["kind"] == "euler":
        return FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=cfg["shift"])
    raise SystemExit(f"unknown scheduler {cfg['kind']}")


# --------------------------------------------------------------------------- single file


def transformer_to_original_keys(sd):
    """Invert diffusers' convert_wan_transformer_to_diffusers (plain T2V model)."""
    out = {}
    for key, value in sd.items():
        k = key
        if k == "scale_shift_table":
            k = "head.modulation"
        k = k.replace(".scale_shift_table", ".modulation")
        k = k.replace("proj_out.", "head.head.")
        k = k.replace("condition_embedder.time_embedder.linear_1.", "time_embedding.0.")
        k = k.replace("condition_embedder.time_embedder.linear_2.", "time_embedding.2.")
        k = k.replace("condition_embedder.text_embedder.linear_1.", "text_embedding.0.")
        k = k.replace("condition_embedder.text_embedder.linear_2.", "text_embedding.2.")
        k = k.replace("condition_embedder.time_proj.", "time_projection.1.")
        k = k.replace(".attn1.", ".self_attn.").replace(".attn2.", ".cross_attn.")
        k = k.replace(".to_out.0.", ".o.").replace(".to_q.", ".q.").replace(".to_k.", ".k.").replace(".to_v.", ".v.")
        k = k.replace(".ffn.net.0.proj.", ".ffn.0.").replace(".ffn.net.2.", ".ffn.2.")
        # The original block orders its norms norm1, norm3 (cross-attention), norm2 (ffn).
        k = k.replace(".norm2.", ".norm__swap.").replace(".norm3.", ".norm2.").replace(".norm__swap.", ".norm3.")
        require(k not in out, f"duplicate original key {k}")
        out[k] = value
    return out


RESNET_TO_ORIGINAL = {
    "norm1.gamma": "residual.0.gamma",
    "conv1.weight": "residual.2.weight",
    "conv1.bias": "residual.2.bias",
    "norm2.gamma": "residual.3.gamma",
    "conv2.weight": "residual.6.weight",
    "conv2.bias": "residual.6.bias",
    "conv_shortcut.weight": "shortcut.weight",
    "conv_shortcut.bias": "shortcut.bias",
}


def vae_to_original_keys(sd, num_res_blocks):
    """Invert diffusers' convert_wan_vae_to_diffusers (Wan 2.1 VAE, original WanVAE_ layout)."""
    per_up_block = num_res_blocks + 2  # residual blocks + one resample
    out = {}
    for key, value in sd.items():
        parts = key.split(".")
        if parts[0] in ("quant_conv", "post_quant_conv"):
            k = ("conv1." if parts[0] == "quant_conv" else "conv2.") + parts[1]
        elif parts[1] == "conv_in":
            k = f"{parts[0]}.conv1.{parts[2]}"
        elif parts[1] == "norm_out":
            k = f"{parts[0]}.head.0.gamma"
        elif parts[1] == "conv_out":
            k = f"{parts[0]}.head.2.{parts[2]}"
        elif parts[1] == "mid_block":
            idx = int(parts[3])
            rest = ".".join(parts[4:])
            if parts[2] == "resnets":
                k = f"{parts[0]}.middle.{2 * idx}.{RESNET_TO_ORIGINAL[rest]}"
            else:  # attentions.0.{norm.gamma,to_qkv.*,proj.*}
                k = f"{parts[0]}.middle.1.{rest}"
        elif parts[1] == "down_blocks":
            rest = ".".join(parts[3:])
            k = f"encoder.downsamples.{parts[2]}.{RESNET_TO_ORIGINAL.get(rest, rest)}"
        elif parts[1] == "up_blocks":
            block = int(parts[2])
            if parts[3] == "resnets":
                idx = block * per_up_block + int(parts[4])
                rest = ".".join(parts[5:])
                k = f"decoder.upsamples.{idx}.{RESNET_TO_ORIGINAL[rest]}"
            else:  # upsamplers.0.{resample.1.*,time_conv.*}
                idx = block * per_up_block + num_res_blocks + 1
                k = f"decoder.upsamples.{idx}." + ".".join(parts[5:])
        else:
            raise SystemExit(f"unmapped VAE key {key}")
        require(k not in out, f"duplicate original key {k}")
        out[k] = value
    return out


def assert_same_state(name, got, want):
    require(set(got) == set(want), f"{name}: key sets differ: only got {sorted(set(got) - set(want))[:5]}, "
            f"only want {sorted(set(want) - set(got))[:5]}")
    for k in want:
        require(got[k].shape == want[k].shape and torch.equal(got[k].float(), want[k].float()), f"{name}: {k} differs")


def write_single_file(case_dir, model_dir, pipe, num_res_blocks):
    sf_dir = case_dir / "single_file"
    sf_dir.mkdir(parents=True, exist_ok=True)
    tr_sd = {k: v.contiguous() for k, v in pipe.transformer.state_dict().items()}
    vae_sd = {k: v.contiguous() for k, v in pipe.vae.state_dict().items()}
    te_sd = {k: v.contiguous() for k, v in pipe.text_encoder.state_dict().items()}

    wan_tr = transformer_to_original_keys(tr_sd)
    save_file(wan_tr, sf_dir / "wan_transformer.safetensors")
    save_file({f"model.diffusion_model.{k}": v for k, v in wan_tr.items()}, sf_dir / "comfy_transformer.safetensors")
    save_file(vae_to_original_keys(vae_sd, num_res_blocks), sf_dir / "wan_vae.safetensors")
    # umt5-xxl encoder files carry shared.weight only; encoder.embed_tokens is the same table.
    te_single = {k: v for k, v in te_sd.items() if k != "encoder.embed_tokens.weight"}
    require("shared.weight" in te_single, "text encoder has no shared.weight")
    save_file(te_single, sf_dir / "umt5_encoder.safetensors")

    # Independent check 1: diffusers' own converters map the files back to the diffusers keys.
    for fname in ("wan_transformer", "comfy_transformer"):
        conv = convert_wan_transformer_to_diffusers(load_file(sf_dir / f"{fname}.safetensors"))
        assert_same_state(f"convert {fname}", conv, tr_sd)
    conv = convert_wan_vae_to_diffusers(load_file(sf_dir / "wan_vae.safetensors"))
    assert_same_state("convert wan_vae", conv, vae_sd)

    # Independent check 2: diffusers' from_single_file, with the tiny config from model/.
    for fname in ("wan_transformer", "comfy_transformer"):
        m = WanTransformer3DModel.from_single_file(
            str(sf_dir / f"{fname}.safetensors"),
            config=str(model_dir),
            subfolder="transformer",
            torch_dtype=torch.float32,
            local_files_only=True,
        )
        assert_same_state(f"from_single_file {fname}", m.state_dict(), tr_sd)
    m = AutoencoderKLWan.from_single_file(
        str(sf_dir / "wan_vae.safetensors"),
        config=str(model_dir),
        subfolder="vae",
        torch_dtype=torch.float32,
        local_files_only=True,
    )
    assert_same_state("from_single_file wan_vae", m.state_dict(), vae_sd)

    # The encoder file loads into a fresh UMT5EncoderModel with only the tied table missing.
    te = UMT5EncoderModel(pipe.text_encoder.config).eval()
    missing, unexpected = te.load_state_dict(load_file(sf_dir / "umt5_encoder.safetensors"), strict=False)
    require(not unexpected, f"umt5 unexpected keys {unexpected}")
    require(set(missing) <= {"encoder.embed_tokens.weight"}, f"umt5 missing keys {missing}")
    te.encoder.embed_tokens.weight = te.shared.weight
    ids = torch.tensor([[5, 9, 17, 1, 0, 0]])
    mask = (ids > 0).long()
    mask[0, 3] = 1
    require(
        torch.equal(te(ids, mask).last_hidden_state, pipe.text_encoder(ids, mask).last_hidden_state),
        "umt5 single file gives different output",
    )
    print("    single_file: verified with convert_wan_*_to_diffusers and from_single_file")


# --------------------------------------------------------------------------- one case


def tokenize(tokenizer, text):
    out = tokenizer(
        [prompt_clean(text)],
        padding="max_length",
        max_length=MAX_SEQUENCE_LENGTH,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    return out.input_ids.to(torch.int64), out.attention_mask.to(torch.int64)


def check_rust_tokenizer_equivalent(tokenizer_json, tokenizer, texts):
    """What a Rust `tokenizers` user does: load tokenizer.json, pad to 512 with <pad>=0, truncate."""
    tok = Tokenizer.from_file(str(tokenizer_json))
    require(tok.padding is None and tok.truncation is None, "tokenizer.json carries padding/truncation state")
    tok.enable_truncation(max_length=MAX_SEQUENCE_LENGTH)
    tok.enable_padding(pad_id=0, pad_token="<pad>", length=MAX_SEQUENCE_LENGTH)
    for text in texts:
        enc = tok.encode(prompt_clean(text), add_special_tokens=True)
        ids, mask = tokenize(tokenizer, text)
        require(enc.ids == ids[0].tolist(), f"tokenizer.json ids differ for {text!r}")
        require(enc.attention_mask == mask[0].tolist(), f"tokenizer.json mask differs for {text!r}")


def make_case(name, spec, out_root):
    print(f"== {name}")
    case_dir = out_root / name
    if case_dir.exists():
        shutil.rmtree(case_dir)
    model_dir = case_dir / "model"
    gen_params = spec["generation"]
    seed = spec["seed"]
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    # ---- build and save the checkpoint
    tokenizer = build_tokenizer()
    text_encoder = build_text_encoder(spec["umt5"], len(tokenizer), gen)
    transformer = build_transformer(spec["transformer"], gen)
    vae = build_vae(spec["vae"], gen)
    scheduler = build_scheduler(spec["scheduler"])
    WanPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler, transformer=transformer
    ).save_pretrained(model_dir, safe_serialization=True)
    print(f"    tokenizer vocab size {len(tokenizer)}")

    # ---- everything below uses what is on disk
    pipe = WanPipeline.from_pretrained(model_dir, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    tok_json = model_dir / "tokenizer" / "tokenizer.json"
    require(tok_json.exists(), "tokenizer/tokenizer.json missing")
    do_cfg = gen_params["guidance_scale"] > 1.0
    check_rust_tokenizer_equivalent(
        tok_json,
        pipe.tokenizer,
        [gen_params["prompt"], gen_params["negative_prompt"], TOKENIZER_CORPUS, "x " * 700],
    )

    ref = {}
    n_steps = gen_params["num_inference_steps"]
    t_scale = pipe.vae_scale_factor_temporal
    s_scale = pipe.vae_scale_factor_spatial
    frames = gen_params["num_frames"]
    lat_shape = (
        1,
        pipe.transformer.config.in_channels,
        (frames - 1) // t_scale + 1,
        gen_params["height"] // s_scale,
        gen_params["width"] // s_scale,
    )
    z_dim = pipe.vae.config.z_dim

    with torch.no_grad():
        # text encoder
        ids, mask = tokenize(pipe.tokenizer, gen_params["prompt"])
        ref["prompt_input_ids"] = ids
        ref["prompt_attention_mask"] = mask
        ref["prompt_encoder_out"] = pipe.text_encoder(ids, mask).last_hidden_state
        prompt_embeds, negative_embeds = pipe.encode_prompt(
            prompt=gen_params["prompt"],
            negative_prompt=gen_params["negative_prompt"],
            do_classifier_free_guidance=do_cfg,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device=torch.device("cpu"),
        )
        ref["prompt_embeds"] = prompt_embeds
        n_real = int(mask.sum())
        require(torch.equal(prompt_embeds[0, :n_real], ref["prompt_encoder_out"][0, :n_real]), "embeds != encoder rows")
        require(bool((prompt_embeds[0, n_real:] == 0).all()), "padded embed rows not zero")
        if do_cfg:
            nids, _ = tokenize(pipe.tokenizer, gen_params["negative_prompt"])
            ref["negative_input_ids"] = nids
            ref["negative_embeds"] = negative_embeds

        # transformer
        latents = randn(gen, *lat_shape)
        timestep = torch.tensor([spec["transformer_timestep"]], dtype=torch.float32)
        ref["transformer_in_latents"] = latents
        ref["transformer_in_timestep"] = timestep
        ref["transformer_out"] = pipe.transformer(
            hidden_states=latents, timestep=timestep, encoder_hidden_states=prompt_embeds, return_dict=False
        )[0]

        # VAE
        video_in = torch.rand(1, 3, frames, gen_params["height"], gen_params["width"], generator=gen) * 2.0 - 1.0
        ref["vae_encode_in"] = video_in
        ref["vae_encode_mean"] = pipe.vae.encode(video_in).latent_dist.mean
        z = randn(gen, 1, z_dim, *lat_shape[2:])
        ref["vae_decode_in"] = z
        ref["vae_decode_out"] = pipe.vae.decode(z, return_dict=False)[0]

        # scheduler chain, from a fresh scheduler read from the saved config
        sched_cls = type(pipe.scheduler)
        sched = sched_cls.from_pretrained(model_dir, subfolder="scheduler")
        sched.set_timesteps(n_steps)
        sched.set_begin_index(0)
        ref["sched_timesteps"] = sched.timesteps.to(torch.float32)
        ref["sched_sigmas"] = sched.sigmas.to(torch.float32)
        sample = randn(gen, *lat_shape)
        ref["sched_sample_0"] = sample
        for i, t in enumerate(sched.timesteps):
            model_output = randn(gen, *lat_shape)
            ref[f"sched_model_output_{i}"] = model_output
            sample = sched.step(model_output, t, sample, return_dict=False)[0]
            ref[f"sched_prev_{i}"] = sample
        timesteps_dtype = sched.timesteps.dtype

        # whole pipeline
        init_latents = randn(gen, *lat_shape)
        ref["pipeline_init_latents"] = init_latents
        video = pipe(
            prompt=gen_params["prompt"],
            negative_prompt=gen_params["negative_prompt"],
            height=gen_params["height"],
            width=gen_params["width"],
            num_frames=frames,
            num_inference_steps=n_steps,
            guidance_scale=gen_params["guidance_scale"],
            latents=init_latents.clone(),
            output_type="np",
            max_sequence_length=MAX_SEQUENCE_LENGTH,
        ).frames[0]
        ref["pipeline_video"] = torch.from_numpy(np.ascontiguousarray(video, dtype=np.float32))

    # ---- sanity: every path carries signal
    print(f"    cleaned prompt: {prompt_clean(gen_params['prompt'])!r}")
    print(f"    prompt tokens ({n_real}): {pipe.tokenizer.convert_ids_to_tokens(ids[0, :n_real].tolist())}")
    print(f"    scheduler timesteps dtype {timesteps_dtype}: {sched.timesteps.tolist()}")
    for k in sorted(ref):
        if ref[k].dtype == torch.float32:
            stats(k, ref[k])
    for k in ("prompt_encoder_out", "transformer_out", "vae_encode_mean", "vae_decode_out"):
        s = ref[k].std().item()
        require(0.05 < s < 20.0, f"{name}: {k} std {s} is tiny or huge")
    vd = ref["vae_decode_out"]
    require(float((vd.abs() >= 1.0).float().mean()) < 0.5, f"{name}: vae_decode_out mostly saturated")
    pv = ref["pipeline_video"]
    sat = float(((pv <= 0.0) | (pv >= 1.0)).float().mean())
    print(f"    pipeline_video saturated fraction {sat:.3f}")
    require(sat < 0.5 and pv.std().item() > 0.02, f"{name}: pipeline video is trivial")
    require(pv.shape == (frames, gen_params["height"], gen_params["width"], 3), f"video shape {pv.shape}")

    # ---- write
    save_file({k: v.contiguous() for k, v in ref.items()}, case_dir / "reference.safetensors")
    case = dict(
        prompt=gen_params["prompt"],
        negative_prompt=gen_params["negative_prompt"],
        num_frames=frames,
        height=gen_params["height"],
        width=gen_params["width"],
        num_inference_steps=n_steps,
        guidance_scale=gen_params["guidance_scale"],
        max_sequence_length=MAX_SEQUENCE_LENGTH,
        scheduler=spec["scheduler"]["kind"],
    )
    (case_dir / "case.json").write_text(json.dumps(case, indent=2, ensure_ascii=False) + "\n")

    if spec["single_file"]:
        write_single_file(case_dir, model_dir, pipe, spec["vae"]["num_res_blocks"])
    size = sum(p.stat().st_size for p in case_dir.rglob("*") if p.is_file())
    print(f"    wrote {case_dir} ({size / 1e6:.2f} MB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="only these cases (repeatable)")
    args = parser.parse_args()

    # prompt_clean runs ftfy.fix_text when ftfy is importable; the reference is defined without
    # it (html.unescape twice, collapse whitespace, strip), which is what kiln implements.
    require(not is_ftfy_available(), "ftfy is installed; uninstall it (pip uninstall ftfy) for the reference")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    import tokenizers
    import transformers

    print(
        f"torch {torch.__version__}, diffusers {diffusers.__version__}, transformers {transformers.__version__}, "
        f"tokenizers {tokenizers.__version__}, numpy {np.__version__}"
    )
    for name in args.case or list(CASES):
        make_case(name, CASES[name], args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"total fixture size under {args.out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    sys.exit(main())
