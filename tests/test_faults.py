"""Fault injection: kill -9 anywhere in training and checkpointing, concurrent trainers, corrupt files.

Every drill ends the same way: the run directory either finishes exactly as an uninterrupted run would
(same weights, same metrics), or fails with one clear line and leaves nothing that passes for finished.
Killed jobs are real processes forked from a `forkserver` (torch imported once there, so a trial costs a
fork, not an interpreter start); named kill points use the SPARSEDEPTH_FAULT hook (`atomic.fault_point`).
"""

import fcntl
import json
import multiprocessing
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import sparsedepth
from sparsedepth.checkpoint import CheckpointError
from sparsedepth.cli import main as cli_main
from sparsedepth.config import to_dict
from sparsedepth.data import prepare
from sparsedepth.train import TrainConfig, train

SRC = str(Path(sparsedepth.__file__).resolve().parents[1])
FIELDS = {
    "dataset": "shakespeare", "vocab_size": 512, "router": "random", "capacity": 0.5, "steps": 12,
    "batch_size": 4, "seq_len": 32, "warmup_steps": 2, "eval_every": 6, "log_every": 3, "eval_batches": 1,
    "checkpoint_every": 3, "threads": 1,
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32},
}
CHILD = """
import os, sys
os.environ.pop("SPARSEDEPTH_FAULT", None)
if ARGS["fault"]:
    os.environ["SPARSEDEPTH_FAULT"] = ARGS["fault"]
sys.stdout = sys.stderr = open(ARGS["log"], "a", buffering=1)
from sparsedepth.cli import main
sys.exit(main(ARGS["argv"]))
"""


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory) -> str:
    """One prepared corpus for the whole session, shared by xdist workers (preparing it is the slow part)."""
    base = tmp_path_factory.getbasetemp()
    root = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "faults-data"
    root.mkdir(exist_ok=True)
    with open(root.parent / "faults-data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        prepare("shakespeare", root / "shakespeare-v512", 512)
    return str(root)


def config(data_dir: str, **overrides) -> dict:
    return {**FIELDS, "data_dir": data_dir, **overrides}


def run_view(run: Path) -> tuple[dict, list]:
    """Weights and metrics (minus wall-clock speeds) of a finished run: what 'identical' compares."""
    metrics = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
               for line in (run / "metrics.jsonl").read_text().splitlines()]
    return load_file(str(run / "model.safetensors")), metrics


def assert_same_run(run: Path, reference: tuple[dict, list]) -> None:
    weights, metrics = run_view(run)
    assert metrics == reference[1]
    assert weights.keys() == reference[0].keys()
    assert all(torch.equal(weights[k], reference[0][k]) for k in weights)


@pytest.fixture(scope="session")
def reference(data_dir, tmp_path_factory) -> tuple[dict, list]:
    out = tmp_path_factory.mktemp("reference")
    train(TrainConfig.from_dict(config(data_dir)), out, progress=False)
    return run_view(out)


@pytest.fixture(scope="session")
def forkserver():
    ctx = multiprocessing.get_context("forkserver")
    # torch._dynamo too: torch imports it on the first optimizer (2.7 s), in every forked trainer otherwise
    ctx.set_forkserver_preload(["sparsedepth.train", "torch._dynamo"])
    warm_up = ctx.Process(target=int)  # start the server (it imports torch) before anything is timed
    warm_up.start()
    warm_up.join()
    return ctx


def train_argv(cfg: dict, out: Path, auto_resume: bool = True) -> list[str]:
    """The workflow's command: `train --out OUT --config JSON --auto-resume --quiet`."""
    argv = ["train", "--out", str(out), "--config", json.dumps(cfg), "--quiet"]
    return argv + ["--auto-resume"] if auto_resume else argv


