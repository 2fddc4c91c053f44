"""Self-speculative decoding measured on trained runs: `python -m sparsedepth.bench speculative`.

Why trained runs: how many drafted tokens the full model accepts depends on what the early blocks learned
(LayerSkip's early-exit loss trains them to be read out), so random weights would say nothing. Why one
process: tokens/s of the reference (dense, ordinary decoding), of each arm's ordinary decoding and of each
(exit layer, draft tokens) configuration are timed interleaved, in reversed order every other repeat, as
bench/grid.py times routers, so the ratios hold when the machine drifts. Batch 1, greedy, a fixed number of
new tokens (no end-of-text stop, so every call does the same work), each prompt's prefill included.

Each arm and exit layer also gets a draft-only case (`decoding="draft"`, `speculative.draft_generate`: the
whole model prefills, then the draft alone decodes): the ceiling of speculation at that exit, as if every
draft were accepted and verification were free. Its `ceiling_speedup` (the reference's ordinary median /
that draft-only median, also written on the same arm and exit's speculative rows) says whether a target
speedup is reachable at that exit at all.

Before timing, one untimed call of each case records its tokens, speculative statistics and FLOPs (torch's
FlopCounterMode, `flops.counted_flops`); a speculative output that differs from the same arm's ordinary
greedy output is a `SpeculativeMismatch` (exit 1, no table), never a row. Draft-only tokens are the draft's
own and are not compared.

A study may time several cells (`cell`, written on every row): the grid's own, and a decode cell (a deeper
model trained to exit early, with `baselines` such as the dense model of equal quality, timed with ordinary
decoding only, in the same process, so its speed and the arm's compare as the reference's do). Each row
carries its run's test bits per byte (`test_bpb`, from its eval.json when evaluated), so "equal quality" is
read off the same table.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import write_csv
from ..config import ConfigError
from ..evaluate import load_run, set_mode
from ..flops import counted_flops
from ..generate import generate
from ..study.layout import LayoutError, parse_run_dir
from .config import option
from .timing import median_iqr, provenance, resolve_device, time_once

COLUMNS = ["device", "device_name", "torch", "threads", "git_sha", "model", "dataset", "seed", "reference",
           "arm", "router", "capacity", "d_model", "n_layers", "decoding", "exit_layer", "draft_tokens",
           "batch", "prompts", "prompt_len", "new_tokens", "repeats", "median_ms", "iqr_ms", "tokens_per_s",
           "speedup", "self_speedup", "rounds", "drafted", "accepted", "acceptance", "tokens_per_round",
           "layers_per_token", "flops_per_token", "dense_flops_per_token", "ideal_speedup", "greedy_match",
           "ceiling_speedup", "cell", "role", "test_bpb", "speedup_min", "speedup_max", "processes"]
# later additions: files written before them read as the grid's own cell (`MAIN_CELL`), roles from the arms,
# one process
ADDED_COLUMNS = ("ceiling_speedup", "cell", "role", "test_bpb", "speedup_min", "speedup_max", "processes")
# what names a row: the same in every process of a `--processes` run (bench/grid.across_processes)
POINT = ["cell", "arm", "decoding", "exit_layer", "draft_tokens"]
MAIN_CELL = "main"


class SpeculativeMismatch(RuntimeError):
    """Speculative decoding produced other tokens than ordinary greedy decoding of the same model."""


@dataclass
class SpecConfig:
    reference: str = option("dense", "arm (run variant) whose ordinary decoding every speedup is measured "
                            "against; one of --runs")
    arms: list[str] = option(["dense", "early_exit", "mod", "probe"], "arms decoded speculatively, "
                             "comma-separated; each one of --runs (their ordinary decoding and their draft "
                             "alone at each exit, speculation's ceiling, are timed too)")
    exit_layers: list[int] = option([1, 2], "draft depths: the draft is the first EXIT_LAYER blocks + final "
                                    "norm and head, comma-separated (1 <= each < the arm's blocks)")
    draft_tokens: list[int] = option([3, 5], "tokens drafted per verification round, comma-separated (>= 1)")
    baselines: list[str] = option([], "further arms timed with ordinary decoding only, comma-separated (e.g. "
                                  "the dense model of equal quality a decode cell is compared with); each "
                                  "one of --runs")
    cell: str = option(MAIN_CELL, "name of the benchmarked cell, written on every row (the grid's own: main; "
                       "e.g. decode for a model trained to exit early)", pattern="^[A-Za-z0-9_.-]+$")
    prompts: int = option(4, "prompts, each a window of the run's test split at evenly spaced offsets",
                          minimum=1)
    prompt_len: int = option(32, "tokens per prompt", minimum=1)
    new_tokens: int = option(64, "tokens generated per prompt (prompt_len + new_tokens <= max_seq_len)",
                             minimum=1)
    repeats: int = option(5, "timed calls per case (median and IQR over them)", minimum=1)
    warmup: int = option(1, "untimed calls per case after the checked call", minimum=0)
    device: str = option("auto", "auto (CUDA when visible, else the CPU), cpu or cuda",
                         enum=["auto", "cpu", "cuda"])
    threads: int = option(0, "torch CPU threads (0: torch's default)", minimum=0)
    processes: int = option(1, "run the whole benchmark this many times, each in a fresh process, one after "
                            "another; rows report the median over processes and the speedup's range "
                            "(speedup_min, speedup_max)", minimum=1)


@dataclass
class Case:
    """One timed decoding of every prompt at batch 1, and what its checked call recorded."""

    arm: str
    decoding: str  # ordinary | draft (the draft alone: speculation's ceiling) | speculative
    exit_layer: int | None
    draft_tokens: int | None
    call: Callable[[], list]
    tokens: list[list[int]] | None = None
    layers: float = float("nan")
    flops: float = float("nan")
    stats: tuple[int, int, int] | None = None  # rounds, drafted, accepted over all prompts


def prompts_from(test: np.ndarray, n: int, length: int) -> list[list[int]]:
    """`n` windows of `length` tokens spread evenly over the test split (the same for every arm)."""
    if len(test) < length:
        raise ConfigError(f"prompt_len {length} exceeds the test split ({len(test)} tokens)")
    starts = np.linspace(0, len(test) - length, n).astype(int)
    return [test[s:s + length].astype(int).tolist() for s in starts]


def load_runs(run_dirs: Sequence[str | Path], device: torch.device) -> dict[str, tuple]:
    """arm → (model in eval mode with the causal rule, TrainConfig, TokenData, RunKey); one cell and seed."""
    runs = {}
    for run_dir in run_dirs:
        try:
            key = parse_run_dir(Path(run_dir))
        except LayoutError as e:
            raise ConfigError(str(e)) from None
        if key.variant in runs:
            raise ConfigError(f"two runs of arm {key.variant!r} given ({run_dir})")
        model, cfg, data = load_run(run_dir, str(device))
        set_mode(model, "causal")  # generation needs the causal rule
        runs[key.variant] = (model, cfg, data, key)
    cells = {(k.model, k.dataset, k.seed) for *_, k in runs.values()}
    if len(cells) > 1:
        raise ConfigError(f"runs of more than one model/dataset/seed given: {sorted(cells)}")
    return runs


def check(spec: SpecConfig, runs: dict[str, tuple]) -> None:
    """Names and sizes the flags' schema cannot know: arms among the runs, exit layers inside each model."""
    missing = [a for a in [spec.reference, *spec.arms, *spec.baselines] if a not in runs]
    if missing:
        raise ConfigError(f"arms {missing} have no run among --runs (given: {', '.join(sorted(runs))})")
    if not spec.exit_layers or not spec.draft_tokens:
        raise ConfigError("exit_layers and draft_tokens need at least one value each")
    if min(spec.draft_tokens) < 1:
        raise ConfigError(f"draft_tokens must be >= 1, got {spec.draft_tokens}")
    for arm in spec.arms:
        cfg = runs[arm][0].cfg
        bad = [e for e in spec.exit_layers if not 1 <= e < cfg.n_layers]
        if bad:
            raise ConfigError(f"exit_layers {bad}: arm {arm!r} has {cfg.n_layers} blocks (1 <= exit < "
                              f"{cfg.n_layers})")
    for arm, (model, *_) in runs.items():
        if spec.prompt_len + spec.new_tokens > model.cfg.max_seq_len:
            raise ConfigError(f"prompt_len + new_tokens = {spec.prompt_len + spec.new_tokens} exceeds arm "
                              f"{arm!r}'s max_seq_len {model.cfg.max_seq_len}")


