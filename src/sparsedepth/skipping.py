"""Hard skipping: a routed block runs on the tokens its router keeps, gathered per sample, and its output
is scattered back; padded batches are packed so padding runs no block.

Apart from `model.py` so that file stays the one readable model; these are the mechanics of gathering.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .cache import LayerCache, RowsCache
from .routing import Decision

if TYPE_CHECKING:
    from .model import Block, Rotary


def gather_plan(decision: Decision, minimum: int = 0) -> tuple[Tensor, Tensor | None]:
    """Positions to gather per sample ([B, K], ascending) and which of them are real (None: all are).

    Variable-count routers need K = the largest count in the batch: one device→host sync per routed
    block. Fixed-count (top-k) routers hand over their index and need none.
    """
    if decision.index is not None:
        return decision.index, None
    mask = decision.mask
    counts = mask.sum(dim=1)
    width = max(int(counts.max()), minimum)
    order = torch.sort((~mask).to(torch.int8), dim=1, stable=True).indices[:, :width]
    valid = torch.arange(width, device=mask.device) < counts.unsqueeze(1)
    return order, valid


def apply_routed(block: Block, h: Tensor, decision: Decision, rope: Rotary, positions: Tensor,
                 cache: LayerCache | None = None, real: Tensor | None = None) -> Tensor:
    """Hard skipping: the block runs on the gathered tokens only, and its output is scattered back.

    `positions` is [T] (a fresh sequence) or [B, T] (continuing a cache); gathered tokens keep theirs.
    `real` ([B, T], a prefix per row; None: all) marks the packed batch's real tokens: under state
    propagation only they are cached as context keys (without a cache, padding is after them anyway)."""
    propagate = decision.propagate
    if cache is not None and not propagate and decision.index is None and h.shape[1] == 1:
        return _decode_one(block, h, decision, rope, positions, cache)
    # with a cache, a propagating block must run (≥ 1 padded query) to append the context's keys/values
    index, valid = gather_plan(decision, minimum=1 if propagate and cache is not None else 0)
    if index.shape[1] == 0:
        return h
    if cache is not None and valid is not None and not propagate:
        rows = valid[:, 0].nonzero().squeeze(1)  # samples that keep a token (valid is a prefix)
        if rows.numel() < h.shape[0]:
            return _apply_rows(block, h, rows, index[rows], valid[rows], decision, rope, positions, cache)
    index3 = index.unsqueeze(-1).expand(-1, -1, h.shape[-1])
    kept_positions = index if positions.dim() == 1 else positions.gather(1, index)
    context = dict(context=h, context_positions=positions, query_offsets=index) if propagate else {}
    delta = block.residual(h.gather(1, index3), rope, kept_positions, cache=cache,
                           valid=real if propagate else valid, **context)
    weight = decision.gate.gather(1, index)
    if valid is not None:
        weight = weight * valid
    return h.scatter_add(1, index3, (delta * weight.unsqueeze(-1).to(delta.dtype)).to(h.dtype))  # autocast


def _decode_one(block: Block, h: Tensor, decision: Decision, rope: Rotary, positions: Tensor,
                cache: LayerCache) -> Tensor:
    """One new token per sample (batched decoding): the samples whose token runs the block are found with
    one sync and run alone, without a gather plan; when all run, no gather at all."""
    ran = decision.mask[:, 0]
    picked = [i for i, run in enumerate(ran.tolist()) if run]  # the one sync
    if not picked:
        return h
    if len(picked) == ran.shape[0]:
        delta = block.residual(h, rope, positions, cache=cache)
        return h + (delta * decision.gate.unsqueeze(-1).to(delta.dtype)).to(h.dtype)
    step = picked[1] - picked[0] if len(picked) > 1 else 1
    if picked == list(range(picked[0], picked[-1] + 1, step)):  # always so for one or two samples
        rows: Tensor | slice = slice(picked[0], picked[-1] + 1, step)
    else:
        rows = torch.tensor(picked, device=h.device)
    return _apply_rows(block, h, rows, None, None, decision, rope, positions, cache)


def _apply_rows(block: Block, h: Tensor, rows: Tensor | slice, index: Tensor | None, valid: Tensor | None,
                decision: Decision, rope: Rotary, positions: Tensor, cache: LayerCache) -> Tensor:
    """Cached decoding of a batch where only `rows` keep a token: the block runs on those samples alone
    (padding every sample to one token would run the block on the whole batch whenever any sample needs
    it), appending to their cache rows in place. `index`/`valid` are those samples' gather plan; `index`
    None: each keeps its one token (decoding), so there is nothing to gather or scatter, and `rows` may be a
    slice (evenly spaced samples, the usual case), taken as views where indexing would copy: per-op
    overhead, not FLOPs, is what a routed block costs at decode."""
    if index is None:
        sliced = isinstance(rows, slice)
        x = h[rows] if sliced else h.index_select(0, rows)
        kept_positions = positions[rows] if sliced else positions.index_select(0, rows)
        weight = decision.gate[rows] if sliced else decision.gate.index_select(0, rows)
        delta = block.residual(x, rope, kept_positions, cache=RowsCache(cache, rows))
        update = x + (delta * weight.unsqueeze(-1).to(delta.dtype)).to(h.dtype)
        if sliced:
            return h.slice_scatter(update, 0, rows.start, rows.stop, rows.step)
        return h.index_copy(0, rows, update)  # not index_add: on the CPU a scatter_add dearer than the block
    x = h.index_select(0, rows)
    index3 = index.unsqueeze(-1).expand(-1, -1, h.shape[-1])
    kept_positions = positions.index_select(0, rows).gather(1, index)
    delta = block.residual(x.gather(1, index3), rope, kept_positions, cache=RowsCache(cache, rows),
                           valid=valid)
    weight = decision.gate.index_select(0, rows).gather(1, index)
    if valid is not None:
        weight = weight * valid
    update = x.scatter_add(1, index3, (delta * weight.unsqueeze(-1).to(delta.dtype)).to(h.dtype))
    return h.index_copy(0, rows, update)


def apply_masked(block: Block, h: Tensor, decision: Decision, rope: Rotary, positions: Tensor,
                 cache: LayerCache | None = None, real: Tensor | None = None) -> Tensor:
    """Reference (slow) path: full-length compute, skipped tokens masked out as keys and outputs.

    Used by the tests to check `apply_routed` and by benchmarks as the "masked, no savings" ablation.
    """
    if cache is not None or positions.dim() != 1:
        raise NotImplementedError("the masked reference path does not decode with a cache")
    T = h.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=h.device).tril()
    eye = torch.eye(T, dtype=torch.bool, device=h.device)
    keys = decision.mask.unsqueeze(1) | decision.propagate  # propagate: all are keys
    allowed = (causal & keys) | eye  # self-attention keeps skipped rows finite
    delta = block.residual(h, rope, torch.arange(T, device=h.device), allowed)
    weight = decision.gate * decision.mask
    return h + delta * weight.unsqueeze(-1).to(delta.dtype)


def pack_padding(attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per row, the order that puts its real tokens first (stable, so they keep their order) and the packed
    row's real prefix ([B, T] each). Packed, a left-padded batch is right-padded: real tokens sit at positions
    0..n-1 as in their row alone, and padding after them is invisible to causal attention and to the cache
    (it runs no block), so only top-k routers need to know of it (`Router.begin`'s `valid`)."""
    keep = attention_mask.bool()
    order = torch.sort((~keep).to(torch.int8), dim=1, stable=True).indices
    real = torch.arange(keep.shape[1], device=keep.device) < keep.sum(1, keepdim=True)
    return order, real


def unpack(packed: Tensor, order: Tensor) -> Tensor:
    """Inverse of the packing gather: packed[:, j] goes back to column order[:, j]."""
    index = order.view(*order.shape, *([1] * (packed.dim() - 2))).expand_as(packed)
    return torch.empty_like(packed).scatter(1, index, packed)
