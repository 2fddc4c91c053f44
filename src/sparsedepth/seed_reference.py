"""The seed project's sparse forward, re-implemented as a documented ablation (`impl = seed-flat`).

The original SparseDepthTransformer scores each token once (sigmoid of a linear probe on the embedding) and
runs layer i on tokens with score > i/L — like our `seed` router — but batches them by *flattening*: the
chosen tokens of every sample are concatenated into one sequence and run through one attention without a
causal mask. That mixes tokens across batch items, is not causal, and makes attention quadratic in the
batch's token count, which is why it is slower than dense. We keep it only to time it beside our per-sample
gather on the same weights; the tests assert the flaw exists, so the ablation stays honest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import SparseDepthModel


def flat_forward(model: SparseDepthModel, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Logits [B, T, V] and blocks run per token [B, T], computed the seed project's way (differentiable,
    so a training step can be timed too)."""
    if not hasattr(model.router, "score"):
        raise ValueError(f"seed-flat needs a seed-style router, not {model.router.name!r}")
    B, T = idx.shape
    h = model.wte(idx)
    positions = torch.arange(T, device=idx.device)
    model.router.begin(h, positions)
    score = model.router.score  # [B, T]
    flat_positions = positions.repeat(B)
    layers = torch.zeros(B * T, device=idx.device)
    h = h.flatten(0, 1)  # [B*T, C]: the batch becomes one sequence
    L = model.cfg.n_layers
    for i, block in enumerate(model.blocks):
        chosen = (score > i / L).flatten() if i in model.routed else torch.ones_like(layers, dtype=torch.bool)
        n = int(chosen.sum())
        if n == 0:
            continue
        x = h[chosen].unsqueeze(0)  # [1, N, C]: every sample's chosen tokens together
        everyone = torch.ones(1, n, n, dtype=torch.bool, device=idx.device)  # no causal mask, no batch wall
        delta = block.residual(x, model.rope, flat_positions[chosen], attn_mask=everyone)
        h = h.index_add(0, chosen.nonzero().squeeze(1), delta[0])
        layers = layers + chosen
    return model.readout(h.view(B, T, -1)), layers.view(B, T)
