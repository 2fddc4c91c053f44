"""Tests for sparsedepth.data: real corpora, local files in the hub's formats, token files and samplers."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch

from sparsedepth import data
from sparsedepth.data import DataError, TokenData, eval_batches, load_corpus, prepare, sample_batch

# The tests run from the repository root, beside the shared folder (the documented default location).
SHARED_TINYSHAKESPEARE = Path(os.path.abspath(data.DEFAULT_TINYSHAKESPEARE))

# Short stories written for these tests, laid out exactly like roneneldan/TinyStories (a "text" column,
# one story per row, data/{train,validation}-*.parquet; or the raw .txt files separated by <|endoftext|>).
STORIES = [
    "Once upon a time, there was a little cat named Tom. He liked the sun.\n\nOne day he saw a bird.",
    "Lily had a red ball. She threw it high. The ball went over the fence and her dog ran to get it.",
    "Ben and Sue went to the park. They found a big stick and built a small house for a bug.",
    "The old tree was sad because it had no leaves. A bird came and sang, and the tree felt happy again.",
    "Max wanted to fly. He made wings from paper. They did not work, but his mom gave him a hug.",
    "A tiny fish lived in a pond. It was scared of the frog, until the frog said hello.",
    "Mia baked a cake with her dad. It was too sweet, so they shared it with all the neighbours.",
    "Sam lost his blue hat in the snow. His sister helped him look, and they found it under a bench.",
    "The sun and the moon had a race across the sky. Nobody won, and they agreed to take turns.",
    "Anna found a shiny shell on the beach. She kept it in a box and listened to it every night.",
    "A little duck could not swim. Every day it tried a bit more, and one morning it swam across the lake.",
    "Tim was afraid of the dark, so his grandma gave him a lamp shaped like a star.",
]
VALID_STORIES = [
    "Zoe and her brother painted a big picture of a dragon. They hung it on the wall.",
    "The puppy chewed the shoe. Dad was not happy, but the puppy looked so sorry that he laughed.",
]

# WikiText-2 rows as the hub stores them: one line per row, "" between paragraphs, " = Title = " headings.
WIKITEXT_ROWS = {
    "train": [
        "",
        " = Valkyria Chronicles III = \n",
        "",
        " Senjō no Valkyria 3 is a tactical role @-@ playing video game . \n",
        "",
        " = = Gameplay = = \n",
        "",
        " As with previous games , the gameplay is a mix of strategy and action . \n",
        " = Tower Building of the Little Rock Arsenal = \n",
        "",
        " The Tower Building is a building in Little Rock , Arkansas . \n",
    ],
    "validation": ["", " = Homarus gammarus = \n", "", " Homarus gammarus is a species of lobster . \n"],
    "test": ["", " = Robert Boulter = \n", "", " Robert Boulter is an English actor . \n", ""],
}


def _docs(dd: datasets.DatasetDict) -> dict[str, list[str]]:
    return {s: list(dd[s]["text"]) for s in data.SPLITS}


def _assert_disjoint(docs: dict[str, list[str]], key=lambda d: d) -> None:
    keys = {s: {key(d) for d in docs[s]} for s in docs}
    assert not keys["train"] & keys["validation"]
    assert not keys["train"] & keys["test"]
    assert not keys["validation"] & keys["test"]


@pytest.fixture(scope="session")
def shakespeare() -> datasets.DatasetDict:
    return load_corpus("shakespeare")


@pytest.fixture(scope="session")
def wikipedia() -> datasets.DatasetDict:
    return load_corpus("wikipedia")


@pytest.fixture(scope="session")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wikipedia (always present: gensim is a dependency) at a small vocab, prepared once per session."""
    return prepare("wikipedia", tmp_path_factory.mktemp("prep") / "wikipedia-512", vocab_size=512)


@pytest.fixture
def excerpt_file(tmp_path: Path, shakespeare: datasets.DatasetDict) -> Path:
    """A real Shakespeare text (the start of a play) as a small local tinyshakespeare-style file."""
    path = tmp_path / "excerpt.txt"
    path.write_text(shakespeare["train"][0]["text"][:40_000], encoding="utf-8")
    return path


# --- registry and errors ---


def test_unknown_dataset_lists_known_names():
    with pytest.raises(DataError) as err:
        load_corpus("nope")
    for name in data.CORPORA:
        assert name in str(err.value)
    assert set(data.CORPORA) == {"shakespeare", "wikipedia", "tinyshakespeare", "tinystories", "wikitext2",
                                 "enwik8"}