def spawn(ctx, cfg: dict, out: Path, fault: str | None = None, auto_resume: bool = True):
    """`train` in a forked process (killed by the test, or by the fault hook at `fault`)."""
    log = str(out.parent / f"{out.name}.log")
    args = {"argv": train_argv(cfg, out, auto_resume), "fault": fault, "log": log}
    process = ctx.Process(target=exec, args=(CHILD, {"ARGS": args}))
    process.start()
    return process


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
        return st.st_ino, st.st_mtime_ns
    except FileNotFoundError:
        return None


def until_committed(process, run: Path, before: tuple[int, int] | None) -> None:
    """Wait until the job has validated and rewritten metrics.jsonl, i.e. is about to train (or ended)."""
    while process.exitcode is None and _stamp(run / "metrics.jsonl") == before:
        time.sleep(0.002)


@pytest.fixture(scope="session")
def child_seconds(forkserver, data_dir, reference, tmp_path_factory) -> float:
    """How long a job trains and checkpoints, once it is past its start-up (so random kills land there);
    also checks that a forked job trains exactly what the test process does."""
    out = tmp_path_factory.mktemp("child") / "run"
    process = spawn(forkserver, config(data_dir), out)
    until_committed(process, out, None)
    start = time.perf_counter()
    process.join()
    assert process.exitcode == 0, (out.parent / "run.log").read_text()
    assert_same_run(out, reference)
    return time.perf_counter() - start


def assert_nothing_passes_for_finished(run: Path, reference) -> None:
    if (run / "summary.json").exists():
        assert_same_run(run, reference)


@pytest.mark.parametrize("trial", range(6))
def test_kill_at_random_times_then_auto_resume_is_an_uninterrupted_run(trial, forkserver, child_seconds,
                                                                       data_dir, reference, tmp_path):
    """Two kill -9s at random moments of training and checkpointing (a fresh job, then its auto-resume),
    then a last auto-resume. (Kills during start-up are the named point `train:committed` below.)"""
    rng, out, cfg = random.Random(trial), tmp_path / "run", config(data_dir)
    for attempt in range(2):
        before = _stamp(out / "metrics.jsonl")
        process = spawn(forkserver, cfg, out)
        until_committed(process, out, before)
        time.sleep(rng.uniform(0.0, child_seconds / (1 + attempt)))  # a resumed job has less to do
        if process.exitcode is None:
            os.kill(process.pid, signal.SIGKILL)
        process.join()
        assert process.exitcode in (0, -signal.SIGKILL), (tmp_path / "run.log").read_text()
        assert_nothing_passes_for_finished(out, reference)
    assert cli_main(train_argv(cfg, out)) == 0
    assert_same_run(out, reference)
    assert not (out / ".lock").exists() and not list(out.glob("checkpoint.*"))


@pytest.mark.parametrize("point, says", [
    ("train:committed", "stale lock"),
    ("checkpoint:begin@2", "from step 3 of 12"),
    ("checkpoint:weights_written@2", "from step 3 of 12"),
    ("checkpoint:tmp_written@2", "from step 3 of 12"),
    ("checkpoint:after_first_rename", "recovered"),  # no `checkpoint`, a complete .tmp and the .old
    ("checkpoint:after_first_rename@3", "from step 12 of 12"),
    ("checkpoint:after_second_rename@2", "from step 6 of 12"),  # a leftover non-empty checkpoint.old
    ("train:before_summary", "from step 12 of 12"),
])
def test_kill_at_each_checkpointing_step_then_auto_resume(point, says, forkserver, data_dir, reference,
                                                          tmp_path, capsys):
    out, cfg = tmp_path / "run", config(data_dir)
    process = spawn(forkserver, cfg, out, fault=point)
    process.join()
    assert process.exitcode == -signal.SIGKILL, (tmp_path / "run.log").read_text()
    assert not (out / "summary.json").exists()
    capsys.readouterr()
    assert cli_main(train_argv(cfg, out)) == 0
    notes = capsys.readouterr().err
    assert says in notes, notes
    assert "from step 0" not in notes or point == "train:committed"  # (killed before any checkpoint)
    assert_same_run(out, reference)
    assert not list(out.glob("checkpoint.*")) and not list(out.glob("*.tmp"))


