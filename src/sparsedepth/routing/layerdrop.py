"""Control: stochastic depth / LayerDrop (Huang et al. 2016; Fan et al. 2020) — nothing is learned.

Training drops each routed block per token with a probability rising linearly with depth,
p_j = min(1, a·(j+1)/n) for the j-th of n routed blocks, with the slope a solved so the expected fraction
of routed blocks run equals the capacity (the saturation at 1 only bites below capacity ≈ (n-1)/2n, where
the deepest blocks are then never trained and always skipped). Outputs are not rescaled (LayerDrop's
convention: the block learns to be optional, and at inference it either runs in full or not at all).

Inference is a fixed, deterministic pruning that matches training's expected depth: every token runs the
round(capacity·n) routed blocks training dropped least (the shallowest) and skips the rest. When the
profile is unsaturated this is the rule "skip every block with p_j ≥ 0.5" (exactly, for capacity·n whole).
It ignores the input, so it is causal and batch-independent trivially.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Decision, Router


def drop_probabilities(capacity: float, n: int, iterations: int = 60) -> list[float]:
    """p_j = min(1, a·(j+1)/n) with mean 1 − capacity (bisection on a ∈ [0, n]; the mean rises with a)."""
    def profile(a: float) -> list[float]:
        return [min(1.0, a * (j + 1) / n) for j in range(n)]

    low, high = 0.0, float(n)
    for _ in range(iterations):
        a = (low + high) / 2
        if sum(profile(a)) / n < 1.0 - capacity:
            low = a
        else:
            high = a
    return profile(low)


class LayerDropRouter(Router):
    name = "layerdrop"
    shared_options = ("curriculum",)
    training_plan = "expected"
    learned = False
    default_route_every = 1
    uniform_routing = ("inference",)  # a fixed pruning: every token runs the same blocks

    def __init__(self, cfg, capacity, routed_layers, curriculum: float = 0.0):
        super().__init__(cfg, capacity, routed_layers, curriculum=curriculum)
        n = len(self.routed_layers)
        self.kept_at_inference = set(self.routed_layers[: math.floor(self.capacity * n + 0.5)])

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """Per-token Bernoulli(1 − p_j) keeps: binomial counts."""
        keep = [1.0 - p for p in drop_probabilities(self.effective_capacity, len(self.routed_layers))]
        return {layer: (q * length, length * q * (1 - q))
                for layer, q in zip(self.routed_layers, keep, strict=True)}

    def decide(self, h: Tensor, layer: int) -> Decision:
        batch, length = h.shape[:2]
        ones = torch.ones(batch, length, dtype=h.dtype, device=h.device)
        if self.training:
            p = drop_probabilities(self.effective_capacity, len(self.routed_layers))[self.slot[layer]]
            mask = torch.rand(batch, length, device=h.device) >= p
        else:
            mask = torch.full((batch, length), layer in self.kept_at_inference, device=h.device)
        return Decision(mask=mask, gate=ones)
