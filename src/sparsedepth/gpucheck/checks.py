"""The device check's parts, each returning what it measured and whether it passed: the gpu-marked tests, a
training slice (fp32, bf16 autocast, bf16 + torch.compile; fused AdamW on CUDA), the benchmark kinds for
mod/probe/threshold against dense, and self-speculative decoding of the trained slice. No part has a
CUDA-only path: every device-specific call goes through `bench.timing`, `bench.peak`, `precision` or
`machine`, whose CPU answers the CPU form runs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..bench import BenchConfig, run_grid
from ..bench.config import BASELINE, KINDS
from ..bench.peak import device_peak
from ..bench.timing import device_name
from .data import DATASET, prepare_synthetic
from .shapes import Shapes

ROOT = Path(__file__).resolve().parents[3]  # the repository (src/sparsedepth/gpucheck/checks.py)
ROUTERS = ["mod", "probe", "threshold"]
# a bf16 slice's final training and validation loss against fp32's, relative: bf16 rounds every matmul,
# and over a few dozen steps the runs drift apart by well under this while a broken path (a wrong cast, a
# missing scale) is off by far more
LOSS_TOLERANCE = 0.02
TRAIN_ARMS = (("fp32", False), ("bf16", False), ("bf16", True))


@dataclass
class Result:
    check: str
    ok: bool
    detail: str
    seconds: float = 0.0


def timed(check: str, fn: Callable[[], tuple[bool, str]]) -> Result:
    """Run one part; an exception fails it with its first line instead of ending the whole check."""
    start = time.perf_counter()
    try:
        ok, detail = fn()
    except Exception as e:  # noqa: BLE001 — every failure is reported, the other parts still run
        ok, detail = False, f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
    return Result(check, ok, detail, time.perf_counter() - start)


def gpu_tests(device: torch.device, shapes: Shapes, log: Path) -> tuple[bool, str]:
    """`pytest -m gpu tests/test_on_device.py` on the device, in its own process (the config's addopts name
    plugins the GPU machine lacks, so they are cleared); its output goes to `log`."""
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-o", "addopts=", "-q", "-rfE",
           "-m", "gpu", str(ROOT / "tests" / "test_on_device.py"),
           *(["-k", shapes.tests] if shapes.tests else [])]
    env = {**os.environ, "SPARSEDEPTH_TEST_DEVICE": device.type, "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    log.write_text(proc.stdout + proc.stderr)
    lines = proc.stdout.strip().splitlines()
    last = lines[-1] if lines else f"pytest exit {proc.returncode}"
    return proc.returncode == 0, f"{last} (log: {log.name})"


def run_dir(root: Path, precision: str, compiled: bool) -> Path:
    """A run-directory path (.../{model}/{variant}/{dataset}/seed0), so the speculative benchmark reads it."""
    variant = "dense" if precision == "fp32" else f"dense-{precision}" + ("-compile" if compiled else "")
    return root / "runs" / "S" / variant / DATASET / "seed0"


def train_slice(device: torch.device, shapes: Shapes, root: Path, rows: list[dict]) -> tuple[bool, str]:
    """Train the same dense model, seed and batches in fp32, bf16 and bf16 + compile for `shapes.steps`:
    tokens/s, MFU against the device's peak, and each bf16 loss against fp32's."""
    from ..train import TrainConfig, train

    corpus, data_dir = prepare_synthetic(root / "data", shapes.vocab_size, shapes.corpus_chars)
    name = device_name(device)
    for precision, compiled in TRAIN_ARMS:
        out = run_dir(root, precision, compiled)
        cfg = TrainConfig.from_dict({
            "dataset": DATASET, "data_path": str(corpus), "data_dir": str(data_dir),
            "vocab_size": shapes.vocab_size, "router": "dense", "model": shapes.model, "steps": shapes.steps,
            "batch_size": shapes.batch_size, "seq_len": shapes.seq_len, "lr": 1e-3,
            "warmup_steps": max(1, shapes.steps // 5), "log_every": shapes.log_every,
            "eval_every": shapes.steps, "eval_batches": 2, "checkpoint_every": shapes.steps,
            "device": device.type, "precision": precision, "compile": compiled})
        summary = train(cfg, out, progress=False)
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        speed = [r["tokens_per_s"] for r in records if "tokens_per_s" in r][-1]  # after compile/warm-up
        flops = summary["train_flops"] / (summary["steps"] * shapes.batch_size * shapes.seq_len)
        peak, source = device_peak(device, name, precision)
        achieved = flops * speed / 1e12
        rows.append({"arm": out.parts[-3], "precision": summary["precision"], "compile": compiled,
                     "fused_adamw": summary["fused_adamw"], "tf32": summary["tf32"],
                     "steps": summary["steps"],
                     "batch_size": shapes.batch_size, "seq_len": shapes.seq_len, **shapes.model,
                     "final_train_loss": summary["final_train_loss"], "val_loss": summary["val_loss"],
                     "tokens_per_s": speed, "flops_per_token": flops, "achieved_tflops": achieved,
                     "peak_tflops": peak, "peak_source": source, "mfu": achieved / peak})
    base = rows[0]
    worst = 0.0
    for r in rows:
        gaps = [abs(r[k] - base[k]) / abs(base[k]) for k in ("final_train_loss", "val_loss")]
        r["loss_gap_vs_fp32"] = max(gaps)
        worst = max(worst, r["loss_gap_vs_fp32"])
    finite = all(math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0 for r in rows)
    detail = (f"worst bf16 loss gap vs fp32 {worst:.2%} (tolerance {LOSS_TOLERANCE:.0%}); tokens/s "
              + ", ".join(f"{r['arm']} {r['tokens_per_s']:,.0f} (MFU {r['mfu']:.1%})" for r in rows))
    return finite and worst <= LOSS_TOLERANCE, detail


def bench_kinds(device: torch.device, shapes: Shapes, budget_s: float, rows: list[dict]) -> tuple[bool, str]:
    """Every benchmark kind at one point of the paper's benchmark shape, each router against dense."""
    cfg = BenchConfig(routers=ROUTERS, kinds=list(KINDS), device=device.type, max_seconds=budget_s,
                      optimizer="adamw", **shapes.bench)
    got, skipped = run_grid(cfg, progress=lambda s: print(f"  bench: {s}", flush=True))
    rows += got
    missing = [f"{k}/{r}" for k in KINDS for r in [BASELINE, *ROUTERS]
               if not any(x["kind"] == k and x["router"] == r for x in got)]
    bad = [f"{x['kind']}/{x['router']}" for x in got
           if not (math.isfinite(x["speedup"]) and x["speedup"] > 0 and math.isfinite(x["memory_ratio"]))]
    ok = not (skipped or missing or bad)
    problems = (("skipped", skipped), ("missing", missing), ("not finite", bad))
    detail = f"{len(got)} rows" + "".join(f"; {what}: {', '.join(v)}" for what, v in problems if v)
    return ok, detail


def speculative(device: torch.device, shapes: Shapes, root: Path, rows: list[dict]) -> tuple[bool, str]:
    """Self-speculative decoding of the fp32 slice at batch 1 (output must equal greedy decoding), with
    TF32 off so that fp32 verification and single steps round alike."""
    from ..bench.speculative import SpecConfig, measure

    spec = SpecConfig(reference="dense", arms=["dense"], exit_layers=[shapes.exit_layer], draft_tokens=[3],
                      prompts=2, prompt_len=shapes.prompt_len, new_tokens=shapes.new_tokens,
                      repeats=shapes.spec_repeats, warmup=1, device=device.type)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        got = measure(spec, [run_dir(root, "fp32", False)], progress=lambda s: None)
    finally:
        torch.set_float32_matmul_precision(before)
    rows += got
    best = max((r for r in got if r["decoding"] == "speculative"), key=lambda r: r["speedup"])
    return True, (f"greedy output matched; speculative {best['speedup']:.2f}x ordinary, acceptance "
                  f"{best['acceptance']:.0%}, ceiling {best['ceiling_speedup']:.2f}x")
