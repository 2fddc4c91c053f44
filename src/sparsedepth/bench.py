"""Speed benchmarks: every router against dense, in the same process, for a training step, prefill and
cached decoding.

Why in one process and interleaved: CPU clocks and co-tenants drift; timing dense and routed alternately in
each repeat makes the ratio robust even when absolute times are not. Each row reports the measured speedup
over dense, the ideal speedup (dense FLOPs / routed FLOPs, from the tokens that actually ran each block)
and their ratio, the efficiency. Models are randomly initialised: speed depends on how many tokens run,
which the row reports (layers/token), not on what the weights learned.

Implementations: `gather` (ours: per-sample hard skipping), `masked` (the reference: full-length compute,
skipped tokens masked; no savings by construction) and `seed-flat` (the seed project's flattened batch,
see seed_reference.py). CPU: perf_counter; CUDA: events after synchronize, peak memory from the allocator.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import write_csv
from .config import ConfigError, ModelConfig
from .flops import block_flops, head_flops, output_flops
from .generate import decode_step, prefill
from .model import SparseDepthModel, build_model
from .routing import ROUTERS
from .seed_reference import flat_forward
from .train import git_sha

COLUMNS = ["device", "device_name", "torch", "threads", "git_sha", "grid", "kind", "impl", "router",
           "capacity", "batch", "seq_len", "d_model", "n_layers", "repeats", "median_ms", "iqr_ms",
           "tokens_per_s",
           "peak_activation_mb", "layers_per_token", "flops_per_token", "dense_flops_per_token", "speedup",
           "ideal_speedup", "efficiency"]
KINDS = ("train_step", "prefill", "decode")
VOCAB = 4096


@dataclass
class BenchConfig:
    routers: list[str] = field(default_factory=lambda: ["mod", "seed"])
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    capacity: float = 0.125
    batch: list[int] = field(default_factory=lambda: [8])
    seq: list[int] = field(default_factory=lambda: [128, 512])
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    decode_prompt: list[int] = field(default_factory=lambda: [128])
    decode_new: list[int] = field(default_factory=lambda: [64])
    decode_batch: list[int] = field(default_factory=lambda: [1, 8])
    impls: list[str] = field(default_factory=lambda: ["gather"])  # + masked, seed-flat, compiled
    compile_backend: str = "inductor"
    repeats: int = 10
    warmup: int = 3
    device: str = "auto"
    threads: int = 0
    max_seconds: float = 600.0
    grid: str = "main"


def seed_grid() -> BenchConfig:
    """The seed project's own benchmark: 6 layers, d=64, batch 2/8/16 × sequence 20–256, its way and ours."""
    return BenchConfig(routers=["seed"], kinds=["train_step", "prefill"], batch=[2, 8, 16],
                       seq=[20, 64, 128, 256], d_model=64, n_layers=6, n_heads=4,
                       impls=["gather", "masked", "seed-flat"], grid="seed")


# --- device and timing ---


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible (--device auto falls back to the CPU)")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"CPU: {line.split(':', 1)[1].strip()} ({torch.get_num_threads()} threads)"
    except OSError:
        pass
    return f"CPU: {platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_once(fn: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of one call, measured after the device is idle and until it is idle again."""
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        sync(device)
        start.record()
        fn()
        end.record()
        sync(device)
        return start.elapsed_time(end)
    t = time.perf_counter()
    fn()
    return (time.perf_counter() - t) * 1e3