def test_missing_tinyshakespeare_names_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    missing = tmp_path / "nowhere" / "tiny.txt"
    with pytest.raises(DataError, match=str(missing)):
        load_corpus("tinyshakespeare", local_path=str(missing))
    monkeypatch.setenv(data.DATA_DIR_ENV, str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # never reach for the hub in tests
    with pytest.raises(DataError, match=str(tmp_path / "tinyshakespeare.txt")):
        load_corpus("tinyshakespeare")


@pytest.mark.parametrize("name", ["tinystories", "wikitext2"])
def test_hub_unavailable_fails_fast(name: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    start = time.perf_counter()
    with pytest.raises(DataError, match="local_path"):
        load_corpus(name)
    assert time.perf_counter() - start < 10


# --- real corpora ---


def test_shakespeare(shakespeare: datasets.DatasetDict):
    docs = _docs(shakespeare)
    assert [len(docs[s]) for s in data.SPLITS] == [32, 3, 3]  # all 38 plays, 3 + 3 held out
    _assert_disjoint(docs)
    train_chars = sum(map(len, docs["train"]))
    print(f"shakespeare train: {len(docs['train'])} plays, {train_chars:,} chars")
    assert train_chars > 1_000_000
    text = "\n".join(docs["train"])
    assert "HAMLET:\n" in text or any("HAMLET:\n" in d for d in docs["test"] + docs["validation"])
    for markup in ("**", "\\[", "\\-", "  \n", "#"):
        assert markup not in text
    assert _docs(load_corpus("shakespeare")) == docs  # deterministic
    assert "public domain" in shakespeare["train"].info.license.lower()


def test_wikipedia(wikipedia: datasets.DatasetDict):
    docs = _docs(wikipedia)
    sizes = [len(docs[s]) for s in data.SPLITS]
    assert sum(sizes) > 100 and sizes[1] >= 5 and sizes[2] >= 5
    _assert_disjoint(docs, key=lambda d: d.split("\n", 1)[0])  # first line is the article title
    train_chars = sum(map(len, docs["train"]))
    print(f"wikipedia: {sizes} articles, train {train_chars:,} chars")
    assert train_chars > 1_000_000
    text = "\n".join(docs["train"])
    for markup in ("[[", "{{", "'''", "<ref", "==", "File:"):
        assert markup not in text
    assert _docs(load_corpus("wikipedia")) == docs
    assert wikipedia["train"].info.license == "Wikipedia, CC BY-SA 4.0 (sample shipped with gensim)"


def test_tinyshakespeare_shared_file():
    if not SHARED_TINYSHAKESPEARE.is_file():
        pytest.skip(f"{SHARED_TINYSHAKESPEARE} not present")
    docs = _docs(load_corpus("tinyshakespeare", local_path=str(SHARED_TINYSHAKESPEARE)))
    assert [len(docs[s]) for s in data.SPLITS] == [1, 1, 1]
    text = SHARED_TINYSHAKESPEARE.read_text(encoding="utf-8")
    assert "".join(docs[s][0] for s in data.SPLITS) == text  # contiguous cut, nothing lost
    assert len(docs["train"][0]) == pytest.approx(0.9 * len(text), abs=200)
    assert docs["train"][0].endswith("\n") and docs["validation"][0].endswith("\n")


def test_tinyshakespeare_default_path(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.tinyshakespeare_path() == SHARED_TINYSHAKESPEARE
    if not SHARED_TINYSHAKESPEARE.is_file():
        pytest.skip(f"{SHARED_TINYSHAKESPEARE} not present")
    assert load_corpus("tinyshakespeare")["test"][0]["text"]


def test_tinyshakespeare_explicit_local_path(excerpt_file: Path, monkeypatch: pytest.MonkeyPatch):
    docs = _docs(load_corpus("tinyshakespeare", local_path=str(excerpt_file)))
    assert "".join(docs[s][0] for s in data.SPLITS) == excerpt_file.read_text(encoding="utf-8")
    monkeypatch.setenv(data.DATA_DIR_ENV, str(excerpt_file.parent))
    (excerpt_file.parent / "tinyshakespeare.txt").write_text(excerpt_file.read_text(encoding="utf-8"))
    assert _docs(load_corpus("tinyshakespeare")) == docs  # found through $SPARSEDEPTH_DATA_DIR


# --- hub-format local files ---


def _write_parquet(rows: list[str], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    datasets.Dataset.from_dict({"text": rows}).to_parquet(str(path))


def test_tinystories_parquet(tmp_path: Path):
    _write_parquet(STORIES[:6], tmp_path / "data" / "train-00000-of-00002-2d5a1467fff1081b.parquet")
    _write_parquet(STORIES[6:] + [""], tmp_path / "data" / "train-00001-of-00002-5852b56a2bd28fd9.parquet")
    _write_parquet(VALID_STORIES, tmp_path / "data" / "validation-00000-of-00001-869c898b519ad725.parquet")
    dd = load_corpus("tinystories", local_path=str(tmp_path))
    docs = _docs(dd)
    assert docs["validation"] == VALID_STORIES
    assert len(docs["test"]) == 1  # carved from train: min(len(validation), len(train) // 10)
    assert sorted(docs["train"] + docs["test"]) == sorted(STORIES)  # empty row dropped, nothing else lost
    _assert_disjoint(docs)
    assert _docs(load_corpus("tinystories", local_path=str(tmp_path))) == docs
    assert "CDLA" in dd["train"].info.license


def test_tinystories_raw_txt(tmp_path: Path):
    for name, stories in (("TinyStories-train.txt", STORIES), ("TinyStories-valid.txt", VALID_STORIES)):
        (tmp_path / name).write_text("".join(f"{s}\n<|endoftext|>\n" for s in stories), encoding="utf-8")
    docs = _docs(load_corpus("tinystories", local_path=str(tmp_path)))
    assert docs["validation"] == VALID_STORIES
    assert sorted(docs["train"] + docs["test"]) == sorted(STORIES)


def test_tinystories_missing_files(tmp_path: Path):
    _write_parquet(STORIES, tmp_path / "data" / "train-00000-of-00001.parquet")
    with pytest.raises(DataError, match="validation"):
        load_corpus("tinystories", local_path=str(tmp_path))
    with pytest.raises(DataError, match="not a directory"):
        load_corpus("tinystories", local_path=str(tmp_path / "absent"))


def test_wikitext2_parquet(tmp_path: Path):
    for split, rows in WIKITEXT_ROWS.items():
        _write_parquet(rows, tmp_path / "wikitext-2-raw-v1" / f"{split}-00000-of-00001.parquet")
    docs = _docs(load_corpus("wikitext2", local_path=str(tmp_path)))
    assert [len(docs[s]) for s in data.SPLITS] == [2, 1, 1]
    first = docs["train"][0]
    assert first.startswith("= Valkyria Chronicles III =\n")
    assert "= = Gameplay = =" in first and "Little Rock" not in first  # subsections stay in the article
    assert docs["train"][1].startswith("= Tower Building of the Little Rock Arsenal =")
    assert docs["test"] == ["= Robert Boulter =\nRobert Boulter is an English actor .\n"]


def test_wikitext2_raw_files(tmp_path: Path):
    raw_names = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}
    for split, rows in WIKITEXT_ROWS.items():
        (tmp_path / raw_names[split]).write_text("".join(r or " \n" for r in rows), encoding="utf-8")
    from_raw = _docs(load_corpus("wikitext2", local_path=str(tmp_path)))
    assert [len(from_raw[s]) for s in data.SPLITS] == [2, 1, 1]
    assert from_raw["validation"] == ["= Homarus gammarus =\nHomarus gammarus is a species of lobster .\n"]


# --- tokenizer and prepare ---


def test_tokenizer_roundtrip_and_range():
    tok = data.train_tokenizer(STORIES * 5, vocab_size=300)
    assert tok.token_to_id(data.EOT) == 0
    for s in ["Once upon a time", "  spaces\n\ttabs  ", "naïve café — 東京 🙂", ""]:
        assert tok.decode(tok.encode(s).ids) == s
    with pytest.raises(ValueError):
        data.train_tokenizer(STORIES, vocab_size=100)


def test_prepare_writes_token_files(prepared: Path, wikipedia: datasets.DatasetDict):
    for name in data.TOKEN_FILES:
        assert (prepared / name).is_file()
    meta = json.loads((prepared / "meta.json").read_text())
    assert meta["dataset"] == "wikipedia" and meta["vocab_size"] == 512 and meta["dtype"] == "uint16"
    assert "CC BY-SA" in meta["licence"] and meta["source"]
    td = TokenData.load(prepared)
    assert td.vocab_size == 512 and td.eot_id == meta["eot_id"] == 0
    for split in data.SPLITS:
        tokens = td.split(split)
        assert tokens.dtype == np.uint16 and isinstance(tokens, np.memmap)
        assert len(tokens) == meta["n_tokens"][split]
        assert meta["n_documents"][split] == len(wikipedia[split])
        assert int((tokens == td.eot_id).sum()) == len(wikipedia[split]) - 1  # EOT between documents
        assert int(tokens.max()) < td.vocab_size
    first_eot = int(np.argmax(td.train == td.eot_id))
    assert td.tokenizer.decode(td.train[:first_eot].tolist()) == wikipedia["train"][0]["text"]
    sample = wikipedia["validation"][0]["text"][:2000]
    assert td.tokenizer.decode(td.tokenizer.encode(sample).ids) == sample


def test_prepare_is_cached(prepared: Path):
    stamp = (prepared / "train.npy").stat().st_mtime_ns
    start = time.perf_counter()
    assert prepare("wikipedia", prepared, vocab_size=512) == prepared
    assert time.perf_counter() - start < 0.5
    assert (prepared / "train.npy").stat().st_mtime_ns == stamp


def test_prepare_failure_leaves_nothing(tmp_path: Path, excerpt_file: Path, monkeypatch: pytest.MonkeyPatch):
    with pytest.raises(DataError):
        prepare("nope", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    def broken(*args, **kwargs):
        raise RuntimeError("tokenizer exploded")

    monkeypatch.setattr(data.preparation, "train_tokenizer", broken)
    with pytest.raises(RuntimeError, match="exploded"):
        prepare("tinyshakespeare", tmp_path / "out", vocab_size=300, local_path=str(excerpt_file))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["excerpt.txt"]  # no out dir, no temp dir


def test_prepare_rebuilds_on_new_vocab(tmp_path: Path, excerpt_file: Path):
    out = tmp_path / "out"
    prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file))
    prepare("tinyshakespeare", out, vocab_size=400, local_path=str(excerpt_file))
    assert TokenData.load(out).meta["vocab_size"] == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["excerpt.txt", "out"]


def test_prepared_data_is_keyed_by_its_source(tmp_path: Path, excerpt_file: Path,
                                              monkeypatch: pytest.MonkeyPatch):
    """source.json records where the text came from; a same-content copy is reused, another text refused."""
    out = tmp_path / "out"
    prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file))
    record = json.loads((out / data.SOURCE_FILE).read_text())
    assert record["location"] == str(excerpt_file.resolve()) and len(record["sha256"]) == 64
    assert json.loads((out / "meta.json").read_text())["source_sha256"] == record["sha256"]
    stamp = (out / "train.npy").stat().st_mtime_ns

    def no_hashing(path):
        raise AssertionError(f"hashed {path}")

    with monkeypatch.context() as m:  # unchanged source: size + mtime suffice, nothing is hashed
        m.setattr(data.source, "_file_sha256", no_hashing)
        assert prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file)) == out

    copy = tmp_path / "moved" / "tiny.txt"  # the same text elsewhere is the same corpus
    copy.parent.mkdir()
    copy.write_bytes(excerpt_file.read_bytes())
    assert prepare("tinyshakespeare", out, vocab_size=300, local_path=str(copy)) == out
    os.utime(excerpt_file, ns=(0, 0))  # touched, same bytes: still the same corpus
    assert prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file)) == out

    other = tmp_path / "other.txt"
    other.write_text(excerpt_file.read_text(encoding="utf-8")[:20_000] + "An ending of my own.\n")
    with pytest.raises(DataError, match="use another --data-dir") as err:
        prepare("tinyshakespeare", out, vocab_size=300, local_path=str(other))
    assert str(other) in str(err.value) and "\n" not in str(err.value)
    excerpt_file.write_text("Edited in place.\n" * 500)  # the same path with new content is another source
    with pytest.raises(DataError, match="use another --data-dir"):
        prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file))
    assert (out / "train.npy").stat().st_mtime_ns == stamp  # never overwritten


