"""What each workflow job asks a Slurm cluster for (profiles/slurm), sized from the study grid.

The rules declare these as `resources:` (workflow/rules/common.smk), so they follow the grid that runs: a
CPU-sized grid asks for no GPU and short jobs, the GPU-sized one for a GPU per training/evaluation job and
wall times from its FLOPs; a grid with `train: {nproc: N}` gives each training job N processes (torchrun
on one node: N GPUs as `gres`, N × threads CPUs through the rule's `threads`). Nothing here is site
policy except what the environment gives (the variables in `SITE_VARIABLES`, read where Snakemake runs
and passed on to every job by `sbatch --export=ALL`):

    SPARSEDEPTH_SLURM_ACCOUNT        -A for every job (default: none, the plugin guesses or goes without)
    SPARSEDEPTH_SLURM_PARTITION      -p for jobs without a GPU (default: the cluster's default partition)
    SPARSEDEPTH_SLURM_GPU_PARTITION  -p for jobs with a GPU (default: SPARSEDEPTH_SLURM_PARTITION)
    SPARSEDEPTH_SLURM_GPU_GRES       the GRES a GPU is asked as, e.g. `gpu:a100` (default `gpu`)
    SPARSEDEPTH_SLURM_MAX_RUNTIME    cap on any job's wall time in minutes (a partition's MaxTime); a capped
                                     training job resumes from its checkpoint when retried

Run times are estimates with a wide margin (planned training FLOPs at a deliberately low throughput, ×2,
plus start-up), doubled on each retry (`attempt`). Memory is host memory (`--mem`), not GPU memory.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

from ..flops import train_flops_per_step
from . import grid
from .grid import train_config
from .layout import RunKey

SITE_VARIABLES = ("SPARSEDEPTH_SLURM_ACCOUNT", "SPARSEDEPTH_SLURM_PARTITION",
                  "SPARSEDEPTH_SLURM_GPU_PARTITION", "SPARSEDEPTH_SLURM_GPU_GRES",
                  "SPARSEDEPTH_SLURM_MAX_RUNTIME")

# Deliberately pessimistic sustained throughputs (FLOP/s): the estimate should overshoot, never undershoot.
CPU_FLOPS_PER_THREAD = 5e9
GPU_FLOPS = 2e13
START_MINUTES = 10           # scheduling slack, interpreter + torch import, data loading, checkpoints
HUB_DATASETS = {"wikipedia", "tinystories", "wikitext2"}  # downloaded and tokenised at scale
EVAL_TOKENS = {"wikipedia": 1e7, "tinystories": 1e7, "wikitext2": 1e6,  # validation + test, roughly
               "enwik8": 1e7}  # 5 M + 5 M bytes
EVAL_FLOPS_PER_THREAD = 2e10  # forward only, large batches (on the CPU; on CUDA: GPU_FLOPS, as training)

# Jobs that only read tidy tables or plot: (minutes, MB).
SMALL = {"aggregate": (30, 4000), "stats": (60, 8000), "merge_benchmarks": (15, 2000),
         "merge_speculative": (15, 2000), "figure": (30, 8000), "table": (15, 2000), "paper": (30, 4000),
         "export_hf": (15, 4000)}


def _round_up(value: float, step: int) -> int:
    return int(math.ceil(value / step) * step)


def _minutes(minutes: float, attempt: int, env: Mapping[str, str]) -> int:
    minutes = _round_up(minutes, 10) * max(1, attempt)
    cap = env.get("SPARSEDEPTH_SLURM_MAX_RUNTIME")
    return min(minutes, int(cap)) if cap else minutes


def nproc(study: dict) -> int:
    """Processes per training job (`train.nproc`: data-parallel under torchrun, one GPU each on cuda)."""
    return int(study.get("train", {}).get("nproc", 1))


def gpus(study: dict, rule: str) -> int:
    """GPUs a job of `rule` needs, from the grid's device (train.device, benchmark.device; `auto`: none)."""
    if rule == "train":  # N data-parallel processes, one GPU each
        return nproc(study) * int(study.get("train", {}).get("device", "cpu") == "cuda")
    if rule == "evaluate":  # evaluation runs on the run's device, in one process
        return int(study.get("train", {}).get("device", "cpu") == "cuda")
    if rule == "benchmark_grid":
        return int(study.get("benchmark", {}).get("device", "auto") == "cuda")
    if rule == "lm_eval":
        return int(study.get("lm_eval", {}).get("device", "cpu") == "cuda")
    if rule == "benchmark_speculative":
        return int(study.get("speculative", {}).get("device", "auto") == "cuda")
    return 0


def site(n_gpus: int, env: Mapping[str, str] | None = None) -> dict:
    """Account, partition and GPU request of a job, from the environment (only what is set)."""
    env = os.environ if env is None else env
    out = {}
    if env.get("SPARSEDEPTH_SLURM_ACCOUNT"):
        out["slurm_account"] = env["SPARSEDEPTH_SLURM_ACCOUNT"]
    partition = env.get("SPARSEDEPTH_SLURM_PARTITION", "")
    if n_gpus:
        partition = env.get("SPARSEDEPTH_SLURM_GPU_PARTITION") or partition
        out["gres"] = f"{env.get('SPARSEDEPTH_SLURM_GPU_GRES') or 'gpu'}:{n_gpus}"
    if partition:
        out["slurm_partition"] = partition
    return out


