"""What the benchmark runs: one dataclass is the source of its defaults, its command-line flags (with help,
via `cli.add_dataclass_flags`, as for training) and its validation; plus the table's columns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..config import ConfigError
from ..routing import ROUTERS

COLUMNS = ["device", "device_name", "torch", "threads", "git_sha", "grid", "kind", "impl", "router",
           "capacity", "batch", "seq_len", "d_model", "n_layers", "repeats", "median_ms", "iqr_ms",
           "tokens_per_s", "peak_activation_mb", "layers_per_token", "flops_per_token",
           "dense_flops_per_token", "speedup", "ideal_speedup", "efficiency",
           "cache_bytes_per_sample_block", "memory_ratio", "ideal_memory_ratio",
           "precision", "achieved_tflops", "peak_tflops", "peak_source", "mfu",
           "padded_ideal_speedup", "small_batch_cost", "attainable_speedup", "attainable_efficiency",
           "speedup_min", "speedup_max", "processes", "ops_per_call"]
# later additions: a merged table written before them gets NaN there
ADDED_COLUMNS = ("cache_bytes_per_sample_block", "memory_ratio", "ideal_memory_ratio",
                 "precision", "achieved_tflops", "peak_tflops", "peak_source", "mfu",
                 "padded_ideal_speedup", "small_batch_cost", "attainable_speedup", "attainable_efficiency",
                 "speedup_min", "speedup_max", "processes", "ops_per_call")
KINDS = ("train_step", "prefill", "decode", "prefill_cached")
DEFAULT_KINDS = ("train_step", "prefill", "decode")
IMPLS = ("gather", "masked", "origin-flat")
VOCAB = 4096
BASELINE = "dense"  # the router every row's speedup is measured against (a role, not a routing rule)


def option(default: Any, help: str, **schema: Any) -> Any:
    """A field with its flag's help text and JSON-schema constraints; list defaults are copied per config."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help, **schema})
    return field(default=default, metadata={"help": help, **schema})


@dataclass
class BenchConfig:
    routers: list[str] = option(["mod", "probe"], "routers to time, comma-separated (dense, the baseline, "
                                "is always added)")
    kinds: list[str] = option(list(DEFAULT_KINDS), "what to time, comma-separated: train_step, prefill, "
                              "decode, prefill_cached (prefill as generation runs it: into a fresh routed "
                              "cache, the head on the last position only)")
    capacity: float = option(0.125, "fraction of the tokens each routed block keeps",
                             exclusiveMinimum=0, maximum=1)
    route_every: int = option(2, "route every k-th block (2: alternate blocks, MoD's setting); 0: each "
                              "router's own convention", minimum=0)
    batch: list[int] = option([8], "batch sizes of train_step and prefill, comma-separated")
    seq: list[int] = option([128, 512], "sequence lengths of train_step and prefill, comma-separated")
    d_model: int = option(256, "width of the timed models", minimum=1)
    n_layers: int = option(6, "blocks of the timed models", minimum=1)
    n_heads: int = option(4, "attention heads of the timed models", minimum=1)
    decode_prompt: list[int] = option([128], "decode: prompt lengths (prefilled, untimed), comma-separated")
    decode_new: list[int] = option([64], "decode: tokens decoded per timed call, comma-separated")
    decode_batch: list[int] = option([1, 8], "decode: batch sizes, comma-separated")
    impls: list[str] = option(["gather"], "implementations, comma-separated: gather (ours), masked (the "
                              "reference, no savings), origin-flat (the origin project's flattened batch; "
                              "probe routers only)")
    repeats: int = option(10, "timed calls per case, interleaved with dense", minimum=1)
    warmup: int = option(3, "untimed calls per case before timing", minimum=0)
    device: str = option("auto", "auto (CUDA when visible, else the CPU), cpu or cuda",
                         enum=["auto", "cpu", "cuda"])
    threads: int = option(0, "torch CPU threads (0: torch's default)", minimum=0)
    max_seconds: float = option(600.0, "time budget: later points are skipped (and listed) once it is spent",
                                minimum=0)
    grid: str = option("main", "main: the grid the flags describe; origin: the origin project's own grid and "
                       "implementations (ignores the size and grid flags)", enum=["main", "origin"])
    calibrate: bool = option(True, "put each untrained router at its capacity first (--no-calibrate: keep "
                             "them as initialised, so they miss it)")
    optimizer: str = option("none", "train_step: forward+backward only (none) or also an AdamW step (adamw)",
                            enum=["none", "adamw"])
    dtype: str = option("auto", "auto: training's precision policy for train_step and prefill (bf16 autocast "
                        "on CUDA, fp32 on the CPU; the row's precision column says which), fp32, or bf16 "
                        "(autocast; decode: bf16 weights; impl suffix +bf16)", enum=["auto", "fp32", "bf16"])
    compile: bool = option(False, "also time torch.compile'd gather models (impl suffix +compile; skipped "
                           "with the reason printed if compiling fails)")
    processes: int = option(1, "run the whole benchmark this many times, each in a fresh process, one after "
                            "another; rows report the median over processes and the speedup's range "
                            "(speedup_min, speedup_max)", minimum=1)


# how a benchmark runs rather than what it measures: these flags apply to the origin grid too
RUN_SETTINGS = ("repeats", "warmup", "device", "threads", "max_seconds", "calibrate", "optimizer", "dtype",
                "compile", "processes")


def origin_grid() -> BenchConfig:
    """The origin project's own benchmark: 6 layers, d=64, batch 2/8/16 × sequence 20–256, every block routed
    by its probe at about half depth (what its untrained probe, s ≈ 0.5, did), its way and ours."""
    return BenchConfig(routers=["probe"], kinds=["train_step", "prefill"], capacity=0.5, route_every=1,
                       batch=[2, 8, 16], seq=[20, 64, 128, 256], d_model=64, n_layers=6, n_heads=4,
                       impls=list(IMPLS), grid="origin")


def check(bench: BenchConfig) -> None:
    """Names the schema cannot check (the registry's routers), and the choices of a config built in code."""
    for name, given, known in (("router", bench.routers, ROUTERS), ("benchmark kind", bench.kinds, KINDS),
                               ("impl", bench.impls, IMPLS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            raise ConfigError(f"unknown {name}(s) {unknown}; known: {', '.join(sorted(known))}")
    if bench.optimizer not in ("none", "adamw"):
        raise ConfigError(f"optimizer must be 'none' or 'adamw', got {bench.optimizer!r}")
    if bench.dtype not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"dtype must be 'auto', 'fp32' or 'bf16', got {bench.dtype!r}")
    if bench.repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {bench.repeats}")
    if bench.processes < 1:
        raise ConfigError(f"processes must be >= 1, got {bench.processes}")
