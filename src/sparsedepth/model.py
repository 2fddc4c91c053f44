"""Decoder-only transformer whose routed blocks run only on the tokens their router keeps.

Hard skipping, per sample: gather the kept tokens (sorted by original position, padding after them),
run the block on them with their original rotary positions, scatter the block's output back. Padding sits
after every real token, so plain causal attention never lets a real token see it, and tokens of different
samples never meet. Skipped tokens pass through unchanged and are not keys/values in that block. (The
gathering mechanics live in `skipping.py`; this file is the model.)

A padded batch (`attention_mask`, left or right padding) is handled the same way: its real tokens are packed
to the front of each row, and padding is a token that runs no block at all, so it is never a key, never
cached and never in a router's top-k, and each row computes what it computes alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .cache import KVCache, LayerCache
from .config import ConfigError, ModelConfig
from .routing import ROUTERS, Router
from .routing.base import init_weights
from .skipping import (  # noqa: F401 (re-exported: tests and callers import them from here)
    apply_masked,
    apply_routed,
    gather_plan,
    pack_padding,
    unpack,
)


class Rotary(nn.Module):
    """Rotary position embedding indexed by explicit positions, so gathered tokens keep theirs."""

    def __init__(self, head_dim: int, max_seq_len: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
        angles = torch.outer(torch.arange(max_seq_len).float(), inv_freq)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor, positions: Tensor) -> Tensor:
        """x: [..., B, H, T, D] (queries and keys may be stacked in front); positions: [T] or [B, T]."""
        cos, sin = self.cos[positions], self.sin[positions]
        if positions.dim() == 2:
            cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads = cfg.n_heads
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model, bias=False)
        self.out = nn.Linear(cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor, rope: Rotary, positions: Tensor, attn_mask: Tensor | None = None,
                cache: LayerCache | None = None, valid: Tensor | None = None,
                context: Tensor | None = None, context_positions: Tensor | None = None,
                query_offsets: Tensor | None = None) -> Tensor:
        """With a cache, the new keys/values (only `valid` ones) are appended and attention runs over
        everything this block has cached for the sample: its own earlier tokens that ran this block.

        With a `context` (state propagation), queries come from `x` but keys/values from every context
        token, so tokens that skip the block (an early exit) still serve as keys/values in it."""
        B, T, C = x.shape
        H = self.n_heads
        if context is None:
            qkv = self.qkv(x).view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
            q, k = rope(qkv[:2], positions).unbind(0)  # one rotation for both (decoding: ops, not FLOPs)
            v = qkv[2]
        else:
            w_q, w_kv = self.qkv.weight.split([C, 2 * C])
            q = F.linear(x, w_q).view(B, T, H, C // H).transpose(1, 2)
            S = context.shape[1]
            k, v = F.linear(context, w_kv).view(B, S, 2, H, C // H).permute(2, 0, 3, 1, 4)
            q, k = rope(q, positions), rope(k, context_positions)
            key_positions = context_positions
        if cache is not None:  # `valid`: which new keys are real (the context's, under state propagation)
            k, v, attn_mask = cache.extend(k, v, valid, query_offsets)
        elif context is not None:
            attn_mask = key_positions.unsqueeze(-2) <= positions.unsqueeze(-1)  # causal by position
        if attn_mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask.unsqueeze(1))
        return self.out(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.d_model, cfg.mlp_ratio * cfg.d_model, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.d_model, cfg.d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    """Pre-norm block. `residual` returns what the block adds, so routing can scale and scatter it."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.norm1 = nn.RMSNorm(cfg.d_model)
        self.attn = Attention(cfg)
        self.norm2 = nn.RMSNorm(cfg.d_model)
        self.mlp = MLP(cfg)
        self.drop = nn.Dropout(cfg.dropout)

    def residual(self, x: Tensor, rope: Rotary, positions: Tensor, attn_mask: Tensor | None = None,
                 cache: LayerCache | None = None, valid: Tensor | None = None,
                 context: Tensor | None = None, context_positions: Tensor | None = None,
                 query_offsets: Tensor | None = None) -> Tensor:
        ctx = None if context is None else self.norm1(context)
        a = self.attn(self.norm1(x), rope, positions, attn_mask, cache, valid, ctx, context_positions,
                      query_offsets)
        if self.training:  # dropout is the identity in eval: not even a call (decoding pays per op)
            a = self.drop(a)
        m = self.mlp(self.norm2(x + a))
        return a + (self.drop(m) if self.training else m)


