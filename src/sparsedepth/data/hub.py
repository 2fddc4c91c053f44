"""Corpora published on the Hugging Face hub (TinyStories, WikiText-2): loaded from the hub by online users,
or from local files given as ``data_path`` or found in ``$SPARSEDEPTH_DATA_DIR/<name>/``. A local copy in the
hub's own layout (a snapshot: the hub's parquet shards, and for WikiText its dataset card naming the configs)
goes through exactly the hub's code path, ``datasets.load_dataset(<dir>, <config>)`` in place of the hub id;
loose parquet or the raw .txt releases are read file by file. Hub access is decided in milliseconds, never
by a hang."""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable, Sequence
from pathlib import Path
from urllib.parse import urlparse

from .base import DATA_DIR_ENV, EOT, LICENCES, SPLITS, DataError, dataset_dict, datasets, one_line, with_info
from .source import Source, local_source

TINYSTORIES_HUB = "roneneldan/TinyStories"
WIKITEXT_HUB = ("Salesforce/wikitext", "wikitext-2-raw-v1")  # "wikitext" on the hub redirects here

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


def load_hub(path: str, config: str | None, *, dataset: str, hint: str,
             snapshot: Path | None = None) -> datasets.DatasetDict:
    """``datasets.load_dataset(path, config)`` on the hub, or on `snapshot` (a local copy in the hub's
    layout) in place of the hub id: one call either way, so a rehearsal on local files exercises the
    download's path. Any failure is a DataError carrying `hint`."""
    if snapshot is None:
        reason = hub_unavailable()
        if reason is not None:
            raise DataError(f"{dataset}: the Hugging Face hub is unavailable ({reason}); {hint}")
    where = path if snapshot is None else str(snapshot)
    try:
        return datasets.load_dataset(where, config)
    except Exception as exc:  # connection, auth, missing-config errors all mean: use local files
        origin = "from the hub" if snapshot is None else "as a local hub snapshot"
        raise DataError(f"{dataset}: loading {where!r} {origin} failed ({one_line(exc)}); {hint}") from exc


def is_snapshot(local: Path, patterns: dict[str, Sequence[str]], required: Sequence[str],
                card: bool) -> bool:
    """Whether `local` holds the hub's layout: each required split's first (the hub's) pattern matches, and
    the dataset card (README.md, whose YAML names the configs) is there when the hub needs it to pick one."""
    has_card = (local / "README.md").is_file()
    return (has_card or not card) and all(find_files(local, patterns[s][:1]) for s in required)


def local_dir(name: str, local_path: str | None) -> Path | None:
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


def find_files(root: Path, patterns: Sequence[str]) -> list[str]:
    """Files for the first pattern that matches anything (patterns are in order of preference)."""
    for pattern in patterns:
        files = sorted(str(p) for p in root.glob(pattern) if p.is_file())
        if files:
            return files
    return []


def found_files(name: str, local: Path, patterns: dict[str, Sequence[str]], required: Sequence[str]
                ) -> dict[str, list[str]]:
    """The files of each split in a local copy, or a DataError naming the splits that have none."""
    found = {s: find_files(local, split_patterns) for s, split_patterns in patterns.items()}
    missing = [s for s in required if not found[s]]
    if missing:
        raise DataError(
            f"{name}: no {missing} files in {local}; expected one of {[list(patterns[s]) for s in missing]}"
        )
    return found


def hub_or_local_source(name: str, local_path: str | None, hub: str, patterns: dict[str, Sequence[str]],
                        required: Sequence[str]) -> Source:
    local = local_dir(name, local_path)
    if local is None:
        return Source(name, f"hf://datasets/{hub}")
    files = [Path(f) for fs in found_files(name, local, patterns, required).values() for f in fs]
    return local_source(name, local, files)


