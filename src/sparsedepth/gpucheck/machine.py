"""What the summary names about the machine: the device, its driver, torch, CUDA and the commit. The one
CUDA-specific lookup (the driver, from `nvidia-smi`) has a CPU answer, so the CPU form runs every line."""

from __future__ import annotations

import subprocess

import torch

from ..bench.timing import device_name
from ..train import git_sha


def driver_version(device: torch.device) -> str:
    """The NVIDIA driver (`nvidia-smi`), or why there is none."""
    if device.type != "cuda":
        return "none (CPU)"
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError) as e:
        return f"unknown ({type(e).__name__})"
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else "unknown"


def describe(device: torch.device) -> dict[str, str]:
    return {"device": device.type, "device_name": device_name(device), "driver": driver_version(device),
            "torch": torch.__version__, "cuda": str(torch.version.cuda), "commit": git_sha()}