def interleaved(fns: dict[str, Callable[[], object]], repeats: int, warmup: int,
                device: torch.device) -> dict[str, list[float]]:
    """Time each function `repeats` times, alternating between them within every repeat."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(time_once(fn, device))
    return times


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return float(values[0]), float("nan")
    q = statistics.quantiles(values, n=4)
    return statistics.median(values), q[2] - q[0]


def saved_activation_bytes(fn: Callable[[], object]) -> int:
    """Bytes of the tensors autograd saves for backward while `fn` runs a forward pass (each storage once):
    the activation memory of a training step, independent of the allocator (so it works on the CPU)."""
    seen: dict[tuple[int, int], int] = {}

    def pack(t: torch.Tensor):
        if t.device.type != "meta":
            storage = t.untyped_storage()
            seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def cuda_peak_bytes(fn: Callable[[], object], device: torch.device) -> int:
    sync(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    sync(device)
    return torch.cuda.max_memory_allocated(device) - base


# --- what is timed ---


@dataclass
class Case:
    """One implementation at one grid point: the call to time, and how to measure its cost."""

    model: SparseDepthModel
    impl: str
    run: Callable[[], object]
    stats: Callable[[], tuple[float, float, float]]  # layers/token, FLOPs/token, activation bytes


def make_model(router: str, cfg: ModelConfig, capacity: float, device: torch.device, train: bool,
               seed: int = 0) -> SparseDepthModel:
    torch.manual_seed(seed)
    model = build_model(cfg, router=router, capacity=1.0 if router == "dense" else capacity).to(device)
    model.train(train)
    if not train and hasattr(model.router, "set_inference"):
        model.router.set_inference("topk")  # prefill at the trained capacity (decode uses the causal rule)
    return model


def forward_case(model: SparseDepthModel, impl: str, idx: torch.Tensor, targets: torch.Tensor,
                 train: bool, device: torch.device, compile_backend: str = "inductor") -> Case:
    model.hard_skip = impl != "masked"
    B, T = idx.shape
    call = torch.compile(model, backend=compile_backend, dynamic=True) if impl == "compiled" else model

    def forward():
        if impl == "seed-flat":
            logits, layers = flat_forward(model, idx)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) if train else None
            return loss, layers
        out = call(idx, targets if train else None)
        loss = None if out.loss is None else out.loss + (out.aux_loss if out.aux_loss is not None else 0)
        return loss, out

    def run():
        if train:
            model.zero_grad(set_to_none=True)
            loss, _ = forward()
            loss.backward()
        else:
            with torch.no_grad():
                forward()

    def stats():
        with torch.no_grad():
            _, out = forward()
        if impl == "seed-flat":  # per-token counts only: FLOPs of the tokens run, attention over the batch
            layers = out.mean().item()
            flops = float("nan")
        else:
            layers = out.layers_per_token.mean().item()
            flops = output_flops(model, out, T) / (B * T)
        if device.type == "cuda":
            memory = cuda_peak_bytes(run, device)
        elif train:
            memory = saved_activation_bytes(lambda: forward()[0])
        else:
            memory = float("nan")  # no allocator statistics on the CPU for a no-grad pass
        return layers, flops, memory

    return Case(model, impl, run, stats)


def decode_flops(cfg: ModelConfig, start: torch.Tensor, end: torch.Tensor, n_new: int) -> float:
    """FLOPs of decoding from cache lengths [B, L] at the start and end: each token that ran a block pays its
    projections/MLP plus attention over that block's cache (its mean length while decoding)."""
    ran = (end - start).double()
    linear = block_flops(1.0, cfg) - 4.0 * cfg.d_model  # one token, no attention over others
    attention = 4.0 * cfg.d_model * (start + end).double() / 2
    return float((ran * (linear + attention)).sum()) + start.shape[0] * n_new * head_flops(1, cfg)


def decode_case(model: SparseDepthModel, prompt_len: int, n_new: int, batch: int,
                device: torch.device) -> Case:
    model.hard_skip = True
    if hasattr(model.router, "set_inference"):
        model.router.set_inference("causal")  # generation needs the causal rule
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.cfg.vocab_size, (batch, prompt_len), generator=g).tolist()
    state: dict = {}

    def setup():
        cache, logits, _ = prefill(model, prompts)
        state.update(cache=cache, next=logits.argmax(-1))

    def run():
        tokens, cache = state["next"], state["cache"]
        for _ in range(n_new):
            tokens = decode_step(model, tokens, cache).logits[:, -1].argmax(-1)
        setup()  # a fresh cache for the next repeat (prefill is not what this case measures)

    def stats():
        setup()
        start = state["cache"].lengths().clone()
        run_layers = []
        tokens, cache = state["next"], state["cache"]
        for _ in range(n_new):
            out = decode_step(model, tokens, cache)
            run_layers.append(out.layers_per_token.mean().item())
            tokens = out.logits[:, -1].argmax(-1)
        end = cache.lengths().clone()
        used = 2 * end.sum().item() * model.cfg.d_model * cache.layers[0].k.element_size()
        setup()
        return statistics.mean(run_layers), decode_flops(model.cfg, start, end, n_new) / (batch * n_new), used

    setup()
    return Case(model, "gather", run, stats)


