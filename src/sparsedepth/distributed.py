"""Data-parallel training across processes: torchrun launches them, DistributedDataParallel averages the
gradients (gloo on the CPU, NCCL on CUDA).

Why it is exact: `batch_size` is the *global* batch. Every rank draws the same global batch from the same
data RNG and takes its own contiguous slice, so N processes × batch b see the tokens a single process
with batch N·b sees, in the same order. Each rank's loss is the mean over its equal share of tokens and
DDP averages gradients, so the update is the single-process one up to float summation order; the same
holds for routers' per-token-mean auxiliary losses (MoD's BCE, early exit's read-out loss). Routers
decide per sample, so routing needs no change. Terms built from a batch statistic (threshold's and probe's
budget penalty (mean − c)², MoR's eligible-weighted BCE) are taken per rank's slice and averaged: the same
objective in expectation, not bit for bit.

Only rank 0 touches the run directory (lock, config, metrics, checkpoints, weights, summary); every rank
reads the data and, on resume, the checkpoint. Random numbers drawn in the forward pass (dropout, random
routers, probabilistic gating) are reseeded per step and rank, so the ranks draw independently and a
resumed run redraws exactly what the uninterrupted one drew.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def device(self, device: str) -> str:
        """This rank's device: its own GPU (`cuda:LOCAL_RANK`) when data-parallel on CUDA."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.distributed else device


def launched() -> bool:
    """Whether this process was started by torchrun (which sets WORLD_SIZE, RANK, LOCAL_RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def rank_zero() -> bool:
    """Whether this process is the one that reports (rank 0, or the only process)."""
    return os.environ.get("RANK", "0") == "0"


def _env_world() -> World:
    if not launched():
        return World()
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


@contextmanager
def process_group(device: str) -> Iterator[World]:
    """Join torchrun's process group for the `with` block (nothing to join for a single process)."""
    world = _env_world()
    if not world.distributed:
        yield world
        return
    if device == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield world
    finally:
        dist.destroy_process_group()


def launch(argv: Sequence[str], nproc: int) -> int:
    """Run `python -m sparsedepth ARGV` as `nproc` processes under torch.distributed.run (one node,
    rendezvous on a free local port); returns its exit status (non-zero when any process failed)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "--", "sparsedepth", *argv]  # "--": our flags are never read as torchrun's
    return subprocess.run(command, check=False).returncode


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous slice of the global batch (rows rank·b … (rank+1)·b − 1)."""
    if not world.distributed:
        return batch
    local = batch.shape[0] // world.size
    return batch[world.rank * local: (world.rank + 1) * local]


def wrap(model: nn.Module, world: World) -> nn.Module:
    """The module to run forward/backward through: DDP when data-parallel (it broadcasts rank 0's weights
    now and averages gradients in backward). `find_unused_parameters`: a routed block that no token of a
    rank's slice runs gets no gradient on that rank."""
    if not world.distributed:
        return model
    device_ids = [world.local_rank] if next(model.parameters()).is_cuda else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True)


def mean(values: Sequence[float], world: World, device: str) -> list[float]:
    """Element-wise mean over ranks (every rank must call it at the same point)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / world.size).tolist()


def total(value: float, world: World, device: str) -> float:
    """Sum over ranks (every rank must call it at the same point)."""
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item())


def broadcast(obj, world: World):
    """Rank 0's `obj` on every rank (a small picklable value: a decision, not data)."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def seed_step(seed: int, step: int, world: World) -> None:
    """Data-parallel only: seed the forward pass's random draws from (seed, step, rank)."""
    if world.distributed:
        digest = hashlib.sha256(f"{seed}/{step}/{world.rank}".encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
