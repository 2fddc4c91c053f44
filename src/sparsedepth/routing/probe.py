"""The origin project's probe, made trainable: one score per token decides its depth.

s = sigmoid(w·e + b) from the token embedding, once; layer i runs iff s > i/L, so depth = ceil(L·s).
The original gave the probe no gradient. Here the gate is straight-through (value 1, gradient of s) and a
compute-budget loss pulls the mean fraction of layers run towards the capacity, so the probe learns.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Decision, Router, straight_through
from .fitting import bisect_bias


class ProbeRouter(Router):
    name = "probe"
    default_route_every = 1

    def __init__(self, cfg, capacity, routed_layers, budget_weight: float = 1.0, **gating):
        super().__init__(cfg, capacity, routed_layers, **gating)
        self.probe = nn.Linear(cfg.d_model, 1)
        self.budget_weight = budget_weight
        self.score: Tensor | None = None
        self._thresholds: dict[tuple[int, torch.dtype], float] = {}  # (layer, dtype) → logit(layer / L)

    def begin(self, h0: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        super().begin(h0, positions, valid)
        self.logit = self.probe(h0).squeeze(-1)  # [B, T]
        self.score = torch.sigmoid(self.logit)
        if self.training and self.budget_weight > 0:
            layers = torch.tensor(self.routed_layers, dtype=h0.dtype, device=h0.device)
            thresholds = layers / self.cfg.n_layers
            runs = (self.score.unsqueeze(-1) > thresholds).float().mean(-1)  # fraction of routed layers run
            used = straight_through(runs, self.score)
            self.add_aux(self.budget_weight * (used.mean() - self.effective_capacity) ** 2)

    def decide(self, h: Tensor, layer: int) -> Decision:
        """s > i/L in logit space (logit s − logit(i/L) > 0), so probabilistic gating can sample it."""
        margin = self.logit - self._threshold_logit(layer, self.logit.dtype)
        mask = self.hard_gate(margin)
        soft = torch.sigmoid(margin / self.temperature) if self.gating == "probabilistic" else self.score
        return Decision(mask=mask, gate=straight_through(mask, soft))

    def _threshold_logit(self, layer: int, dtype: torch.dtype) -> float:
        """logit(i/L), computed in `dtype` as a tensor would be, kept as a number: one op per block, not six
        (a fresh tensor each call; decoding pays per op)."""
        key = (layer, dtype)
        if key not in self._thresholds:
            self._thresholds[key] = torch.logit(torch.tensor(layer / self.cfg.n_layers, dtype=dtype)).item()
        return self._thresholds[key]

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """s > 0 always: a block at threshold 0 runs every token; the rest of the budget (mean fraction c
        over routed blocks) is spread evenly over the others (an assumption: the learned fraction is at c)."""
        layers, n = self.routed_layers, len(self.routed_layers)
        first = [layer for layer in layers if layer == 0]
        rest = n - len(first)
        share = min(1.0, max(0.0, (self.effective_capacity * n - len(first)) / rest)) if rest else 0.0
        return {layer: ((1.0 if layer == 0 else share) * length, 0.0) for layer in layers}

    def fit_capacity(self, model, idx: Tensor) -> None:
        """One score sets every routed block's decision: bisect the probe's bias."""
        bisect_bias(model, idx, self.probe.bias, self.capacity)


class FrozenProbeRouter(ProbeRouter):
    """The origin project's probe as published: randomly initialised, never trained (control)."""

    name = "probe-frozen"
    shared_options = ()
    learned = False

    def __init__(self, cfg, capacity, routed_layers):
        super().__init__(cfg, capacity, routed_layers, budget_weight=0.0)
        self.probe.requires_grad_(False)

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """The untrained probe scores ≈ 0.5: a block runs iff 0.5 > i/L (all tokens or none)."""
        half = {layer: layer / self.cfg.n_layers for layer in self.routed_layers}
        return {layer: ((1.0 if t < 0.5 else 0.5 if t == 0.5 else 0.0) * length, 0.0)
                for layer, t in half.items()}

    def decide(self, h: Tensor, layer: int) -> Decision:
        mask = self.score > layer / self.cfg.n_layers
        return Decision(mask=mask, gate=torch.ones_like(self.score))
