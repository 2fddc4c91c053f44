"""The GPU-hours a grid costs (sparsedepth.study.cost), printed by the dry run of a GPU grid: the sums of the
per-run estimates Slurm's wall times are sized from, so they grow with the runs and with the budgets."""

import copy
from pathlib import Path

import pytest

from sparsedepth.study import cost, slurm
from sparsedepth.study.grid import load_study, prepare, run_keys

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def paper():
    return load_study(REPO / "config" / "paper.yaml")


def _scaled_budgets(study: dict, factor: float) -> dict:
    out = copy.deepcopy(study)
    for spec in out["isoflop"]["budgets"].values():
        spec["flops"] = spec["flops"] * factor
    return prepare(out)  # the sweep's models are the same names and shapes; only their budgets change


def test_gpu_hours_are_the_sum_of_the_per_run_estimates(paper):
    keys = run_keys(paper)
    got = cost.estimate(paper, keys)
    assert got.runs == len(keys) > 100
    train = sum(slurm.train_seconds(paper, k) for k in keys) / 3600
    assert got.train_hours == pytest.approx(train)
    assert got.evaluate_hours > 0 and got.total_hours == pytest.approx(got.train_hours + got.evaluate_hours)


def test_gpu_hours_scale_with_the_runs_and_the_budgets(paper):
    keys = run_keys(paper)
    whole, half = cost.estimate(paper, keys), cost.estimate(paper, keys[::2])
    assert half.runs == (len(keys) + 1) // 2 and 0 < half.train_hours < whole.train_hours
    one_budget = [k for k in keys if k.model.startswith("C1-")]
    assert cost.estimate(paper, one_budget).train_hours < whole.train_hours / 3  # C3 and C10 cost more
    bigger = _scaled_budgets(paper, 10.0)
    # steps are whole numbers, so ten times the FLOPs is ten times the hours up to rounding
    assert cost.estimate(bigger).train_hours == pytest.approx(10 * whole.train_hours, rel=0.01)
    assert cost.estimate(bigger).evaluate_hours == pytest.approx(whole.evaluate_hours)  # evaluation: fixed
    two = {**paper, "train": {**paper["train"], "nproc": 2}}  # a job holds all its GPUs
    assert cost.estimate(two, keys).train_hours == pytest.approx(2 * whole.train_hours)


def test_the_summary_names_runs_hours_and_the_assumed_throughput(paper):
    line = cost.summary(paper)
    assert line.startswith(f"paper (GPU): {len(run_keys(paper))} training runs, estimated ")
    assert "GPU-hours (train " in line and "evaluate " in line and "20 TFLOP/s" in line
    assert "\n" not in line
    assert cost.on_gpu(paper)
    assert not cost.on_gpu(load_study(REPO / "config" / "config.yaml"))
