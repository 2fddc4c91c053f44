"""Analytic matmul FLOPs, counted the way `torch.utils.flop_counter.FlopCounterMode` counts them.

Forward FLOPs of one block on a sequence of n tokens (2 FLOPs per multiply-add, norms and softmax ignored):
  projections  2·n·d²·(4 + 2·r)    (q, k, v, out: 4d²; MLP: 2·r·d²)
  attention    4·n²·d              (QKᵀ and AV; SDPA is counted over the full n×n square)
A routed block's n is the number of tokens it gathered, which is where hard skipping saves compute.
Training counts 3 × the forward (the backward costs two matmuls per forward matmul).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .config import ConfigError, ModelConfig, to_dict
from .model import make_router
from .routing import Router

if TYPE_CHECKING:
    from .train import TrainConfig


def block_flops(
    n_tokens: Tensor | float, cfg: ModelConfig, context: Tensor | float | None = None
) -> Tensor | float:
    """With state propagation, every one of the `context` tokens still needs keys/values (2 of the 4
    projections) and the n queries attend over all of them; a block no query runs is skipped whole."""
    d = cfg.d_model
    if context is None:
        return 2 * n_tokens * d * d * (4 + 2 * cfg.mlp_ratio) + 4 * n_tokens * n_tokens * d
    flops = 2 * d * d * (n_tokens * (2 + 2 * cfg.mlp_ratio) + 2 * context) + 4 * n_tokens * context * d
    return flops * (n_tokens > 0)


def head_flops(n_tokens: float, cfg: ModelConfig) -> float:
    return 2.0 * n_tokens * cfg.d_model * cfg.vocab_size


def forward_flops(cfg: ModelConfig, layer_counts: Tensor, router_flops_per_token: float = 0.0,
                  seq_len: int | None = None, propagate: bool = False) -> float:
    """Total forward FLOPs of a batch given [B, L] tokens per sample per block (the model output's
    `layer_counts`), i.e. the ideal cost of hard skipping without padding."""
    if seq_len is None:
        seq_len = float(layer_counts.max()) if layer_counts.numel() else 0.0
    batch = layer_counts.shape[0]
    context = float(seq_len) if propagate else None
    total = float(block_flops(layer_counts.double(), cfg, context).sum())
    return total + batch * (head_flops(seq_len, cfg) + seq_len * router_flops_per_token)


def dense_forward_flops(cfg: ModelConfig, batch: int, seq_len: int, n_layers: int | None = None) -> float:
    layers = cfg.n_layers if n_layers is None else n_layers
    return batch * (layers * float(block_flops(float(seq_len), cfg)) + head_flops(seq_len, cfg))


def counted_flops(fn: Callable[[], object]) -> int:
    """FLOPs torch itself counts while running `fn` (forward only unless `fn` calls backward).

    The CPU's fused attention kernel is not in torch's FLOP registry, so count under the math backend,
    whose matmuls are."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def output_flops(model, out, seq_len: int) -> float:
    """Analytic forward FLOPs of the batch that produced `out` (a ModelOutput) under the model's router."""
    router = model.router
    return forward_flops(model.cfg, out.layer_counts, router.flops_per_token(), seq_len,
                         router.propagates_state)


@torch.no_grad()
def model_flops(model, idx: Tensor) -> dict[str, float]:
    """Analytic (ideal, from actual counts) and counted FLOPs of one forward pass, per token."""
    out = model(idx)
    n_tokens = idx.numel()
    analytic = output_flops(model, out, idx.shape[1])
    counted = counted_flops(lambda: model(idx))
    dense = dense_forward_flops(model.cfg, *idx.shape)
    return {
        "flops_per_token": analytic / n_tokens,
        "counted_flops_per_token": counted / n_tokens,
        "dense_flops_per_token": dense / n_tokens,
    }


# --- training FLOPs: what one optimizer step costs ------------------------------------------------------

