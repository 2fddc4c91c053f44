"""Checkpoints as safetensors only: weights, optimizer moments and RNG states, never pickles.

A checkpoint is a directory written as `NAME.tmp`, then swapped in by two renames (NAME → NAME.old,
NAME.tmp → NAME) and NAME.old removed. A job can be killed between any two of these steps, so
`recover_checkpoint` (run under the run lock before every load or save) finishes or undoes the swap:
NAME present → leftovers go; NAME missing → a complete NAME.tmp is promoted, else NAME.old restored.
Every safetensors file carries the sha256 of its tensor bytes in its metadata, checked on load, so
zeroed or flipped bytes are an error rather than a silently different model.

A checkpoint written without an optimizer (`opt=None`: training's checkpoint at its last step) holds the
weights and RNG states only. Why: Adam's two moments are twice the weights (on the paper's d768×12 model,
~0.8 GB of a 1.2 GB checkpoint), and a run at its last step takes no further optimizer step, so keeping
them past it would only fill the disk (hundreds of GB over the paper grid). `share_weights` then makes
the checkpoint's weights a hard link to the run's final model.safetensors when they are the same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from .atomic import fault_point, fsync_dir

CHECKSUM_KEY = "sha256"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, or does not fit the model."""


def _header(f) -> tuple[int, dict]:
    n = int.from_bytes(f.read(8), "little")
    if not 0 < n < 100_000_000:
        raise ValueError(f"bad header length {n}")
    return n, json.loads(f.read(n))


def readable(path: Path) -> None:
    """Give a file the permissions the user's umask asks for. safetensors writes 0600 whatever the umask,
    so on a shared cluster the weights of a run would be the one file the group cannot read."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


def _seal(path: Path) -> None:
    """Add the sha256 of the tensor bytes to the safetensors header's metadata (rewrites `path`)."""
    with open(path, "rb") as f:
        _, header = _header(f)
        data = f.read()
    header.setdefault("__metadata__", {})[CHECKSUM_KEY] = hashlib.sha256(data).hexdigest()
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # keep the tensor data 8-byte aligned, as safetensors writes it
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text + data)
        f.flush()
        os.fsync(f.fileno())
    readable(path)


def verify_file(path: Path) -> None:
    """Raise CheckpointError unless `path` is a readable safetensors file whose checksum (if it has one:
    files from before checksums have none) matches its tensor bytes."""
    try:
        with open(path, "rb") as f:
            _, header = _header(f)
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except (OSError, ValueError) as e:
        raise CheckpointError(f"cannot read weights from {path}: {type(e).__name__}: {e}") from None
    expected = (header.get("__metadata__") or {}).get(CHECKSUM_KEY)
    if expected is not None and expected != digest:
        raise CheckpointError(f"corrupt checkpoint file {path}: sha256 of its tensors does not match the one "
                              "recorded when it was written")


