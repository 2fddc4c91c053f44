"""Control: stochastic depth / LayerDrop (Huang et al. 2016; Fan et al. 2020) — not learned.

Training drops each routed block per token with a probability rising linearly with depth, p_j = p_max·(j+1)/n
for the j-th of n routed blocks, with p_max set so the expected fraction of routed blocks run equals the
capacity (capped at 1, in which case more is run than asked). Outputs are not rescaled (LayerDrop's
convention). Inference is a fixed, deterministic pruning: block j is skipped for every token iff p_j ≥ 0.5,
the blocks training dropped more often than it kept — causal trivially, since it ignores the input.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Decision, Router


class LayerDropRouter(Router):
    name = "layerdrop"
    learned = False
    default_route_every = 1

    def __init__(self, cfg, capacity, routed_layers, curriculum: float = 0.0):
        super().__init__(cfg, capacity, routed_layers, curriculum=curriculum)

    def drop_probability(self, layer: int) -> float:
        n = len(self.routed_layers)
        p_max = min(1.0, 2.0 * n * (1.0 - self.effective_capacity) / (n + 1))
        return p_max * (self.slot[layer] + 1) / n

    def decide(self, h: Tensor, layer: int) -> Decision:
        batch, length = h.shape[:2]
        ones = torch.ones(batch, length, dtype=h.dtype, device=h.device)
        p = self.drop_probability(layer)
        if self.training:
            mask = torch.rand(batch, length, device=h.device) >= p
        else:
            mask = torch.full((batch, length), p < 0.5, dtype=torch.bool, device=h.device)
        return Decision(mask=mask, gate=ones)
