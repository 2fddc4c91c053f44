"""Control: tokens chosen at random at the same capacity, ignoring content.

Training draws a fresh random top-k per sequence (exact capacity, no sync). Inference uses a fixed table
of uniforms per (layer, position), so decisions are deterministic and causal: they depend on nothing but
the position.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Decision, Router, capacity_count, topk_choice


class RandomRouter(Router):
    name = "random"
    shared_options = ("curriculum",)
    training_plan = "exact"
    learned = False

    def __init__(self, cfg, capacity, routed_layers, table_seed: int = 1234, curriculum: float = 0.0):
        super().__init__(cfg, capacity, routed_layers, curriculum=curriculum)
        g = torch.Generator().manual_seed(table_seed)
        table = torch.rand(cfg.n_layers, cfg.max_seq_len, generator=g)
        self.register_buffer("table", table, persistent=False)

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """A random top-k: exactly ceil(c·T) tokens per sample."""
        return {layer: (float(capacity_count(self.effective_capacity, length)), 0.0)
                for layer in self.routed_layers}

    def decide(self, h: Tensor, layer: int) -> Decision:
        batch, length = h.shape[:2]
        ones = torch.ones(batch, length, dtype=h.dtype, device=h.device)
        if self.training:
            scores = torch.rand(batch, length, device=h.device)
            mask, index = topk_choice(scores, self.effective_capacity, self.valid)
            return Decision(mask=mask, gate=ones, index=index)
        mask = (self.table[layer, self.positions] < self.capacity).expand(batch, length)
        return Decision(mask=mask, gate=ones)
