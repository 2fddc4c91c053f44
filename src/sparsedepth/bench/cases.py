"""What is timed: one implementation of one router at one grid point (a training step, a prefill, or cached
decoding), with the untimed reset before each call and the statistics of its row."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..cache import KVCache
from ..config import ModelConfig
from ..flops import block_flops, forward_flops, head_flops
from ..generate import decode_step, prefill
from ..model import SparseDepthModel, build_model
from ..origin_reference import flat_forward
from ..precision import autocast_context, resolve
from ..routing import ROUTERS
from .config import BenchConfig
from .timing import peak_bytes


@torch.no_grad()
def calibrate(model: SparseDepthModel, idx: torch.Tensor) -> None:
    """Put an untrained router at its capacity on `idx` (`Router.fit_capacity`: its causal rule, in eval
    mode); top-k decisions are exact anyway and unaffected. Training mode and inference mode are restored."""
    router = model.router
    was_training, inference = model.training, router.inference
    model.eval()
    router.set_inference("causal")
    router.fit_capacity(model, idx)
    model.train(was_training)
    router.set_inference(inference)


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
    # after stats(): (cache bytes per sample and block, the memory compared with dense's, its ideal
    # counterpart); None: no cache, and peak activation memory against layers/token (memory ∝ block work)
    memory: Callable[[], tuple[float, float, float]] | None = None
    precision: str = "fp32"  # what its matmuls ran in (bf16 autocast or weights, else fp32)
    # decoding, after stats(): FLOPs/token with a block priced by how many samples ran it (`decode_flops`)
    small_batch_flops: Callable[[float | None], float] | None = None


def make_model(router: str, cfg: ModelConfig, capacity: float, device: torch.device, train: bool,
               seed: int = 0, route_every: int = 0, calibrate_on: torch.Tensor | None = None,
               ) -> SparseDepthModel:
    torch.manual_seed(seed)
    # a router that routes no block (the dense baseline) runs every token: its row says capacity 1
    model = build_model(cfg, router=router, capacity=capacity if ROUTERS[router].routes_blocks else 1.0,
                        route_every=route_every or None).to(device)
    if calibrate_on is not None:
        calibrate(model, calibrate_on.to(device))
    model.train(train)
    if not train and "topk" in model.router.inference_modes:
        model.router.set_inference("topk")  # prefill at the trained capacity (decode uses the causal rule)
    return model


def forward_case(model: SparseDepthModel, impl: str, idx: torch.Tensor, targets: torch.Tensor,
                 train: bool, device: torch.device, bench: BenchConfig, compiled: bool = False) -> Case:
    model.hard_skip = impl != "masked"
    B, T = idx.shape
    call = torch.compile(model) if compiled else model
    precision = resolve(bench.dtype, device)  # `auto`: training's policy (bf16 autocast on CUDA)

    def autocast():
        return autocast_context(device, precision)

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
                              model.router.propagates_state)
        return ran.sum(-1).float().mean().item(), flops / (B * T), peak_bytes(run, device)

    suffix = ("+compile" if compiled else "") + ("+bf16" if bench.dtype == "bf16" else "")
    return Case(model.router.name, model.router.capacity, impl + suffix, run, stats, precision=precision)


def decode_flops(model: SparseDepthModel, steps: list[tuple[torch.Tensor, torch.Tensor]], n_new: int,
                 small_batch: float | None = None) -> float:
    """FLOPs of decoding, from each step's cache lengths [B, L] before and after it: each token that ran a
    block pays its projections/MLP plus attention over that block's cache.

    `small_batch` prices the projections/MLP of a block by how many of the B samples ran it instead of by
    token: k ≥ 1 samples cost w(k) = ρ + (1 - ρ)(k - 1)/(B - 1) of all B, where ρ is what one sample costs
    of all (e.g. the dense model's batch-1 decode step over its batch-B one, measured). ρ = 1/B is the FLOP
    count itself; ρ = 1 makes a block cost its whole batch whenever any sample runs it (weight reads and
    per-op overhead, not arithmetic, set the cost of small-batch decoding). Why: per-sample routing saves
    a block's FLOPs on the samples that skip it, but time only where the hardware's cost falls with them."""
    cfg = model.cfg
    linear = block_flops(1.0, cfg) - 4.0 * cfg.d_model  # one token, no attention over others
    B = steps[0][0].shape[0]
    total = 0.0
    for before, after in steps:
        ran = (after - before).double()  # [B, L]: 1 where the sample's token ran (and cached in) the block
        per_block = ran.sum(0)  # [L]: samples that ran each block
        if small_batch is not None and B > 1:
            share = small_batch + (1 - small_batch) * (per_block - 1) / (B - 1)
            per_block = torch.where(per_block > 0, share * B, 0.0)
        attention = 4.0 * cfg.d_model * (before + after).double() / 2  # over its mean cache length
        total += float((per_block * linear).sum() + (ran * attention).sum())
    return total + B * n_new * (head_flops(1, cfg) + model.router.flops_per_token())


def decode_case(model: SparseDepthModel, prompt_len: int, n_new: int, batch: int,
                device: torch.device, bench: BenchConfig) -> Case:
    """`n_new` cached steps on a fixed random token stream (greedy decoding of an untrained model repeats
    one token, which would freeze every routing decision); logits and argmax are still computed. The
    prompt is prefilled once, untimed; each repeat restores the cache to just after it (decoding only
    writes beyond the prefilled lengths)."""
    model.hard_skip = True
    model.router.set_inference("causal")  # generation needs the causal rule
    precision = resolve(bench.dtype, device)  # `auto`: training's policy (bf16 on CUDA)
    if precision == "bf16":
        model.to(torch.bfloat16)  # the cache takes the parameters' dtype, so bf16 weights, not autocast
    g = torch.Generator().manual_seed(0)
    prompts = torch.randint(0, model.cfg.vocab_size, (batch, prompt_len), generator=g).tolist()
    stream = torch.randint(0, model.cfg.vocab_size, (n_new, batch), generator=g).to(device)
    cache, _, _ = prefill(model, prompts)
    saved = cache.lengths(), cache.positions.clone()

    def reset():
        cache.rollback(*saved)

    def run(record: list | None = None):
        for tokens in stream:
            before = None if record is None else cache.lengths()
            out = decode_step(model, tokens, cache)
            out.logits[:, -1].argmax(-1)
            if record is not None:
                record.append((out.layers_per_token.mean().item(), before, cache.lengths()))

    held = {}

    def stats():
        reset()
        record = []
        run(record)
        end = cache.lengths()
        # the K/V bytes of the tokens that ran each block: the ideal cache's footprint
        used = 2 * end.sum().item() * model.cfg.d_model * cache.layers[0].k.element_size()
        held["allocated"], held["used"] = cache.nbytes(), used  # allocated: pages grown while decoding
        held["steps"] = [(before, after) for _, before, after in record]
        return statistics.mean(r[0] for r in record), flops_per_token(None), used

    def flops_per_token(small_batch: float | None) -> float:
        return decode_flops(model, held["steps"], n_new, small_batch) / (batch * n_new)

    def memory():
        return held["allocated"] / (batch * model.cfg.n_layers), held["allocated"], held["used"]

    suffix = "+bf16" if bench.dtype == "bf16" else ""
    return Case(model.router.name, model.router.capacity, "gather" + suffix, run, stats, reset, memory,
                precision=precision, small_batch_flops=flops_per_token)


def prefill_cached_case(model: SparseDepthModel, idx: torch.Tensor, device: torch.device,
                        bench: BenchConfig | None = None) -> Case:
    """Prefill as generation runs it: equal-length prompts into a fresh routed cache, the causal rule (what
    decoding continues with), the head on the last position only. Its peak memory includes the cache.
    Precision as decode's: bf16 weights and cache under `--dtype bf16`, or `auto` on CUDA."""
    model.hard_skip = True
    model.eval()
    model.router.set_inference("causal")
    precision = resolve(bench.dtype if bench else "fp32", device)
    if precision == "bf16":
        model.to(torch.bfloat16)
    B, T = idx.shape
    held = {}

    @torch.no_grad()
    def run():
        held["cache"] = cache = KVCache.empty(model, B)
        return model(idx, cache=cache, logits_to_keep=1)

    def stats():
        out = run()
        flops = forward_flops(model.cfg, out.layer_counts, model.router.flops_per_token(), T,
                              model.router.propagates_state) - B * head_flops(T - 1, model.cfg)
        held["peak"] = peak_bytes(run, device)
        return out.layers_per_token.mean().item(), flops / (B * T), held["peak"]

    def memory():  # ideal: memory ∝ the (token, block) pairs cached
        cache = held["cache"]
        return cache.nbytes() / (B * model.cfg.n_layers), held["peak"], float(cache.lengths().sum())

    suffix = "+bf16" if bench is not None and bench.dtype == "bf16" else ""
    return Case(model.router.name, model.router.capacity, "gather" + suffix, run, stats, memory=memory,
                precision=precision)
