"""How far diffusers' own bf16 VAE decode lands from its f32 decode on the tiny_cfg fixture:
the yardstick for kiln's bf16 tolerance in crates/kiln-models/tests/vae_parity.rs (errors
relative to max |f32 reference|, as the test measures them). Prints, writes nothing.

Run with the pinned stack of scripts/reference/requirements.txt:
    $KILN_REF_VENV/bin/python scripts/reference/vae_bf16_torch.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file

case = Path(__file__).resolve().parents[2] / "tests/fixtures/wan/tiny_cfg"
ref = load_file(case / "reference.safetensors")
z, want = ref["vae_decode_in"], ref["vae_decode_out"].float()
vae = AutoencoderKLWan.from_pretrained(case / "model/vae", torch_dtype=torch.bfloat16).eval()
with torch.no_grad():
    got = vae.decode(z.to(torch.bfloat16), return_dict=False)[0].float()
scale = want.abs().max()
err = (got - want).abs()
print(f"diffusers bf16 decode vs f32 reference: mean {float(err.mean() / scale):.3e}, "
      f"max {float(err.max() / scale):.3e}")
