"""Evaluation of a finished run: loss/perplexity, bits per byte, layers/token, FLOPs/token, causality probes.

Routers with a non-causal training rule (MoD's top-k) are evaluated in both inference modes, so the
paper can show what causality costs. Whole splits are scored by default, and the per-(document, segment)
units table (`units.py`) lets statistics resample documents rather than trust a handful of batches.

Evaluation runs on the run's configured device (`train.device`, or `--device`): the model is built there,
every batch and probe moves there, and only summed results come back to the host. Every forward pass goes
through `forward`, the one place a precision context (autocast) wraps evaluation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor

from . import precision
from .atomic import write_csv, write_text
from .checkpoint import CheckpointError, load_weights
from .data import TokenData, eval_batches
from .flops import counted_flops, dense_forward_flops, output_flops, train_step_flops
from .model import SparseDepthModel
from .precision import autocast_context
from .rundir import RunDirError, read_json, run_lock
from .train import TrainConfig, TrainingDiverged, load_data, make_model
from .units import UNIT_COLUMNS, token_byte_lengths, unit_table

UNITS_CSV_COLUMNS = ["mode", "split", *UNIT_COLUMNS]


def resolve_device(device: str) -> torch.device:
    """The device to evaluate on; CUDA asked for where there is none is a ValueError (one line, exit 2)."""
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for but CUDA is not available here (use --device cpu)")
    return dev


def load_run(run_dir: str | Path,
             device: str | None = None) -> tuple[SparseDepthModel, TrainConfig, TokenData]:
    """Model (eval mode, trained weights, on `device`, default the run's `device`), its config and its data,
    from a finished run directory. The model is built on the device itself (no host copy first)."""
    run_dir = Path(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.exists() or not (run_dir / "summary.json").exists():
        raise CheckpointError(f"{run_dir} has no model.safetensors and summary.json: the run did not finish "
                              "(train it first)")
    cfg = TrainConfig.from_dict(read_json(run_dir / "config.json", "the run's config"))
    data = load_data(cfg)
    with torch.device(resolve_device(device or cfg.device)):
        model = make_model(cfg, data.vocab_size)
    load_weights(model, weights)
    return model.eval(), cfg, data


def model_device(model: SparseDepthModel) -> torch.device:
    return next(model.parameters()).device


def forward(model: SparseDepthModel, idx: Tensor):
    """The one place evaluation enters the model's forward pass (the split scores run it under the run's
    precision, `sparsedepth.precision.autocast_context`; the FLOP and causality probes in full fp32)."""
    return model(idx)


def inference_modes(model: SparseDepthModel) -> list[str]:
    return list(model.router.inference_modes)


def set_mode(model: SparseDepthModel, mode: str) -> None:
    model.router.set_inference(mode)


class NonFiniteLoss(TrainingDiverged):
    """Evaluation met a NaN/inf loss: a broken model must fail loudly, never reach eval.json or the CSV.
    (A TrainingDiverged, so the command line reports it as one line, exit 1.)"""


@torch.no_grad()
def evaluate_split(model: SparseDepthModel, tokens: np.ndarray, batch_size: int, seq_len: int,
                   max_batches: int | None = None, *, byte_lengths: np.ndarray, eot_id: int,
                   segment_tokens: int = 2048) -> dict[str, Any]:
    """Loss, bits per byte, layers and FLOPs per token over the split's non-overlapping windows.

    With `max_batches` None every window is scored. `n_tokens` counts the targets actually scored: the
    split's first token is never a target, and a tail shorter than one window (or everything past
    `max_batches`) is not scored; `split_tokens` is the split's full length. `nats` is summed in float64
    from per-token cross-entropies; `units` is the per-(document, segment) table of `units.unit_table`
    (a DataFrame, not JSON: `evaluate_run` writes it as CSV)."""
    n_windows = max(0, (len(tokens) - 1) // seq_len)
    if max_batches is not None:
        n_windows = min(n_windows, max_batches * batch_size)
    nats = np.empty(n_windows * seq_len, dtype=np.float64)
    filled, layer_sum, flops = 0, 0.0, 0.0
    device = model_device(model)
    for x, y in eval_batches(tokens, batch_size, seq_len, max_batches):
        x, y = x.to(device), y.to(device)
        out = forward(model, x)
        token_nats = F.cross_entropy(out.logits.flatten(0, 1).float(), y.flatten(), reduction="none")
        nats[filled : filled + y.numel()] = token_nats.double().cpu().numpy()
        filled += y.numel()
        layer_sum += out.layers_per_token.double().sum().item()
        flops += output_flops(model, out, x.shape[1])
    assert filled == len(nats), (filled, len(nats))
    if not np.isfinite(nats).all():
        bad = int(np.flatnonzero(~np.isfinite(nats))[0])
        raise NonFiniteLoss(f"evaluation loss is {nats[bad]} at split position {bad + 1}: "
                            "the model is broken (non-finite weights or logits)")
    units = unit_table(nats, tokens, eot_id, byte_lengths, segment_tokens)
    n_tokens, total, n_bytes = len(nats), float(nats.sum()), int(units["bytes"].sum())
    loss = total / n_tokens
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "layers_per_token": layer_sum / n_tokens,
        "flops_per_token": flops / n_tokens,
        "dense_flops_per_token": dense_forward_flops(model.cfg, 1, seq_len) / seq_len,
        "n_tokens": n_tokens,
        "split_tokens": len(tokens),
        "n_documents": int(units["doc"].nunique()),
        "nats": total,
        "bytes": n_bytes,
        "bpb": total / (math.log(2) * n_bytes) if n_bytes else None,
        "bytes_per_token": n_bytes / n_tokens,
        "units": units,
    }


def _logits(model: SparseDepthModel, idx: Tensor, seed: int) -> Tensor:
    """Forward with the global RNG reset, so routers that draw random numbers draw the same ones."""
    torch.manual_seed(seed)
    return forward(model, idx).logits


@torch.no_grad()
def _random_tokens(model: SparseDepthModel, like: Tensor, seed: int) -> Tensor:
    """Random tokens drawn on the host (the same on every device), then moved to `like`'s device."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(0, model.cfg.vocab_size, like.shape, generator=g, device="cpu").to(like.device)