# --- the grid ---


def base_row(device: torch.device, cfg: BenchConfig) -> dict:
    return {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "git_sha": git_sha(), "grid": cfg.grid,
            "d_model": cfg.d_model, "n_layers": cfg.n_layers, "repeats": cfg.repeats}


def measure_point(cases: dict[str, Case], kind: str, batch: int, seq_len: int, tokens: int,
                  bench: BenchConfig, device: torch.device, row: dict) -> list[dict]:
    """Time every case at one grid point (dense first, interleaved) and turn the times into rows."""
    times = interleaved({k: c.run for k, c in cases.items()}, bench.repeats, bench.warmup, device)
    rows, dense_ms, dense_flops = [], {}, None
    for key, case in cases.items():
        layers, flops, memory = case.stats()
        ms, iqr = median_iqr(times[key])
        router = case.model.router.name
        if router == "dense":  # one dense reference per implementation family (eager, compiled)
            dense_ms[case.impl] = ms
            dense_flops = flops if case.impl == "gather" else dense_flops
        rows.append({**row, "kind": kind, "impl": case.impl, "router": router,
                     "capacity": case.model.router.capacity, "batch": batch, "seq_len": seq_len,
                     "median_ms": ms, "iqr_ms": iqr, "tokens_per_s": tokens / (ms / 1e3),
                     "peak_activation_mb": memory / 2**20, "layers_per_token": layers,
                     "flops_per_token": flops})
    for r in rows:
        r["dense_flops_per_token"] = dense_flops
        r["speedup"] = dense_ms.get(r["impl"], dense_ms["gather"]) / r["median_ms"]
        known = r["flops_per_token"] == r["flops_per_token"]  # NaN for seed-flat (mixes the batch)
        r["ideal_speedup"] = dense_flops / r["flops_per_token"] if known else float("nan")
        r["efficiency"] = r["speedup"] / r["ideal_speedup"]
    return rows


