"""The identity of a corpus source, recorded beside prepared data so it is never reused for another source.

Prepared token files live at ``{data_dir}/{dataset}-v{vocab}``, a name that says nothing about which file
or directory the text came from. Two runs with different ``data_path`` into one ``data_dir`` must not share
them, so `prepare` writes ``source.json`` (dataset, absolute location, per-file size/mtime and a sha256 of
the content) and every later use checks it. The identity is the content: a source that moved but holds the
same bytes is the same corpus. A different source is refused (one line naming both), never silently reused
or overwritten, because finished runs may already point at the prepared directory. Checking is cheap: when
the location and every file's size and mtime are unchanged nothing is hashed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import DataError

SOURCE_FILE = "source.json"


@dataclass(frozen=True)
class Source:
    """Where a corpus is read from: local `files` at `location` (a file or directory), or a hub dataset
    (`location` ``hf://datasets/...``, no files)."""

    dataset: str
    location: str
    files: tuple[Path, ...] = ()

    def names(self) -> list[str]:
        """File names relative to the location ("" for a single file), so a moved copy hashes the same."""
        root = Path(self.location)
        return ["" if p == root else p.relative_to(root).as_posix() for p in self.files]


def local_source(dataset: str, location: Path, files: list[Path] | tuple[Path, ...]) -> Source:
    return Source(dataset, str(location.resolve()), tuple(Path(f).resolve() for f in files))


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def content_sha256(source: Source) -> str | None:
    """One sha256 over every file's relative name and content hash; None for a hub source."""
    if not source.files:
        return None
    digest = hashlib.sha256()
    for name, path in sorted(zip(source.names(), source.files, strict=True)):
        digest.update(f"{name}\0{_file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _stats(source: Source) -> list[dict[str, Any]]:
    out = []
    for name, path in zip(source.names(), source.files, strict=True):
        st = path.stat()
        out.append({"name": name, "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    return out


def manifest(source: Source, sha256: str | None = None) -> dict[str, Any]:
    """What `prepare` records in ``source.json`` (`sha256`: the content hash, if already computed)."""
    return {"dataset": source.dataset, "location": source.location,
            "sha256": sha256 or content_sha256(source), "files": _stats(source)}


def write_manifest(out_dir: Path, record: dict[str, Any]) -> None:
    tmp = out_dir / f".{SOURCE_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, out_dir / SOURCE_FILE)


def read_manifest(out_dir: Path) -> dict[str, Any] | None:
    try:
        record = json.loads((out_dir / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _short(sha: str | None) -> str:
    return f"sha256 {sha[:12]}…" if sha else "the hub"


def check_source(out_dir: Path, source: Source, record: dict[str, Any]) -> None:
    """Raise a DataError unless `record` (read from `out_dir`) describes the same corpus as `source`."""
    if record.get("location") == source.location and record.get("files") == _stats(source):
        return  # unchanged: no hashing
    sha = content_sha256(source)
    same = sha == record.get("sha256") and (sha is not None or record.get("location") == source.location)
    if same:
        with contextlib.suppress(OSError):  # refresh the fast path; a read-only data dir re-hashes next time
            write_manifest(out_dir, manifest(source, sha))
        return
    raise DataError(
        f"{out_dir} holds {source.dataset} prepared from {record.get('location')} "
        f"({_short(record.get('sha256'))}), not from {source.location} ({_short(sha)}); use another "
        f"--data-dir for this source, or delete {out_dir} to prepare it again"
    )
