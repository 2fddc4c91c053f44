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
from .routing.base import capacity_count
from .routing.early_exit import EarlyExitRouter
from .routing.layerdrop import LayerDropRouter, drop_probabilities
from .routing.mod import MoDRouter
from .routing.mor import MoRRouter
from .routing.probe import FrozenProbeRouter, ProbeRouter
from .routing.random import RandomRouter

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
    """Head passes over the batch that early exit's loss made in the last training forward (else 0)."""
    return len(router.hidden) if isinstance(router, EarlyExitRouter) and router.training else 0


def train_step_flops(model, out, seq_len: int) -> float:
    """Analytic FLOPs of the training step whose forward produced `out`: 3 × (the forward of the blocks
    each sample ran, the head, the router's weight matmuls, and early exit's exit-loss read-outs).

    Only the router's weights count (`Router.flops_per_token` of the base class), not what a subclass adds
    for inference alone: early exit's confidence read-out is not run in training. Other routers add
    nothing, so for them this is exactly 3 × `output_flops`."""
    router = model.router
    forward = forward_flops(model.cfg, out.layer_counts, Router.flops_per_token(router), seq_len,
                            router.propagates_state)
    batch = out.layer_counts.shape[0]
    return 3.0 * (forward + exit_readouts(router) * batch * head_flops(seq_len, model.cfg))


def _expected_block(mean: float, var: float, cfg: ModelConfig) -> float:
    """E[block_flops(n)] for a token count n with this mean and variance: block_flops is quadratic in n,
    so the two-point average at mean ± std is exact."""
    std = math.sqrt(max(var, 0.0))
    return 0.5 * (float(block_flops(mean + std, cfg)) + float(block_flops(mean - std, cfg)))


def _routed_counts(router: Router, length: int) -> dict[int, tuple[float, float]]:
    """Mean and variance of the tokens per sample each routed block runs in a training step, under the
    router's training rule at its effective capacity (exact for top-k routers and the random-drop ones;
    an assumption — the learned fraction sits at its target — for probe and threshold)."""
    c, layers, n = router.effective_capacity, router.routed_layers, len(router.routed_layers)
    if isinstance(router, MoRRouter):  # nested top-k: the depth's scheduled capacity, exactly
        return {layer: (float(capacity_count(router.depth_capacity(d), length)), 0.0)
                for d, layer in enumerate(layers)}
    if isinstance(router, MoDRouter | RandomRouter):  # top-k: exactly ceil(c·T) per sample
        return {layer: (float(capacity_count(c, length)), 0.0) for layer in layers}
    if isinstance(router, LayerDropRouter):  # per-token Bernoulli(1 − p_j): binomial counts
        keep = [1.0 - p for p in drop_probabilities(c, n)]
        return {layer: (q * length, length * q * (1 - q)) for layer, q in zip(layers, keep, strict=True)}
    if isinstance(router, EarlyExitRouter):  # per-sample layer dropout: the whole sequence or nothing
        last = max(1, router.cfg.n_layers - 1)
        keep = {layer: 1.0 - router.max_layer_dropout * layer / last for layer in layers}
        return {layer: (q * length, length * length * q * (1 - q)) for layer, q in keep.items()}
    if isinstance(router, FrozenProbeRouter):  # the untrained probe scores ≈ 0.5: run iff 0.5 > i/L
        half = {layer: layer / router.cfg.n_layers for layer in layers}
        return {layer: ((1.0 if t < 0.5 else 0.5 if t == 0.5 else 0.0) * length, 0.0)
                for layer, t in half.items()}
    if isinstance(router, ProbeRouter):  # s > 0 always: a block at threshold 0 runs every token; the
        # rest of the budget (mean fraction c over routed blocks) is spread evenly over the others
        first = [layer for layer in layers if layer == 0]
        rest = n - len(first)
        share = min(1.0, max(0.0, (c * n - len(first)) / rest)) if rest else 0.0
        return {layer: ((1.0 if layer == 0 else share) * length, 0.0) for layer in layers}
    # threshold (each gate's own budget term pulls its fraction to c), and any router not modelled above
    return {layer: (c * length, 0.0) for layer in layers}


def _forward_per_sample(router: Router, length: int) -> float:
    """Expected forward FLOPs of one sample in a training step, exit-loss read-outs excluded."""
    cfg = router.cfg
    counts = _routed_counts(router, length)
    blocks = sum(_expected_block(*counts[layer], cfg) if layer in counts else float(block_flops(length, cfg))
                 for layer in range(cfg.n_layers))
    return blocks + head_flops(length, cfg) + length * Router.flops_per_token(router)


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
    capacity of each step, as `train` sets progress = step/steps) and early exit's rotation (which layers
    its exit loss reads out, by phase = step + 1). `vocab_size` is the data's (default: `cfg.vocab_size`)."""
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
    if isinstance(router, EarlyExitRouter) and router.exit_loss_weight > 0:
        rotation = router.rotation  # layer l is read out when (l + phase) % rotation == 0
        readouts = sum((steps + layer) // rotation - layer // rotation
                       for layer in router.routed_layers if layer > 0)
        total += readouts * head_flops(length, router.cfg)
    return 3.0 * batch * total / steps