def load_files(files: list[str]) -> datasets.Dataset:
    """Rows of local parquet files (column ``text``) or lines of text files, via ``datasets``; a file it
    cannot read (binary, not UTF-8, not parquet) is a DataError naming the files."""
    try:
        if files[0].endswith(".parquet"):
            ds = datasets.load_dataset("parquet", data_files={"rows": files}, split="rows")
            if "text" not in ds.column_names:
                raise DataError(f"parquet files {files} have no 'text' column (columns: {ds.column_names})")
            return ds.select_columns(["text"])
        return datasets.load_dataset("text", data_files={"rows": files}, split="rows")
    except DataError:
        raise
    except Exception as exc:  # datasets wraps decode/parse errors in its own types; the cause says why
        cause = exc.__cause__ or exc.__context__ or exc
        raise DataError(f"{', '.join(files)}: cannot read as {Path(files[0]).suffix or 'text'} "
                        f"({type(cause).__name__}: {one_line(cause)})") from None


def drop_empty(ds: datasets.Dataset) -> datasets.Dataset:
    return ds.filter(lambda text: bool(text and text.strip()), input_columns="text")


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
    ds = load_files(files)
    if files[0].endswith(".parquet"):
        return drop_empty(ds)
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


def tinystories_source(local_path: str | None = None) -> Source:
    return hub_or_local_source("tinystories", local_path, TINYSTORIES_HUB, _TINYSTORIES_FILES,
                               ("train", "validation"))


def load_tinystories(local_path: str | None = None) -> datasets.DatasetDict:
    """TinyStories, one story per document; test = a seeded sample of train the size of validation."""
    local = local_dir("tinystories", local_path)
    required = ("train", "validation")
    snapshot = local is not None and is_snapshot(local, _TINYSTORIES_FILES, required, card=False)
    if local is None or snapshot:
        hint = (
            f"pass local_path=<dir> holding the hub's data/train-*.parquet and data/validation-*.parquet "
            f"(or TinyStories-train.txt/TinyStories-valid.txt), or put them in ${DATA_DIR_ENV}/tinystories/"
        )
        hub = load_hub(TINYSTORIES_HUB, None, dataset="tinystories", hint=hint, snapshot=local)
        splits = {s: drop_empty(hub[s].select_columns(["text"])) for s in hub}
        source = f"hf://datasets/{TINYSTORIES_HUB}" if local is None else str(local)
    else:
        found = found_files("tinystories", local, _TINYSTORIES_FILES, ("train", "validation"))
        splits = {s: _tinystories_split(files) for s, files in found.items() if files}
        source = str(local)
    if "test" not in splits:
        splits["train"], splits["test"] = carve_test(splits["train"], n_test=len(splits["validation"]))
    return with_info(datasets.DatasetDict({s: splits[s] for s in SPLITS}), source, LICENCES["tinystories"])


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


def wikitext2_source(local_path: str | None = None) -> Source:
    return hub_or_local_source("wikitext2", local_path, f"{WIKITEXT_HUB[0]} ({WIKITEXT_HUB[1]})",
                               _WIKITEXT_FILES, SPLITS)


def load_wikitext2(local_path: str | None = None) -> datasets.DatasetDict:
    """WikiText-2 (raw), one article per document, with the dataset's own train/validation/test."""
    local = local_dir("wikitext2", local_path)
    snapshot = local is not None and is_snapshot(local, _WIKITEXT_FILES, SPLITS, card=True)
    if local is None or snapshot:
        hint = (
            f"pass local_path=<dir> holding {{train,validation,test}}-*.parquet of {WIKITEXT_HUB[1]} "
            f"(or wiki.{{train,valid,test}}.raw), or put them in ${DATA_DIR_ENV}/wikitext2/"
        )
        hub = load_hub(*WIKITEXT_HUB, dataset="wikitext2", hint=hint, snapshot=local)
        rows = {s: hub[s]["text"] for s in SPLITS}
        source = f"hf://datasets/{WIKITEXT_HUB[0]} ({WIKITEXT_HUB[1]})" if local is None else str(local)
    else:
        found = found_files("wikitext2", local, _WIKITEXT_FILES, SPLITS)
        rows = {s: load_files(found[s])["text"] for s in SPLITS}
        source = str(local)
    return dataset_dict({s: group_wikitext(rows[s]) for s in SPLITS}, source, LICENCES["wikitext2"])
