#!/usr/bin/env python3
"""Scheduler chains for configurations the Wan fixtures do not cover.

Writes tests/fixtures/sched/unipc_extra.safetensors, read by
crates/kiln-sampling/tests/scheduler_parity.rs. For each case below, with prefix `<case>_`:
  config           (bytes,) uint8   the scheduler config as JSON (diffusers `from_config` input,
                                    plus "_class_name")
  timesteps        (N,)   float64   scheduler.timesteps after set_timesteps(N)
  sigmas           (N+1,) float64   scheduler.sigmas
  sample_0, model_output_{i}, prev_{i}  float32, the step chain as in the Wan fixtures
CPU, float32 samples, fixed seed. Usage: python scripts/reference/unipc_extra.py [--out FILE]
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

from diffusers import FlowMatchEulerDiscreteScheduler, UniPCMultistepScheduler

FLOW = dict(prediction_type="flow_prediction", use_flow_sigmas=True)
CASES = {
    # the brief's case: third order, B(h) = h
    "order3_bh1": (UniPCMultistepScheduler, dict(FLOW, solver_order=3, solver_type="bh1",
                                                  final_sigmas_type="sigma_min", flow_shift=5.0), 8),
    "order3_bh2_disable": (UniPCMultistepScheduler, dict(FLOW, solver_order=3, flow_shift=3.0,
                                                         disable_corrector=[0, 3]), 10),
    "order4_bh1": (UniPCMultistepScheduler, dict(FLOW, solver_order=4, solver_type="bh1",
                                                  final_sigmas_type="sigma_min", flow_shift=2.0), 9),
    "order1_terminal": (UniPCMultistepScheduler, dict(FLOW, solver_order=1, flow_shift=7.0,
                                                      shift_terminal=0.05), 5),
    "order2_one_step": (UniPCMultistepScheduler, dict(FLOW, flow_shift=3.0), 1),
    "euler_terminal": (FlowMatchEulerDiscreteScheduler, dict(shift=3.0, shift_terminal=0.1), 6),
    "euler_shift1": (FlowMatchEulerDiscreteScheduler, dict(), 7),
}
SHAPE = (1, 4, 3, 4, 5)


def main():
    root = Path(__file__).resolve().parents[2]
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=root / "tests/fixtures/sched/unipc_extra.safetensors")
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(20250)
    tensors = {}
    for name, (cls, kwargs, steps) in CASES.items():
        sched = cls(**kwargs)
        sched.set_timesteps(steps)
        sched.set_begin_index(0)
        config = dict(kwargs, _class_name=cls.__name__)
        tensors[f"{name}_config"] = torch.tensor(list(json.dumps(config).encode()), dtype=torch.uint8)
        tensors[f"{name}_timesteps"] = sched.timesteps.to(torch.float64)
        tensors[f"{name}_sigmas"] = sched.sigmas.to(torch.float64)
        sample = torch.randn(SHAPE, generator=gen)
        tensors[f"{name}_sample_0"] = sample
        for i, t in enumerate(sched.timesteps):
            model_output = torch.randn(SHAPE, generator=gen)
            tensors[f"{name}_model_output_{i}"] = model_output
            sample = sched.step(model_output, t, sample, return_dict=False)[0]
            assert torch.isfinite(sample).all(), f"{name}: non-finite sample at step {i}"
            tensors[f"{name}_prev_{i}"] = sample
        print(f"{name}: timesteps {sched.timesteps.tolist()}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(args.out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
