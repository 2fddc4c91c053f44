"""Mixture-of-Depths (Raposo et al. 2024): top-k tokens per sequence run the block, scaled by the router.

Top-k over the sequence is not causal (a token's fate depends on later tokens), so at inference a causal
rule decides instead: either the router's own logit thresholded at 0 after an auxiliary BCE loss taught it
to predict top-k membership (`causal="aux"`), or a small predictor on stop-gradient hidden states
(`causal="predictor"`). `inference="topk"` keeps top-k at eval to report the non-causal upper bound.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from .base import Decision, Router, capacity_count, topk_choice
from .fitting import shift_biases


class MoDRouter(Router):
    name = "mod"
    training_plan = "exact"
    causal_in_training = False
    inference_modes = ("causal", "topk")

    def __init__(self, cfg, capacity, routed_layers, causal: str = "aux", inference: str = "causal",
                 aux_weight: float = 0.1, **gating):
        super().__init__(cfg, capacity, routed_layers, **gating)
        if causal not in ("aux", "predictor"):
            raise ConfigError(f"mod causal rule must be 'aux' or 'predictor', got {causal!r}")
        self.causal = causal
        self.set_inference(inference)
        self.aux_weight = aux_weight
        self.proj = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in self.routed_layers)
        hidden = max(8, cfg.d_model // 8)
        self.predictor = nn.ModuleList(
            nn.Sequential(nn.Linear(cfg.d_model, hidden), nn.SiLU(), nn.Linear(hidden, 1))
            for _ in (self.routed_layers if causal == "predictor" else [])
        )

    def fit_capacity(self, model, idx: Tensor) -> None:
        """The causal rule's logit (the router's own, or the predictor's last layer) per block."""
        logits = self.proj if self.causal == "aux" else [p[-1] for p in self.predictor]
        shift_biases(model, idx, [(m, self.capacity) for m in logits])

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """Top-k: exactly ceil(c·T) tokens per sample."""
        return {layer: (float(capacity_count(self.effective_capacity, length)), 0.0)
                for layer in self.routed_layers}

    def causal_logit(self, h: Tensor, slot: int, router_logit: Tensor) -> Tensor:
        if self.causal == "aux":
            return router_logit
        return self.predictor[slot](h.detach()).squeeze(-1)

    def decide(self, h: Tensor, layer: int) -> Decision:
        slot = self.slot[layer]
        logit = self.proj[slot](h).squeeze(-1)
        gate = torch.sigmoid(logit)
        if self.training or self.inference == "topk":
            mask, index = topk_choice(self.ranking_scores(logit), self.effective_capacity, self.valid)
            if self.training:
                predicted = self.causal_logit(h, slot, logit)
                self.add_aux(self.aux_weight * F.binary_cross_entropy_with_logits(predicted, mask.float()))
            return Decision(mask=mask, gate=gate, index=index)
        mask = self.causal_logit(h, slot, logit) > 0
        return Decision(mask=mask, gate=gate)
