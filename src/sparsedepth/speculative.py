"""Self-speculative greedy decoding for routed models (LayerSkip, Elhoushi et al. 2024), one shared cache.

The draft is the model itself cut at `exit_layer`: its first blocks, read out by the shared head (final norm
+ tied head), which LayerSkip's early-exit loss trains to predict. Blocks below the exit see the same inputs
whether a token is drafted or verified, and route it the same way, so the keys/values the draft appends to
the main cache are exactly the full model's: verification runs only the blocks from the exit on, over every
drafted token's exit-layer state in one routed pass, and nothing is computed twice. Each round keeps the
longest drafted prefix that equals the full model's argmax, then the full model's own next token (the
correction, or a bonus when every draft was right), and rolls every block's cache back to the kept tokens:
the output is ordinary greedy `generate`'s, token for token, at fewer full-depth passes when drafts agree.
`draft_generate` decodes with the draft alone, the ceiling of speculation at that exit (every draft
accepted, verification free).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .cache import KVCache
from .generate import Generation, check_room, prefill
from .model import SparseDepthModel


@dataclass
class SpeculativeStats:
    rounds: int = 0  # draft-then-verify rounds (batched: one per step of the whole batch)
    drafted: int = 0  # draft tokens proposed, summed over samples
    accepted: int = 0  # of them, equal to the full model's greedy token
    exit_layer: int = 0
    draft_tokens: int = 0
    layers: list[list[int]] = field(default_factory=list)  # blocks each fed generated token ran, per sample

    @property
    def acceptance(self) -> float:
        """Accepted / drafted (nan before any draft)."""
        return self.accepted / self.drafted if self.drafted else float("nan")


def check_speculative(model: SparseDepthModel, exit_layer: int, draft_tokens: int) -> None:
    """Refuse, in one line, what self-speculation cannot do."""
    n = model.cfg.n_layers
    if not 1 <= exit_layer <= n:
        raise ValueError(f"exit_layer must be in 1..{n} (the draft's blocks), got {exit_layer}")
    if draft_tokens < 1:
        raise ValueError(f"draft_tokens must be >= 1, got {draft_tokens}")
    if model.router.inference != "causal":  # a draft decodes with the cache, one token at a time
        raise ValueError(f"self-speculative decoding needs a causal router; {model.router.name}'s "
                         f"{model.router.inference!r} inference mode is not causal: set_inference('causal')")


@torch.no_grad()
def speculative_generate(model: SparseDepthModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         exit_layer: int, draft_tokens: int,
                         eos_id: int | None = None) -> tuple[Generation, SpeculativeStats]:
    """Greedy decoding of up to `max_new_tokens` per prompt (a sample stops at `eos_id`), drafting
    `draft_tokens` per round with the first `exit_layer` blocks; equal to `generate(..., temperature=0)`.
    Any batch size: each sample accepts its own count. Every router in its causal inference mode works
    (MoD's top-k mode is refused: a token's routing there depends on later tokens)."""
    check_speculative(model, exit_layer, draft_tokens)
    model.eval()
    check_room(model, prompts, max_new_tokens)
    cache, logits, prompt_layers = prefill(model, prompts)
    tokens, stats = speculative_decode(model, cache, logits, max_new_tokens, exit_layer, draft_tokens, eos_id)
    return Generation(tokens, stats.layers, prompt_layers), stats


@torch.no_grad()
def speculative_decode(model: SparseDepthModel, cache: KVCache, logits: Tensor, max_new_tokens: int,
                       exit_layer: int, draft_tokens: int,
                       eos_id: int | None = None) -> tuple[list[list[int]], SpeculativeStats]:
    """Continue prefilled `cache` (last logits [B, V]) greedily. The cache ends holding each unfinished
    sample's tokens except its last (whose logits nobody needs); samples leave it as they finish."""
    check_speculative(model, exit_layer, draft_tokens)
    B = logits.shape[0]
    stats = SpeculativeStats(exit_layer=exit_layer, draft_tokens=draft_tokens, layers=[[] for _ in range(B)])
    out = _Output(B, max_new_tokens, eos_id)
    pending = out.start(logits)  # each sample's last emitted token, not yet fed
    while (pending := out.unfinished(cache, pending)) is not None:
        k = min(draft_tokens, min(max_new_tokens - len(out.tokens[b]) for b in out.active) - 1)
        fed, accepted, ran = _round(model, cache, pending, exit_layer, k)
        depth = ran.sum(-1).tolist()  # [B, k+1] blocks each fed token ran
        for i, b in enumerate(out.active):
            n, before = accepted[i], len(out.tokens[b])
            for token in fed[i, 1:].tolist()[:n] + [int(pending[i])]:
                out.emit(b, token)
            # the fed tokens now emitted: the previous pending one, and the accepted drafts up to an eos
            stats.layers[b].extend(depth[i][: 1 + min(n, len(out.tokens[b]) - before)])
        stats.rounds += 1
        stats.drafted += k * len(out.active)
        stats.accepted += int(sum(accepted))
    return out.tokens, stats


