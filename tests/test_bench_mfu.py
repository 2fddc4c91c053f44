"""MFU in the benchmark: achieved model FLOP/s over the device's peak, the peak's source, and the train step
timed under training's precision policy."""

import pandas as pd
import pytest
import torch

from sparsedepth.bench import main
from sparsedepth.bench import peak as peak_module
from sparsedepth.bench.cases import forward_case, make_model
from sparsedepth.bench.config import BenchConfig
from sparsedepth.bench.peak import (
    DATASHEET,
    MEASURED,
    datasheet_peak,
    device_peak,
    measure_matmul,
    mfu_columns,
)
from sparsedepth.config import ModelConfig

TINY = ["--kinds", "train_step,prefill", "--batch", "2", "--seq", "16", "--d-model", "16", "--n-layers", "2",
        "--n-heads", "2", "--repeats", "2", "--warmup", "1", "--threads", "1"]


def test_mfu_is_flops_over_time_over_peak():
    cols = mfu_columns(flops=3e12, ms=500.0, peak_tflops=12.0)  # 6 TFLOP/s achieved against 12
    assert cols == {"achieved_tflops": pytest.approx(6.0), "mfu": pytest.approx(0.5)}


def test_measured_peak_is_flops_over_the_median_time():
    times = iter([4.0, 1.0, 2.0])  # ms of three timed matmuls: the median, 2 ms, sets the peak
    got = measure_matmul(torch.device("cpu"), n=8, repeats=3, timer=lambda fn, device: next(times))
    assert got == pytest.approx(2 * 8**3 / 2e-3 / 1e12)


@pytest.mark.parametrize("name, key, expected", [
    ("NVIDIA H100 80GB HBM3", "bf16", 989.5), ("NVIDIA H100 80GB HBM3", "tf32", 494.5),
    ("NVIDIA H100 PCIe", "bf16", 756.5), ("NVIDIA H100 NVL", "tf32", 417.5), ("NVIDIA H200", "bf16", 989.5),
    ("NVIDIA A100-SXM4-80GB", "bf16", 312.0), ("NVIDIA A100 80GB PCIe", "tf32", 156.0),
    ("NVIDIA GeForce RTX 4090", "bf16", None), ("NVIDIA GH200 480GB", "bf16", None)])
def test_datasheet_lookup(name, key, expected):
    assert datasheet_peak(name, key) == expected


def test_a_listed_gpu_uses_the_datasheet_an_unlisted_one_measures(monkeypatch):
    monkeypatch.setattr(peak_module, "_measured", lambda device, key, threads: 7.0)
    cuda = torch.device("cuda")
    assert device_peak(cuda, "NVIDIA H100 PCIe", "fp32") == (378.0, DATASHEET)  # fp32 on CUDA: TF32 peak
    assert device_peak(cuda, "NVIDIA H100 PCIe", "bf16") == (756.5, DATASHEET)
    assert device_peak(cuda, "Some Future GPU", "bf16") == (7.0, MEASURED)
    assert device_peak(torch.device("cpu"), "CPU: x", "fp32") == (7.0, MEASURED)


def test_cpu_rows_carry_mfu_against_a_measured_matmul(tmp_path, monkeypatch):
    monkeypatch.setattr(peak_module, "_measured", lambda device, key, threads: 0.05)  # 50 GFLOP/s
    out = tmp_path / "bench.csv"
    assert main(["--out", str(out), "--routers", "mod", *TINY]) == 0
    df = pd.read_csv(out)
    assert (df["peak_source"] == MEASURED).all() and (df["peak_tflops"] == 0.05).all()
    assert (df["precision"] == "fp32").all()  # `auto` on the CPU
    for _, r in df.iterrows():
        factor = 3 if r["kind"] == "train_step" else 1  # a training step: forward + backward
        achieved = factor * r["flops_per_token"] * r["batch"] * r["seq_len"] / (r["median_ms"] / 1e3) / 1e12
        assert r["achieved_tflops"] == pytest.approx(achieved, rel=1e-9)
        assert r["mfu"] == pytest.approx(achieved / 0.05, rel=1e-9)
    assert set(df[df["kind"] == "train_step"]["router"]) == {"dense", "mod"}


@pytest.mark.parametrize("dtype, expected", [("auto", "fp32"), ("bf16", "bf16"), ("fp32", "fp32")])
def test_the_train_step_runs_under_the_configured_precision(dtype, expected, monkeypatch):
    """`auto` follows `precision.resolve` (what training runs in on this device); the step's forward runs
    inside the matching autocast context, so its logits come out in that dtype."""
    cfg = ModelConfig(vocab_size=64, d_model=16, n_layers=2, n_heads=2, max_seq_len=8)
    device = torch.device("cpu")
    model = make_model("mod", cfg, 0.5, device, train=True)
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(out.logits.dtype))
    idx = torch.randint(0, 64, (2, 8))
    case = forward_case(model, "gather", idx, idx, True, device, BenchConfig(dtype=dtype))
    case.run()
    assert case.precision == expected
    assert seen == [torch.bfloat16 if expected == "bf16" else torch.float32]
