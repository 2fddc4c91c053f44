"""Autoregressive sampling with routing and a per-layer KV cache.

Every router decides causally at inference (MoD through its causal rule), so decoding one token at a time
with the cache gives the same logits as a full forward pass over the sequence; the tests check exactly
that. Prompts of different lengths are prefilled one sample at a time, their caches stacked into one batch,
then decoded together, each sample at its own position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .cache import KVCache
from .model import SparseDepthModel


@dataclass
class Generation:
    tokens: list[list[int]]  # generated tokens per sample (prompt excluded)
    layers: list[list[int]]  # blocks each generated token ran
    prompt_layers: list[list[int]]  # blocks each prompt token ran


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Refuse, in one line, settings that would crash mid-generation (top-k 0) or sample nonsense quietly
    (a negative temperature inverts the distribution; top-p 0 or above 1 keeps nothing or everything)."""
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be finite and >= 0 (0: greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """Next token per row from [B, V] logits; temperature 0 is greedy."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop = cumulative - sorted_logits.softmax(-1) > top_p  # keep the smallest set reaching top_p
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def check_room(model: SparseDepthModel, prompts: Sequence[Sequence[int]], max_new_tokens: int) -> None:
    """Refuse before the first step what would fail at token `max_seq_len` and lose the output."""
    longest = max(len(p) for p in prompts) + max_new_tokens
    if longest > model.cfg.max_seq_len:
        raise ValueError(f"prompt + new tokens ({longest}) exceed max_seq_len {model.cfg.max_seq_len}")


@torch.no_grad()
def prefill(
    model: SparseDepthModel, prompts: Sequence[Sequence[int]]
) -> tuple[KVCache, Tensor, list[list[int]]]:
    """Run each prompt into a fresh cache of its own (head on its last position only), then stack them
    into one batched cache; returns the cache, last logits [B, V], layers/token."""
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    rows, last, layers = [], [], []
    for prompt in prompts:
        cache = KVCache.empty(model, 1)
        out = model(torch.tensor([list(prompt)], device=device), cache=cache, logits_to_keep=1)
        rows.append(cache)
        last.append(out.logits[0, -1])
        layers.append(out.layers_per_token[0].long().tolist())
    return (rows[0] if len(rows) == 1 else KVCache.stack(rows)), torch.stack(last), layers


@torch.no_grad()
def decode_step(model: SparseDepthModel, tokens: Tensor, cache: KVCache):
    """One cached step for every sample: tokens [B] → model output for [B, 1]."""
    return model(tokens.unsqueeze(1), cache=cache)


@torch.no_grad()
def generate(model: SparseDepthModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             eos_id: int | None = None, seed: int | None = None) -> Generation:
    """Sample up to `max_new_tokens` per prompt (stops a sample at `eos_id`)."""
    model.eval()
    check_sampling(temperature, top_k, top_p)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
    check_room(model, prompts, max_new_tokens)
    device = next(model.parameters()).device
    generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
    cache, logits, prompt_layers = prefill(model, prompts)
    out_tokens: list[list[int]] = [[] for _ in prompts]
    out_layers: list[list[int]] = [[] for _ in prompts]
    finished = [False] * len(prompts)
    for _ in range(max_new_tokens):
        nxt = sample_next(logits, temperature, top_k, top_p, generator)
        for b, token in enumerate(nxt.tolist()):
            if not finished[b]:
                out_tokens[b].append(token)
                finished[b] = eos_id is not None and token == eos_id
        if all(finished):
            break
        out = decode_step(model, nxt, cache)
        for b, n in enumerate(out.layers_per_token[:, 0].long().tolist()):
            if len(out_layers[b]) < len(out_tokens[b]):
                out_layers[b].append(n)
        logits = out.logits[:, -1]
    return Generation(out_tokens, out_layers, prompt_layers)


def render_routing(pieces: Sequence[str], layers: Sequence[int], n_layers: int, color: bool = True) -> str:
    """Text with each token marked by how many blocks it ran: ANSI background from pale (few) to
    saturated (all), plus the count as a subscript, so it reads without colour too."""
    subscript = str.maketrans("0123456789", "₀₁₂₃₄₅₆₇₈₉")
    palette = [255, 230, 229, 222, 215, 209, 203, 197, 161]  # xterm-256: light → deep
    out = []
    for piece, n in zip(pieces, layers, strict=True):
        mark = str(n).translate(subscript)
        if color:
            shade = palette[min(len(palette) - 1, round(n / max(1, n_layers) * (len(palette) - 1)))]
            out.append(f"\x1b[48;5;{shade}m\x1b[30m{piece}\x1b[2m{mark}\x1b[0m")
        else:
            out.append(f"{piece}{mark}")
    return "".join(out)
