"""Nested routing in the style of Mixture-of-Recursions (Bae et al. 2025, expert-choice variant).

The routed blocks are depths 0..n-1; the tokens kept at depth d+1 are a subset of those kept at depth d,
each depth re-scoring the survivors with its own linear router. Capacity falls with depth by a schedule:
geometric, c_d = r^(d+1) with r chosen so the mean over depths equals `capacity` (so MoR at capacity c
costs what MoD at c costs), or an explicit non-increasing list (`capacities`). Training keeps the top-k
survivors per sequence (exact capacity, like MoD, not causal); an auxiliary BCE over the eligible tokens
teaches each router's logit to predict membership, so inference decides causally — logit > 0 *and* kept
at the previous depth, which keeps the nesting. `inference="topk"` reports the non-causal upper bound.
Block outputs are scaled by sigmoid(logit), as in MoD, which is what trains the routers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from .base import Decision, Router, capacity_count, topk_choice
from .fitting import shift_biases


def geometric_schedule(capacity: float, depths: int, iterations: int = 60) -> list[float]:
    """r^1..r^n with mean `capacity` (bisection on r: the mean rises monotonically with r)."""
    low, high = 0.0, 1.0
    for _ in range(iterations):
        r = (low + high) / 2
        if sum(r ** (d + 1) for d in range(depths)) / depths < capacity:
            low = r
        else:
            high = r
    return [high ** (d + 1) for d in range(depths)]


class MoRRouter(Router):
    name = "mor"
    training_plan = "exact"
    causal_in_training = False
    default_route_every = 1
    inference_modes = ("causal", "topk")

    def __init__(self, cfg, capacity, routed_layers, capacities: list[float] | None = None,
                 inference: str = "causal", aux_weight: float = 0.1, **gating):
        super().__init__(cfg, capacity, routed_layers, **gating)
        n = len(self.routed_layers)
        if capacities is not None and (len(capacities) != n or not all(0 < c <= 1 for c in capacities)
                                       or list(capacities) != sorted(capacities, reverse=True)):
            raise ConfigError(f"mor capacities must be {n} non-increasing values in (0, 1], got {capacities}")
        self.schedule = [float(c) for c in capacities] if capacities is not None else \
            geometric_schedule(self.capacity, n)
        self.set_inference(inference)
        self.aux_weight = aux_weight
        self.proj = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in self.routed_layers)
        self.kept: Tensor | None = None

    def fit_capacity(self, model, idx: Tensor) -> None:
        """Each depth keeps its scheduled share of the previous depth's survivors (the only eligible ones)."""
        s = self.schedule
        blocks = [(m, s[d] / (s[d - 1] if d else 1.0)) for d, m in enumerate(self.proj)]

        def eligible(logit: Tensor) -> Tensor:  # read while the depth runs: self.kept is the previous depth's
            return logit.flatten() if self.kept is None else logit.flatten()[self.kept.flatten()]

        shift_biases(model, idx, blocks, eligible)

    def depth_capacity(self, depth: int) -> float:
        """Fraction of the sequence kept at routed depth `depth`. A capacity curriculum moves every depth
        from 1.0 towards its scheduled value by the same fraction, so the nesting order is kept."""
        target = self.schedule[depth]
        if self.capacity >= 1.0:
            return target
        return 1.0 - (1.0 - target) * (1.0 - self.effective_capacity) / (1.0 - self.capacity)

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """Nested top-k: each depth's scheduled capacity, exactly."""
        return {layer: (float(capacity_count(self.depth_capacity(d), length)), 0.0)
                for d, layer in enumerate(self.routed_layers)}

    def begin(self, h0: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        super().begin(h0, positions, valid)
        self.kept = None  # depth 0: every token is eligible

    def carry(self) -> dict[str, Tensor | None]:
        """The survivors of the last depth run (None before the first): the next depth's eligible tokens."""
        return {"kept": self.kept}

    def decide(self, h: Tensor, layer: int) -> Decision:
        depth = self.slot[layer]
        logit = self.proj[depth](h).squeeze(-1)
        gate = torch.sigmoid(logit)
        eligible = self.kept if self.kept is not None else \
            torch.ones_like(logit, dtype=torch.bool) if self.valid is None else self.valid
        if self.training or self.inference == "topk":
            scores = self.ranking_scores(logit).masked_fill(~eligible, float("-inf"))
            # the schedule is non-increasing, so k (of each row's real length) never exceeds the previous
            # depth's survivors
            mask, index = topk_choice(scores, self.depth_capacity(depth), self.valid)
            if self.training:
                bce = F.binary_cross_entropy_with_logits(logit, mask.float(), reduction="none")
                self.add_aux(self.aux_weight * (bce * eligible).sum() / eligible.sum().clamp(min=1))
            self.kept = mask
            return Decision(mask=mask, gate=gate, index=index)
        mask = eligible & (logit > 0)
        self.kept = mask
        return Decision(mask=mask, gate=gate)
