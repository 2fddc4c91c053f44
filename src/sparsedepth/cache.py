"""Compact per-layer key/value cache for routed decoding.

Each block caches keys/values only for the tokens that ran it, so a sample's cache length differs per
block and per sample: a skipped token is simply absent as a key in the blocks it skipped, exactly as in
the full forward pass. Storage is sized by use, per block: it starts empty and grows by whole pages of
`PAGE` token slots (capped at `max_seq_len`) only when a block's longest row needs it, so a block that most
tokens skip holds a few pages where a dense one holds the whole sequence, and no block holds more than a
page it does not use.
One spare "scratch" slot past the capacity takes the writes of padded (invalid) gathered entries, so
appending needs no host sync beyond the one that sizes the attention window.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

PAGE = 16  # token slots a block's storage grows by


class LayerCache:
    def __init__(self, k: Tensor, v: Tensor, lengths: Tensor, max_len: int | None = None):
        self.k, self.v, self.lengths = k, v, lengths  # [B, H, capacity+1, D] ×2, [B]
        self.max_len = max_len  # growth stops here (None: unbounded)

    @property
    def capacity(self) -> int:
        return self.k.shape[2] - 1

    def nbytes(self) -> int:
        """Bytes of key/value storage allocated (scratch slot included)."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def reserve(self, needed: int) -> None:
        """Make room for `needed` tokens in every row: the fewest whole pages that hold them. Growing by a
        page, not geometrically, wastes < one page per block and row; the price is a copy of the block's
        cache every `PAGE` decoded tokens, 1/PAGE of the keys/values attention reads over those tokens."""
        if needed <= self.capacity:
            return
        size = -(-needed // PAGE) * PAGE
        if self.max_len is not None:
            size = max(needed, min(size, self.max_len))
        B, H, _, D = self.k.shape
        k, v = self.k.new_zeros(B, H, size + 1, D), self.v.new_zeros(B, H, size + 1, D)
        k[:, :, :self.capacity] = self.k[:, :, :self.capacity]
        v[:, :, :self.capacity] = self.v[:, :, :self.capacity]
        self.k, self.v = k, v

    def extend(self, k: Tensor, v: Tensor, valid: Tensor | None, query_offsets: Tensor | None = None,
               rows: Tensor | slice | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Append new keys/values (the valid ones form a prefix of each row) and return the keys, values
        and the mask [B, Q, S] under which query i sees the cache plus new keys 0..offset_i (offset_i = i
        unless the queries are a subset of the new keys, as under state propagation). `rows`: the new
        keys belong to these samples only; they are written in place and only these rows are read (a
        slice: see `_extend_slice`)."""
        # under bf16 autocast the projections are bf16 and the cache keeps the parameters' dtype
        if k.dtype != self.k.dtype:
            k, v = k.to(self.k.dtype), v.to(self.v.dtype)
        B, H, K, D = k.shape
        if K == 1 and valid is None and query_offsets is None and (rows is None or isinstance(rows, slice)):
            return self._extend_slice(k, v, slice(0, B) if rows is None else rows)  # decoding a step
        if isinstance(rows, slice):
            rows = torch.arange(rows.start, rows.stop, rows.step or 1, device=k.device)
        lengths = self.lengths if rows is None else self.lengths.index_select(0, rows)
        limit = int(lengths.max()) + K
        self.reserve(limit)
        steps = torch.arange(K, device=k.device)
        slots = lengths.unsqueeze(1) + steps  # [B, K]
        if valid is not None:
            slots = torch.where(valid, slots, self.capacity)  # padding → scratch slot
        if rows is None:
            index = slots[:, None, :, None].expand(B, H, K, D)
            self.k.scatter_(2, index, k)
            self.v.scatter_(2, index, v)
            keys, values = self.k[:, :, :limit], self.v[:, :, :limit]
        else:
            self.k[rows.unsqueeze(1), :, slots] = k.transpose(1, 2)  # [R, K, H, D] at (row, slot)
            self.v[rows.unsqueeze(1), :, slots] = v.transpose(1, 2)
            keys = self.k[:, :, :limit].index_select(0, rows)
            values = self.v[:, :, :limit].index_select(0, rows)
        offsets = steps if query_offsets is None else query_offsets
        mask = torch.arange(limit, device=k.device) < (lengths.unsqueeze(1) + offsets + 1).unsqueeze(-1)
        counts = lengths.new_full((B,), K) if valid is None else valid.sum(1)
        if rows is None:
            self.lengths += counts
        else:
            self.lengths.index_add_(0, rows, counts)
        return keys, values, mask

    def _extend_slice(self, k: Tensor, v: Tensor, rows: slice) -> tuple[Tensor, Tensor, Tensor]:
        """`extend` for one new key per sample of `rows`, evenly spaced samples (every sample: a decoding
        step; a few: a routed block at decode mostly runs one or two samples of the batch). The model is
        small enough that per-op overhead, not FLOPs, is the cost, so this takes views where `extend`
        indexes: the rows' cache is written in place and read as a strided view (no copy), and one sample's
        query, which sees its whole row, gets an additive zero mask (a bool one costs SDPA three more ops to
        convert)."""
        R, H, _, D = k.shape
        lengths = self.lengths[rows]  # a view: used before it is advanced, last
        limit = int(lengths.max()) + 1
        self.reserve(limit)
        cached_k, cached_v = self.k[rows], self.v[rows]
        index = lengths.view(R, 1, 1, 1).expand(R, H, 1, D)
        cached_k.scatter_(2, index, k)
        cached_v.scatter_(2, index, v)
        if R == 1:
            mask = k.new_zeros(1, 1, limit)
        else:
            mask = torch.arange(limit, device=k.device) <= lengths.view(R, 1, 1)
        lengths.add_(1)
        return cached_k[:, :, :limit], cached_v[:, :, :limit], mask

    @classmethod
    def stack(cls, layers: Sequence[LayerCache]) -> LayerCache:
        """Rows of several caches as one batch, at the largest row's capacity."""
        size = max(c.capacity for c in layers)
        for c in layers:
            c.reserve(size)
        return cls(torch.cat([c.k[:, :, :size + 1] for c in layers]),
                   torch.cat([c.v[:, :, :size + 1] for c in layers]),
                   torch.cat([c.lengths for c in layers]), layers[0].max_len)


class RowsCache:
    """Samples `rows` of a LayerCache, for a block that runs on those samples only: appends go straight into
    their rows (no copy of the cache in and out)."""

    def __init__(self, cache: LayerCache, rows: Tensor | slice):
        self.cache, self.rows = cache, rows

    def extend(self, k: Tensor, v: Tensor, valid: Tensor | None,
               query_offsets: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        return self.cache.extend(k, v, valid, query_offsets, self.rows)


class KVCache:
    """One LayerCache per block plus each sample's next position."""

    def __init__(self, layers: list[LayerCache], positions: Tensor):
        self.layers, self.positions = layers, positions
        self._share_lengths(torch.stack([c.lengths for c in layers], dim=1))

    def _share_lengths(self, lengths: Tensor) -> None:
        """Every block's lengths become column i of one [B, L] tensor (views: appends still advance them in
        place), so `lengths()` and `rollback` are one op each rather than one per block; self-speculation
        reads them several times a round, and decoding a small model pays per op."""
        self._lengths = lengths
        for i, c in enumerate(self.layers):
            c.lengths = lengths[:, i]

    @classmethod
    def empty(cls, model, batch: int) -> KVCache:
        """No token slots yet: each block's storage grows as tokens run it."""
        cfg = model.cfg
        p = next(model.parameters())
        shape = (batch, cfg.n_heads, 1, cfg.d_model // cfg.n_heads)  # just the scratch slot
        layers = [
            LayerCache(p.new_zeros(shape), p.new_zeros(shape),
                       torch.zeros(batch, dtype=torch.long, device=p.device), cfg.max_seq_len)
            for _ in range(cfg.n_layers)
        ]
        return cls(layers, torch.zeros(batch, dtype=torch.long, device=p.device))

    @classmethod
    def stack(cls, caches: Sequence[KVCache]) -> KVCache:
        """One batched cache from caches filled separately (e.g. prompts of different lengths)."""
        layers = [LayerCache.stack(group) for group in zip(*(c.layers for c in caches), strict=True)]
        return cls(layers, torch.cat([c.positions for c in caches]))

    def rollback(self, lengths: Tensor, positions: Tensor) -> None:
        """Forget what was cached past `lengths` ([B, L]: per sample, per block) and move each sample's next
        position back to `positions` ([B]), e.g. for drafted tokens that verification rejected. Exact for the
        compact cache whatever each block cached: a block appends a sample's tokens in order, so the kept
        tokens are a prefix of its rows. The forgotten slots stay in place (attention never reads past a
        row's length, and the next tokens overwrite them)."""
        self._lengths.copy_(lengths)
        self.positions.copy_(positions)

    def select(self, rows: Tensor) -> None:
        """Keep samples `rows` only, in that order (finished samples leave a batch; beams are reordered)."""
        for c in self.layers:
            c.k, c.v = c.k[rows], c.v[rows]
        self._share_lengths(self._lengths[rows])
        self.positions = self.positions[rows]

    def lengths(self) -> Tensor:
        """[B, L] cached tokens per sample per block (= tokens that ran it)."""
        return self._lengths.clone()

    def nbytes(self) -> int:
        """Bytes of key/value storage allocated over every block and sample."""
        return sum(c.nbytes() for c in self.layers)