def test_concurrent_trainers_on_one_directory(forkserver, data_dir, reference, tmp_path):
    """Two trainers (seeds 0 and 1) started together: one runs, the other fails at once naming it (or, if
    it starts only once the first has finished, is refused the finished run)."""
    out = tmp_path / "run"
    contenders = [spawn(forkserver, config(data_dir, seed=seed), out, auto_resume=False) for seed in (0, 1)]
    for process in contenders:
        process.join()
    assert sorted(p.exitcode for p in contenders) in ([0, 1], [0, 2])
    log = (tmp_path / "run.log").read_text()
    assert "in use by train (pid" in log or "is a finished run of another config" in log
    winner = json.loads((out / "config.json").read_text())["seed"]
    if winner == 0:
        assert_same_run(out, reference)
    else:
        alone = tmp_path / "alone"
        train(TrainConfig.from_dict(config(data_dir, seed=1)), alone, progress=False)
        assert_same_run(out, run_view(alone))


def test_a_held_lock_refuses_train_and_evaluate_in_one_line(data_dir, tmp_path, capsys):
    from sparsedepth.rundir import RunLocked, run_lock

    out = tmp_path / "run"
    cfg = TrainConfig.from_dict(config(data_dir, steps=3))
    train(cfg, out, progress=False)
    with run_lock(out, "export"):
        with pytest.raises(RunLocked, match=f"in use by export \\(pid {os.getpid()} on host"):
            train(cfg, out, progress=False)
        assert cli_main(["evaluate", "--run", str(out), "--max-batches", "1"]) == 1
        assert capsys.readouterr().err.count("\n") == 1
    assert (out / "summary.json").exists()  # the refused train replaced nothing
    assert cli_main(["evaluate", "--run", str(out), "--max-batches", "1"]) == 0


def test_readers_of_a_finished_run_share_it_and_exclude_only_a_trainer(data_dir, tmp_path, capsys):
    """The paper grid schedules `evaluate` and `hf export` of one run at the same time (the rehearsal
    found the second refused): readers coexist, a trainer is refused while any reader works, and a reader
    is refused while a trainer works."""
    from sparsedepth.rundir import RunLocked, run_lock

    out = tmp_path / "run"
    cfg = TrainConfig.from_dict(config(data_dir, steps=3))
    train(cfg, out, progress=False)
    with run_lock(out, "export", shared=True):
        assert cli_main(["evaluate", "--run", str(out), "--max-batches", "1"]) == 0  # beside the export
        with pytest.raises(RunLocked, match="in use by evaluate or hf export"):
            train(cfg, out, progress=False)
    refused = f"in use by train \\(pid {os.getpid()}"
    with run_lock(out, "train"), pytest.raises(RunLocked, match=refused):
        run_lock(out, "evaluate", shared=True).__enter__()
    with run_lock(out, "evaluate", shared=True):  # nothing left over: free again
        pass


@pytest.fixture
def stopped(data_dir, tmp_path) -> tuple[TrainConfig, Path]:
    """A run killed after its checkpoint at step 6 of 12."""
    cfg = TrainConfig.from_dict(config(data_dir))
    train(cfg, tmp_path / "run", stop_after=6, progress=False)
    return cfg, tmp_path / "run"


def auto_resume(cfg: TrainConfig, run: Path) -> None:
    assert cli_main(train_argv(to_dict(cfg), run)) == 0


