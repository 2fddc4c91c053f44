"""Speed benchmarks: every router against dense, in the same process, for a training step, prefill and
cached decoding.

Why in one process and interleaved: CPU clocks and co-tenants drift; timing dense and routed alternately in
each repeat (in reversed order every other repeat) makes the ratio robust even when absolute times are not.
Each row reports the measured speedup over dense, the ideal speedup (dense FLOPs / routed FLOPs, from the
tokens that actually ran each block) and their ratio, the efficiency.

Models are randomly initialised: speed depends on how many tokens run, not on what the weights learned.
An untrained router does not sit at its capacity, so by default each router is *calibrated* first (its
decision bias shifted so it keeps `capacity` of the tokens on a calibration batch, as a trained router's
budget loss would make it); every row reports the layers/token it actually ran.

Implementations: `gather` (ours: per-sample hard skipping), `masked` (the reference: full-length compute,
skipped tokens masked; no savings by construction) and `origin-flat` (the origin project's flattened batch,
see origin_reference.py). Suffixes: `+bf16` (autocast), `+compile` (torch.compile); each suffixed row is
compared with dense under the same suffix.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import write_csv
from .config import ConfigError, ModelConfig
from .flops import block_flops, forward_flops, head_flops
from .generate import decode_step, prefill
from .model import SparseDepthModel, build_model
from .origin_reference import flat_forward
from .routing import ROUTERS
from .train import git_sha

COLUMNS = ["device", "device_name", "torch", "threads", "git_sha", "grid", "kind", "impl", "router",
           "capacity", "batch", "seq_len", "d_model", "n_layers", "repeats", "median_ms", "iqr_ms",
           "tokens_per_s", "peak_activation_mb", "layers_per_token", "flops_per_token",
           "dense_flops_per_token", "speedup", "ideal_speedup", "efficiency"]
KINDS = ("train_step", "prefill", "decode")
IMPLS = ("gather", "masked", "origin-flat")
VOCAB = 4096


@dataclass
class BenchConfig:
    routers: list[str] = field(default_factory=lambda: ["mod", "probe"])
    kinds: list[str] = field(default_factory=lambda: list(KINDS))
    capacity: float = 0.125
    route_every: int = 2  # alternate blocks (MoD's setting); 0: each router's own convention
    batch: list[int] = field(default_factory=lambda: [8])
    seq: list[int] = field(default_factory=lambda: [128, 512])
    d_model: int = 256
    n_layers: int = 6
    n_heads: int = 4
    decode_prompt: list[int] = field(default_factory=lambda: [128])
    decode_new: list[int] = field(default_factory=lambda: [64])
    decode_batch: list[int] = field(default_factory=lambda: [1, 8])
    impls: list[str] = field(default_factory=lambda: ["gather"])
    repeats: int = 10
    warmup: int = 3
    device: str = "auto"
    threads: int = 0
    max_seconds: float = 600.0
    grid: str = "main"
    calibrate: bool = True
    optimizer: str = "none"  # train_step: "none" (forward + backward) or "adamw" (+ optimizer step)
    dtype: str = "fp32"  # "bf16": autocast
    compile: bool = False  # also time torch.compile'd gather models (impl suffix +compile)


def origin_grid() -> BenchConfig:
    """The origin project's own benchmark: 6 layers, d=64, batch 2/8/16 × sequence 20–256, every block routed
    by its probe at about half depth (what its untrained probe, s ≈ 0.5, did), its way and ours."""
    return BenchConfig(routers=["probe"], kinds=["train_step", "prefill"], capacity=0.5, route_every=1,
                       batch=[2, 8, 16], seq=[20, 64, 128, 256], d_model=64, n_layers=6, n_heads=4,
                       impls=list(IMPLS), grid="origin")


# --- device, timing, memory ---


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible (--device auto falls back to the CPU)")
    return torch.device(name)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    policy = os.environ.get("OMP_WAIT_POLICY")
    policy = f", OMP_WAIT_POLICY={policy}" if policy else ""
    return f"CPU: {model} ({torch.get_num_threads()} threads{policy})"


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


def median_iqr(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return float(values[0]), float("nan")
    q = statistics.quantiles(values, n=4, method="inclusive")
    return statistics.median(values), q[2] - q[0]


def peak_bytes(fn: Callable[[], object], device: torch.device) -> float:
    """Peak allocated bytes during `fn` above what was allocated before it (parameters, gradients,
    optimizer state and caches allocated earlier are excluded). CUDA: the caching allocator's statistics;
    CPU: the profiler's allocation/free events replayed in order."""
    if device.type == "cuda":
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return float(torch.cuda.max_memory_allocated(device) - base)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                    if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return float(peak)


