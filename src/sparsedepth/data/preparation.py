"""Prepared data: byte-level BPE trained on the train split only, every split encoded as uint16 token files,
written atomically and reused only for the corpus source it was prepared from (see `source`).

At ``vocab_size`` 257 (the 256 bytes + EOT: byte-level modelling, where bits per byte is the literature's
bits per character) BPE has nothing to learn, so the tokenizer is built without reading the text and bytes
are mapped to ids with a lookup table: the same ids, without pushing 100 MB through `tokenizers`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .base import EOT, SPLITS, datasets
from .corpora import corpus_source, load_corpus
from .source import SOURCE_FILE, check_source, manifest, read_manifest, write_manifest

FORMAT_VERSION = 1  # bump when cleaning/splitting changes so cached token files are rebuilt
TOKEN_FILES: tuple[str, ...] = ("tokenizer.json", "meta.json", *(f"{s}.npy" for s in SPLITS))
BYTE_VOCAB = 257  # EOT + one token per byte, no merges


def _byte_level(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style, lossless on any UTF-8) with ``<|endoftext|>`` as id 0."""
    if not 257 <= vocab_size <= 65536:  # 256 bytes + EOT at least; ids must fit uint16
        raise ValueError(f"vocab_size must be in [257, 65536], got {vocab_size}")
    tokenizer = _byte_level(Tokenizer(models.BPE()))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def byte_tokenizer() -> Tokenizer:
    """What `train_tokenizer` learns at vocab 257, built without text: EOT is id 0, then the 256 byte
    characters in code-point order, no merges."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {EOT: 0, **{ch: i + 1 for i, ch in enumerate(alphabet)}}
    tokenizer = _byte_level(Tokenizer(models.BPE(vocab=vocab, merges=[])))
    tokenizer.add_special_tokens([EOT])
    return tokenizer


def byte_lookup(tokenizer: Tokenizer) -> np.ndarray:
    """uint16 id of each byte value in a merge-free byte-level tokenizer (read from its vocabulary)."""
    from ..units import byte_alphabet  # lazy: units imports pandas, which data otherwise never needs

    vocab = tokenizer.get_vocab()
    lookup = np.array([vocab[ch] for ch, _ in sorted(byte_alphabet().items(), key=lambda kv: kv[1])])
    return lookup.astype(np.uint16)


def encode_bytes(lookup: np.ndarray, batches: Iterable[list[str]], eot_id: int) -> np.ndarray:
    """`encode_documents` for a merge-free tokenizer: each UTF-8 byte through `lookup`, documents joined
    with EOT. (A document that spells out ``<|endoftext|>`` keeps its bytes here, where `tokenizers` would
    match it as the special token.)"""
    eot = np.array([eot_id], dtype=np.uint16)
    parts: list[np.ndarray] = []
    for texts in batches:
        for text in texts:
            if parts:
                parts.append(eot)
            parts.append(lookup[np.frombuffer(text.encode("utf-8"), dtype=np.uint8)])
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint16)


def _iter_text(ds: datasets.Dataset, batch_size: int = 1024) -> Iterator[list[str]]:
    for batch in ds.iter(batch_size=batch_size):
        yield batch["text"]


def encode_documents(tokenizer: Tokenizer, batches: Iterable[list[str]], eot_id: int) -> np.ndarray:
    """Encode documents and join them with the EOT id (between documents, none at the ends) as uint16."""
    chunks: list[np.ndarray] = []
    first = True
    for texts in batches:
        flat: list[int] = []
        for enc in tokenizer.encode_batch_fast(texts, add_special_tokens=False):
            if not first:
                flat.append(eot_id)
            flat.extend(enc.ids)
            first = False
        chunks.append(np.asarray(flat, dtype=np.uint16))
    return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint16)


def _read_meta(out_dir: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _is_prepared(out_dir: Path, name: str, vocab_size: int) -> bool:
    """Token files of this dataset and vocabulary, with a source record (data without one is rebuilt)."""
    meta = _read_meta(out_dir)
    return (
        meta is not None
        and meta.get("dataset") == name
        and meta.get("vocab_size") == vocab_size
        and meta.get("format_version") == FORMAT_VERSION
        and all((out_dir / f).is_file() for f in (*TOKEN_FILES, SOURCE_FILE))
    )


def _replace_dir(new: Path, target: Path) -> None:
    """Move a finished temp dir into place; an old target is moved aside first so rename never merges."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
        os.replace(target, trash / target.name)
        os.replace(new, target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(new, target)


def prepare(name: str, out_dir: str | Path, vocab_size: int = 4096, local_path: str | None = None) -> Path:
    """Clean, split, train BPE on train only, and write token files; atomic, and cached per source.

    Writes ``tokenizer.json``, ``{train,validation,test}.npy`` (uint16, documents joined with EOT),
    ``meta.json`` and ``source.json`` (the source's location and content hash) into a temp dir next to
    `out_dir`, then renames it, so a crash leaves no half-made data. Prepared data of the same dataset and
    vocabulary is reused only if it came from the same source; another source is a DataError.
    """
    out = Path(out_dir)
    source = corpus_source(name, local_path)  # unknown name, missing files: fail before touching the disk
    if _is_prepared(out, name, vocab_size):
        check_source(out, source, read_manifest(out) or {})
        return out
    record = manifest(source)
    corpus = load_corpus(name, local_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final directory should look like any other
    try:
        if vocab_size == BYTE_VOCAB:
            tokenizer = byte_tokenizer()
        else:
            texts = (t for batch in _iter_text(corpus["train"]) for t in batch)
            tokenizer = train_tokenizer(texts, vocab_size)
        tokenizer.save(str(tmp / "tokenizer.json"))
        eot_id = tokenizer.token_to_id(EOT)
        n_tokens: dict[str, int] = {}
        for split in SPLITS:
            if vocab_size == BYTE_VOCAB:
                tokens = encode_bytes(byte_lookup(tokenizer), _iter_text(corpus[split]), eot_id)
            else:
                tokens = encode_documents(tokenizer, _iter_text(corpus[split]), eot_id)
            np.save(tmp / f"{split}.npy", tokens)
            n_tokens[split] = int(tokens.size)
        train_info = corpus["train"].info
        meta = {
            "dataset": name,
            "vocab_size": vocab_size,
            "tokenizer_vocab_size": tokenizer.get_vocab_size(),
            "eot_id": eot_id,
            "dtype": "uint16",
            "n_tokens": n_tokens,
            "n_documents": {s: len(corpus[s]) for s in SPLITS},
            "n_characters": {s: sum(len(t) for b in _iter_text(corpus[s]) for t in b) for s in SPLITS},
            "source": train_info.description,
            "source_sha256": record["sha256"],
            "licence": train_info.license,
            "format_version": FORMAT_VERSION,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_manifest(tmp, record)
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
