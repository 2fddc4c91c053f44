"""The correctness checks that matter on an accelerator, on `SPARSEDEPTH_TEST_DEVICE` (cpu or cuda), in fp32
and in bf16 autocast: every router is causal, never leaks across the batch, decodes from its cache what a
full forward computes, decodes speculatively what greedy decoding does, ignores padding; and training
resumes bit-identically. Marked `gpu`: skipped unless the variable names a device or CUDA is visible
(`make gpu-check` runs them there; its CPU form with `SPARSEDEPTH_TEST_DEVICE=cpu`).

Tolerances, relative to the largest logit: fp32 1e-4 on the CPU and 2e-3 on CUDA (TF32 matmuls may be on
after training, `precision.allow_tf32`); bf16 3e-2 (8 bits of mantissa, different shapes, different
kernels). Routing may flip at a threshold in bf16 only where two paths round differently: at most 5 % of
the (token, block) decisions there, none in fp32."""

import json
import os

import pytest
import torch
from conftest import cached_decode, make, tokens

from sparsedepth import ROUTERS, ModelConfig
from sparsedepth.bench import calibrate
from sparsedepth.evaluate import batch_leak, causality_violation
from sparsedepth.generate import generate
from sparsedepth.precision import autocast_context
from sparsedepth.speculative import speculative_generate

pytestmark = pytest.mark.gpu
PRECISIONS = ["fp32", "bf16"]


@pytest.fixture(scope="module")
def device() -> torch.device:
    name = os.environ.get("SPARSEDEPTH_TEST_DEVICE") or ("cuda" if torch.cuda.is_available() else "")
    if not name:
        pytest.skip("no CUDA device and SPARSEDEPTH_TEST_DEVICE unset")
    return torch.device(name)


def tolerance(device: torch.device, precision: str) -> float:
    return 3e-2 if precision == "bf16" else (1e-4 if device.type == "cpu" else 2e-3)


def cfg() -> ModelConfig:
    return ModelConfig(vocab_size=97, d_model=32, n_layers=4, n_heads=4, max_seq_len=64)


def fitted(router: str, device: torch.device) -> torch.nn.Module:
    """Eval mode, causal rule, the router at its capacity (so tokens do skip blocks), on `device`."""
    model = make(router, cfg(), capacity=0.5).to(device)
    with torch.no_grad():
        for p in model.blocks.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.3)  # a shallow draft then disagrees with the full model: drafts get rejected
    calibrate(model, tokens(cfg(), batch=4, length=32, seed=9).to(device))
    model.eval().router.set_inference("causal")
    return model


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("router", list(ROUTERS))
def test_no_router_sees_the_future_or_another_sample(router, precision, device):
    model = fitted(router, device)
    idx = tokens(cfg(), batch=3, length=40).to(device)
    with torch.no_grad(), autocast_context(device, precision):
        scale = max(1.0, model(idx).logits.abs().max().item())
        future = max(causality_violation(model, idx, t) for t in (5, 20, 38))
        leak = max(batch_leak(model, idx, sample=s) for s in (0, 2))
    bound = tolerance(device, precision) * scale
    assert future <= bound, f"{router}: logits moved by {future:.3g} from the future"
    assert leak <= bound, f"{router}: logits moved by {leak:.3g} from another sample"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("router", list(ROUTERS))
def test_cached_decoding_equals_the_full_forward(router, precision, device):
    model = fitted(router, device)
    seq = tokens(cfg(), batch=3, length=30).to(device)
    with torch.no_grad(), autocast_context(device, precision):
        full = model(seq)
        logits, layers, _ = cached_decode(model, seq)
    same = (layers == full.layers_per_token).float().mean().item()
    assert same >= (0.95 if precision == "bf16" else 1.0), f"{router}: {1 - same:.1%} of routing differs"
    scale = max(1.0, full.logits.abs().max().item())
    gap = (logits.float() - full.logits.float()).abs()
    worst = gap.max().item() if same == 1.0 else gap.mean().item()  # a flipped decision moves its token
    assert worst <= tolerance(device, precision) * scale, f"{router}: cached logits differ by {worst:.3g}"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("router", list(ROUTERS))