def make_cases(spec: SpecConfig, runs: dict[str, tuple], prompts: list[list[int]]) -> dict[str, Case]:
    from .. import speculative  # looked up at call time, so tests (and the merge) can swap it

    cases = {}
    for arm in dict.fromkeys([spec.reference, *spec.arms, *spec.baselines]):
        model = runs[arm][0]
        cases[f"{arm}/ordinary"] = Case(arm, "ordinary", None, None, lambda m=model: [
            generate(m, [p], spec.new_tokens, temperature=0) for p in prompts])
        if arm not in spec.arms:
            continue
        for e in spec.exit_layers:
            cases[f"{arm}/draft e={e}"] = Case(arm, "draft", e, None, lambda m=model, e=e: [
                speculative.draft_generate(m, [p], spec.new_tokens, exit_layer=e) for p in prompts])
            for k in spec.draft_tokens:
                def call(m=model, e=e, k=k):
                    return [speculative.speculative_generate(m, [p], spec.new_tokens, exit_layer=e,
                                                             draft_tokens=k) for p in prompts]

                cases[f"{arm}/speculative e={e} k={k}"] = Case(arm, "speculative", e, k, call)
    return cases


def checked_call(case: Case, ordinary: Case | None, n_tokens: int) -> None:
    """The untimed call: tokens, layers/token and FLOPs/token; speculative output must equal greedy's (the
    draft alone's is its own)."""
    held = {}
    case.flops = counted_flops(lambda: held.setdefault("out", case.call())) / n_tokens
    out = held["out"]
    gens = [o[0] if case.decoding == "speculative" else o for o in out]
    case.tokens = [g.tokens[0] for g in gens]
    layers = [n for g in gens for n in g.layers[0]]
    case.layers = statistics.mean(layers) if layers else float("nan")
    if case.decoding != "speculative":
        return
    stats = [o[1] for o in out]
    case.stats = (sum(s.rounds for s in stats), sum(s.drafted for s in stats), sum(s.accepted for s in stats))
    for i, (got, want) in enumerate(zip(case.tokens, ordinary.tokens, strict=True)):
        if got != want:
            at = next((j for j, (a, b) in enumerate(zip(got, want, strict=False)) if a != b),
                      min(len(got), len(want)))
            raise SpeculativeMismatch(
                f"{case.arm}: speculative decoding (exit_layer={case.exit_layer}, draft_tokens="
                f"{case.draft_tokens}) differs from ordinary greedy decoding on prompt {i} at new token {at} "
                f"({got[at:at + 3]} vs {want[at:at + 3]}); lengths {len(got)} vs {len(want)}")


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def role(spec: SpecConfig, arm: str) -> str:
    """reference (every speedup's denominator), arm (decoded speculatively) or baseline (ordinary only)."""
    return "reference" if arm == spec.reference else "arm" if arm in spec.arms else "baseline"