def test_prepared_data_without_a_source_record_is_rebuilt(tmp_path: Path, excerpt_file: Path):
    out = tmp_path / "out"
    prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file))
    (out / data.SOURCE_FILE).unlink()  # data prepared before sources were recorded
    prepare("tinyshakespeare", out, vocab_size=300, local_path=str(excerpt_file))
    assert (out / data.SOURCE_FILE).is_file()


def test_sources_name_the_files_they_read(tmp_path: Path, excerpt_file: Path,
                                          monkeypatch: pytest.MonkeyPatch):
    plays = data.corpus_source("shakespeare")
    assert len(plays.files) == 38 and all(f.suffix == ".md" for f in plays.files)
    assert data.corpus_source("wikipedia").files[0].name.endswith(".bz2")
    assert data.corpus_source("tinyshakespeare", str(excerpt_file)).files == (excerpt_file.resolve(),)
    monkeypatch.delenv(data.DATA_DIR_ENV, raising=False)
    assert data.corpus_source("tinystories").location.startswith("hf://")  # no local copy: the hub, no files
    for split, rows in WIKITEXT_ROWS.items():
        _write_parquet(rows, tmp_path / "wt" / f"{split}-00000-of-00001.parquet")
    assert len(data.corpus_source("wikitext2", str(tmp_path / "wt")).files) == 3


