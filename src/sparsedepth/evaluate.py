"""Evaluation of a finished run: loss/perplexity, layers/token, FLOPs/token, and a causality probe.

Routers with a non-causal training rule (MoD's top-k) are evaluated in both inference modes, so the
paper can show what causality costs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import CheckpointError, load_weights
from .config import load_file
from .data import TokenData, eval_batches
from .flops import counted_flops, dense_forward_flops, output_flops
from .model import SparseDepthModel
from .train import TrainConfig, load_data, make_model


def load_run(run_dir: str | Path) -> tuple[SparseDepthModel, TrainConfig, TokenData]:
    """Model (eval mode, trained weights), its config and its data, from a finished run directory."""
    run_dir = Path(run_dir)
    weights = run_dir / "model.safetensors"
    if not weights.exists():
        raise CheckpointError(f"{run_dir} has no model.safetensors: the run did not finish (train it first)")
    cfg = TrainConfig.from_dict(load_file(run_dir / "config.json"))
    data = load_data(cfg)
    model = make_model(cfg, data.vocab_size)
    load_weights(model, weights)
    return model.eval(), cfg, data


def inference_modes(model: SparseDepthModel) -> list[str]:
    return ["causal", "topk"] if hasattr(model.router, "set_inference") else ["causal"]


def set_mode(model: SparseDepthModel, mode: str) -> None:
    if hasattr(model.router, "set_inference"):
        model.router.set_inference(mode)


@torch.no_grad()
def evaluate_split(model: SparseDepthModel, tokens, batch_size: int, seq_len: int,
                   max_batches: int | None = None) -> dict[str, float]:
    loss_sum, n_tokens, layer_sum, flops = 0.0, 0, 0.0, 0.0
    for x, y in eval_batches(tokens, batch_size, seq_len, max_batches):
        out = model(x, y)
        loss_sum += out.loss.item() * y.numel()
        n_tokens += y.numel()
        layer_sum += out.layers_per_token.sum().item()
        flops += output_flops(model, out, x.shape[1])
    loss = loss_sum / n_tokens
    return {
        "loss": loss,
        "ppl": math.exp(loss),
        "layers_per_token": layer_sum / n_tokens,
        "flops_per_token": flops / n_tokens,
        "dense_flops_per_token": dense_forward_flops(model.cfg, 1, seq_len) / seq_len,
        "n_tokens": n_tokens,
    }


def _logits(model: SparseDepthModel, idx: Tensor, seed: int) -> Tensor:
    """Forward with the global RNG reset, so routers that draw random numbers draw the same ones."""
    torch.manual_seed(seed)
    return model(idx).logits


@torch.no_grad()
def causality_violation(model: SparseDepthModel, idx: Tensor, t: int, seed: int = 0) -> float:
    """Largest change of logits at positions ≤ t when every token after t is replaced at random."""
    g = torch.Generator().manual_seed(seed)
    changed = idx.clone()
    changed[:, t + 1:] = torch.randint(0, model.cfg.vocab_size, changed[:, t + 1:].shape, generator=g)
    a = _logits(model, idx, seed)[:, : t + 1]
    b = _logits(model, changed, seed)[:, : t + 1]
    return (a - b).abs().max().item()


@torch.no_grad()
def batch_leak(model: SparseDepthModel, idx: Tensor, sample: int = 0, seed: int = 0) -> float:
    """Largest change of any other sample's logits when one sample's tokens are replaced."""
    g = torch.Generator().manual_seed(seed)
    changed = idx.clone()
    changed[sample] = torch.randint(0, model.cfg.vocab_size, changed[sample].shape, generator=g)
    keep = [i for i in range(idx.shape[0]) if i != sample]
    return (_logits(model, idx, seed)[keep] - _logits(model, changed, seed)[keep]).abs().max().item()


@torch.no_grad()
def training_flops_per_token(model: SparseDepthModel, idx: Tensor) -> float:
    """FLOPs per token of one training step under the training-mode routing rule: forward + backward,
    taken as 3× the forward (the backward costs two matmuls per forward matmul)."""
    was_training = model.training
    model.train()
    torch.manual_seed(0)
    out = model(idx)
    model.train(was_training)
    return 3.0 * output_flops(model, out, idx.shape[1]) / idx.numel()


def evaluate_run(
    run_dir: str | Path, max_batches: int | None = None, out_path: str | Path | None = None
) -> dict:
    """Evaluate a run on validation and test in every inference mode; optionally write JSON atomically."""
    model, cfg, data = load_run(run_dir)
    probe = next(eval_batches(data.validation, min(4, cfg.batch_size), cfg.seq_len, 1))[0]
    result = {"run_dir": str(run_dir), "router": cfg.router, "dataset": cfg.dataset, "seed": cfg.seed,
              "capacity": cfg.capacity, "modes": {}}
    for mode in inference_modes(model):
        set_mode(model, mode)
        entry = {split: evaluate_split(model, getattr(data, split), cfg.batch_size, cfg.seq_len, max_batches)
                 for split in ("validation", "test")}
        entry["counted_flops_per_token"] = counted_flops(lambda: model(probe)) / probe.numel()
        entry["train_flops_per_token"] = training_flops_per_token(model, probe)
        entry["causality_violation"] = causality_violation(model, probe, cfg.seq_len // 2)
        entry["batch_leak"] = batch_leak(model, probe) if probe.shape[0] > 1 else 0.0
        result["modes"][mode] = entry
    if out_path is not None:
        out_path = Path(out_path)
        tmp = out_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.rename(out_path)
    return result