def _params(model, vocab_size: int) -> int:
    d, layers = model.d_model, model.n_layers
    return layers * (4 + 2 * model.mlp_ratio) * d * d + vocab_size * d


def train_seconds(study: dict, key: RunKey) -> float:
    """Estimated seconds of one training run: its planned FLOPs at the pessimistic throughput."""
    cfg = train_config(study, key)
    flops = cfg.steps * train_flops_per_step(cfg, cfg.vocab_size)
    rate = GPU_FLOPS if cfg.device == "cuda" else CPU_FLOPS_PER_THREAD * max(1, cfg.threads or 1)
    return flops / rate


def evaluate_seconds(study: dict, key: RunKey, device: str | None = None) -> float:
    """Estimated seconds of one evaluation, every inference mode over validation + test, on `device`
    (default: the run's, which `evaluate --device` follows)."""
    cfg = train_config(study, key)
    device = device or cfg.device
    limit = study.get("evaluate", {}).get("max_batches")
    tokens = 2 * limit * cfg.batch_size * cfg.seq_len if limit else EVAL_TOKENS.get(key.dataset, 5e5)
    flops = 2 * _params(cfg.model, cfg.vocab_size) * tokens * 4  # modes and probes: four passes, roughly
    rate = GPU_FLOPS if device == "cuda" else EVAL_FLOPS_PER_THREAD * max(1, study.get("threads", 1))
    return flops / rate


def runtime(study: dict, rule: str, key: RunKey | None = None, attempt: int = 1,
            env: Mapping[str, str] | None = None) -> int:
    """Wall time (minutes, `-t`) of a job of `rule` (of run `key` for train/evaluate/lm_eval; lm-eval
    scores the test split once, sized as evaluation's four passes over both splits to allow for the
    harness's overheads)."""
    env = os.environ if env is None else env
    if rule == "train":
        minutes = START_MINUTES + 2 * train_seconds(study, key) / 60
    elif rule in ("evaluate", "lm_eval"):
        device = study.get("lm_eval", {}).get("device", "cpu") if rule == "lm_eval" else None
        minutes = START_MINUTES + 2 * evaluate_seconds(study, key, device) / 60
    elif rule == "prepare_data":
        minutes = 120 if set(study["datasets"]) & HUB_DATASETS else 30
    elif rule == "benchmark_grid":
        bench = study.get("benchmark", {})
        cells = (len(bench.get("batch", [8])) * len(bench.get("seq", [128, 512]))
                 + len(bench.get("decode_prompt", [128])) * len(bench.get("decode_batch", [1, 8])))
        routers = len(bench.get("routers", [])) + 1
        minutes = START_MINUTES + 2 * cells * routers * bench.get("max_seconds", 600) / 60 / 4
    elif rule == "benchmark_speculative":  # each case decoded repeats + 3 times at 20 ms/token (pessimistic),
        cases = max([_speculative_cases(cell) for cell in grid.speculative_cells(study).values()] or [0])
        spec = study.get("speculative", {})  # in each process, in the largest cell
        tokens = spec.get("prompts", 2) * spec.get("new_tokens", 32) * (spec.get("repeats", 3) + 3)
        minutes = START_MINUTES + spec.get("processes", 1) * cases * tokens * 0.02 / 60
    else:
        minutes = SMALL[rule][0]
    return _minutes(minutes, attempt, env)


def _speculative_cases(cell: dict) -> int:
    """Decodings one cell of the speculative benchmark times: each arm's ordinary, draft-only and speculative
    settings, and each comparator's ordinary."""
    configs = len(cell["exit_layers"]) * (1 + len(cell["draft_tokens"]))
    return len(cell["arms"]) * (1 + configs) + 1 + len(cell["baselines"])


def mem_mb(study: dict, rule: str, key: RunKey | None = None) -> int:
    """Host memory (MB, `--mem`) of a job of `rule`."""
    if rule in ("train", "evaluate", "lm_eval"):  # lm_eval: as evaluation (forward only, on the host)
        cfg = train_config(study, key)
        n = _params(cfg.model, cfg.vocab_size)
        tokens = cfg.batch_size * cfg.seq_len
        d, layers = cfg.model.d_model, cfg.model.n_layers
        if rule == "train":  # every block's activations are kept for the backward pass
            activations = tokens * layers * d * 40 * 4 + tokens * cfg.vocab_size * 12
        else:  # forward only: one block's activations at a time, and the logits
            activations = tokens * d * 40 * 4 + tokens * cfg.vocab_size * 8
        on_gpu = rule == "train" and cfg.device == "cuda"
        state = 16 * n if rule == "train" else 8 * n  # weights, grads, Adam moments | weights + a copy
        copies = cfg.nproc if rule == "train" else 1  # each process holds the state; the batch is split
        need = copies * state + (0 if on_gpu else activations)
        base = copies * (8000 if on_gpu else 2000)   # torch (+ CUDA context and pinned buffers)
        return _round_up(base + 2 * need / 1e6, 1000)
    if rule == "prepare_data":
        return 16000 if set(study["datasets"]) & HUB_DATASETS else 4000
    if rule in ("benchmark_grid", "benchmark_speculative"):
        return 16000 if gpus(study, rule) else 8000
    return SMALL[rule][1]
