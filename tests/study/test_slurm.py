"""The Slurm profile and the resources the rules ask a cluster for (sparsedepth.study.slurm); then,
where a Slurm cluster answers, a slice of the smoke grid through `--profile profiles/slurm` end to end, whose
evaluations must equal a local run of the same slice (`make cluster-test` stands up a one-node cluster
first)."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
import yaml

from sparsedepth.study import slurm
from sparsedepth.study.grid import load_study, run_keys

REPO = Path(__file__).resolve().parents[2]
PROFILE = REPO / "profiles" / "slurm" / "config.yaml"
TIMINGS = os.environ.get("SPARSEDEPTH_CLUSTER_TEST_TIMINGS")  # where `make cluster-test` wants the wall times


def workflow_rules() -> set[str]:
    files = [REPO / "Snakefile", *sorted((REPO / "workflow" / "rules").glob("*.smk"))]
    return {m for f in files for m in re.findall(r"^rule (\w+):", f.read_text(), flags=re.M)}


def test_profile_keys_name_rules_of_the_workflow():
    profile = yaml.safe_load(PROFILE.read_text())
    rules = workflow_rules()
    assert {"train", "evaluate", "benchmark_grid", "prepare_data"} <= rules
    for key in ("set-resources", "set-threads"):
        unknown = set(profile.get(key) or {}) - rules
        assert not unknown, f"profiles/slurm {key}: {sorted(unknown)} name no rule (rules: {sorted(rules)})"
    assert profile["executor"] == "slurm"
    assert profile["slurm-status-command"] == "squeue"  # works with and without accounting
    for name, value in (profile.get("default-resources") or {}).items():
        assert value not in ("", None), f"default-resources.{name} is empty: sbatch would get an empty flag"
        assert name != "gres", "a default GPU request would reach every job, CPU-only grids included"


@pytest.mark.parametrize("config, train_gpu, bench_gpu", [
    ("smoke.yaml", False, False), ("config.yaml", False, False), ("paper.yaml", True, True)])
def test_gpus_follow_the_grids_device(config, train_gpu, bench_gpu):
    study = load_study(REPO / "config" / config)
    assert slurm.gpus(study, "train") == int(train_gpu)
    assert slurm.gpus(study, "evaluate") == int(train_gpu)  # evaluation runs on the run's device (issue 16)
    assert slurm.gpus(study, "benchmark_grid") == int(bench_gpu)
    for rule in ("prepare_data", "aggregate", "stats", "figure", "table", "paper"):
        assert slurm.gpus(study, rule) == 0, rule
    assert ("gres" in slurm.site(slurm.gpus(study, "train"), env={})) == train_gpu


def test_runtime_and_memory_are_sized_from_the_grid():
    smoke, paper = (load_study(REPO / "config" / name) for name in ("smoke.yaml", "paper.yaml"))
    small, big = run_keys(smoke)[0], run_keys(paper)[-1]
    for rule in ("train", "evaluate"):
        assert 0 < slurm.runtime(smoke, rule, small) < slurm.runtime(paper, rule, big)
        assert 1000 <= slurm.mem_mb(smoke, rule, small) <= slurm.mem_mb(paper, rule, big)
    assert slurm.runtime(smoke, "train", small) <= 30  # a smoke job fits any debug partition
    assert slurm.runtime(paper, "train", big, attempt=2) == 2 * slurm.runtime(paper, "train", big)
    assert slurm.runtime(paper, "train", big, env={"SPARSEDEPTH_SLURM_MAX_RUNTIME": "2880"}) <= 2880
    for rule in ("prepare_data", "benchmark_grid", "merge_benchmarks", "aggregate", "stats", "figure",
                 "table", "paper"):
        assert slurm.runtime(smoke, rule) > 0 and slurm.mem_mb(smoke, rule) > 0, rule


def test_site_settings_come_from_the_environment():
    assert slurm.site(0, env={}) == {}
    env = {"SPARSEDEPTH_SLURM_ACCOUNT": "proj", "SPARSEDEPTH_SLURM_PARTITION": "cpu"}
    assert slurm.site(0, env) == {"slurm_account": "proj", "slurm_partition": "cpu"}
    assert slurm.site(1, env) == {"slurm_account": "proj", "slurm_partition": "cpu", "gres": "gpu:1"}
    env |= {"SPARSEDEPTH_SLURM_GPU_PARTITION": "gpu", "SPARSEDEPTH_SLURM_GPU_GRES": "gpu:a100"}
    assert slurm.site(1, env) == {"slurm_account": "proj", "slurm_partition": "gpu", "gres": "gpu:a100:1"}
    assert slurm.site(0, env)["slurm_partition"] == "cpu"


def slurm_unavailable() -> str | None:
    """Why the end-to-end test cannot run here, or None."""
    if shutil.which("sinfo") is None:
        return ("no Slurm here (`sinfo` not found); `make cluster-test` stands up a one-node cluster as root "
                "(../shared/slurm/single-node.sh)")
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "Slurm installed but `sinfo` does not answer (controller down?)"
    states = out.stdout.split()
    if out.returncode != 0 or not any(s.rstrip("*") in ("idle", "mix", "alloc") for s in states):
        return (f"Slurm installed but no usable node (`sinfo`: {(out.stdout + out.stderr).strip()[:200]!r}); "
                "start the daemons: `make cluster-test` or ../shared/slurm/single-node.sh")
    return None


# What goes through Slurm: every kind of job that trains, evaluates or times (prepare_data, train, evaluate,
# benchmark_grid, merge_benchmarks), on a slice of the smoke grid: three arms of one cell, one seed. The
# analysis jobs (aggregate, stats, figures, tables, the PDF) are local work on these files, submitted the same
# way; the whole smoke grid through Slurm took 7 minutes of CI for no further kind of job.
SLICE_RUNS = [f"results/runs/C1-s32/{arm}/shakespeare/seed0" for arm in ("dense", "mod", "early_exit")]
TARGETS = (*(f"{run}/eval.json" for run in SLICE_RUNS), "results/bench/bench.csv")
TIMING_KEYS = {"train_tokens_per_s", "wall_s_this_session"}  # wall-clock dependent; the rest is deterministic


def run_smoke(workdir: Path, *args: str, timeout: float) -> float:
    """The smoke slice's evaluations and benchmark table in `workdir`; returns its wall time in seconds."""
    shutil.copytree(REPO / "paper", workdir / "paper", ignore=shutil.ignore_patterns("*.pdf", "*.aux"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    start = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args,
         "--configfile", str(REPO / "config" / "smoke.yaml"), "--directory", str(workdir), *TARGETS],
        cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    seconds = time.perf_counter() - start
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-6000:]
    return seconds