def test_unreadable_corpora_name_the_file(tmp_path: Path):
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(DataError, match="not UTF-8"):
        load_corpus("tinyshakespeare", local_path=str(binary))
    with pytest.raises(DataError, match="blob.bin"):
        load_corpus("wikipedia", local_path=str(binary))
    (tmp_path / "wiki.train.raw").write_bytes(bytes(range(256)) * 8)
    for name in ("wiki.valid.raw", "wiki.test.raw"):
        (tmp_path / name).write_text(" = T = \n")
    with pytest.raises(DataError, match="wiki.train.raw"):
        load_corpus("wikitext2", local_path=str(tmp_path))


def test_tokendata_missing_dir(tmp_path: Path):
    with pytest.raises(DataError, match="prepare"):
        TokenData.load(tmp_path / "absent")


# --- batches ---


def test_sample_batch_deterministic_and_shifted():
    tokens = np.arange(1000, dtype=np.uint16)
    x1, y1 = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    x2, y2 = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(0))
    x3, _ = sample_batch(tokens, 4, 16, torch.Generator().manual_seed(1))
    assert x1.shape == y1.shape == (4, 16) and x1.dtype == y1.dtype == torch.int64
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert torch.equal(y1[:, :-1], x1[:, 1:])
    assert torch.equal(y1, x1 + 1)  # tokens are positions here, so windows are contiguous slices
    starts = torch.randint(1000 - 16, (4,), generator=torch.Generator().manual_seed(0))
    assert torch.equal(x1[:, 0], starts)


