"""Model probes behind the per-token figures: load trained runs and measure what their routers did.

Why apart from the plots: these load weights and run forward passes (blocks run per token, which block each
token ran, the attention a routed block computed among the tokens it gathered), so they need torch and the
run directories; the plots draw their results and need neither.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .layout import find_run_dirs, parse_run_dir
from .results import ResultsError, arm_name, require


class ProbeError(ResultsError):
    """A run a probe cannot measure (unknown run, too short a split, no routed block); says which."""


# --- finished run directories ---


def find_runs(runs_root: str | Path) -> pd.DataFrame:
    """Finished runs (with model.safetensors) under a `runs/` folder: the notebook's view of a study."""
    root = Path(runs_root)
    dirs = find_run_dirs(root, "model.safetensors") if root.is_dir() else []
    rows = [{**vars(parse_run_dir(d)), "run_dir": str(d)} for d in dirs]
    return pd.DataFrame(rows, columns=["model", "variant", "dataset", "seed", "run_dir"])


def runs_in_table(runs: pd.DataFrame) -> pd.DataFrame:
    """The run directories a runs table lists (one row per run), so a figure draws exactly the study's runs
    and never one left over from another grid under the same directory."""
    require(runs, ("model", "variant", "dataset", "seed", "run_dir"), "runs table")
    cols = ["model", "variant", "dataset", "seed", "run_dir"]
    return runs[cols].drop_duplicates("run_dir").reset_index(drop=True)


def pick_runs(found: pd.DataFrame, model: str | None = None, dataset: str | None = None,
              variants: Sequence[str] | None = None) -> tuple[str | None, str | None, dict[str, str]]:
    """One run per variant (lowest seed) in one (model, dataset) cell: the given one, else the cell with the
    most variants. Returns (model, dataset, {variant: run_dir})."""
    df = found
    if model is not None:
        df = df[df["model"] == model]
    if dataset is not None:
        df = df[df["dataset"] == dataset]
    if df.empty:
        return model, dataset, {}
    counts = df.groupby(["model", "dataset"])["variant"].nunique().reset_index()
    counts = counts.sort_values(["variant", "model", "dataset"], ascending=[False, True, True])
    model, dataset = counts.iloc[0]["model"], counts.iloc[0]["dataset"]
    cell = df[(df["model"] == model) & (df["dataset"] == dataset)].sort_values("seed")
    chosen = {v: g.iloc[0]["run_dir"] for v, g in cell.groupby("variant", sort=True)}
    if variants is not None:
        chosen = {v: chosen[v] for v in variants if v in chosen}
    return model, dataset, chosen


def _modes(model) -> list[str]:
    from ..evaluate import inference_modes

    return inference_modes(model)


# --- layers per token ---


