"""Analytic matmul FLOPs, counted the way `torch.utils.flop_counter.FlopCounterMode` counts them.

Forward FLOPs of one block on a sequence of n tokens (2 FLOPs per multiply-add, norms and softmax ignored):
  projections  2·n·d²·(4 + 2·r)    (q, k, v, out: 4d²; MLP: 2·r·d²)
  attention    4·n²·d              (QKᵀ and AV; SDPA is counted over the full n×n square)
A routed block's n is the number of tokens it gathered, which is where hard skipping saves compute.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from .config import ModelConfig


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
                         getattr(router, "propagates_state", False))


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
