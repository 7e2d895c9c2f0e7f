"""Reference for kiln's tiled VAE decode: diffusers' AutoencoderKLWan.tiled_decode on the
tiny_cfg fixture's VAE and decode input, with tiles small enough to cut its 32x48 frame into
2 x 3 overlapping tiles (edge tiles included). Writes tests/fixtures/wan/tiny_cfg/vae_tiled.safetensors.

Run with the pinned stack of scripts/reference/requirements.txt:
    $KILN_REF_VENV/bin/python scripts/reference/vae_tiled.py
"""
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan
from safetensors.torch import load_file, save_file

TILE, STRIDE = 24, 16

case = Path(__file__).resolve().parents[2] / "tests/fixtures/wan/tiny_cfg"
vae = AutoencoderKLWan.from_pretrained(case / "model/vae").eval()
z = load_file(case / "reference.safetensors")["vae_decode_in"]
vae.enable_tiling(tile_sample_min_height=TILE, tile_sample_min_width=TILE,
                  tile_sample_stride_height=STRIDE, tile_sample_stride_width=STRIDE)
with torch.no_grad():
    out = vae.decode(z, return_dict=False)[0]
vae.disable_tiling()
with torch.no_grad():
    plain = vae.decode(z, return_dict=False)[0]
# The seams must matter, or the fixture would not test the tiling.
assert (out - plain).abs().max() > 1e-3, "tiled and untiled decodes agree; pick smaller tiles"
save_file({"vae_tiled_decode_in": z.contiguous(), "vae_tiled_decode_out": out.contiguous(),
           "tile": torch.tensor([TILE, STRIDE])}, case / "vae_tiled.safetensors")
print("wrote", case / "vae_tiled.safetensors", tuple(out.shape), "max |tiled - untiled|",
      float((out - plain).abs().max()))