def zero_tensor_bytes(path: Path) -> None:
    """Zero 32 bytes in the middle of the tensor data (the header stays valid)."""
    raw = bytearray(path.read_bytes())
    start = 8 + int.from_bytes(raw[:8], "little")
    middle = (start + len(raw)) // 2
    assert any(raw[middle : middle + 32])
    raw[middle : middle + 32] = bytes(32)
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("damage, message", [
    (lambda run: zero_tensor_bytes(run / "checkpoint" / "model.safetensors"), "sha256"),
    (lambda run: zero_tensor_bytes(run / "checkpoint" / "state.safetensors"), "sha256"),
    (lambda run: (run / "checkpoint" / "state.json").write_text('{"step": 6, "trai'), "corrupt checkpoint"),
    (lambda run: (run / "metrics.jsonl").write_text('{"step": 3, "loss": 6.1}\n{"st\n{"step": 6}\n'),
     "metrics.jsonl line 2 is corrupt"),
])
def test_corrupt_files_are_one_clear_error_and_delete_nothing(damage, message, stopped):
    cfg, run = stopped
    damage(run)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with pytest.raises(CheckpointError, match=message):
        train(cfg, run, resume=True, progress=False)
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before


def test_a_torn_last_metrics_line_is_dropped_and_resume_is_exact(stopped, reference):
    cfg, run = stopped
    with (run / "metrics.jsonl").open("a") as f:
        f.write('{"step": 9, "loss": 5.')  # what a kill in the middle of an append leaves
    train(cfg, run, resume=True, progress=False)
    assert_same_run(run, reference)


def test_leftover_checkpoint_old_and_half_swaps_recover(stopped, reference, capsys):
    """A non-empty checkpoint.old beside the checkpoint (killed while deleting it) once made every later
    train fail with Errno 39; a checkpoint moved to .old with no .tmp (killed between the renames of an
    older layout) once made --auto-resume restart from step 0."""
    cfg, run = stopped
    shutil.copytree(run / "checkpoint", run / "checkpoint.old")
    (run / "checkpoint.tmp").mkdir()
    (run / "checkpoint.tmp" / "model.safetensors").write_bytes(b"half")
    auto_resume(cfg, run)
    assert_same_run(run, reference)
    train(cfg, run, stop_after=6, progress=False, overwrite=True)
    (run / "checkpoint").rename(run / "checkpoint.old")
    capsys.readouterr()
    auto_resume(cfg, run)
    assert "restored" in capsys.readouterr().err
    assert_same_run(run, reference)


def test_zeroed_bytes_in_finished_weights_fail_evaluate(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig.from_dict(config(data_dir, steps=3)), run, progress=False)
    zero_tensor_bytes(run / "model.safetensors")
    assert cli_main(["evaluate", "--run", str(run), "--max-batches", "1"]) == 1
    assert "sha256" in capsys.readouterr().err


def test_truncated_config_json_is_one_line(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(TrainConfig.from_dict(config(data_dir, steps=3)), run, progress=False)
    (run / "config.json").write_text('{"dataset": "shakesp')
    for argv in (["evaluate", "--run", str(run)], ["train", "--out", str(run), "--resume", "--quiet"]):
        assert cli_main(argv) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "config.json is corrupt" in err, err
    assert (run / "model.safetensors").exists() and (run / "summary.json").exists()


def test_disk_full_while_writing_eval_is_one_line_and_leaves_no_tmp(data_dir, tmp_path):
    """A real write failure: the file-size limit (EFBIG) stands in for a full disk."""
    run = tmp_path / "run"
    train(TrainConfig.from_dict(config(data_dir, steps=3)), run, progress=False)

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, resource.RLIM_INFINITY))

    result = subprocess.run(
        [sys.executable, "-m", "sparsedepth", "evaluate", "--run", str(run), "--out", str(run / "eval.json"),
         "--units", str(run / "units.csv"), "--max-batches", "1"],
        capture_output=True, text=True, preexec_fn=limit, timeout=300,
        env={**os.environ, "PYTHONPATH": SRC, "PYTHONDONTWRITEBYTECODE": "1"})
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("sparsedepth: error:") and result.stderr.count("\n") == 1, result.stderr
    assert not list(run.glob("*.tmp")) and not (run / "eval.json").exists()