# --- calibration: an untrained router at its capacity ---


def _logit_modules(router) -> list[tuple[torch.nn.Module, float]]:
    """Per routed block, in order: the module whose output is the (causal) decision logit, run iff > 0,
    and the fraction of the still-eligible tokens it should keep."""
    if router.name == "mod":
        mods = router.proj if router.causal == "aux" else [p[-1] for p in router.predictor]
        return [(m, router.capacity) for m in mods]
    if router.name == "threshold":
        return [(g, router.capacity) for g in router.gates]
    if router.name == "mor":
        s = router.schedule
        return [(m, s[d] / (s[d - 1] if d else 1.0)) for d, m in enumerate(router.proj)]
    return []


@torch.no_grad()
def calibrate(model: SparseDepthModel, idx: torch.Tensor, iterations: int = 40) -> None:
    """Shift the router's decision bias so it keeps `capacity` of the tokens of `idx` in its causal rule.

    Per-block routers are set block by block in depth order (each block's input depends on the earlier
    ones); the probe (one score, thresholds i/L) by bisection on its bias; routers with their own
    `calibrate` (early exit) use it. Top-k decisions are exact anyway and unaffected."""
    router = model.router
    was_training, inference = model.training, getattr(router, "inference", None)
    model.eval()
    if inference is not None:
        router.set_inference("causal")
    if hasattr(router, "calibrate"):
        router.calibrate(model, [idx])
    elif hasattr(router, "probe"):
        routed = torch.tensor(router.routed_layers)

        def fraction(bias: float) -> float:
            router.probe.bias.fill_(bias)
            return model(idx).routing[..., routed].float().mean().item()

        low, high = -30.0, 30.0
        for _ in range(iterations):
            mid = (low + high) / 2
            low, high = (mid, high) if fraction(mid) < router.capacity else (low, mid)
        router.probe.bias.fill_(high)
    for module, keep in _logit_modules(router):
        seen: list[torch.Tensor] = []
        handle = module.register_forward_hook(
            lambda m, args, out, seen=seen: seen.append(_eligible(router, out)))
        model(idx)
        handle.remove()
        module.bias -= torch.quantile(seen[0].float(), 1.0 - keep)
    model.train(was_training)
    if inference is not None:
        router.set_inference(inference)


def _eligible(router, logit: torch.Tensor) -> torch.Tensor:
    """The logits of the tokens this block may keep (MoR: only the previous depth's survivors)."""
    kept = getattr(router, "kept", None)
    return logit.flatten() if kept is None else logit.flatten()[kept.flatten()]


# --- what is timed ---


@dataclass
class Case:
    """One implementation at one grid point: the call to time, an untimed reset before each call, and
    its statistics (layers/token, FLOPs/token, peak activation bytes)."""

    router: str
    capacity: float
    impl: str
    run: Callable[[], object]
    stats: Callable[[], tuple[float, float, float]]
    reset: Callable[[], object] = lambda: None


def make_model(router: str, cfg: ModelConfig, capacity: float, device: torch.device, train: bool,
               seed: int = 0, route_every: int = 0, calibrate_on: torch.Tensor | None = None,
               ) -> SparseDepthModel:
    torch.manual_seed(seed)
    model = build_model(cfg, router=router, capacity=1.0 if router == "dense" else capacity,
                        route_every=route_every or None).to(device)
    if calibrate_on is not None and router != "dense":
        calibrate(model, calibrate_on.to(device))
    model.train(train)
    if not train and hasattr(model.router, "set_inference"):
        model.router.set_inference("topk")  # prefill at the trained capacity (decode uses the causal rule)
    return model


