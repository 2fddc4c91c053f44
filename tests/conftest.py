import os
from pathlib import Path

import pytest
import torch

if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test`: one worker per core, so one thread per worker
    # (two workers of two threads each on two cores ran the tiny-model tests ~9× slower: the threads spin
    # waiting for each other); subprocesses the tests start inherit it
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # torch.compile's inductor compiles in-process: starting its worker pool cost more than compiling the
    # tests' tiny models (the gpu-check CPU form: 44 s → 33 s)
    os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    torch.set_num_threads(1)

from sparsedepth import ROUTERS, ModelConfig, build_model

ROUTED = [name for name in ROUTERS if name != "dense"]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Slow tests first, longest first (`@pytest.mark.slow(seconds=...)`): under pytest-xdist a long test
    collected last would run alone on one worker while the other idles."""
    def expected(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return -1.0 if mark is None else mark.kwargs.get("seconds", 0.0)

    items.sort(key=expected, reverse=True)


@pytest.fixture
def tiny_cfg() -> ModelConfig:
    return ModelConfig(vocab_size=97, d_model=32, n_layers=4, n_heads=4, max_seq_len=64)


def make(router: str, cfg: ModelConfig, capacity: float = 0.5, seed: int = 0, **options):
    torch.manual_seed(seed)
    return build_model(cfg, router=router, capacity=1.0 if router == "dense" else capacity, **options)


def spread(model, idx: torch.Tensor, check: torch.Tensor | None = None, scale: float = 100.0,
           trunk: float = 10.0):
    """Give an untrained model weights that route non-uniformly, then check that they do on `check`
    (default `idx`) in the model's current mode: at the default initialisation (std 0.02) a learned router's
    scores barely vary across tokens (every token of a halting router stopped after the same block), blocks
    barely change the state (so an early exit's confidence is the same at every layer), and a generic test
    on uniform routing passes vacuously. Every router weight matrix is redrawn with std `scale`/√fan-in
    (states are ~0.02 per dimension, so scores spread by ~2), the blocks' matrices are scaled by `trunk`,
    then `fit_capacity` on `idx` puts the router back at its capacity (modes are restored)."""
    from sparsedepth.bench import calibrate

    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for p in model.router.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=g) * scale / p.shape[-1] ** 0.5)
        for p in model.blocks.parameters():
            if p.dim() > 1:
                p.mul_(trunk)
    calibrate(model, idx)
    with torch.no_grad():
        assert_nonuniform(model, model(idx if check is None else check))
    return model


def assert_nonuniform(model, out, minimum: int = 3) -> None:
    """At least `minimum` different routing patterns (sets of routed blocks run) among the tokens of every
    sample: the routing a generic test ran on was not uniform. In a mode where a router's rule routes a
    sample's tokens alike by design (`uniform_routing`) it must do so instead; dense routes nothing."""
    router = model.router
    if not router.routes_blocks:
        return
    ran = out.routing[..., router.routed_layers]  # [B, T, n]
    patterns = [torch.unique(sample, dim=0).shape[0] for sample in ran]
    if ("training" if model.training else "inference") in router.uniform_routing:
        assert max(patterns) == 1, f"{router.name}: declared uniform in this mode, routed {patterns}"
        return
    assert min(patterns) >= minimum, (f"{router.name}: only {patterns} routing patterns per sample "
                                      f"(≥ {minimum} needed): the test would run on uniform routing")


def tokens(cfg: ModelConfig, batch: int = 3, length: int = 48, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, cfg.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


def tiny_shakespeare_run(root: Path) -> Path:
    """A real (tiny) trained MoD run on a slice of Tiny Shakespeare, in `root/run` (HF wrapper and export)."""
    from sparsedepth.data import tinyshakespeare_path
    from sparsedepth.train import TrainConfig, train

    source = tinyshakespeare_path()
    if not source.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {source}")
    (root / "slice.txt").write_text(source.read_text()[:60_000])
    cfg = TrainConfig.from_dict({
        "dataset": "tinyshakespeare", "data_path": str(root / "slice.txt"), "data_dir": str(root / "data"),
        "vocab_size": 300, "router": "mod", "capacity": 0.5, "router_options": {"causal": "predictor"},
        "steps": 6, "batch_size": 4, "seq_len": 32, "warmup_steps": 1, "eval_every": 6, "eval_batches": 1,
        "checkpoint_every": 6, "threads": 1,
        "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 64},
    })
    train(cfg, root / "run", progress=False)
    return root / "run"


class DeviceGuard(torch.overrides.TorchFunctionMode):
    """Fails the first torch call that touches a tensor off `device` (inputs or outputs), except explicit
    transfers (`.to`, `.cpu`, `copy_`, reading results to the host). Used under
    `torch.set_default_device("meta")`, it catches on a CPU-only machine what breaks on a GPU: a tensor
    made without following the configured device (a factory call without `device=`) lands on meta."""

    TRANSFERS = {torch.Tensor.to, torch.Tensor.cpu, torch.Tensor.cuda, torch.Tensor.copy_, torch.Tensor.numpy,
                 torch.Tensor.item, torch.Tensor.tolist}

    def __init__(self, device: str) -> None:
        super().__init__()
        self.device, self.calls = torch.device(device), 0

    def _check(self, func, values, where: str) -> None:
        flat = torch.utils._pytree.tree_flatten(values)[0]
        wrong = {str(t.device) for t in flat if isinstance(t, torch.Tensor) and t.device != self.device}
        if wrong:
            name = getattr(func, "__qualname__", None) or getattr(func, "__name__", repr(func))
            raise AssertionError(f"{name}: {where} on {sorted(wrong)}, configured device {self.device}")

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self.TRANSFERS:
            return func(*args, **kwargs)
        self.calls += 1
        self._check(func, (args, kwargs), "input")
        out = func(*args, **kwargs)
        self._check(func, out, "output")
        return out


def cached_decode(model, seq: torch.Tensor, prompt: int = 12):
    """Prefill `prompt` tokens of `seq` into a fresh cache, then decode the rest one token at a time: the
    logits and blocks-per-token of every position (to compare with one full forward pass) and the cache."""
    from sparsedepth.cache import KVCache
    from sparsedepth.generate import decode_step

    cache = KVCache.empty(model, seq.shape[0])
    out = model(seq[:, :prompt], cache=cache)  # batched prefill of equal-length prompts
    steps, layers = [out.logits], [out.layers_per_token]
    for t in range(prompt, seq.shape[1]):
        out = decode_step(model, seq[:, t], cache)
        steps.append(out.logits)
        layers.append(out.layers_per_token)
    return torch.cat(steps, dim=1), torch.cat(layers, dim=1), cache
