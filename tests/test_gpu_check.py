"""`make gpu-check`'s script: its CPU form (the same code at tiny shapes) passes and writes every file the GPU
run writes; a failing part fails the whole check and names itself; bad input is one line, exit 2."""

import subprocess
import sys

import pandas as pd
import pytest
import torch

from sparsedepth import gpucheck
from sparsedepth.gpucheck import checks

FILES = {"checks.csv", "train.csv", "bench.csv", "speculative.csv", "summary.md", "tests.log"}


@pytest.mark.slow(seconds=45)
def test_the_cpu_form_passes_and_writes_what_the_gpu_run_writes(tmp_path):
    out = tmp_path / "gpu"
    cmd = [sys.executable, "-m", "sparsedepth.gpucheck", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert {p.name for p in out.iterdir()} == FILES  # the slice's data and runs are gone
    assert pd.read_csv(out / "checks.csv")["ok"].all()
    assert set(pd.read_csv(out / "checks.csv")["check"]) == {"tests", "train", "bench", "speculative"}
    train = pd.read_csv(out / "train.csv")
    assert list(train["arm"]) == ["dense", "dense-bf16", "dense-bf16-compile"]
    assert (train["loss_gap_vs_fp32"] <= checks.LOSS_TOLERANCE).all() and (train["mfu"] > 0).all()
    bench = pd.read_csv(out / "bench.csv")
    assert set(bench["kind"]) == {"train_step", "prefill", "decode", "prefill_cached"}
    assert set(bench["router"]) == {"dense", *checks.ROUTERS}
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check: passed") and "driver none (CPU)" in summary
    assert f"torch {torch.__version__}" in summary and "commit " in summary


def test_a_failing_part_fails_the_check_and_names_itself(tmp_path, monkeypatch):
    def broken(*args):
        raise RuntimeError("no kernel image is available\nsecond line")

    monkeypatch.setattr(checks, "gpu_tests", broken)
    out = tmp_path / "gpu"
    assert gpucheck.main(["--device", "cpu", "--out", str(out), "--skip", "train,bench"]) == 1
    table = pd.read_csv(out / "checks.csv")
    assert list(table["check"]) == ["tests"] and not table["ok"].any()
    summary = (out / "summary.md").read_text()
    assert summary.startswith("# GPU check: FAILED")
    assert "RuntimeError: no kernel image is available |" in summary  # its first line only


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is visible here")
def test_asking_for_cuda_without_it_is_one_line(tmp_path, capsys):
    assert gpucheck.main(["--device", "cuda", "--out", str(tmp_path / "gpu")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --device cuda") and "\n" not in err
    assert not (tmp_path / "gpu").exists()


def test_an_unknown_part_to_skip_is_one_line(tmp_path, capsys):
    assert gpucheck.main(["--device", "cpu", "--out", str(tmp_path / "gpu"), "--skip", "tests,lint"]) == 2
    assert "unknown parts ['lint']" in capsys.readouterr().err
