"""Token-level halting after Adaptive Computation Time (Graves 2016) and PonderNet (Banino et al. 2021).

Each routed block j has a halting unit λ_j = sigmoid(w_j·h + b_j) on the state entering it: the probability
of halting there, given the token has not halted yet. A token's probability of still running after j is
its survival S_j = Π_{k≤j} (1 − λ_k), and ACT's rule stops it once its cumulative halting probability
1 − S_j reaches 1 − ε: it runs block j iff S_j > ε, so a halted token skips every later block (depths
nest). The rule reads only the token's own states, so it is causal in training and inference alike.

Training: block outputs are gated straight-through (value 1, gradient of S_j), and a ponder cost at the end
of the pass (`finish`) pulls the mean fraction of routed blocks run (value: the hard count; gradient:
through S_j, PonderNet's expected depth) to the capacity. The halting biases start where a token with
λ constant halts after capacity × n blocks (`reset_parameters`), so training starts at its budget.
`propagate=True`: a halted token's state still serves as keys/values in the blocks it skips (as early exit's).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import ConfigError
from .base import Decision, Router, straight_through


def initial_halting(capacity: float, depths: int, epsilon: float) -> float:
    """λ such that (1 − λ)^(capacity·n + ½) = ε: a constant-λ token runs round(capacity·n) blocks."""
    return 1.0 - epsilon ** (1.0 / (capacity * depths + 0.5))


class ACTRouter(Router):
    name = "act"
    shared_options = ("curriculum",)
    default_route_every = 1

    def __init__(self, cfg, capacity, routed_layers, epsilon: float = 0.01, ponder_weight: float = 1.0,
                 propagate: bool = False, curriculum: float = 0.0):
        super().__init__(cfg, capacity, routed_layers, curriculum=curriculum)
        if not (0.0 < epsilon < 1.0):
            raise ConfigError(f"act epsilon must be in (0, 1), got {epsilon}")
        if ponder_weight < 0:
            raise ConfigError(f"act ponder_weight must be ≥ 0, got {ponder_weight}")
        self.epsilon, self.ponder_weight = float(epsilon), float(ponder_weight)
        self.propagate = bool(propagate)
        self.log_epsilon = math.log(self.epsilon)
        self.halt = nn.ModuleList(nn.Linear(cfg.d_model, 1) for _ in self.routed_layers)
        self.log_survival: Tensor | None = None
        self._used: list[Tensor] = []

    def reset_parameters(self) -> None:
        super().reset_parameters()
        if self.routed_layers:
            bias = math.log(1 / initial_halting(self.capacity, len(self.routed_layers), self.epsilon) - 1)
            with torch.no_grad():
                for unit in self.halt:
                    unit.bias.fill_(-bias)  # logit(λ0)

    @property
    def propagates_state(self) -> bool:
        return self.propagate

    def begin(self, h0: Tensor, positions: Tensor, valid: Tensor | None = None) -> None:
        super().begin(h0, positions, valid)
        self.log_survival = torch.zeros(h0.shape[:2], dtype=h0.dtype, device=h0.device)
        self._used = []

    def carry(self) -> dict[str, Tensor | None]:
        """log S after the last block decided: the next block's survival builds on it."""
        return {"log_survival": self.log_survival}

    def decide(self, h: Tensor, layer: int) -> Decision:
        logit = self.halt[self.slot[layer]](h).squeeze(-1)
        self.log_survival = self.log_survival + F.logsigmoid(-logit)  # log(1 − λ), stable
        mask = self.log_survival > self.log_epsilon
        gate = straight_through(mask, self.log_survival.exp())
        if self.training and self.ponder_weight > 0:
            self._used.append(gate.mean())
        return Decision(mask=mask, gate=gate, propagate=self.propagate)

    def finish(self) -> None:
        """The ponder cost over all routed blocks: (mean fraction run − capacity)²."""
        if self._used:
            used = torch.stack(self._used).mean()
            self.add_aux(self.ponder_weight * (used - self.effective_capacity) ** 2)
            self._used = []

    def training_counts(self, length: int) -> dict[int, tuple[float, float]]:
        """Depths nest, so the plan assumes every token's depth sits at capacity × n (the initialisation,
        and the ponder cost's target): the first blocks run every token, one runs the fraction left, the rest
        none (an assumption for learned halting, as a budget router's fraction at its target)."""
        depth = self.effective_capacity * len(self.routed_layers)
        return {layer: (min(1.0, max(0.0, depth - j)) * length, 0.0)
                for j, layer in enumerate(self.routed_layers)}

    @torch.no_grad()
    def fit_capacity(self, model, idx: Tensor, iterations: int = 40) -> None:
        """Shift every halting bias by one amount, bisected so a fraction `capacity` of routed blocks runs
        on `idx` (the fraction falls as the shift rises)."""
        start = [unit.bias.clone() for unit in self.halt]
        routed = torch.tensor(self.routed_layers)

        def fraction(shift: float) -> float:
            for unit, bias in zip(self.halt, start, strict=True):
                unit.bias.copy_(bias + shift)
            return model(idx).routing[..., routed].float().mean().item()

        low, high = -30.0, 30.0
        for _ in range(iterations):
            mid = (low + high) / 2
            low, high = (mid, high) if fraction(mid) > self.capacity else (low, mid)
        fraction(low)