@torch.no_grad()
def causality_violation(model: SparseDepthModel, idx: Tensor, t: int, seed: int = 0) -> float:
    """Largest change of logits at positions ≤ t when every token after t is replaced at random."""
    changed = idx.clone()
    changed[:, t + 1:] = _random_tokens(model, changed[:, t + 1:], seed)
    a = _logits(model, idx, seed)[:, : t + 1]
    b = _logits(model, changed, seed)[:, : t + 1]
    return (a - b).abs().max().item()


@torch.no_grad()
def batch_leak(model: SparseDepthModel, idx: Tensor, sample: int = 0, seed: int = 0) -> float:
    """Largest change of any other sample's logits when one sample's tokens are replaced."""
    changed = idx.clone()
    changed[sample] = _random_tokens(model, changed[sample], seed)
    keep = [i for i in range(idx.shape[0]) if i != sample]
    return (_logits(model, idx, seed)[keep] - _logits(model, changed, seed)[keep]).abs().max().item()


@torch.no_grad()
def training_flops_per_token(model: SparseDepthModel, idx: Tensor) -> float:
    """FLOPs per token of one training step under the training-mode routing rule: forward + backward,
    taken as 3× the forward (the backward costs two matmuls per forward matmul), counted as the training
    loop counts them (`flops.train_step_flops`)."""
    was_training = model.training
    model.train()
    torch.manual_seed(0)
    out = forward(model, idx)
    model.train(was_training)
    return train_step_flops(model, out, idx.shape[1]) / idx.numel()


def evaluate_run(
    run_dir: str | Path, max_batches: int | None = None, out_path: str | Path | None = None,
    units_path: str | Path | None = None, segment_tokens: int = 2048, device: str | None = None,
) -> dict:
    """Evaluate a run on the whole of validation and test (or `max_batches` batches) in every inference
    mode; optionally write eval.json and the units CSV (mode, split, doc, segment, nats, tokens, bytes),
    each atomically, holding the run's lock (not while it trains). Any non-finite number fails it: no
    file is written. `device`: where to evaluate (default the run's `device`); eval.json records it. The
    returned dict is eval.json's content."""
    if segment_tokens < 1:  # before the (long) evaluation, not after it
        raise ValueError(f"segment_tokens must be >= 1, got {segment_tokens}")
    with run_lock(run_dir, "evaluate", shared=True):
        result, units = _evaluate_locked(run_dir, max_batches, segment_tokens, device)
        _refuse_non_finite(result)
        try:
            if units_path is not None:
                write_csv(units, units_path)
            if out_path is not None:
                write_text(json.dumps(result, indent=1), out_path)
        except OSError as e:  # e.g. disk full: one line, and no half-written file left behind
            raise RunDirError(str(e)) from None
    return result


def _refuse_non_finite(value: Any, where: str = "eval") -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _refuse_non_finite(item, f"{where}.{key}")
    elif isinstance(value, float) and not math.isfinite(value):
        raise NonFiniteLoss(f"evaluation result {where} is {value}: the model is broken")


def _evaluate_locked(run_dir: str | Path, max_batches: int | None, segment_tokens: int,
                     device: str | None = None) -> tuple[dict, pd.DataFrame]:
    model, cfg, data = load_run(run_dir, device)
    byte_lengths = token_byte_lengths(data.tokenizer)
    probe = next(eval_batches(data.validation, min(4, cfg.batch_size), cfg.seq_len, 1))[0]
    probe = probe.to(model_device(model))
    result = {"run_dir": str(run_dir), "router": cfg.router, "dataset": cfg.dataset, "seed": cfg.seed,
              "capacity": cfg.capacity, "segment_tokens": segment_tokens,
              "device": str(model_device(model)),
              "precision": precision.resolve(cfg.precision, model_device(model)), "modes": {}}
    tables = []
    for mode in inference_modes(model):
        set_mode(model, mode)
        entry = {}
        for split in ("validation", "test"):  # in the precision the run trained in (bf16 on CUDA by default)
            with autocast_context(model_device(model), cfg.precision):
                entry[split] = evaluate_split(model, data.split(split), cfg.batch_size, cfg.seq_len,
                                              max_batches, byte_lengths=byte_lengths, eot_id=data.eot_id,
                                              segment_tokens=segment_tokens)
            tables.append(entry[split].pop("units").assign(mode=mode, split=split))
        entry["counted_flops_per_token"] = counted_flops(lambda: forward(model, probe)) / probe.numel()
        entry["train_flops_per_token"] = training_flops_per_token(model, probe)
        entry["causality_violation"] = causality_violation(model, probe, cfg.seq_len // 2)
        entry["batch_leak"] = batch_leak(model, probe) if probe.shape[0] > 1 else 0.0
        result["modes"][mode] = entry
    return result, pd.concat(tables, ignore_index=True)[UNITS_CSV_COLUMNS]
