"""Checkpoints as safetensors only: weights, optimizer moments and RNG states, never pickles.

A checkpoint is a directory written under a temporary name and renamed into place, so a job killed
mid-write leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


def save_weights(model: nn.Module, path: Path) -> None:
    save_model(model, str(path))  # handles the tied embedding / head


def load_weights(model: nn.Module, path: Path) -> None:
    try:
        missing, unexpected = load_model(model, str(path), strict=False)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"cannot read weights from {path}: {e}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"weights in {path} do not fit the model: missing {missing}, unexpected {unexpected}"
        )


def _optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = opt.state_dict()
    tensors = {}
    for pid, entries in state["state"].items():
        for key, value in entries.items():
            tensors[f"optim.{pid}.{key}"] = torch.as_tensor(value).contiguous()
    return tensors, {"param_groups": state["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    directory: Path, model: nn.Module, opt: torch.optim.Optimizer, data_rng: torch.Generator, info: dict
) -> None:
    """Atomically write `directory` with the model, optimizer and both RNG states, plus `info` (JSON)."""
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_weights(model, tmp / "model.safetensors")
    tensors, opt_meta = _optimizer_tensors(opt)
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = data_rng.get_state()
    save_file(tensors, str(tmp / "state.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**info, "optimizer": opt_meta}, indent=1))
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(
    directory: Path, model: nn.Module, opt: torch.optim.Optimizer, data_rng: torch.Generator
) -> dict:
    """Restore everything `save_checkpoint` wrote; returns its `info`. Any damage → CheckpointError."""
    directory = Path(directory)
    load_weights(model, directory / "model.safetensors")
    try:
        tensors = load_file(str(directory / "state.safetensors"))
        info = json.loads((directory / "state.json").read_text())
        opt.load_state_dict(_optimizer_state(tensors, info.pop("optimizer")))
        torch.set_rng_state(tensors["rng.torch"])
        data_rng.set_state(tensors["rng.data"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt checkpoint in {directory}: {type(e).__name__}: {e}") from None
    return info
