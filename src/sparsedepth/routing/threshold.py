"""Per-layer, per-token sigmoid gates (the D-LLM / FlexiDepth family).

Each routed block has its own gate p = sigmoid(w·h + b); a token runs it iff p > 0.5. The decision uses
only the token's own hidden state, so it is causal in training and inference alike. Straight-through
gradients train the gate; a capacity penalty pulls the fraction of tokens run towards the target.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import Decision, Router, straight_through
from .fitting import shift_biases


class ThresholdRouter(Router):
    name = "threshold"

    def __init__(self, cfg, capacity, routed_layers, budget_weight: float = 1.0, **gating):
        super().__init__(cfg, capacity, routed_layers, **gating)
        self.gates = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in self.routed_layers)
        self.budget_weight = budget_weight

    def decide(self, h: Tensor, layer: int) -> Decision:
        logit = self.gates[self.slot[layer]](h).squeeze(-1)
        mask = self.hard_gate(logit)
        gate = straight_through(mask, torch.sigmoid(logit / self.temperature))
        if self.training and self.budget_weight > 0:
            used = gate.mean()  # value: fraction run; gradient: through the probabilities
            self.add_aux(self.budget_weight * (used - self.effective_capacity) ** 2 / len(self.routed_layers))
        return Decision(mask=mask, gate=gate)

    def fit_capacity(self, model, idx: Tensor) -> None:
        shift_biases(model, idx, [(g, self.capacity) for g in self.gates])