@torch.no_grad()
def draft_generate(model: SparseDepthModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   exit_layer: int, eos_id: int | None = None) -> Generation:
    """Greedy decoding with the draft alone: every new token is the readout of the first `exit_layer`
    blocks, fed back into the same routed cache; no verification, so no longer the full model's output.

    Why it exists: it is the ceiling of self-speculative decoding at that exit, what speculation would cost
    if every draft were accepted and verification were free. Like `speculative_generate` it prefills with
    the whole model (so the first new token is the full model's) and then runs one draft step per token; a
    speedup the draft alone does not reach, speculation at that exit cannot reach either."""
    check_speculative(model, exit_layer, draft_tokens=1)
    model.eval()
    check_room(model, prompts, max_new_tokens)
    cache, logits, prompt_layers = prefill(model, prompts)
    out = _Output(len(prompts), max_new_tokens, eos_id)
    layers: list[list[int]] = [[] for _ in prompts]
    pending = out.start(logits)
    while (pending := out.unfinished(cache, pending)) is not None:
        _, h, ran = _draft_step(model, cache, pending, exit_layer)
        pending = model.readout(h[:, 0]).argmax(-1)
        for b, n, token in zip(out.active, torch.stack(ran, -1)[:, 0].sum(-1).tolist(), pending.tolist(),
                               strict=True):
            layers[b].append(n)  # blocks the fed token ran; the last emitted token is never fed
            out.emit(b, token)
    return Generation(out.tokens, layers, prompt_layers)


class _Output:
    """Each sample's emitted tokens (up to `max_new_tokens`, or its `eos_id`) and the sample of each cache
    row while it decodes."""

    def __init__(self, batch: int, max_new_tokens: int, eos_id: int | None):
        self.tokens: list[list[int]] = [[] for _ in range(batch)]
        self.finished = [max_new_tokens <= 0] * batch
        self.active = list(range(batch))
        self.max_new_tokens, self.eos_id = max_new_tokens, eos_id

    def start(self, logits: Tensor) -> Tensor:
        """Emit each sample's greedy token after the prefill's last logits [B, V]; returns them."""
        pending = logits.argmax(-1)
        for b, token in enumerate(pending.tolist()):
            self.emit(b, token)
        return pending

    def emit(self, b: int, token: int) -> None:
        if not self.finished[b]:
            self.tokens[b].append(token)
            self.finished[b] = token == self.eos_id or len(self.tokens[b]) >= self.max_new_tokens

    def unfinished(self, cache: KVCache, pending: Tensor) -> Tensor | None:
        """Drop finished samples from the cache and `pending` [B] (returned); None once all are done."""
        keep = [i for i, b in enumerate(self.active) if not self.finished[b]]
        if not keep:
            return None
        if len(keep) < len(self.active):
            rows = torch.tensor(keep, device=pending.device)
            cache.select(rows)
            pending, self.active = pending[rows], [self.active[i] for i in keep]
        return pending


