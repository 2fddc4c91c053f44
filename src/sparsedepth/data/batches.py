"""Batches from token arrays: random training windows (reproducible from a generator) and contiguous
evaluation windows that score every token of a split once."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor


def _check_length(tokens: np.ndarray, seq_len: int) -> None:
    if len(tokens) < seq_len + 1:
        raise ValueError(f"split has {len(tokens)} tokens, need at least seq_len + 1 = {seq_len + 1}")


def _windows(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> tuple[Tensor, Tensor]:
    """Gather ``[start, start + seq_len]`` windows (works on memmaps) and split into inputs and targets."""
    idx = starts[:, None] + np.arange(seq_len + 1)
    block = torch.from_numpy(np.asarray(tokens[idx], dtype=np.int64))
    return block[:, :-1], block[:, 1:]


def sample_batch(
    tokens: np.ndarray, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Random training windows: x ``[B, T]`` int64 and y = x shifted by one; reproducible from `generator`."""
    _check_length(tokens, seq_len)
    starts = torch.randint(len(tokens) - seq_len, (batch_size,), generator=generator, device=generator.device)
    return _windows(tokens, starts.cpu().numpy(), seq_len)


def eval_batches(
    tokens: np.ndarray, batch_size: int, seq_len: int, max_batches: int | None = None
) -> Iterator[tuple[Tensor, Tensor]]:
    """Contiguous, non-overlapping windows from the start of the split; the last batch may be smaller.

    Window i predicts tokens ``i*T+1 .. (i+1)*T``, so together they score every token once (but the first).
    """
    _check_length(tokens, seq_len)
    n_windows = (len(tokens) - 1) // seq_len
    starts = np.arange(n_windows, dtype=np.int64) * seq_len
    for i, lo in enumerate(range(0, n_windows, batch_size)):
        if max_batches is not None and i >= max_batches:
            return
        yield _windows(tokens, starts[lo : lo + batch_size], seq_len)
