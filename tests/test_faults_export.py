"""Drills of issue 26 on `hf export` and on read-only archives: an export never deletes what is not its own,
and a finished run on read-only storage can be evaluated and exported (output elsewhere), untouched."""

import json
import subprocess
from pathlib import Path

import pytest
from test_faults import data_dir  # noqa: F401 (the session's prepared corpus)
from test_faults_runs import finished, one_line, tree  # noqa: F401 (finished: a finished, evaluated run)

from sparsedepth.cli import main as cli_main
from sparsedepth.hf_export import MARKER, main


def export(run: Path, out: Path) -> int:
    return main(["export", "--run", str(run), "--out", str(out)])


@pytest.mark.parametrize("make", [
    lambda d: (d.mkdir(), (d / "notes.txt").write_text("x")),  # a foreign directory
    lambda d: d.write_text("the user's file"),  # a file
    lambda d: (d.mkdir(), (d / "config.json").write_text('{"model_type": "gpt2"}')),  # another model
])
def test_export_refuses_what_is_not_its_own_and_touches_nothing(make, finished, tmp_path, capsys):  # noqa: F811
    target = tmp_path / "target"
    make(target)
    before, run_before = tree(tmp_path), tree(finished)
    assert export(finished, target) == 2
    one_line(capsys, "--out")
    assert tree(tmp_path) == before and tree(finished) == run_before  # no .target.old-PID, no .tmp


def test_export_fills_an_empty_directory_and_replaces_only_its_own(finished, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "exported"
    out.mkdir()
    assert export(finished, out) == 0
    written = json.loads((out / MARKER).read_text())["files"]
    assert "model.safetensors" in written
    assert sorted(p.name for p in out.iterdir()) == sorted([*written, MARKER])
    assert export(finished, out) == 0  # a previous export: replaced whole
    (out / "notes.txt").write_text("mine")
    before = tree(out)
    capsys.readouterr()
    assert export(finished, out) == 2
    one_line(capsys, "now also holds notes.txt")
    assert tree(out) == before


def test_a_failed_export_makes_no_directories(tmp_path, capsys):
    assert export(tmp_path / "no-such-run", tmp_path / "a" / "b" / "exported") == 2
    one_line(capsys, "does not exist")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def read_only(finished, tmp_path):  # noqa: F811
    """The finished run seen through a read-only bind mount (the archive case); skipped where mounting is
    not allowed."""
    view = tmp_path / "archive"
    view.mkdir()
    def mount(*args: str) -> bool:
        return subprocess.run(["mount", *args, str(view)], capture_output=True).returncode == 0

    mounted = mount("--bind", str(finished))
    if mounted and not mount("-o", "remount,bind,ro"):
        subprocess.run(["umount", str(view)], check=True)
        mounted = False
    if not mounted:
        pytest.skip("cannot make a read-only bind mount here (needs root or CAP_SYS_ADMIN)")
    try:
        with pytest.raises(OSError):
            (view / "probe").write_text("x")
        yield view
    finally:
        subprocess.run(["umount", str(view)], check=True)


@pytest.mark.parametrize("lock_file", [True, False])
def test_a_read_only_archive_evaluates_and_exports_elsewhere(lock_file, read_only, finished, tmp_path,  # noqa: F811
                                                             capsys):
    """With the `.lock` readers leave (flocked read-only), and without one (no lock: nothing can write)."""
    lock = finished / ".lock"
    if not lock_file:
        lock.unlink(missing_ok=True)
    before = tree(read_only)
    try:
        assert cli_main(["evaluate", "--run", str(read_only), "--max-batches", "1",
                         "--out", str(tmp_path / "eval.json")]) == 0, capsys.readouterr().err
        assert export(read_only, tmp_path / "exported") == 0, capsys.readouterr().err
        after = tree(read_only)
    finally:
        lock.touch()  # the session's run, as other tests expect it
    assert after == before
    assert json.loads((tmp_path / "eval.json").read_text())["modes"]
    assert (tmp_path / "exported" / "model.safetensors").is_file()
