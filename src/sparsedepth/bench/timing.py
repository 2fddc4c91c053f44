"""Device, timing and memory measurement for the benchmark: what one timed call costs, measured the same way
for every implementation (CUDA events or a wall clock, the caching allocator or the profiler's events)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from ..config import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible (--device auto falls back to the CPU)")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    policy = os.environ.get("OMP_WAIT_POLICY")
    policy = f", OMP_WAIT_POLICY={policy}" if policy else ""
    return f"CPU: {model} ({torch.get_num_threads()} threads{policy})"


def provenance(device: torch.device) -> dict:
    """Where a benchmark row was measured: the columns every benchmark table starts with."""
    from ..train import git_sha

    return {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "git_sha": git_sha()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call, measured after the device is idle and until it is idle again."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        sync(device)
        start.record()
        fn()
        end.record()
        sync(device)
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return float(values[0]), float("nan")
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q[2] - q[0]


def peak_bytes(fn: Callable[[], object], device: torch.device) -> float:
    """Peak allocated bytes during `fn` above what was allocated before it (parameters, gradients,
    optimizer state and caches allocated earlier are excluded). CUDA: the caching allocator's statistics;
    CPU: the profiler's allocation/free events replayed in order."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return float(peak)


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += 1
        return func(*args, **(kwargs or {}))


def op_count(fn: Callable[[], object]) -> int:
    """Torch ops (ATen calls, as dispatched, backward included) of one call. Why: at these sizes per-op
    overhead, not arithmetic, sets much of the time, and unlike a time this count does not move with the
    machine's load, so it explains a speedup that shared cores make noisy."""
    with _OpCounter() as counter:
        fn()
    return counter.n
