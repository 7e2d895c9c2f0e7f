"""torch.randn on CPU for a few seeds and shapes, for kiln's seeded-noise test.

Run with the pinned venv: .venv-ref/bin/python scripts/reference/torch_randn.py
Writes tests/fixtures/noise/torch_randn.safetensors: tensors named randn_<seed>_<shape>.
"""
import os

import torch
from safetensors.torch import save_file

CASES = [(42, (1, 16, 3, 4, 6)), (0, (1, 4, 2, 6, 4)), (123456789, (1, 16, 5, 16, 16)), (7, (2, 9))]
out = {}
for seed, shape in CASES:
    g = torch.Generator("cpu").manual_seed(seed)
    name = f"randn_{seed}_" + "x".join(map(str, shape))
    out[name] = torch.randn(shape, generator=g, dtype=torch.float32).contiguous()
path = os.path.join(os.path.dirname(__file__), "../../tests/fixtures/noise/torch_randn.safetensors")
save_file(out, os.path.normpath(path))
print("wrote", os.path.normpath(path), {k: tuple(v.shape) for k, v in out.items()})