def test_sample_batch_reaches_the_end():
    tokens = np.arange(17, dtype=np.uint16)  # exactly one window
    x, y = sample_batch(tokens, 3, 16, torch.Generator().manual_seed(0))
    assert torch.equal(x[0], torch.arange(16)) and torch.equal(y[0], torch.arange(1, 17))
    with pytest.raises(ValueError):
        sample_batch(tokens, 1, 17, torch.Generator())


def test_eval_batches_cover_contiguous_windows():
    tokens = np.arange(1, 102, dtype=np.uint16)  # 101 tokens -> 10 windows of 10 (+1 target)
    batches = list(eval_batches(tokens, batch_size=4, seq_len=10))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]  # last batch partial
    x = torch.cat([b[0] for b in batches]).flatten()
    y = torch.cat([b[1] for b in batches]).flatten()
    assert torch.equal(x, torch.arange(1, 101)) and torch.equal(y, torch.arange(2, 102))
    assert len(list(eval_batches(tokens, 4, 10, max_batches=2))) == 2
    again = list(eval_batches(tokens, 4, 10))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    with pytest.raises(ValueError):
        list(eval_batches(tokens[:10], 4, 10))


def test_split_helpers():
    names = [f"doc{i}" for i in range(20)]
    parts = data.split_by_name(names, 2, 3)
    assert [len(parts[s]) for s in data.SPLITS] == [15, 2, 3]
    assert parts == data.split_by_name(list(reversed(names)), 2, 3)  # input order does not matter
    cut = data.split_contiguous("".join(f"line {i}\n" for i in range(100)))
    assert all(v.endswith("\n") for v in cut.values())
    with pytest.raises(DataError):
        data.split_contiguous("one line only")