def forward_case(model: SparseDepthModel, impl: str, idx: torch.Tensor, targets: torch.Tensor,
                 train: bool, device: torch.device, bench: BenchConfig, compiled: bool = False) -> Case:
    model.hard_skip = impl != "masked"
    B, T = idx.shape
    call = torch.compile(model) if compiled else model
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if bench.dtype == "bf16" \
        else nullcontext
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6) if train and bench.optimizer == "adamw" \
        else None

    def forward():
        with autocast():
            if impl == "origin-flat":
                logits, ran = flat_forward(model, idx)
                loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten()) if train else None
                return loss, ran
            out = call(idx, targets if train else None)
        loss = None if out.loss is None else out.loss + (out.aux_loss if out.aux_loss is not None else 0)
        return loss, out.routing

    def run():
        if not train:
            with torch.no_grad():
                forward()
            return
        loss, _ = forward()
        loss.backward()
        if optimizer is not None:
            optimizer.step()
        model.zero_grad(set_to_none=False)  # gradients stay allocated: excluded from peak memory

    def stats():
        with torch.no_grad():
            _, ran = forward()
        layer_counts = ran.sum(1).float()  # [B, L]
        flops = forward_flops(model.cfg, layer_counts, model.router.flops_per_token(), T,
                              getattr(model.router, "propagates_state", False))
        return ran.sum(-1).float().mean().item(), flops / (B * T), peak_bytes(run, device)

    suffix = ("+compile" if compiled else "") + ("+bf16" if bench.dtype == "bf16" else "")
    return Case(model.router.name, model.router.capacity, impl + suffix, run, stats)


def decode_flops(model: SparseDepthModel, start: torch.Tensor, end: torch.Tensor, n_new: int) -> float:
    """FLOPs of decoding from cache lengths [B, L] at the start and end: each token that ran a block pays its
    projections/MLP plus attention over that block's cache (its mean length while decoding)."""
    cfg = model.cfg
    ran = (end - start).double()
    linear = block_flops(1.0, cfg) - 4.0 * cfg.d_model  # one token, no attention over others
    attention = 4.0 * cfg.d_model * (start + end).double() / 2
    per_token = head_flops(1, cfg) + model.router.flops_per_token()
    return float((ran * (linear + attention)).sum()) + start.shape[0] * n_new * per_token


def decode_case(model: SparseDepthModel, prompt_len: int, n_new: int, batch: int,
                device: torch.device, bench: BenchConfig) -> Case:
    """`n_new` cached steps on a fixed random token stream (greedy decoding of an untrained model repeats
    one token, which would freeze every routing decision); logits and argmax are still computed. The
    prompt is prefilled once, untimed; each repeat restores the cache to just after it (decoding only
    writes beyond the prefilled lengths)."""
    model.hard_skip = True
    if hasattr(model.router, "set_inference"):
        model.router.set_inference("causal")  # generation needs the causal rule
    if bench.dtype == "bf16":
        model.to(torch.bfloat16)  # the cache takes the parameters' dtype, so bf16 weights, not autocast
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.cfg.vocab_size, (batch, prompt_len), generator=g).tolist()
    stream = torch.randint(0, model.cfg.vocab_size, (n_new, batch), generator=g).to(device)
    cache, _, _ = prefill(model, prompts)
    saved = [c.lengths.clone() for c in cache.layers], cache.positions.clone()

    def reset():
        for layer, lengths in zip(cache.layers, saved[0], strict=True):
            layer.lengths.copy_(lengths)
        cache.positions.copy_(saved[1])

    def run(record: list | None = None):
        for tokens in stream:
            out = decode_step(model, tokens, cache)
            out.logits[:, -1].argmax(-1)
            if record is not None:
                record.append(out.layers_per_token.mean().item())

    def stats():
        reset()
        start, layers = cache.lengths().clone(), []
        run(layers)
        end = cache.lengths().clone()
        # the K/V bytes the routed cache actually holds (a right-sized or paged cache's footprint)
        used = 2 * end.sum().item() * model.cfg.d_model * cache.layers[0].k.element_size()
        return statistics.mean(layers), decode_flops(model, start, end, n_new) / (batch * n_new), used

    suffix = "+bf16" if bench.dtype == "bf16" else ""
    return Case(model.router.name, model.router.capacity, "gather" + suffix, run, stats, reset)


# --- the grid ---


def base_row(device: torch.device, cfg: BenchConfig) -> dict:
    return {"device": device.type, "device_name": device_name(device), "torch": torch.__version__,
            "threads": torch.get_num_threads(), "git_sha": git_sha(), "grid": cfg.grid,
            "d_model": cfg.d_model, "n_layers": cfg.n_layers, "repeats": cfg.repeats}


