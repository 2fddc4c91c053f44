"""Data-parallel training: 2 processes × batch b equal 1 process × batch 2b (gloo on the CPU), a killed
2-process run resumes exactly from rank 0's checkpoint, and `--nproc` goes through torch.distributed.run."""

import json
import os
import subprocess
import sys

import pytest
import torch

from sparsedepth import cli, distributed
from sparsedepth.config import ConfigError
from sparsedepth.distributed import World, shard
from sparsedepth.train import TrainConfig, train

# MoD: a learned router with an auxiliary loss (per-token mean BCE), top-k per sample
RUN = {"dataset": "shakespeare", "vocab_size": 512, "steps": 12, "batch_size": 8, "seq_len": 64,
       "lr": 3e-3, "warmup_steps": 2, "eval_every": 6, "log_every": 2, "eval_batches": 2,
       "checkpoint_every": 6, "threads": 1, "router": "mod", "capacity": 0.5,
       "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 64}}
RTOL = 1e-4  # float summation order (per-rank means, then the average of gradients) over 12 Adam steps


def records(run_dir) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in lines]


def torchrun_train(config: dict, out, *extra, fault: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("SPARSEDEPTH_FAULT", None)
    if fault:
        env["SPARSEDEPTH_FAULT"] = fault
    command = [sys.executable, "-m", "sparsedepth", "train", "--out", str(out), "--quiet",
               "--config", json.dumps(config), "--nproc", "2", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process with the global batch, and two processes splitting it (the same data dir)."""
    root = tmp_path_factory.mktemp("ddp")
    config = {**RUN, "data_dir": str(root / "data")}
    single = train(TrainConfig.from_dict(config), root / "single", progress=False)
    done = torchrun_train(config, root / "ddp")
    assert done.returncode == 0, done.stderr[-3000:]
    return root, config, single, json.loads(done.stdout)


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_global_batch(runs):
    root, _, single, ddp = runs
    assert ddp["world_size"] == 2 and single["world_size"] == 1
    assert ddp["train_flops"] == pytest.approx(single["train_flops"], rel=1e-12)  # the global batch counted
    assert ddp["planned_train_flops"] == single["planned_train_flops"]
    one, two = records(root / "single"), records(root / "ddp")
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=RTOL, abs=1e-6), (a["step"], key)
    assert ddp["val_loss"] == pytest.approx(single["val_loss"], rel=RTOL)
    # only rank 0 wrote the run directory, and it holds what a single-process run holds
    def names(d):
        return sorted(p.name for p in (root / d).iterdir())

    assert names("ddp") == names("single")


@pytest.mark.slow
def test_a_killed_two_process_run_resumes_exactly(runs):
    root, config, _, ddp = runs
    out = root / "killed"
    killed = torchrun_train(config, out, fault="checkpoint:after_second_rename")  # rank 0, after step 6
    assert killed.returncode != 0 and not (out / "summary.json").exists()
    resumed = torchrun_train(config, out, "--auto-resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stderr and "from step 6" in resumed.stderr
    summary = json.loads(resumed.stdout)
    for key in ("final_train_loss", "val_loss", "train_flops"):
        assert summary[key] == ddp[key], key
    assert records(out) == records(root / "ddp")


def test_shard_takes_each_ranks_contiguous_slice():
    batch = torch.arange(12).view(6, 2)
    parts = [shard(batch, World(rank, 3)) for rank in range(3)]
    assert torch.equal(torch.cat(parts), batch) and all(p.shape == (2, 2) for p in parts)
    assert shard(batch, World()) is batch
    assert World(1, 2, 1).device("cuda") == "cuda:1" and World().device("cuda") == "cuda"
    assert World(1, 2, 1).device("cpu") == "cpu"


def test_batch_size_must_split_evenly_over_the_processes():
    with pytest.raises(ConfigError, match="multiple of nproc"):
        TrainConfig.from_dict({"batch_size": 6, "nproc": 4})


def test_nproc_reruns_the_command_under_torchrun(monkeypatch, tmp_path):
    seen = {}

    def fake_run(command, check):
        seen["command"] = command
        return subprocess.CompletedProcess(command, 3)

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(distributed.subprocess, "run", fake_run)
    argv = ["train", "--out", str(tmp_path / "r"), "--nproc", "2", "--batch-size", "4", "--quiet"]
    assert cli.main(argv) == 3  # torchrun's exit status is the command's
    command = seen["command"]
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m"]
    assert command[6:] == ["--", "sparsedepth", *argv]
    assert not (tmp_path / "r").exists()  # the launcher itself writes nothing


def test_a_grid_with_nproc_asks_slurm_for_that_many_gpus_and_cpus():
    from pathlib import Path

    from sparsedepth.study import slurm
    from sparsedepth.study.grid import load_study, run_keys, train_config

    paper = load_study(Path(__file__).parents[1] / "config" / "paper.yaml")
    key = run_keys(paper)[-1]
    four = {**paper, "train": {**paper["train"], "nproc": 4}}
    assert train_config(four, key).nproc == 4
    assert slurm.nproc(paper) == 1 and slurm.nproc(four) == 4
    assert slurm.gpus(four, "train") == 4
    assert slurm.gpus(four, "evaluate") == 1  # evaluation: one process, on the run's device
    assert slurm.site(slurm.gpus(four, "train"), env={})["gres"] == "gpu:4"
    assert slurm.mem_mb(four, "train", key) > slurm.mem_mb(paper, "train", key)
    cpu = {**four, "train": {**four["train"], "device": "cpu"}}
    assert slurm.gpus(cpu, "train") == 0
