"""Drills of issue 26 on run directories: nothing typed at `train` destroys a finished run.

Each repro of the issue is run as a user would (the command line, in-process) and ends the same way: one
line on stderr, a non-zero exit (or the documented no-op) and every file of the run byte-identical
(`tree` hashes the whole directory, hidden files included, before and after).
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_faults import SRC, config, data_dir  # noqa: F401 (data_dir: the session's prepared corpus)

from sparsedepth.cli import main as cli_main
from sparsedepth.evaluate import evaluate_run
from sparsedepth.rundir import changed_fields
from sparsedepth.train import TrainConfig, train

SHORT = {"steps": 3, "eval_every": 3, "checkpoint_every": 3}


def tree(root: Path) -> dict[str, object]:
    """Every entry under `root`: a file's sha256, or 'dir'."""
    return {p.relative_to(root).as_posix(): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).digest()
            for p in sorted(root.rglob("*"))}


@pytest.fixture(scope="session")
def finished(data_dir, tmp_path_factory) -> Path:  # noqa: F811
    """A finished, evaluated run (eval.json beside it, as the workflow leaves it)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    train(TrainConfig.from_dict(config(data_dir, **SHORT)), out, progress=False)
    evaluate_run(out, max_batches=1, out_path=out / "eval.json")
    return out


@pytest.fixture
def run(finished, tmp_path) -> Path:
    """A copy of the finished run (`cp -a RUN X`), for a drill to try to damage."""
    shutil.copytree(finished, tmp_path / "run")
    return tmp_path / "run"


def fields(data_dir: str, **overrides) -> str:  # noqa: F811
    return json.dumps(config(data_dir, **SHORT, **overrides))


def one_line(capsys, says: str) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and says in err, err
    return err


def test_auto_resume_without_the_runs_flags_refuses_naming_the_fields(run, capsys):
    before = tree(run)
    assert cli_main(["train", "--out", str(run), "--auto-resume", "--quiet"]) == 2
    err = one_line(capsys, "is a finished run of another config")
    assert "router ('random' → 'dense')" in err and "--overwrite" in err
    assert tree(run) == before


def test_a_typoed_out_with_another_seed_refuses(run, data_dir, capsys):  # noqa: F811
    """Also what a second trainer started after the first finished meets."""
    before = tree(run)
    assert cli_main(["train", "--out", str(run), "--config", fields(data_dir), "--seed", "1", "--quiet"]) == 2
    one_line(capsys, "seed (0 → 1)")
    assert tree(run) == before


def test_train_without_a_resume_flag_refuses_even_its_own_config(run, data_dir, capsys):  # noqa: F811
    before = tree(run)
    assert cli_main(["train", "--out", str(run), "--config", fields(data_dir), "--quiet"]) == 2
    one_line(capsys, "is a finished run of this config; refusing to train over it")
    assert tree(run) == before


@pytest.mark.parametrize("flag", ["--auto-resume", "--resume"])
def test_resuming_a_finished_run_of_its_config_does_nothing(flag, run, data_dir, capsys):  # noqa: F811
    before = tree(run)
    assert cli_main(["train", "--out", str(run), "--config", fields(data_dir), flag, "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "nothing to do" in captured.err and captured.err.count("\n") == 1, captured.err
    assert json.loads(captured.out) == json.loads((run / "summary.json").read_text())
    assert tree(run) == before


def test_overwrite_retrains_and_drops_what_the_old_weights_computed(run, data_dir, capsys):  # noqa: F811
    with pytest.raises(SystemExit, match="2"):  # a usage error, at parse time
        cli_main(["train", "--out", str(run), "--config", fields(data_dir), "--auto-resume", "--overwrite"])
    one_line(capsys, "cannot be combined")
    old = (run / "model.safetensors").read_bytes()
    assert cli_main(["train", "--out", str(run), "--config", fields(data_dir), "--seed", "1", "--overwrite",
                     "--quiet"]) == 0
    assert json.loads((run / "config.json").read_text())["seed"] == 1
    assert (run / "model.safetensors").read_bytes() != old and not (run / "eval.json").exists()


def test_a_workflow_rerun_after_a_config_change_still_retrains(run, data_dir, capsys):  # noqa: F811
    """Snakemake deletes a job's outputs (summary.json, model.safetensors) before rerunning it: the run is
    no longer finished, so the rule's `--auto-resume` trains the new config afresh, as it always did."""
    for output in ("summary.json", "model.safetensors"):
        (run / output).unlink()
    assert cli_main(["train", "--out", str(run), "--config", fields(data_dir, lr=1e-3), "--auto-resume",
                     "--quiet"]) == 0
    assert "training afresh from step 0" in capsys.readouterr().err
    assert json.loads((run / "config.json").read_text())["lr"] == 1e-3
    assert (run / "summary.json").exists() and not (run / "eval.json").exists()


@pytest.mark.parametrize("argv, says", [
    (["--resume"], "checkpoint does not exist"),
    (["--data-dir", "{file}"], "is a file: give a directory"),
    (["--dataset", "tinyshakespeare", "--data-path", "{empty}", "--vocab-size", "300", "--data-dir", "{d}"],
     "empty.txt: text of 0 characters"),
])
def test_a_failed_train_leaves_no_directory_behind(argv, says, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty.txt").write_text("")
    names = {"file": tmp_path / "file", "empty": tmp_path / "empty.txt", "d": tmp_path / "data"}
    argv = [a.format(**names) for a in argv]
    out = tmp_path / "new" / "nested" / "run"
    assert cli_main(["train", "--out", str(out), "--steps", "2", "--quiet", *argv]) in (1, 2)
    one_line(capsys, says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.txt", "file"]


def test_ctrl_c_is_one_line_exit_130_and_the_run_resumes(data_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--config", json.dumps(config(data_dir, steps=100_000)), "--quiet"]
    # pytest-xdist's workers ignore SIGINT and a child inherits that; a user's shell does not
    job = subprocess.Popen([sys.executable, "-m", "sparsedepth", *argv], stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "PYTHONPATH": SRC},
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not (out / "checkpoint").exists() and job.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        job.send_signal(signal.SIGINT)
        err = job.communicate(timeout=300)[1]
    finally:  # a test that fails must not leave a 100,000-step trainer running
        if job.poll() is None:
            job.kill()
            job.wait()
    assert job.returncode == 130, err
    assert err.count("\n") == 1 and "interrupted" in err and "--auto-resume" in err, err
    assert not (out / ".lock").exists() and not (out / "summary.json").exists()
    step = json.loads((out / "checkpoint" / "state.json").read_text())["step"]
    cfg = TrainConfig.from_dict(config(data_dir, steps=100_000))
    assert train(cfg, out, resume=True, stop_after=step + 1, progress=False) == {"stopped_at": step + 1}


def test_a_relative_data_dir_is_recorded_absolute_so_evaluate_works_from_anywhere(data_dir, tmp_path,  # noqa: F811
                                                                                  monkeypatch):
    monkeypatch.chdir(Path(data_dir).parent)
    train(TrainConfig.from_dict(config(Path(data_dir).name, **SHORT)), tmp_path / "run", progress=False)
    recorded = json.loads((tmp_path / "run" / "config.json").read_text())["data_dir"]
    assert recorded == str(Path(data_dir).resolve())
    monkeypatch.chdir(tmp_path)
    assert evaluate_run(tmp_path / "run", max_batches=1)["modes"]
    assert changed_fields({"data_path": "corpus.txt"}, {"data_path": str(tmp_path / "corpus.txt")}) == []
