"""Atomic output files: write beside the target, then rename, so a killed job never leaves a half-written
table that a later step (or Snakemake) would take for a finished one. A failed write (disk full) removes
its temporary file and raises OSError naming the target.

`fault_point` is the test hook that lets tests/test_faults.py kill a job exactly where a crash hurts."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd


def write_with(out: str | Path, write: Callable[[Path], object]) -> Path:
    """`write(tmp)` fills a sibling of `out`, which then replaces `out` (e.g. a figure's `savefig`)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        write(tmp)
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {out}: {e.strerror or e}") from e
    return out


def fsync_dir(directory: str | Path) -> None:
    """Make renames inside `directory` durable (a crash of the machine, not just the job)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(data: bytes, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise OSError(e.errno, f"cannot write {out}: {e.strerror or e}") from e
    return out


def write_text(text: str, out: str | Path) -> Path:
    return write_bytes(text.encode(), out)


def write_csv(table: pd.DataFrame, out: str | Path) -> Path:
    return write_text(table.to_csv(index=False), out)


_hits: dict[str, int] = {}


def fault_point(name: str) -> None:
    """Test hook: SIGKILL this process here when the environment variable SPARSEDEPTH_FAULT is `name`
    (first time reached) or `name@n` (n-th time). Unset, it costs one dictionary lookup."""
    want = os.environ.get("SPARSEDEPTH_FAULT")
    if not want or want.split("@")[0] != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    nth = int(want.split("@")[1]) if "@" in want else 1
    if _hits[name] == nth:
        os.kill(os.getpid(), 9)
