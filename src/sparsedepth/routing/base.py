"""The one interface every router implements, and the decision it hands the model.

A router sees the hidden state entering a routed block and says which tokens run it. The model does the
gathering (hard skipping), so a router is only a scoring rule plus its auxiliary loss.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from ..config import ConfigError, ModelConfig


@dataclass
class Decision:
    """Which tokens run a block, and the multiplier on their block output.

    `index` ([B, K], sorted positions) is set when every sample keeps exactly K tokens (top-k style): the
    model then gathers without padding and without a device→host sync.
    """

    mask: Tensor  # [B, T] bool
    gate: Tensor  # [B, T] float; value 1 for straight-through routers, gradient flows through it
    index: Tensor | None = None


def straight_through(hard: Tensor, soft: Tensor) -> Tensor:
    """Forward value of `hard`, gradient of `soft` (Bengio et al. 2013)."""
    return hard.to(soft.dtype) + soft - soft.detach()


def topk_index(scores: Tensor, k: int) -> Tensor:
    """Per-row top-k positions, sorted so the gathered tokens keep their causal order."""
    return scores.topk(k, dim=1).indices.sort(dim=1).values


def mask_from_index(index: Tensor, length: int) -> Tensor:
    mask = torch.zeros(index.shape[0], length, dtype=torch.bool, device=index.device)
    return mask.scatter(1, index, True)


def capacity_count(capacity: float, length: int) -> int:
    """Tokens kept per sequence at this capacity: at least one, so a block never runs on nothing."""
    return max(1, math.ceil(capacity * length))


class Router(nn.Module):
    """Base class: routes `routed_layers` of a model; dense layers never ask it.

    Subclasses set `name`, whether decisions are causal in training mode, and which layers they route by
    default (`default_route_every`: every k-th block, the last of each group; 1 = all blocks).
    """

    name: ClassVar[str] = "base"
    causal_in_training: ClassVar[bool] = True
    default_route_every: ClassVar[int] = 2
    learned: ClassVar[bool] = True

    def __init__(self, cfg: ModelConfig, capacity: float, routed_layers: Sequence[int]):
        super().__init__()
        if not (0.0 < capacity <= 1.0):
            raise ConfigError(f"capacity must be in (0, 1], got {capacity}")
        self.cfg = cfg
        self.capacity = float(capacity)
        self.routed_layers = list(routed_layers)
        self.slot = {layer: i for i, layer in enumerate(self.routed_layers)}
        self._aux: list[Tensor] = []
        self.progress = 1.0  # a model built for inference is at the end of any schedule

    def begin(self, h0: Tensor, positions: Tensor) -> None:
        """Called once per forward pass with the token embeddings and their positions ([T])."""
        self._aux = []
        self.positions = positions

    def decide(self, h: Tensor, layer: int) -> Decision:
        raise NotImplementedError

    def set_progress(self, fraction: float) -> None:
        """Training progress in [0, 1], set by the training loop before each step (for schedules such as
        a capacity curriculum). Derived from the step, so resuming restores it exactly."""
        self.progress = fraction

    def add_aux(self, loss: Tensor) -> None:
        self._aux.append(loss)

    def aux_loss(self) -> Tensor | None:
        """Sum of the auxiliary terms added in this forward pass (None when the router has none)."""
        return torch.stack(self._aux).sum() if self._aux else None

    def flops_per_token(self) -> float:
        """Router matmul FLOPs per token: each weight matrix entry is one multiply-add per token."""
        return 2.0 * sum(p.numel() for p in self.parameters() if p.dim() > 1)
