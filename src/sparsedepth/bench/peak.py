"""The device peak that MFU (model FLOPs utilisation) is measured against, and MFU itself.

Why: tokens/s alone cannot say whether a GPU run is compute-bound or starved (launches, gathers, memory), so
the benchmark's rows also give achieved model FLOP/s over the device's peak. On a known NVIDIA GPU the peak is
the vendor's dense (no 2:4 sparsity) tensor-core figure for the precision the step ran in: bf16, or TF32 for
fp32 (training's policy allows TF32 matmuls on CUDA, `precision.allow_tf32`). Anywhere else (the CPU, an
unlisted GPU) it is measured in the same process: the median time of a large matmul after warm-up, so MFU
there is relative to what this machine's BLAS reaches, not to a nominal figure.
"""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable

import torch

DATASHEET = "datasheet"
MEASURED = "measured matmul"

# Dense tensor-core peaks in TFLOP/s (the datasheets print 2:4-sparse figures with an asterisk: these are
# half of those). Sources: NVIDIA H100 Tensor Core GPU datasheet (SXM5: BF16 1,979* / TF32 989*; PCIe:
# 1,513* / 756*; NVL: 1,671* / 835*), NVIDIA H200 datasheet (SXM: 1,979* / 989*; NVL: 1,671* / 835*),
# NVIDIA A100 datasheet (SXM and PCIe: BF16 312 / TF32 156 dense). Matched on torch.cuda.get_device_name,
# most specific first.
PEAK_TFLOPS: tuple[tuple[tuple[str, ...], dict[str, float]], ...] = (
    (("H200", "NVL"), {"bf16": 835.5, "tf32": 417.5}),
    (("H200",), {"bf16": 989.5, "tf32": 494.5}),
    (("H100", "NVL"), {"bf16": 835.5, "tf32": 417.5}),
    (("H100", "PCIE"), {"bf16": 756.5, "tf32": 378.0}),
    (("H100",), {"bf16": 989.5, "tf32": 494.5}),  # SXM5: "NVIDIA H100 80GB HBM3"
    (("A100",), {"bf16": 312.0, "tf32": 156.0}),
)


def peak_key(device: torch.device, precision: str) -> str:
    """The datasheet column of a step's precision: bf16, or TF32 for fp32 matmuls on CUDA."""
    return "bf16" if precision == "bf16" else ("tf32" if device.type == "cuda" else "fp32")


def datasheet_peak(name: str, key: str) -> float | None:
    """The dense peak (TFLOP/s) of a GPU named `name` at `key`, or None when it is not listed."""
    upper = name.upper()
    if "GH200" in upper:  # Grace Hopper: its GPU is listed under its own sheet, not matched here
        return None
    for parts, peaks in PEAK_TFLOPS:
        if all(p in upper for p in parts):
            return peaks.get(key)
    return None


def measure_matmul(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048, repeats: int = 5,
                   timer: Callable[[Callable[[], object], torch.device], float] | None = None) -> float:
    """TFLOP/s of an n×n×n matmul on `device` (median of `repeats` after two warm-up calls)."""
    from .timing import time_once

    timer = timer or time_once
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device=device, dtype=dtype) for _ in range(2))
    for _ in range(2):
        a @ b
    ms = statistics.median(timer(lambda: a @ b, device) for _ in range(repeats))
    return 2 * n**3 / (ms / 1e3) / 1e12


@functools.cache
def _measured(device: torch.device, key: str, threads: int) -> float:
    dtype = torch.bfloat16 if key == "bf16" else torch.float32
    return measure_matmul(device, dtype, n=4096 if device.type == "cuda" else 2048)


def device_peak(device: torch.device, name: str, precision: str) -> tuple[float, str]:
    """(peak TFLOP/s, its source): the datasheet for a listed GPU, else a matmul measured here (once per
    device, precision and thread count)."""
    key = peak_key(device, precision)
    if device.type == "cuda":
        listed = datasheet_peak(name, key)
        if listed is not None:
            return listed, DATASHEET
    return _measured(device, key, torch.get_num_threads()), MEASURED


def mfu_columns(flops: float, ms: float, peak_tflops: float) -> dict[str, float]:
    """Achieved TFLOP/s of `flops` model FLOPs in `ms` milliseconds, and its fraction of the peak."""
    achieved = flops / (ms / 1e3) / 1e12
    return {"achieved_tflops": achieved, "mfu": achieved / peak_tflops if peak_tflops > 0 else float("nan")}