@dataclass
class ModelOutput:
    logits: Tensor  # [B, T, V]
    loss: Tensor | None  # language-model cross-entropy (targets given)
    aux_loss: Tensor | None  # router terms; train on loss + aux_loss
    layers_per_token: Tensor  # [B, T] blocks each token actually ran
    layer_counts: Tensor  # [B, L] tokens of each sample that ran each block
    routing: Tensor  # [B, T, L] bool: token t ran block l


class SparseDepthModel(nn.Module):
    def __init__(self, cfg: ModelConfig, router: Router):
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.norm_f = nn.RMSNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        self.rope = Rotary(cfg.d_model // cfg.n_heads, cfg.max_seq_len, cfg.rope_base)
        self.router = router
        self.router.attach(self.readout)  # shared head for routers that read out early (early exit)
        self.routed = set(router.routed_layers)
        self.hard_skip = True  # False: the masked reference path (same outputs, no savings)
        for trunk in (self.wte, self.blocks, self.norm_f):
            trunk.apply(self._init_weights)
        for name, p in self.blocks.named_parameters():
            if name.endswith(("attn.out.weight", "mlp.proj.weight")):
                nn.init.normal_(p, std=0.02 / (2 * cfg.n_layers) ** 0.5)
        self.router.reset_parameters()  # last, so the trunk's draws never depend on the router

    _init_weights = staticmethod(init_weights)

    def readout(self, h: Tensor) -> Tensor:
        """Logits from any hidden state through the final norm and the (tied) head."""
        return self.lm_head(self.norm_f(h))

    def run_blocks(self, h: Tensor, positions: Tensor, cache: KVCache | None = None, start: int = 0,
                   stop: int | None = None, real: Tensor | None = None) -> tuple[Tensor, list[Tensor]]:
        """Blocks `start`..`stop`-1 on `h` (the state entering `start`; the router has begun the pass), and
        per block the [B, T] tokens that ran it. A range of its own so self-speculative decoding can run a
        draft (the first blocks) and its verification (the rest) as parts of one model."""
        ran = []
        apply = apply_routed if self.hard_skip else apply_masked
        everyone = torch.ones(h.shape[:2], dtype=torch.bool, device=h.device) if real is None else real
        for i in range(start, len(self.blocks) if stop is None else stop):
            block, layer_cache = self.blocks[i], None if cache is None else cache.layers[i]
            if i in self.routed:
                with torch.autocast(h.device.type, enabled=False):
                    decision = self.router.decide(h, i)
                if real is not None:  # padding runs no block, whatever the router said
                    decision = replace(decision, mask=decision.mask & real, index=None)
                if decision.whole:  # every token runs it (gate 1): as an unrouted block, nothing gathered
                    h = h + block.residual(h, self.rope, positions, cache=layer_cache, valid=real)
                else:
                    h = apply(block, h, decision, self.rope, positions, layer_cache, real)
                ran.append(decision.mask)
            else:
                h = h + block.residual(h, self.rope, positions, cache=layer_cache, valid=real)
                ran.append(everyone)
        return h, ran

    def forward(
        self, idx: Tensor, targets: Tensor | None = None, cache: KVCache | None = None,
        logits_to_keep: int = 0, attention_mask: Tensor | None = None,
    ) -> ModelOutput:
        """Logits for `idx`; with a `cache`, `idx` continues the cached sequences (positions per sample).

        `logits_to_keep` > 0: the head runs on the last that many positions only (generation needs one;
        full-vocabulary logits of every position would dominate prefill memory).
        `attention_mask` ([B, T] for the tokens of `idx`, 1 = real, 0 = padding anywhere in the row) gives
        each row's real tokens positions that count real tokens only and hard-skips the padding in every
        block (see `pack_padding`); outputs come back in `idx`'s layout, padding with no blocks run, and
        targets at padded inputs are ignored."""
        if logits_to_keep and targets is not None:
            raise ValueError("logits_to_keep drops positions the loss needs: pass one or the other")
        B, T = idx.shape
        real = order = None
        if attention_mask is not None:
            order, real = pack_padding(attention_mask)
            idx = idx.gather(1, order)
        positions = torch.arange(T, device=idx.device)
        if cache is not None:
            positions = cache.positions.unsqueeze(1) + positions  # [B, T]
        if real is None:
            last = T if cache is None else int(positions.max()) + 1
        else:  # padding's positions (after each row's real tokens) may run past the end: clamp them
            last = T if cache is None else int((cache.positions + real.sum(1)).max())
            positions = positions.clamp(max=self.cfg.max_seq_len - 1)
        if last > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {last} exceeds max_seq_len {self.cfg.max_seq_len}")
        h = self.wte(idx)  # the residual stream stays fp32 under autocast; so do router scores (autocast off)
        with torch.autocast(h.device.type, enabled=False):
            self.router.begin(h, positions, real)
        h, ran = self.run_blocks(h, positions, cache, real=real)
        with torch.autocast(h.device.type, enabled=False):
            self.router.finish()
        if cache is not None:
            cache.positions += T if real is None else real.sum(1)
        ran_t = torch.stack(ran, dim=-1)  # [B, T, L]
        loss, aux, logits = None, self.router.aux_loss(), None
        if targets is not None:  # in the packed layout the router saw (early exit's labels need it)
            packed_targets = targets
            if order is not None:
                targets = targets.masked_fill(attention_mask == 0, -100)
                packed_targets = targets.gather(1, order)
            logits = self.readout(h)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), packed_targets.flatten())
            extra = self.router.target_loss(packed_targets, logits)
            if extra is not None:
                aux = extra if aux is None else aux + extra
            if order is not None:
                logits = unpack(logits, order)
        if order is not None:  # back to the caller's layout
            h, ran_t = unpack(h, order), unpack(ran_t, order)
        if logits is None:
            logits = self.readout(h[:, -logits_to_keep:] if logits_to_keep else h)
        return ModelOutput(
            logits=logits,
            loss=loss,
            aux_loss=aux,
            layers_per_token=ran_t.sum(-1).float(),
            layer_counts=ran_t.sum(1).float(),
            routing=ran_t,
        )