def test_speculative_decoding_is_greedy_decoding(router, precision, device):
    model = fitted(router, device)
    prompts = [tokens(cfg(), 1, n, seed=n)[0].tolist() for n in (7, 3, 12)]
    with autocast_context(device, precision):
        ref = generate(model, prompts, 16, temperature=0)
        out, stats = speculative_generate(model, prompts, 16, exit_layer=2, draft_tokens=3)
    assert stats.rounds > 0 and 0 <= stats.accepted <= stats.drafted
    if precision == "fp32":
        assert out.tokens == ref.tokens, f"{router}: speculative output is not the greedy output"
        return
    # bf16: a near-tie may round to the other token in a k-token verification than in a one-token step,
    # after which the continuations differ; the first token and most prompts must still agree
    assert [t[0] for t in out.tokens] == [t[0] for t in ref.tokens], f"{router}: first tokens differ"
    assert sum(a == b for a, b in zip(out.tokens, ref.tokens, strict=True)) >= 2, f"{router}: diverged"


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("router", list(ROUTERS))
def test_padding_changes_no_real_tokens_logits(router, precision, device):
    model = fitted(router, device)
    lengths = [13, 6, 9]
    source = tokens(cfg(), batch=len(lengths), length=max(lengths), seed=11).to(device)
    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 97, (len(lengths), max(lengths)), generator=g).to(device)
    mask = torch.zeros_like(x)
    for b, n in enumerate(lengths):  # left padding, random ids
        x[b, -n:], mask[b, -n:] = source[b, :n], 1
    with torch.no_grad(), autocast_context(device, precision):
        batch = model(x, attention_mask=mask)
        alone = [model(source[b:b + 1, :n]) for b, n in enumerate(lengths)]
    for b, (n, one) in enumerate(zip(lengths, alone, strict=True)):
        scale = max(1.0, one.logits.abs().max().item())
        routed_same = torch.equal(batch.routing[b, -n:], one.routing[0])
        gap = (batch.logits[b, -n:].float() - one.logits[0].float()).abs()
        assert routed_same or precision == "bf16", f"{router}: padding changed row {b}'s routing"
        worst = gap.max().item() if routed_same else gap.mean().item()
        bound = tolerance(device, precision) * scale
        assert worst <= bound, f"{router}: padding moved row {b} by {worst:.3g}"


@pytest.mark.parametrize("router", ["dense", "mod"])
def test_training_resumes_bit_identically(router, device, tmp_path):
    """Straight through 4 steps = 2 steps, stop, resume to 4: the same weights, bit for bit, on the device
    (the config's precision `auto`: bf16 autocast and fused AdamW on CUDA)."""
    from safetensors.torch import load_file

    from sparsedepth.gpucheck.data import DATASET, prepare_synthetic
    from sparsedepth.train import TrainConfig, train

    corpus, data_dir = prepare_synthetic(tmp_path / "data", vocab_size=300, n_chars=40_000)
    run = TrainConfig.from_dict({
        "dataset": DATASET, "data_path": str(corpus), "data_dir": str(data_dir), "vocab_size": 300,
        "router": router, "capacity": 0.5, "steps": 4, "batch_size": 4, "seq_len": 32, "warmup_steps": 1,
        "eval_every": 4, "eval_batches": 1, "checkpoint_every": 4, "threads": 1, "device": device.type,
        "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 64}})
    train(run, tmp_path / "straight", progress=False)
    assert train(run, tmp_path / "resumed", stop_after=2, progress=False) == {"stopped_at": 2}
    train(run, tmp_path / "resumed", resume=True, progress=False)
    a, b = (load_file(tmp_path / d / "model.safetensors") for d in ("straight", "resumed"))
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"resumed weights differ from straight training in {differ[:4]}"
    summary = json.loads((tmp_path / "straight" / "summary.json").read_text())
    assert summary["device"].startswith(device.type)