def warm(cases: dict[str, Case], warmup: int, progress: Callable[[str], None]) -> dict[str, Case]:
    """Untimed warm-up calls; a case that fails here (e.g. torch.compile without a working toolchain) is
    dropped with its reason, so one broken variant never costs the rest of the grid."""
    kept = {}
    for key, case in cases.items():
        try:
            for _ in range(max(1, warmup) + (3 if "+compile" in case.impl else 0)):  # recompiles settle
                case.reset()
                case.run()
            kept[key] = case
        except Exception as e:  # noqa: BLE001 — reported and skipped, by design
            if "+compile" not in case.impl:
                raise
            progress(f"skipped {key}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    return kept


def measure_point(cases: dict[str, Case], kind: str, batch: int, seq_len: int, tokens: int,
                  bench: BenchConfig, device: torch.device, row: dict,
                  progress: Callable[[str], None] = print) -> list[dict]:
    """Time every case at one grid point, interleaved, and turn the times into rows."""
    cases = warm(cases, bench.warmup, progress)
    times: dict[str, list[float]] = {key: [] for key in cases}
    keys = list(cases)
    for r in range(bench.repeats):
        for key in keys if r % 2 == 0 else keys[::-1]:
            cases[key].reset()
            times[key].append(time_once(cases[key].run, device))
    rows = []
    for key, case in cases.items():
        layers, flops, memory = case.stats()
        ms, iqr = median_iqr(times[key])
        rows.append({**row, "kind": kind, "impl": case.impl, "router": case.router,
                     "capacity": case.capacity, "batch": batch, "seq_len": seq_len, "median_ms": ms,
                     "iqr_ms": iqr, "tokens_per_s": tokens / (ms / 1e3), "peak_activation_mb": memory / 2**20,
                     "layers_per_token": layers, "flops_per_token": flops})
    baselines = {r["impl"][len("gather"):]: r for r in rows
                 if r["router"] == "dense" and r["impl"].startswith("gather")}
    kept = []
    for r in rows:
        suffix = r["impl"][r["impl"].find("+"):] if "+" in r["impl"] else ""
        dense = baselines.get(suffix)
        if dense is None:  # its dense baseline (e.g. dense+compile) failed: no ratio to report
            progress(f"dropped {r['router']}[{r['impl']}]: no dense{suffix} baseline")
            continue
        r["dense_flops_per_token"] = dense["flops_per_token"]
        r["speedup"] = dense["median_ms"] / r["median_ms"]
        r["ideal_speedup"] = dense["flops_per_token"] / r["flops_per_token"]
        r["efficiency"] = r["speedup"] / r["ideal_speedup"]
        kept.append(r)
    return kept


def grid_points(bench: BenchConfig) -> list[tuple[str, int, int | tuple[int, int]]]:
    points: list = [(k, b, t) for k in bench.kinds if k != "decode" for b in bench.batch for t in bench.seq]
    if "decode" in bench.kinds:
        points += [("decode", b, (p, n)) for b in bench.decode_batch for p in bench.decode_prompt
                   for n in bench.decode_new]
    return points


def check(bench: BenchConfig) -> None:
    for name, given, known in (("router", bench.routers, ROUTERS), ("benchmark kind", bench.kinds, KINDS),
                               ("impl", bench.impls, IMPLS)):
        unknown = [x for x in given if x not in known]
        if unknown:
            raise ConfigError(f"unknown {name}(s) {unknown}; known: {', '.join(sorted(known))}")
    if bench.optimizer not in ("none", "adamw"):
        raise ConfigError(f"optimizer must be 'none' or 'adamw', got {bench.optimizer!r}")
    if bench.dtype not in ("fp32", "bf16"):
        raise ConfigError(f"dtype must be 'fp32' or 'bf16', got {bench.dtype!r}")
    if bench.repeats < 1:
        raise ConfigError(f"repeats must be >= 1, got {bench.repeats}")


def run_grid(bench: BenchConfig, progress: Callable[[str], None] = print) -> tuple[list[dict], list[str]]:
    """All rows of a grid, and the points skipped because the time budget ran out."""
    check(bench)
    device = resolve_device(bench.device)
    if bench.threads:
        torch.set_num_threads(bench.threads)
    row = base_row(device, bench)
    longest = max([*bench.seq, *(p + n for p in bench.decode_prompt for n in bench.decode_new)])
    cfg = ModelConfig(vocab_size=VOCAB, d_model=bench.d_model, n_layers=bench.n_layers, n_heads=bench.n_heads,
                      max_seq_len=longest)
    routers = ["dense", *[r for r in bench.routers if r != "dense"]]
    calib = torch.randint(0, VOCAB, (4, min(128, longest)), generator=torch.Generator().manual_seed(7)) \
        if bench.calibrate else None

    def model(router: str, train: bool) -> SparseDepthModel:
        return make_model(router, cfg, bench.capacity, device, train, route_every=bench.route_every,
                          calibrate_on=calib)

    rows, skipped, start = [], [], time.perf_counter()
    for kind, batch, size in grid_points(bench):
        label = f"{kind} batch={batch} {'seq' if kind != 'decode' else 'prompt,new'}={size}"
        if time.perf_counter() - start > bench.max_seconds:
            skipped.append(label)
            continue
        progress(label)
        cases: dict[str, Case] = {}
        if kind == "decode":
            prompt_len, n_new = size
            for r in routers:
                cases[r] = decode_case(model(r, False), prompt_len, n_new, batch, device, bench)
            if bench.compile:
                progress("  (no +compile for decode: the cache length changes every step)")
            rows += measure_point(cases, kind, batch, prompt_len + n_new, batch * n_new, bench, device, row,
                                  progress)
            continue
        train = kind == "train_step"
        g = torch.Generator().manual_seed(batch * 1000 + size)
        idx = torch.randint(0, VOCAB, (batch, size), generator=g).to(device)
        targets = torch.randint(0, VOCAB, (batch, size), generator=g).to(device)
        for r in routers:
            impls = ["gather"] if r == "dense" else [
                i for i in bench.impls if i != "origin-flat" or r in ("probe", "probe-frozen")]
            for impl in impls:
                cases[f"{r}[{impl}]"] = forward_case(model(r, train), impl, idx, targets, train, device,
                                                     bench)
            if bench.compile:
                cases[f"{r}[compile]"] = forward_case(model(r, train), "gather", idx, targets, train, device,
                                                      bench, compiled=True)
        logits_mb = batch * size * VOCAB * 4 / 2**20
        progress(f"  (logits: {logits_mb:.1f} MB fp32 of every forward's peak; the same for every router)")
        rows += measure_point(cases, kind, batch, size, batch * size, bench, device, row, progress)
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
    p.add_argument("--grid", choices=["main", "origin"], default="main",
                   help="origin: the origin project's own grid and implementations (ignores size/grid flags)")
    p.add_argument("--routers", type=_names, default=d.routers, help="comma-separated; dense is always added")
    p.add_argument("--kinds", type=_names, default=d.kinds, help="train_step,prefill,decode")
    p.add_argument("--impls", type=_names, default=d.impls, help="gather,masked,origin-flat")
    p.add_argument("--capacity", type=float, default=d.capacity)
    p.add_argument("--route-every", type=int, default=d.route_every,
                   help="route every k-th block (2: alternate blocks); 0: each router's own convention")
    p.add_argument("--no-calibrate", dest="calibrate", action="store_false",
                   help="keep untrained routers as initialised (they then miss their capacity)")
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
    p.add_argument("--optimizer", choices=["none", "adamw"], default=d.optimizer,
                   help="train_step: forward+backward only, or also an AdamW step")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default=d.dtype, help="bf16: autocast (impl +bf16)")
    p.add_argument("--compile", action="store_true",
                   help="also time torch.compile'd models (impl gather+compile; skipped with the reason "
                        "printed if compiling fails)")
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
    if args.grid == "origin":
        bench = origin_grid()
    else:
        bench = BenchConfig(routers=args.routers, kinds=args.kinds, impls=args.impls, capacity=args.capacity,
                            route_every=args.route_every, batch=args.batch, seq=args.seq,
                            d_model=args.d_model, n_layers=args.n_layers, n_heads=args.n_heads,
                            decode_prompt=args.decode_prompt, decode_new=args.decode_new,
                            decode_batch=args.decode_batch)
    bench.repeats, bench.warmup, bench.device = args.repeats, args.warmup, args.device
    bench.threads, bench.max_seconds, bench.calibrate = args.threads, args.max_seconds, args.calibrate
    bench.optimizer, bench.dtype, bench.compile = args.optimizer, args.dtype, args.compile
    try:
        rows, skipped = run_grid(bench, progress=lambda s: print(s, flush=True))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    write_rows(rows, args.out)
    for label in skipped:
        print(f"skipped (time budget {bench.max_seconds:g} s spent): {label}")
    print(f"wrote {len(rows)} rows to {args.out}" + (f"; {len(skipped)} points skipped" if skipped else ""))
    return 0


if __name__ == "__main__":
    if "OMP_WAIT_POLICY" not in os.environ:
        # OpenMP threads that spin-wait stall for whole time slices when the cores are shared (measured
        # here: 18x slower decode at 2 threads); libgomp reads this only at load, so re-run with it set
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.execv(sys.executable, [sys.executable, "-m", "sparsedepth.bench", *sys.argv[1:]])
    sys.exit(main())