def exit_readouts(router: Router) -> int:
    """Head passes over the batch (forward and backward) that the router's training loss made in the last
    training forward: early exit's exit loss (0 for every other router, and outside training)."""
    return router.training_readouts()


def train_step_flops(model, out, seq_len: int) -> float:
    """Analytic FLOPs of the training step whose forward produced `out`: 3 × (the forward of the blocks
    each sample ran, the head, and the exit-loss read-outs), plus the router's own training matmuls.

    The router says what it costs in training (`Router.training_flops_per_token`), not what it adds for
    inference alone: early exit's confidence read-out is not run in training. For other routers it is
    3 × their weights, so this is exactly 3 × `output_flops`."""
    router = model.router
    forward = forward_flops(model.cfg, out.layer_counts, 0.0, seq_len, router.propagates_state)
    batch = out.layer_counts.shape[0]
    readouts = router.training_readouts() * batch * head_flops(seq_len, model.cfg)
    return 3.0 * (forward + readouts) + batch * seq_len * router.training_flops_per_token()


def _expected_block(mean: float, var: float, cfg: ModelConfig, context: float | None = None) -> float:
    """E[block_flops(n)] for a token count n with this mean and variance: block_flops is quadratic in n
    (linear under state propagation, with `context` tokens giving keys/values), so the two-point average at
    mean ± std is exact (but for the skip of a block no query runs)."""
    std = math.sqrt(max(var, 0.0))
    return 0.5 * (float(block_flops(mean + std, cfg, context)) + float(block_flops(mean - std, cfg, context)))


def _forward_per_sample(router: Router, length: int) -> float:
    """Expected forward FLOPs of one sample's blocks and head in a training step, from the router's
    training counts at its effective capacity (`Router.training_counts`); a router whose training decisions
    propagate state (`propagates_state` in training mode) pays keys/values for the whole sequence."""
    cfg = router.cfg
    counts = router.training_counts(length)
    context = float(length) if router.propagates_state else None
    blocks = sum(_expected_block(*counts[layer], cfg, context) if layer in counts
                 else float(block_flops(length, cfg)) for layer in range(cfg.n_layers))
    return blocks + head_flops(length, cfg)


def build_router(cfg: TrainConfig, vocab_size: int | None = None) -> Router:
    """The run's router alone (no model), in training mode; built without touching the global RNG."""
    model_cfg = ModelConfig(**{**to_dict(cfg.model), "vocab_size": vocab_size or cfg.vocab_size})
    try:
        router = make_router(model_cfg, cfg.router, cfg.capacity, cfg.route_every, **cfg.router_options)
        return router.train()
    except TypeError as e:
        raise ConfigError(f"invalid router_options for {cfg.router!r}: {e}") from None


def train_flops_per_step(cfg: TrainConfig, vocab_size: int | None = None) -> float:
    """Analytic training FLOPs of one optimizer step of this run (batch_size × seq_len tokens), averaged
    over its `cfg.steps` steps, so steps × this = the run's planned training FLOPs.

    The average matters only where the cost follows the schedule: a capacity curriculum (the effective
    capacity of each step, as `train` sets progress = step/steps) and early exit's rotation (the router
    plans which layers its exit loss reads out). `vocab_size` is the data's (default: `cfg.vocab_size`)."""
    router = build_router(cfg, vocab_size)
    batch, length, steps = cfg.batch_size, cfg.seq_len, cfg.steps
    total, step = 0.0, 0
    if router.curriculum > 0 and router.capacity < 1.0:
        while step < steps and step / steps < router.curriculum:
            router.set_progress(step / steps)
            total += _forward_per_sample(router, length)
            step += 1
    router.set_progress(1.0)
    total += (steps - step) * _forward_per_sample(router, length)
    total += router.training_readouts(steps) * head_flops(length, router.cfg)
    return batch * (3.0 * total / steps + length * router.training_flops_per_token(steps))