@torch.no_grad()
def layers_samples(run_dirs: dict[str, str | Path], max_batches: int = 4) -> pd.DataFrame:
    """Per-token layer counts on validation batches, for each run (variant) in every inference mode."""
    from ..data import eval_batches
    from ..evaluate import load_run, set_mode

    frames = []
    for variant, run_dir in run_dirs.items():
        model, cfg, data = load_run(run_dir)
        for mode in _modes(model):
            set_mode(model, mode)
            counts = [model(x).layers_per_token.flatten()
                      for x, _ in eval_batches(data.validation, cfg.batch_size, cfg.seq_len, max_batches)]
            layers = torch.cat(counts).round().long().numpy()
            frames.append(pd.DataFrame({"arm": arm_name(variant, mode), "router": cfg.router,
                                        "layers": layers, "n_layers": cfg.model.n_layers}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
        columns=["arm", "router", "layers", "n_layers"])


# --- routing map ---


def validation_window(data, length: int, start: int = 0) -> torch.Tensor:
    tokens = np.asarray(data.validation[start:start + length], dtype=np.int64)
    if len(tokens) < length:
        raise ProbeError(f"validation split has {len(data.validation)} tokens; need {start + length}")
    return torch.from_numpy(tokens).unsqueeze(0)


@torch.no_grad()
def routing_maps(run_dirs: dict[str, str | Path], n_tokens: int = 48, start: int = 0) -> list[dict]:
    """For each run and inference mode: which block each token of one validation window ran.

    The model sees its training sequence length (so top-k routing chooses among the same number of tokens
    as in evaluation); the first `n_tokens` are shown."""
    from ..evaluate import load_run, set_mode

    maps = []
    for variant, run_dir in run_dirs.items():
        model, cfg, data = load_run(run_dir)
        idx = validation_window(data, cfg.seq_len, start)
        shown = min(n_tokens, cfg.seq_len)
        tokens = [data.tokenizer.decode([int(i)]) for i in idx[0, :shown]]
        for mode in _modes(model):
            set_mode(model, mode)
            routing = model(idx).routing[0, :shown].numpy()  # [T, L]
            maps.append({"arm": arm_name(variant, mode), "router": cfg.router, "tokens": tokens,
                         "routing": routing, "routed_layers": list(model.router.routed_layers)})
    return maps


# --- attention of one routed block ---


@torch.no_grad()
def attention_probs(model, idx: torch.Tensor, layer: int) -> dict:
    """Attention probabilities inside block `layer` for the one sequence `idx` ([1, T]).

    A forward hook on `model.blocks[layer].attn` sees its inputs (x, rope, positions, attn_mask, ...): the
    tokens the block gathered and their original positions. It recomputes q and k with the rotary
    embedding at those positions and the causal softmax, and checks the result against the block's own
    output (`max_abs_error`)."""
    if idx.dim() != 2 or idx.shape[0] != 1:
        raise ProbeError("attention_probs takes a single sequence [1, T]")
    attn = model.blocks[layer].attn
    signature = inspect.signature(attn.forward)
    captured: dict = {}

    def hook(module, args, kwargs, output):
        bound = signature.bind(*args, **kwargs)
        bound.apply_defaults()
        x, rope, positions = bound.arguments["x"], bound.arguments["rope"], bound.arguments["positions"]
        mask = bound.arguments.get("attn_mask")
        B, T, C = x.shape
        H = module.n_heads
        q, k, v = module.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        q, k = rope(q, positions), rope(k, positions)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(C // H)
        causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        allowed = causal if mask is None else mask[:, None]
        probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1)  # [B, H, T, T]
        y = module.out((probs @ v).transpose(1, 2).reshape(B, T, C))
        captured.update(probs=probs[0], positions=positions, error=(y - output).abs().max().item())

    handle = attn.register_forward_hook(hook, with_kwargs=True)
    try:
        out = model(idx)
    finally:
        handle.remove()
    if not captured:
        raise ProbeError(f"block {layer} ran on no token of this sequence")
    positions = captured["positions"]
    positions = positions[0] if positions.dim() == 2 else positions
    return {"probs": captured["probs"].numpy(), "positions": positions.numpy(),
            "ran": out.routing[0, :, layer].numpy(), "max_abs_error": captured["error"], "layer": layer}


def choose_layer(model, idx: torch.Tensor) -> int:
    """The routed block that skipped most tokens of this sequence while still running at least two."""
    with torch.no_grad():
        routing = model(idx).routing[0]  # [T, L]
    routed = [layer for layer in model.router.routed_layers if int(routing[:, layer].sum()) >= 2]
    if not routed:
        raise ProbeError("no routed block runs two or more tokens of this sequence")
    return min(routed, key=lambda layer: (int(routing[:, layer].sum()), layer))


def attention_for_run(run_dir: str | Path, variant: str, n_tokens: int = 32, start: int = 0,
                      layer: int | None = None, mode: str = "causal") -> tuple[dict, list[str]]:
    from ..evaluate import load_run, set_mode

    model, cfg, data = load_run(run_dir)
    set_mode(model, mode)
    n = min(n_tokens, cfg.model.max_seq_len)
    idx = validation_window(data, n, start)
    if not model.router.routed_layers:
        raise ProbeError(f"variant {variant!r} (router {cfg.router}) routes no block; pick a routed variant")
    layer = choose_layer(model, idx) if layer is None else layer
    att = attention_probs(model, idx, layer)
    att["arm"] = arm_name(variant, mode)
    return att, [data.tokenizer.decode([int(i)]) for i in idx[0]]


# --- token depths (notebook explorer) ---


@torch.no_grad()
def token_depths(model, tokenizer, text: str) -> pd.DataFrame:
    """Each token of `text` (up to the model's context) with the number of blocks it ran."""
    ids = tokenizer.encode(text).ids[: model.cfg.max_seq_len]
    if not ids:
        return pd.DataFrame(columns=["position", "token", "layers"])
    out = model(torch.tensor([ids]))
    return pd.DataFrame({"position": range(len(ids)), "token": [tokenizer.decode([i]) for i in ids],
                         "layers": out.layers_per_token[0].round().long().tolist()})
