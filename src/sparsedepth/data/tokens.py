"""Prepared token files, loaded and checked: a truncated or foreign file is a one-line DataError naming it,
found here rather than as an IndexError deep inside the model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer

from .base import SPLITS, DataError, one_line
from .preparation import TOKEN_FILES


def _load_array(path: Path, vocab_size: int) -> np.ndarray:
    """A memory-mapped 1-D uint16 token array whose ids are all in the vocabulary."""
    try:
        tokens = np.load(path, mmap_mode="r")
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy token file ({one_line(exc)}); delete "
                        f"{path.parent} and prepare it again") from None
    if tokens.dtype != np.uint16 or tokens.ndim != 1:
        raise DataError(f"{path}: expected 1-D uint16 token ids, got {tokens.ndim}-D {tokens.dtype}")
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise DataError(f"{path}: token id {int(tokens.max())} is outside the vocabulary of {vocab_size} "
                        f"ids in {path.parent / 'tokenizer.json'}")
    return tokens


def _load_tokenizer(path: Path) -> Tokenizer:
    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception for any parse error
        raise DataError(f"{path}: not a valid tokenizer file ({one_line(exc)}); delete {path.parent} and "
                        "prepare it again") from None


def _load_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not valid JSON ({one_line(exc)})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("eot_id"), int):
        raise DataError(f"{path}: expected a JSON object with an integer 'eot_id'")
    return meta


@dataclass
class TokenData:
    """Prepared token files, memory-mapped so large corpora cost no RAM until sampled."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    tokenizer: Tokenizer
    meta: dict[str, Any]

    @classmethod
    def load(cls, out_dir: str | Path) -> TokenData:
        path = Path(out_dir)
        missing = [f for f in TOKEN_FILES if not (path / f).is_file()]
        if missing:
            raise DataError(
                f"no prepared data in {path} (missing {', '.join(missing)}); run "
                f"sparsedepth.data.prepare(<dataset>, {str(path)!r}) or the workflow's data rule first"
            )
        meta = _load_meta(path / "meta.json")
        tokenizer = _load_tokenizer(path / "tokenizer.json")
        vocab = tokenizer.get_vocab_size()
        arrays = {s: _load_array(path / f"{s}.npy", vocab) for s in SPLITS}
        return cls(**arrays, tokenizer=tokenizer, meta=meta)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    @property
    def eot_id(self) -> int:
        return int(self.meta["eot_id"])

    def split(self, name: str) -> np.ndarray:
        if name not in SPLITS:
            raise KeyError(f"unknown split {name!r}; expected one of {SPLITS}")
        return getattr(self, name)