def run_grid(bench: BenchConfig, progress: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """All rows of a grid, and the points skipped because the time budget ran out."""
    unknown = [r for r in bench.routers if r not in ROUTERS]
    if unknown:
        raise ConfigError(f"unknown router(s) {unknown}; known: {', '.join(sorted(ROUTERS))}")
    bad = [k for k in bench.kinds if k not in KINDS]
    if bad:
        raise ConfigError(f"unknown benchmark kind(s) {bad}; known: {', '.join(KINDS)}")
    device = resolve_device(bench.device)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    row = base_row(device, bench)
    longest = max([*bench.seq, *(p + n for p in bench.decode_prompt for n in bench.decode_new)])
    cfg = ModelConfig(vocab_size=VOCAB, d_model=bench.d_model, n_layers=bench.n_layers, n_heads=bench.n_heads,
                      max_seq_len=longest)
    routers = ["dense", *[r for r in bench.routers if r != "dense"]]
    points = []  # in the order of `kinds`, so a time budget skips the kinds listed last
    for kind in bench.kinds:
        if kind == "decode":
            points += [(kind, b, (p, n)) for b in bench.decode_batch for p in bench.decode_prompt
                       for n in bench.decode_new]
        else:
            points += [(kind, b, t) for b in bench.batch for t in bench.seq]
    rows, skipped, start = [], [], time.perf_counter()
    for kind, batch, size in points:
        label = f"{kind} batch={batch} {'seq' if kind != 'decode' else 'prompt,new'}={size}"
        if time.perf_counter() - start > bench.max_seconds:
            skipped.append(label)
            continue
        progress(label)
        train = kind == "train_step"
        cases: dict[str, Case] = {}
        if kind == "decode":
            prompt_len, n_new = size
            for r in routers:
                cases[r] = decode_case(make_model(r, cfg, bench.capacity, device, False), prompt_len, n_new,
                                       batch, device)
            rows += measure_point(cases, kind, batch, prompt_len + n_new, batch * n_new, bench, device, row)
            continue
        g = torch.Generator().manual_seed(batch * 1000 + size)
        idx = torch.randint(0, VOCAB, (batch, size), generator=g).to(device)
        targets = torch.randint(0, VOCAB, (batch, size), generator=g).to(device)
        for r in routers:
            model = make_model(r, cfg, bench.capacity, device, train)
            if r == "dense":  # the references: eager, and compiled when compiled rows are asked for
                impls = ["gather", *(["compiled"] if "compiled" in bench.impls else [])]
            else:
                impls = [i for i in bench.impls if i != "seed-flat" or hasattr(model.router, "score")]
            for impl in impls:
                key = r if impl == "gather" else f"{r}[{impl}]"
                m = model if impl == "gather" else make_model(r, cfg, bench.capacity, device, train)
                cases[key] = forward_case(m, impl, idx, targets, train, device, bench.compile_backend)
        rows += measure_point(cases, kind, batch, size, batch * size, bench, device, row)
    return rows, skipped


def write_rows(rows: list[dict], out: str | Path) -> None:
    import pandas as pd

    write_csv(pd.DataFrame(rows, columns=COLUMNS), out)


def merge(inputs: Sequence[str | Path], out: str | Path) -> None:
    """Concatenate benchmark CSVs into one tidy table (the workflow's bench.csv)."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in inputs]
    for path, frame in zip(inputs, frames, strict=True):
        missing = set(COLUMNS) - set(frame.columns)
        if missing:
            raise ConfigError(f"{path}: not a benchmark table (missing {sorted(missing)})")
    write_rows(pd.concat(frames, ignore_index=True)[COLUMNS].to_dict("records"), out)


# --- command line ---


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _names(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


def parser() -> argparse.ArgumentParser:
    d = BenchConfig()
    p = argparse.ArgumentParser(prog="python -m sparsedepth.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="CSV to write (atomically)")
    p.add_argument("--grid", choices=["main", "seed"], default="main",
                   help="seed: the seed project's own grid and implementations (ignores the size flags)")
    p.add_argument("--routers", type=_names, default=d.routers, help="comma-separated; dense is always added")
    p.add_argument("--kinds", type=_names, default=d.kinds, help="train_step,prefill,decode")
    p.add_argument("--impls", type=_names, default=d.impls,
                   help="gather,masked,seed-flat,compiled (compiled: torch.compile of the gather path; "
                   "its speedup is against compiled dense)")
    p.add_argument("--compile-backend", default=d.compile_backend, help="torch.compile backend")
    p.add_argument("--capacity", type=float, default=d.capacity)
    p.add_argument("--batch", type=_ints, default=d.batch)
    p.add_argument("--seq", type=_ints, default=d.seq)
    p.add_argument("--d-model", type=int, default=d.d_model)
    p.add_argument("--n-layers", type=int, default=d.n_layers)
    p.add_argument("--n-heads", type=int, default=d.n_heads)
    p.add_argument("--decode-prompt", type=_ints, default=d.decode_prompt)
    p.add_argument("--decode-new", type=_ints, default=d.decode_new)
    p.add_argument("--decode-batch", type=_ints, default=d.decode_batch)
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--warmup", type=int, default=d.warmup)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=d.device)
    p.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (0: torch's default)")
    p.add_argument("--max-seconds", type=float, default=d.max_seconds,
                   help="time budget: later points are skipped (and listed) once it is spent")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        p = argparse.ArgumentParser(prog="python -m sparsedepth.bench merge")
        p.add_argument("--out", required=True)
        p.add_argument("inputs", nargs="+")
        args = p.parse_args(argv[1:])
        try:
            merge(args.inputs, args.out)
        except (ConfigError, FileNotFoundError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    args = parser().parse_args(argv)
    if args.grid == "seed":
        bench = seed_grid()
    else:
        bench = BenchConfig(routers=args.routers, kinds=args.kinds, impls=args.impls, capacity=args.capacity,
                            batch=args.batch, seq=args.seq, d_model=args.d_model, n_layers=args.n_layers,
                            n_heads=args.n_heads, decode_prompt=args.decode_prompt,
                            decode_new=args.decode_new, decode_batch=args.decode_batch)
    bench.repeats, bench.warmup, bench.device = args.repeats, args.warmup, args.device
    bench.threads, bench.max_seconds = args.threads, args.max_seconds
    bench.compile_backend = args.compile_backend
    try:
        rows, skipped = run_grid(bench, progress=lambda s: print(s, flush=True))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_rows(rows, args.out)
    for label in skipped:
        print(f"skipped (time budget {bench.max_seconds:g} s spent): {label}")
    print(f"wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
