"""The origin project's sparse forward, re-implemented as a documented ablation (`impl = origin-flat`).

The original scores each token once (sigmoid of a linear probe on the embedding) and runs layer i on the
tokens with score > i/L, like our `probe` router, but batches them by *flattening*: the chosen tokens of
every sample are concatenated into one sequence and run through one attention with no mask at all. That
mixes tokens across batch items, is not causal, and makes attention quadratic in the batch's token count.
We keep it only to time it beside our per-sample gather on the same blocks and weights; the tests assert
the flaw exists, so the ablation stays honest. Written from that description, not copied.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .model import SparseDepthModel
from .routing import Router
from .routing.probe import ProbeRouter


def supports(router: Router | type[Router]) -> bool:
    """Only the probe (trained or frozen) scores each token once, as the origin project's forward needs."""
    return issubclass(router if isinstance(router, type) else type(router), ProbeRouter)


def flat_forward(model: SparseDepthModel, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Logits [B, T, V] and which blocks each token ran [B, T, L] (bool), computed the origin project's way.
    Differentiable, so a training step can be timed too. Non-routed blocks run every token (flattened)."""
    router = model.router
    if not supports(router):
        raise ValueError(f"origin-flat needs the probe router, not {router.name!r}")
    B, T = idx.shape
    L = model.cfg.n_layers
    h = model.wte(idx)
    positions = torch.arange(T, device=idx.device)
    score = torch.sigmoid(router.probe(h).squeeze(-1)).detach().flatten()  # [B*T], once, from the embedding
    flat_positions = positions.repeat(B)
    h = h.flatten(0, 1)  # [B*T, C]: the whole batch becomes one sequence
    ran = []
    for i, block in enumerate(model.blocks):
        chosen = score > i / L if i in model.routed else torch.ones_like(score, dtype=torch.bool)
        ran.append(chosen)
        where = chosen.nonzero().squeeze(1)
        if where.numel() == 0:
            continue
        x = h.index_select(0, where).unsqueeze(0)  # [1, N, C]: every sample's chosen tokens together
        everyone = torch.ones(1, x.shape[1], x.shape[1], dtype=torch.bool, device=idx.device)  # no mask
        delta = block.residual(x, model.rope, flat_positions[where], attn_mask=everyone)
        h = h.index_add(0, where, delta[0].to(h.dtype))
    return model.readout(h.view(B, T, -1)), torch.stack(ran, dim=-1).view(B, T, L)