def routed_layers(n_layers: int, route_every: int) -> list[int]:
    """Every `route_every`-th block, the last of each group (MoD routes blocks 1, 3, 5, ...)."""
    if route_every < 1:
        raise ConfigError(f"route_every must be >= 1, got {route_every}")
    return [i for i in range(n_layers) if i % route_every == route_every - 1]


def make_router(cfg: ModelConfig, router: str = "dense", capacity: float = 1.0,
                route_every: int | None = None, **router_options) -> Router:
    """The named router for a model of shape `cfg`, routing its own convention's blocks unless `route_every`
    says otherwise.

    Common random numbers: it is built without drawing from the global RNG (the model calls the router's
    `reset_parameters` after initialising the trunk anyway), so for one seed every arm's shared trunk starts
    from the same weights and paired comparisons see the router's effect, not a different initialisation."""
    if router not in ROUTERS:
        raise ConfigError(f"unknown router {router!r}; known: {', '.join(sorted(ROUTERS))}")
    cls = ROUTERS[router]
    layers = routed_layers(cfg.n_layers, route_every or cls.default_route_every) if cls.routes_blocks else []
    with torch.random.fork_rng(devices=[]):
        return cls(cfg, capacity, layers, **router_options)


def build_model(
    cfg: ModelConfig,
    router: str = "dense",
    capacity: float = 1.0,
    route_every: int | None = None,
    **router_options,
) -> SparseDepthModel:
    """Build a model with the named router; `route_every` defaults to the router's own convention."""
    return SparseDepthModel(cfg, make_router(cfg, router, capacity, route_every, **router_options))
