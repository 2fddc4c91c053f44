"""Numeric precision of a run: bf16 autocast on CUDA by default, plain fp32 on the CPU.

Why: a GPU runs bf16 matmuls at several times its fp32 rate, so the paper grid in fp32 would cost several
times the GPU-hours it needs. Autocast, not a bf16 model: weights, optimizer moments, the residual stream,
the loss (cross-entropy on fp32 logits) and router decisions stay fp32 (the model runs routers with
autocast off), only the blocks' matmuls and attention run in bf16. On CUDA the matmuls left in fp32 may use
TF32 (`torch.set_float32_matmul_precision("high")`). `auto` resolves per device, so one config serves a CPU
rehearsal and the GPU grid; the resolved precision is what a run's summary records.

Evaluation calls `autocast_context(device, cfg.precision)` with the run's own config, so a run trained in
bf16 on CUDA is scored in bf16 on CUDA, and on the CPU (`auto`) in fp32.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

PRECISIONS = ("auto", "bf16", "fp32")


def device_type(device: str | torch.device) -> str:
    return torch.device(device).type


def resolve(precision: str, device: str | torch.device) -> str:
    """`bf16` or `fp32`: `auto` is bf16 on CUDA, fp32 elsewhere."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
    if precision == "auto":
        return "bf16" if device_type(device) == "cuda" else "fp32"
    return precision


def autocast_context(device: str | torch.device, precision: str) -> contextlib.AbstractContextManager:
    """The context a forward pass runs in: bf16 autocast on `device` for bf16, nothing for fp32."""
    if resolve(precision, device) == "bf16":
        return torch.autocast(device_type(device), dtype=torch.bfloat16)
    return contextlib.nullcontext()


def allow_tf32(device: str | torch.device) -> bool:
    """Let fp32 matmuls use TF32 tensor cores on CUDA (process-wide); returns whether it applies."""
    if device_type(device) != "cuda":
        return False
    torch.set_float32_matmul_precision("high")
    return True


def fused_adamw(device: str | torch.device) -> bool:
    """Whether AdamW runs as one fused kernel: on CUDA (where it saves a launch per parameter tensor). The
    CPU keeps the plain loop, whose results every test and resume of the CPU grids are pinned to."""
    return device_type(device) == "cuda"


def summary(precision: str, device: str | torch.device, compiled: bool) -> dict[str, Any]:
    """What a run records of how it computed (summary.json)."""
    return {"precision": resolve(precision, device), "tf32": device_type(device) == "cuda",
            "fused_adamw": fused_adamw(device), "compile": compiled}