def save_weights(model: nn.Module, path: Path) -> None:
    """Weights with their checksum, written beside `path` and renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_model(model, str(tmp))  # handles the tied embedding / head
        _seal(tmp)
        tmp.replace(path)
    except (OSError, SafetensorError) as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {path}: {e}") from None


def load_weights(model: nn.Module, path: Path) -> None:
    verify_file(Path(path))
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


def _siblings(directory: Path) -> tuple[Path, Path]:
    return directory.with_name(directory.name + ".tmp"), directory.with_name(directory.name + ".old")


def save_checkpoint(directory: Path, model: nn.Module, opt: torch.optim.Optimizer | None,
                    data_rng: torch.Generator, info: dict) -> None:
    """Atomically write `directory` with the model, optimizer (None: none kept) and both RNG states, plus
    `info` (JSON)."""
    directory = Path(directory)
    recover_checkpoint(directory)
    tmp, old = _siblings(directory)
    try:
        tmp.mkdir(parents=True)
        fault_point("checkpoint:begin")
        save_weights(model, tmp / "model.safetensors")
        fault_point("checkpoint:weights_written")
        tensors, opt_meta = _optimizer_tensors(opt) if opt is not None else ({}, None)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = data_rng.get_state()
        save_file(tensors, str(tmp / "state.safetensors"))
        _seal(tmp / "state.safetensors")
        with open(tmp / "state.json", "w") as f:  # written last: its presence marks a complete tmp
            f.write(json.dumps({**info, "optimizer": opt_meta}, indent=1))
            f.flush()
            os.fsync(f.fileno())
        fsync_dir(tmp)
    except (OSError, SafetensorError, CheckpointError) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"cannot write checkpoint {directory}: {e}") from None
    fault_point("checkpoint:tmp_written")
    if directory.exists():
        directory.rename(old)
        fault_point("checkpoint:after_first_rename")
    tmp.rename(directory)
    fsync_dir(directory.parent)
    fault_point("checkpoint:after_second_rename")
    shutil.rmtree(old, ignore_errors=True)


def _complete(directory: Path) -> bool:
    try:
        read_info(directory)
        verify_file(directory / "model.safetensors")
        verify_file(directory / "state.safetensors")
        return True
    except CheckpointError:
        return False


def recover_checkpoint(directory: Path) -> str | None:
    """Finish or undo a save that a killed job left half done; returns what was done, if anything worth
    saying (a checkpoint promoted or restored), else None."""
    directory = Path(directory)
    tmp, old = _siblings(directory)
    done = None
    if not directory.exists():
        if tmp.is_dir() and _complete(tmp):
            tmp.rename(directory)
            done = f"recovered {directory} from {tmp.name} (a job was killed while swapping checkpoints)"
        elif old.is_dir():
            old.rename(directory)
            done = f"restored {directory} from {old.name} (a job was killed while swapping checkpoints)"
        if done:
            fsync_dir(directory.parent)
    for leftover in (tmp, old):
        if leftover.exists():
            shutil.rmtree(leftover)
    return done


def share_weights(directory: Path, weights: Path) -> bool:
    """Replace `directory`/model.safetensors by a hard link to `weights` when both hold the same tensors
    (their recorded sha256), so a finished run stores its final weights once; returns whether it did.
    Each file is only ever replaced by a rename, never written in place, so the link is safe: deleting
    or rewriting either name leaves the other's bytes intact."""
    own, link = Path(directory) / "model.safetensors", Path(directory) / "model.safetensors.tmp"
    try:
        digests = []
        for path in (own, weights):
            with open(path, "rb") as f:
                digests.append((_header(f)[1].get("__metadata__") or {}).get(CHECKSUM_KEY))
        if None in digests or digests[0] != digests[1] or os.path.samefile(own, weights):
            return False
        link.unlink(missing_ok=True)
        os.link(weights, link)
        link.replace(own)
        return True
    except (OSError, ValueError):  # e.g. a filesystem without hard links: the copy stays
        link.unlink(missing_ok=True)
        return False


def read_info(directory: Path) -> dict:
    """The `info` a checkpoint was saved with (step, train_flops, config), without loading tensors."""
    path = Path(directory) / "state.json"
    try:
        info = json.loads(path.read_text())
        info.pop("optimizer")
    except (OSError, ValueError, KeyError, AttributeError) as e:
        raise CheckpointError(f"corrupt checkpoint in {directory}: {type(e).__name__}: {e}") from None
    return info


def load_checkpoint(
    directory: Path, model: nn.Module, opt: torch.optim.Optimizer, data_rng: torch.Generator
) -> dict:
    """Restore everything `save_checkpoint` wrote; returns its `info`. Any damage → CheckpointError."""
    directory = Path(directory)
    load_weights(model, directory / "model.safetensors")
    try:
        verify_file(directory / "state.safetensors")
    except CheckpointError as e:
        raise CheckpointError(f"corrupt checkpoint in {directory}: {e}") from None
    try:
        tensors = load_file(str(directory / "state.safetensors"))
        info = json.loads((directory / "state.json").read_text())
        opt_meta = info.pop("optimizer")
        if opt_meta is not None:  # None: saved without one (a finished run's last step)
            opt.load_state_dict(_optimizer_state(tensors, opt_meta))
        torch.set_rng_state(tensors["rng.torch"])
        data_rng.set_state(tensors["rng.data"])
    except (SafetensorError, OSError, KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"corrupt checkpoint in {directory}: {type(e).__name__}: {e}") from None
    return info
