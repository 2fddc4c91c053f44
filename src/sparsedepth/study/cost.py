"""What a grid costs in device-hours, printed by the workflow when it plans a GPU grid (`snakemake -n`).

The numbers are the sums of the per-job estimates `study.slurm` sizes Slurm wall times from
(`train_seconds`, `evaluate_seconds`), before its safety factors (×2 and start-up minutes): each run's planned
training FLOPs, and its evaluation's forward FLOPs, at `slurm.GPU_FLOPS` sustained per GPU — a deliberately
pessimistic throughput (20 TFLOP/s: ≈6 % of an A100's 312 TFLOP/s dense bf16 peak, ≈2 % of an H100's
989), so the estimate errs high. A training job of `train.nproc` processes holds that many GPUs for its
time (the estimate does not assume they speed it up). Evaluation is counted on a GPU when training is
(`evaluate` follows the run's device), lm-eval when `lm_eval.device` is cuda; the benchmarks (a few fixed
jobs whose `max_seconds` caps them) and the CPU-only table, figure and paper jobs are left out.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import grid, slurm


@dataclass(frozen=True)
class Cost:
    runs: int             # training runs
    train_hours: float    # GPU-hours of training (× processes per job)
    evaluate_hours: float  # GPU-hours of evaluation and, on a GPU, lm-eval scoring

    @property
    def total_hours(self) -> float:
        return self.train_hours + self.evaluate_hours


def on_gpu(study: dict) -> bool:
    """Whether the grid trains on CUDA (the grids whose device-hours are GPU-hours)."""
    return study.get("train", {}).get("device", "cpu") == "cuda"


def estimate(study: dict, keys=None) -> Cost:
    """The GPU-hours of `study`'s runs (`keys`, default every run of the grid; the study prepared by
    `grid.prepare`)."""
    keys = grid.run_keys(study) if keys is None else list(keys)
    gpus = slurm.nproc(study)
    lm_eval = study.get("lm_eval", {})
    lm_eval_gpu = bool(lm_eval.get("enabled")) and lm_eval.get("device", "cpu") == "cuda"
    train = evaluate = 0.0
    for key in keys:
        train += gpus * slurm.train_seconds(study, key)
        evaluate += slurm.evaluate_seconds(study, key, "cuda")
        if lm_eval_gpu:  # sized as evaluation, as slurm.runtime sizes its jobs
            evaluate += slurm.evaluate_seconds(study, key, "cuda")
    return Cost(len(keys), train / 3600, evaluate / 3600)


def _hours(value: float) -> str:
    return f"{value:,.0f}" if value >= 10 else f"{value:,.1f}"


def summary(study: dict, keys=None) -> str:
    """One line: the grid's training runs and estimated GPU-hours, and the throughput assumed."""
    cost = estimate(study, keys)
    name = study.get("name", "study")
    return (f"{name}: {cost.runs:,} training runs, estimated {_hours(cost.total_hours)} GPU-hours (train "
            f"{_hours(cost.train_hours)}, evaluate {_hours(cost.evaluate_hours)}; benchmarks not counted) at "
            f"{slurm.GPU_FLOPS / 1e12:.0f} TFLOP/s sustained per GPU (a pessimistic rate: ≈6 % of an A100's "
            f"bf16 peak; sparsedepth.study.cost)")