def measured(run: Path) -> dict:
    """A run's evaluation and training summary as flat {key: value}, wall-clock dependent keys left out."""
    def flat(value, prefix=""):
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{prefix}{key}.").items()}
        return {} if prefix.rstrip(".").rsplit(".", 1)[-1] in TIMING_KEYS else {prefix.rstrip("."): value}
    return flat({name: json.loads((run / f"{name}.json").read_text()) for name in ("eval", "summary")})


@pytest.mark.slurm
@pytest.mark.slow
def test_smoke_slice_through_slurm_equals_a_local_run(tmp_path):
    reason = slurm_unavailable()
    if reason and os.environ.get("SPARSEDEPTH_REQUIRE_SLURM"):
        pytest.fail(reason)
    if reason:
        pytest.skip(reason)
    # Both at once: the Slurm run spends much of its time submitting and polling, and CI waits for both.
    # The profile as shipped; only the first status check comes sooner than its 40 s, to save test time.
    with ThreadPoolExecutor(2) as pool:
        local = pool.submit(run_smoke, tmp_path / "local", "--cores", "2", "--resources", "gpu=1",
                            timeout=600)
        cluster = pool.submit(run_smoke, tmp_path / "slurm", "--profile", str(REPO / "profiles" / "slurm"),
                              "--slurm-init-seconds-before-status-checks", "5", timeout=900)
        local, cluster = local.result(), cluster.result()
    line = f"smoke slice wall time, side by side: local {local:.0f} s, through Slurm {cluster:.0f} s"
    print(line)
    if TIMINGS:
        Path(TIMINGS).write_text(line + "\n")
    for run in SLICE_RUNS:
        expected, got = measured(tmp_path / "local" / run), measured(tmp_path / "slurm" / run)
        assert got.keys() == expected.keys() and expected, run
        for key, value in expected.items():
            assert got[key] == (pytest.approx(value, rel=1e-9, abs=0, nan_ok=True) if isinstance(value, float)
                                else value), f"{run}: {key}"
    bench = [pd.read_csv(tmp_path / side / "results" / "bench" / "bench.csv") for side in ("local", "slurm")]
    assert len(bench[1]) == len(bench[0]) > 0


def test_evaluation_time_follows_the_runs_device():
    """Evaluation runs on the run's device (issue 16), so its estimate uses the GPU's throughput there, not
    the CPU's; lm-eval follows its own device."""
    paper = load_study(REPO / "config" / "paper.yaml")
    on_cpu = {**paper, "train": {**paper["train"], "device": "cpu"}}
    key = run_keys(paper)[-1]
    gpu_s, cpu_s = slurm.evaluate_seconds(paper, key), slurm.evaluate_seconds(on_cpu, key)
    threads = max(1, paper.get("threads", 1))
    assert gpu_s == pytest.approx(cpu_s * slurm.EVAL_FLOPS_PER_THREAD * threads / slurm.GPU_FLOPS)
    assert slurm.runtime(paper, "evaluate", key) < slurm.runtime(on_cpu, "evaluate", key)
    lm_cpu = {**paper, "lm_eval": {**paper.get("lm_eval", {}), "device": "cpu"}}
    assert slurm.evaluate_seconds(lm_cpu, key, "cpu") == pytest.approx(cpu_s)


def test_run_configs_are_resolved_once_per_study_and_run(monkeypatch):
    """slurm sizes train/evaluate (runtime and memory) from each run's TrainConfig after the Snakefile has
    resolved them all: the resolution is cached, an edited study is resolved afresh, and a caller's edits to
    its copy never reach another caller."""
    from sparsedepth.study import grid

    paper = load_study(REPO / "config" / "paper.yaml")
    key = run_keys(paper)[0]
    calls = []
    real = grid._train_config
    monkeypatch.setattr(grid, "_train_config", lambda study, k: calls.append(k) or real(study, k))
    grid._resolved.cache_clear()
    first = grid.train_config(paper, key)
    for rule in ("train", "evaluate"):
        slurm.runtime(paper, rule, key), slurm.mem_mb(paper, rule, key)
    assert calls == [key]
    first.steps = -1
    assert grid.train_config(paper, key).steps > 0
    grid.train_config({**paper, "seeds": [*paper["seeds"]], "threads": 3}, key)
    assert calls == [key, key]