def test_bpb(run_dir: str | Path) -> float:
    """The run's causal test bits per byte from its eval.json; NaN when it has not been evaluated (the
    benchmark needs only the weights) or the file is older than them (a retrained run)."""
    import json

    run_dir = Path(run_dir)
    path, weights = run_dir / "eval.json", run_dir / "model.safetensors"
    if not path.is_file() or (weights.is_file() and path.stat().st_mtime < weights.stat().st_mtime):
        return float("nan")
    try:
        return float(json.loads(path.read_text())["modes"]["causal"]["test"]["bpb"])
    except (ValueError, KeyError, TypeError):
        raise ConfigError(f"{path}: not an evaluation (no modes.causal.test.bpb)") from None


def measure(spec: SpecConfig, run_dirs: Sequence[str | Path],
            progress: Callable[[str], None] = print) -> list[dict]:
    """Every row of the table: the reference's and each arm's ordinary decoding, each draft-only and each
    speculative case."""
    device = resolve_device(spec.device)
    if spec.threads:
        torch.set_num_threads(spec.threads)
    runs = load_runs(run_dirs, device)
    check(spec, runs)
    bpb = {parse_run_dir(Path(d)).variant: test_bpb(d) for d in run_dirs}
    _, ref_cfg, data, key = runs[spec.reference]
    prompts = prompts_from(data.test, spec.prompts, spec.prompt_len)
    n_tokens = spec.prompts * spec.new_tokens  # no end-of-text stop: every call generates exactly these
    cases = make_cases(spec, runs, prompts)
    for name, case in cases.items():  # ordinary before the others within an arm (insertion order)
        progress(f"checked call: {name}")
        checked_call(case, cases[f"{case.arm}/ordinary"], n_tokens)
        for _ in range(spec.warmup):
            case.call()
    times: dict[str, list[float]] = {name: [] for name in cases}
    keys = list(cases)
    for r in range(spec.repeats):
        progress(f"repeat {r + 1}/{spec.repeats}")
        for name in keys if r % 2 == 0 else keys[::-1]:
            times[name].append(time_once(cases[name].call, device))
    base = {**provenance(device), "model": key.model,
            "dataset": key.dataset, "seed": key.seed, "reference": spec.reference, "batch": 1,
            "prompts": spec.prompts, "prompt_len": spec.prompt_len, "new_tokens": spec.new_tokens,
            "repeats": spec.repeats, "cell": spec.cell}
    summary = {name: median_iqr(t) for name, t in times.items()}  # (median, IQR) per case
    dense, ref_ms = cases[f"{spec.reference}/ordinary"], summary[f"{spec.reference}/ordinary"][0]
    rows = []
    for name, case in cases.items():
        model, cfg = runs[case.arm][0], runs[case.arm][1]
        ms, iqr = summary[name]
        rounds, drafted, accepted = case.stats or (np.nan, np.nan, np.nan)
        draft = summary.get(f"{case.arm}/draft e={case.exit_layer}")  # absent on ordinary rows
        rows.append({**base, "arm": case.arm, "router": cfg.router, "capacity": cfg.capacity,
                     "d_model": model.cfg.d_model, "n_layers": model.cfg.n_layers, "decoding": case.decoding,
                     "exit_layer": case.exit_layer, "draft_tokens": case.draft_tokens, "median_ms": ms,
                     "iqr_ms": iqr, "tokens_per_s": n_tokens / (ms / 1e3),
                     "speedup": ref_ms / ms,
                     "self_speedup": summary[f"{case.arm}/ordinary"][0] / ms,
                     "rounds": rounds, "drafted": drafted, "accepted": accepted,
                     "acceptance": ratio(accepted, drafted), "tokens_per_round": ratio(n_tokens, rounds),
                     "layers_per_token": case.layers, "flops_per_token": case.flops,
                     "dense_flops_per_token": dense.flops, "ideal_speedup": ratio(dense.flops, case.flops),
                     "greedy_match": True if case.decoding == "speculative" else None,
                     "ceiling_speedup": ref_ms / draft[0] if draft else np.nan,
                     "role": role(spec, case.arm), "test_bpb": bpb[case.arm],
                     "speedup_min": ref_ms / ms, "speedup_max": ref_ms / ms, "processes": 1})
    return rows


def write_rows(rows: list[dict], out: str | Path) -> None:
    import pandas as pd

    write_csv(pd.DataFrame(rows, columns=COLUMNS), out)