def _draft_step(model: SparseDepthModel, cache: KVCache, tokens: Tensor,
                exit_layer: int) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Feed `tokens` [B] through the draft, blocks 0..exit-1, into the main cache: the embedding [B, 1, D],
    the exit-layer state [B, 1, D] and which blocks each token ran. One step of speculation's draft, and of
    `draft_generate`."""
    h0 = model.wte(tokens.unsqueeze(1))
    with torch.autocast(h0.device.type, enabled=False):
        model.router.begin(h0, cache.positions.unsqueeze(1))
    h, ran = model.run_blocks(h0, cache.positions.unsqueeze(1), cache, 0, exit_layer)
    cache.positions += 1
    return h0, h, ran


def _round(model: SparseDepthModel, cache: KVCache, pending: Tensor, exit_layer: int, k: int):
    """Draft `k` tokens after `pending` [B], verify them, roll the cache back to the kept ones. Returns the
    fed tokens [B, k+1] (pending, then the drafts), each sample's accepted count and which blocks each fed
    token ran [B, k+1, L]; `pending` becomes the full model's next tokens, in place."""
    router, L = model.router, model.cfg.n_layers
    lengths, positions = cache.lengths(), cache.positions.clone()
    fed, embedded, states, ran, hidden = [pending], [], [], [], []
    for j in range(k + 1):  # the draft: blocks 0..exit-1, one token at a time, into the main cache
        h0, h, step_ran = _draft_step(model, cache, fed[-1], exit_layer)
        embedded.append(h0)
        hidden.append(h)
        states.append(router.carry())
        ran.append(torch.stack(step_ran, -1))  # [B, 1, exit]
        if j < k:  # the last fed token needs no draft: verification predicts after it
            fed.append(model.readout(h[:, 0]).argmax(-1))
    tokens = torch.stack(fed, 1)  # [B, k+1]
    spans = positions.unsqueeze(1) + torch.arange(k + 1, device=tokens.device)
    drafted = cache.lengths()
    with torch.autocast(tokens.device.type, enabled=False):
        router.begin(torch.cat(embedded, 1), spans)
    router.restore({name: _cat([s[name] for s in states]) for name in states[0]})
    h, verify_ran = model.run_blocks(torch.cat(hidden, 1), spans, cache, exit_layer, L)
    full = model.readout(h).argmax(-1)  # [B, k+1]: the full model's greedy token after each fed one
    accepted = (tokens[:, 1:] == full[:, :k]).cumprod(1).sum(1)  # [B]
    draft_ran = torch.cat(ran, 1)  # [B, k+1, exit]
    checked_ran = torch.stack(verify_ran, -1) if verify_ran else None  # [B, k+1, L - exit]
    per_token = draft_ran if checked_ran is None else torch.cat([draft_ran, checked_ran], -1)  # [B, k+1, L]
    cached = (_cached(lengths, drafted, draft_ran, 0)
              | _cached(drafted, cache.lengths(), checked_ran, exit_layer))  # [B, k+1, L]
    kept = torch.arange(k + 1, device=tokens.device) <= accepted.unsqueeze(1)  # [B, k+1]
    cache.rollback(lengths + (cached & kept.unsqueeze(-1)).sum(1), positions + accepted + 1)
    pending.copy_(full.gather(1, accepted.unsqueeze(1)).squeeze(1))
    return tokens, accepted.tolist(), per_token


def _cached(before: Tensor, after: Tensor, ran: Tensor | None, start: int) -> Tensor:
    """[B, T, L]: which of T tokens blocks start..start+n-1 cached, given which tokens ran them (`ran`
    [B, T, n]; None: no block; other blocks cached none). A block caches the tokens that ran it, or every
    token when it propagates state (an early exit's exited tokens stay keys); its cache lengths before and
    after tell the two apart."""
    if ran is None:
        return torch.zeros((), dtype=torch.bool, device=before.device)
    T, stop = ran.shape[1], start + ran.shape[2]
    everyone = (after - before)[:, start:stop] == T  # [B, n]
    return torch.nn.functional.pad(ran | everyone.unsqueeze(1), (start, before.shape[1] - stop))


def _cat(values: list[Tensor | None]) -> Tensor | None:
    """Per-token router state of the draft steps, along T (None: the state is not set yet)."""
    return None if any(v is None for v in values) else torch.cat(values, 1)
