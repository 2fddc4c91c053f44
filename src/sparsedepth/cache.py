"""Per-layer key/value cache for routed decoding.

Each block caches keys/values only for the tokens that ran it, so a sample's cache length differs per
block and per sample: a skipped token is simply absent as a key in the blocks it skipped, exactly as in
the full forward pass. Buffers are preallocated with one spare "scratch" slot that padded (invalid)
gathered entries are written to, so appending needs no host sync.
"""

from __future__ import annotations

import torch
from torch import Tensor


class LayerCache:
    def __init__(self, k: Tensor, v: Tensor, lengths: Tensor):
        self.k, self.v, self.lengths = k, v, lengths  # [B, H, S+1, D] ×2, [B]

    @property
    def capacity(self) -> int:
        return self.k.shape[2] - 1

    def extend(self, k: Tensor, v: Tensor, valid: Tensor | None,
               query_offsets: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Append new keys/values (the valid ones form a prefix of each row) and return the keys, values
        and the mask [B, Q, S] under which query i sees the cache plus new keys 0..offset_i (offset_i = i
        unless the queries are a subset of the new keys, as under state propagation)."""
        B, H, K, D = k.shape
        steps = torch.arange(K, device=k.device)
        slots = self.lengths.unsqueeze(1) + steps  # [B, K]
        if valid is not None:
            slots = torch.where(valid, slots, self.capacity)  # padding → scratch slot
        index = slots.clamp(max=self.capacity)[:, None, :, None].expand(B, H, K, D)
        self.k.scatter_(2, index, k)
        self.v.scatter_(2, index, v)
        limit = int(self.lengths.max()) + K
        keys = torch.arange(limit, device=k.device)
        offsets = steps if query_offsets is None else query_offsets
        mask = keys < (self.lengths.unsqueeze(1) + offsets + 1).unsqueeze(-1)
        counts = K if valid is None else valid.sum(1)
        self.lengths += counts
        return self.k[:, :, :limit], self.v[:, :, :limit], mask


class KVCache:
    """One LayerCache per block plus each sample's next position."""

    def __init__(self, layers: list[LayerCache], positions: Tensor):
        self.layers, self.positions = layers, positions

    @classmethod
    def empty(cls, model, batch: int) -> KVCache:
        cfg = model.cfg
        p = next(model.parameters())
        shape = (batch, cfg.n_heads, cfg.max_seq_len + 1, cfg.d_model // cfg.n_heads)
        layers = [
            LayerCache(p.new_zeros(shape), p.new_zeros(shape),
                       torch.zeros(batch, dtype=torch.long, device=p.device))
            for _ in range(cfg.n_layers)
        ]
        return cls(layers, torch.zeros(batch, dtype=torch.long, device=p.device))

    def row(self, b: int) -> KVCache:
        """A view of sample b's cache (writes go through), for prefilling prompts of different lengths."""
        sl = slice(b, b + 1)
        return KVCache([LayerCache(c.k[sl], c.v[sl], c.lengths[sl]) for c in self.layers], self.positions[sl])

    def lengths(self) -> Tensor:
        """[B, L] cached tokens per sample per block (= tokens that ran it)."""
        return torch.stack([c.lengths for c in self.layers], dim=1)
