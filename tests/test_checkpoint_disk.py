"""A finished run's disk footprint: its last checkpoint keeps no optimizer state and shares the final
weights with model.safetensors, while an interrupted run still resumes bit-identically."""

import json
import os

import pytest
from safetensors import safe_open

from sparsedepth.train import TrainConfig, train


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def tiny(data_dir: str, **overrides) -> TrainConfig:
    base = {"dataset": "shakespeare", "data_dir": data_dir, "vocab_size": 512, "steps": 8, "batch_size": 4,
            "seq_len": 32, "warmup_steps": 2, "eval_every": 4, "log_every": 4, "eval_batches": 1,
            "checkpoint_every": 3, "threads": 1, "router": "mod", "capacity": 0.5,
            "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 32}}
    return TrainConfig.from_dict({**base, **overrides})


def disk_bytes(run) -> int:
    """Bytes the run directory occupies, each inode once (hard links counted once, as `du` does)."""
    seen = {}
    for path in run.rglob("*"):
        if path.is_file():
            st = path.stat()
            seen[st.st_ino] = st.st_size
    return sum(seen.values())


def optimizer_tensors(checkpoint) -> list[str]:
    with safe_open(checkpoint / "state.safetensors", "pt") as f:
        return [k for k in f.keys() if k.startswith("optim.")]  # noqa: SIM118 (not a dict)


def test_a_finished_run_keeps_no_optimizer_state_and_its_weights_once(data_dir, tmp_path):
    run = tmp_path / "run"
    train(tiny(data_dir), run, progress=False)  # 8 steps, checkpoints every 3: the last one at step 8
    checkpoint = run / "checkpoint"
    info = json.loads((checkpoint / "state.json").read_text())
    assert info["step"] == 8 and info["optimizer"] is None and info["optimizer_state"] is False
    assert optimizer_tensors(checkpoint) == []
    assert os.path.samefile(checkpoint / "model.safetensors", run / "model.safetensors")
    weights = (run / "model.safetensors").stat().st_size
    assert disk_bytes(run) < 1.2 * weights  # before: weights twice + Adam's two moments, about 4×


def test_deleted_outputs_refinish_from_the_last_checkpoint_without_training(data_dir, tmp_path, capsys):
    """What Snakemake does before rerunning a finished train job: it deletes summary.json and
    model.safetensors; the weights-only checkpoint re-finishes the run, the same bytes, no step retrained."""
    run = tmp_path / "run"
    cfg = tiny(data_dir)
    first = train(cfg, run, progress=False)
    weights, metrics = (run / "model.safetensors").read_bytes(), (run / "metrics.jsonl").read_text()
    (run / "model.safetensors").unlink()
    (run / "summary.json").unlink()
    again = train(cfg, run, auto_resume=True, progress=False)
    assert "from step 8 of 8" in capsys.readouterr().err
    assert (run / "model.safetensors").read_bytes() == weights
    assert (run / "metrics.jsonl").read_text() == metrics
    keep = {k: v for k, v in first.items() if k != "wall_s_this_session"}
    assert {k: v for k, v in again.items() if k != "wall_s_this_session"} == keep
    assert os.path.samefile(run / "checkpoint" / "model.safetensors", run / "model.safetensors")


def test_an_interrupted_run_keeps_its_optimizer_and_resumes_bit_identically(data_dir, tmp_path):
    cfg = tiny(data_dir)
    train(cfg, tmp_path / "straight", progress=False)
    assert train(cfg, tmp_path / "resumed", stop_after=6, progress=False) == {"stopped_at": 6}
    assert optimizer_tensors(tmp_path / "resumed" / "checkpoint")  # step 6 of 8: Adam's moments kept
    train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert (tmp_path / "resumed" / "model.safetensors").read_bytes() == \
        (tmp_path / "straight" / "model.safetensors").read_bytes()


def test_weights_follow_the_umask_not_safetensors_0600(data_dir, tmp_path):
    """safetensors writes 0600 whatever the umask: on a shared cluster the group could read a run's
    metrics but not its weights. Under umask 022 every file of a finished run is world-readable."""
    old = os.umask(0o022)
    try:
        run = tmp_path / "run"
        train(tiny(data_dir), run, progress=False)
    finally:
        os.umask(old)
    files = [p for p in run.rglob("*") if p.is_file() and p.name != ".lock"]
    assert any(p.suffix == ".safetensors" for p in files)
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: "0o644" for p in files}
