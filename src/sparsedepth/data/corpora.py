"""The registry of corpora: a name → its loader (text as document-level splits) and its source (which files
or hub dataset it reads, for the prepared-data manifest)."""

from __future__ import annotations

from collections.abc import Callable

from .base import SPLITS, DataError, datasets
from .enwik8 import enwik8_source, load_enwik8
from .hub import load_tinystories, load_wikitext2, tinystories_source, wikitext2_source
from .local import (
    load_shakespeare,
    load_tinyshakespeare,
    load_wikipedia,
    shakespeare_source,
    tinyshakespeare_source,
    wikipedia_source,
)
from .source import Source

CORPORA: dict[str, Callable[..., datasets.DatasetDict]] = {
    "shakespeare": load_shakespeare,
    "wikipedia": load_wikipedia,
    "tinyshakespeare": load_tinyshakespeare,
    "tinystories": load_tinystories,
    "wikitext2": load_wikitext2,
    "enwik8": load_enwik8,
}
SOURCES: dict[str, Callable[..., Source]] = {
    "shakespeare": shakespeare_source,
    "wikipedia": wikipedia_source,
    "tinyshakespeare": tinyshakespeare_source,
    "tinystories": tinystories_source,
    "wikitext2": wikitext2_source,
    "enwik8": enwik8_source,
}


def _known(name: str) -> None:
    if name not in CORPORA:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(CORPORA))}")


def corpus_source(name: str, local_path: str | None = None) -> Source:
    """Which files (or hub dataset) `load_corpus(name, local_path)` would read, without reading them."""
    _known(name)
    return SOURCES[name](local_path=local_path)


def load_corpus(name: str, local_path: str | None = None) -> datasets.DatasetDict:
    """Load a registered corpus as train/validation/test with one ``text`` column, one row per document."""
    _known(name)
    corpus = CORPORA[name](local_path=local_path)
    if tuple(sorted(corpus)) != tuple(sorted(SPLITS)):
        raise DataError(f"{name}: loader returned splits {sorted(corpus)}, expected {list(SPLITS)}")
    for split, ds in corpus.items():
        if ds.column_names != ["text"] or len(ds) == 0:
            raise DataError(f"{name}/{split}: expected a non-empty 'text' column, got {ds}")
    return corpus
