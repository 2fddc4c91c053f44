"""Atomic output files: write beside the target, then rename, so a killed job never leaves a half-written
table that a later step (or Snakemake) would take for a finished one."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd


def write_with(out: str | Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a sibling of `out`, which then replaces `out` (e.g. a figure's `savefig`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    write(tmp)
    tmp.replace(out)
    return out


def write_text(text: str, out: str | Path) -> Path:
    return write_with(out, lambda tmp: tmp.write_text(text))


def write_csv(table: pd.DataFrame, out: str | Path) -> Path:
    return write_text(table.to_csv(index=False), out)
