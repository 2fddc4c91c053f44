"""Early exit: LayerSkip training (Elhoushi et al. 2024) with CALM's confidence exits (Schuster et al. 2022).

Training: every layer's output is read out by the shared head (final norm + tied LM head), and a
cross-entropy on each, weighted up with depth, teaches early layers to predict; layer dropout rising with
depth (per sample) makes later layers skippable. Inference: a token exits after the first layer whose
read-out is confident (softmax response: top-1 minus top-2 probability above a threshold calibrated on
the validation split to the target capacity) and skips every later layer. State propagation: an exited
token's frozen hidden state still provides keys/values in the layers it skipped, so later tokens attend
to it as in the dense model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import ConfigError
from .base import Decision, Router


@dataclass
class PropagatingDecision(Decision):
    """A decision whose skipped tokens still serve as keys/values (their current hidden state)."""

    propagate: bool = True


class EarlyExitRouter(Router):
    name = "early_exit"
    default_route_every = 1
    learned = False  # no router weights: the threshold is calibrated, the exit loss trains the model

    def __init__(self, cfg, capacity, routed_layers, threshold: float = 0.9, max_layer_dropout: float = 0.2,
                 exit_loss_weight: float = 1.0, rotation: int = 1):
        super().__init__(cfg, capacity, routed_layers)
        if rotation < 1:
            raise ConfigError(f"early_exit rotation must be ≥ 1, got {rotation}")
        self.register_buffer("threshold", torch.tensor(float(threshold)))
        # LayerSkip's rotational curriculum: each step, the exit loss reads out one layer in `rotation`
        # (a different one each step), which divides the cost of the per-layer head by `rotation`
        self.rotation = rotation
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))  # saved, so resume is exact
        self.max_layer_dropout = max_layer_dropout
        self.exit_loss_weight = exit_loss_weight
        self.exited: Tensor | None = None
        self.hidden: list[tuple[int, Tensor]] = []
        self.phase = 0  # rotation phase of the current training step

    @property
    def propagates_state(self) -> bool:
        return not self.training

    def begin(self, h0: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        super().begin(h0, positions, valid)
        self.exited = torch.zeros(h0.shape[:2], dtype=torch.bool, device=h0.device)
        self.hidden = []
        if self.training:
            self.steps += 1
            self.phase = int(self.steps)  # read once per forward pass, not once per layer (a host sync)

    def decide(self, h: Tensor, layer: int) -> Decision:
        B, T = h.shape[:2]
        ones = torch.ones(B, T, dtype=h.dtype, device=h.device)
        if self.training:
            if layer > 0 and self.exit_loss_weight > 0 and (layer + self.phase) % self.rotation == 0:
                self.hidden.append((layer, h))
            drop = self.max_layer_dropout * layer / max(1, self.cfg.n_layers - 1)
            keep = (torch.rand(B, 1, device=h.device) >= drop).expand(B, T)
            return Decision(mask=keep, gate=ones)
        if layer > 0:
            top2 = self.readout(h).float().softmax(-1).topk(2, dim=-1).values
            self.exited = self.exited | (top2[..., 0] - top2[..., 1] > self.threshold)
        return PropagatingDecision(mask=~self.exited, gate=ones)

    def target_loss(self, targets: Tensor) -> Tensor | None:
        """LayerSkip's early-exit loss: the shared head's cross-entropy at each intermediate layer,
        weighted in proportion to depth (normalised to sum to one)."""
        if not self.hidden:
            return None
        total = sum(layer for layer, _ in self.hidden)
        losses = [layer / total * F.cross_entropy(self.readout(h).flatten(0, 1).float(), targets.flatten())
                  for layer, h in self.hidden]
        return self.exit_loss_weight * torch.stack(losses).sum()

    def flops_per_token(self) -> float:
        """The confidence read-out costs one head matmul per token per checked layer."""
        checked = sum(1 for layer in self.routed_layers if layer > 0)
        return super().flops_per_token() + checked * 2.0 * self.cfg.d_model * self.cfg.vocab_size

    @torch.no_grad()
    def calibrate(self, model, batches: list[Tensor], iterations: int = 14) -> float:
        """Bisect the threshold so the mean fraction of routed layers run matches the capacity on the
        given (validation) batches. More confidence required → later exits → more layers run."""
        was_training = model.training
        model.eval()
        routed = torch.tensor(self.routed_layers)

        def fraction(threshold: float) -> float:
            self.threshold.fill_(threshold)
            ran = [model(x).routing[..., routed].float().mean() for x in batches]
            return torch.stack(ran).mean().item()

        low, high = 0.0, 1.0
        for _ in range(iterations):
            mid = (low + high) / 2
            if fraction(mid) < self.capacity:
                low = mid
            else:
                high = mid
        self.threshold.fill_(high)
        model.train(was_training)
        return high
