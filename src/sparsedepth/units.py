"""Documents, segments and UTF-8 bytes of evaluation text.

Loss per token depends on the tokenizer, loss per byte does not, so bits per byte compares runs across
vocabularies; and per-document totals let statistics resample documents (the independent units of a
document-level split) instead of tokens, which are strongly correlated within a document.

Conventions, shared by `evaluate` and the units CSV:

* A split is documents joined by EOT (between documents, none at the ends; see `data.encode_documents`).
  An EOT belongs to the document it *ends*: document k is its own tokens followed by its EOT, so the cost
  of predicting "this document is over" is charged to that document. The last document has no EOT.
* EOT and other special tokens stand for 0 bytes: they are not text.
* Targets are split positions 1..M (position 0 is never predicted), as `data.eval_batches` scores them.
* A segment is a block of `segment_tokens` consecutive targets: targets [s·S, (s+1)·S) form segment s.
* A unit is one (document, segment) intersection: the finest grain both groupings are sums of.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tokenizers import Tokenizer, decoders

UNIT_COLUMNS = ["doc", "segment", "nats", "tokens", "bytes"]


def byte_alphabet() -> dict[str, int]:
    """GPT-2's byte↔unicode map as `tokenizers`' ByteLevel uses it: character → the byte it stands for.

    Printable bytes map to themselves; the other 68 are shifted to U+0100.. so that no token string holds
    whitespace or control characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    chars = {chr(b): b for b in printable}
    for n, b in enumerate(sorted(set(range(256)) - set(printable))):
        chars[chr(256 + n)] = b
    return chars


def token_byte_lengths(tokenizer: Tokenizer) -> np.ndarray:
    """UTF-8 bytes each token id stands for, as an int64 array over the whole vocabulary.

    Read from the token strings, not from ``decode([id])``: a token holding part of a multi-byte character
    decodes to U+FFFD (3 bytes) whatever its real length. Special tokens count 0 bytes; other added
    tokens are plain text and count their own UTF-8 length."""
    if not isinstance(tokenizer.decoder, decoders.ByteLevel):
        raise ValueError(f"expected a byte-level BPE tokenizer, got decoder {tokenizer.decoder!r}")
    alphabet = byte_alphabet()
    size = tokenizer.get_vocab_size(with_added_tokens=True)
    lengths = np.full(size, -1, dtype=np.int64)
    added = tokenizer.get_added_tokens_decoder()
    for token, i in tokenizer.get_vocab(with_added_tokens=True).items():
        if i in added:
            lengths[i] = 0 if added[i].special else len(token.encode("utf-8"))
        elif all(ch in alphabet for ch in token):
            lengths[i] = len(token)  # one character per byte
        else:
            raise ValueError(f"token {i} ({token!r}) has characters outside the byte-level alphabet")
    if (lengths < 0).any():
        raise ValueError(f"token ids {np.flatnonzero(lengths < 0)[:5].tolist()}... are not in the vocabulary")
    return lengths


def document_ids(tokens: np.ndarray, eot_id: int) -> np.ndarray:
    """Document index (0-based, from the split's start) of every position; an EOT ends its document."""
    is_eot = np.asarray(tokens) == eot_id
    return np.cumsum(is_eot, dtype=np.int64) - is_eot


def unit_table(
    nats: np.ndarray, tokens: np.ndarray, eot_id: int, byte_lengths: np.ndarray, segment_tokens: int = 2048
) -> pd.DataFrame:
    """One row per (document, segment) unit of the scored targets, in order, with columns `UNIT_COLUMNS`.

    `nats[j]` is the loss of target position j + 1 of `tokens`. Rows are contiguous runs of targets, so
    summing by doc, by segment or over all rows gives exactly those totals (nats up to float64 rounding)."""
    if segment_tokens < 1:
        raise ValueError(f"segment_tokens must be >= 1, got {segment_tokens}")
    nats = np.asarray(nats, dtype=np.float64)
    n = len(nats)
    if len(tokens) < n + 1:
        raise ValueError(f"{n} target losses need at least {n + 1} tokens, got {len(tokens)}")
    if not np.isfinite(nats).all():
        raise ValueError(f"non-finite loss at target {int(np.flatnonzero(~np.isfinite(nats))[0])}")
    if n == 0:
        return pd.DataFrame({c: np.zeros(0, np.float64 if c == "nats" else np.int64) for c in UNIT_COLUMNS})
    targets = np.asarray(tokens[1 : n + 1]).astype(np.int64)
    doc = document_ids(tokens[: n + 1], eot_id)[1:]
    segment = np.arange(n, dtype=np.int64) // segment_tokens
    starts = np.flatnonzero(np.r_[True, (doc[1:] != doc[:-1]) | (segment[1:] != segment[:-1])])
    return pd.DataFrame({
        "doc": doc[starts],
        "segment": segment[starts],
        "nats": np.add.reduceat(nats, starts),
        "tokens": np.diff(np.r_[starts, n]),
        "bytes": np.add.reduceat(byte_lengths[targets], starts),
    })
