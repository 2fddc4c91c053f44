"""Putting an untrained router at its capacity (for `Router.fit_capacity`, which the benchmark calls).

Why: the benchmark times randomly initialised models, and an untrained router keeps an arbitrary share of
the tokens; shifting its decision bias so it keeps `capacity` of them, as a trained router's budget loss
would, makes the timing reflect the configured capacity.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from ..model import SparseDepthModel


@torch.no_grad()
def shift_biases(model: SparseDepthModel, idx: Tensor, blocks: Sequence[tuple[nn.Linear, float]],
                 eligible: Callable[[Tensor], Tensor] = Tensor.flatten) -> None:
    """Per routed block, in depth order (each block's input depends on the earlier ones): `blocks` holds the
    linear layer whose output is the block's decision logit (run iff > 0) and the fraction of the eligible
    tokens it should keep; its bias is shifted to that quantile of the logits it sees on `idx` (see `_cut`).
    `eligible` maps those logits to the ones that may be kept (it runs inside the forward pass,
    e.g. MoR's survivors)."""
    for module, keep in blocks:
        seen: list[Tensor] = []
        handle = module.register_forward_hook(lambda m, args, out, seen=seen: seen.append(eligible(out)))
        try:
            model(idx)
        finally:
            handle.remove()
        module.bias -= _cut(seen[0].float().flatten(), keep)


def _cut(logits: Tensor, keep: float) -> Tensor:
    """The (1 − keep) quantile of `logits`, moved to midway between the last logit above it and the first at
    or below it: the same tokens stay above the cut, but none sits on it (a quantile can land exactly on a
    logit, leaving that token's margin at 0 for a kernel's rounding to decide)."""
    ranked = logits.sort(descending=True).values
    # the tokens the quantile keeps (all of them at keep 1, where the quantile is the smallest logit)
    k = ranked.numel() if keep >= 1.0 else int((ranked > torch.quantile(ranked, 1.0 - keep)).sum())
    if k == 0:
        return ranked[0] + 1.0
    if k == ranked.numel():
        return ranked[-1] - 1.0
    return (ranked[k - 1] + ranked[k]) / 2


@torch.no_grad()
def bisect_bias(model: SparseDepthModel, idx: Tensor, bias: Tensor, capacity: float,
                iterations: int = 40, low: float = -30.0, high: float = 30.0) -> None:
    """Bisect one bias so the mean fraction of routed blocks run on `idx` is `capacity` (the fraction rises
    with the bias), for a router whose one score sets every routed block's decision (the probe).

    The bias ends in the middle of the interval that keeps that fraction, not at its lower end: there a
    token's margin is ~1e-11 and a kernel's rounding (a batched prefill against a one-token decode step)
    flips its decision."""
    routed = torch.tensor(model.router.routed_layers)

    def fraction(value: float) -> float:
        bias.fill_(value)
        return model(idx).routing[..., routed].float().mean().item()

    def lowest(reaching: float, low: float, high: float, iterations: int) -> float:
        """The smallest bias in [low, high] whose fraction reaches `reaching`, to within the bisection."""
        for _ in range(iterations):
            mid = (low + high) / 2
            low, high = (mid, high) if fraction(mid) < reaching else (low, mid)
        return high

    start = lowest(capacity, low, high, iterations)
    kept = fraction(start)
    end = lowest(kept + 1e-9, start, high, iterations // 2) if kept < 1.0 else high
    bias.fill_((start + end) / 2)
