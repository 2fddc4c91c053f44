"""Padded batches: a row computes, routes and decodes exactly what it does alone, for every router.

Padding (`attention_mask` 0, left or right, any token id) must never change a real token's routing or
logits: it runs no block, is never a key or a cached entry, and never takes a place in a top-k.
"""

import pytest
import torch
from conftest import make, spread, tokens

from sparsedepth import ROUTERS
from sparsedepth.cache import KVCache
from sparsedepth.routing.base import capacity_count

# every router in each inference mode it declares (the non-causal top-k modes must rank real tokens only),
# plus MoD's predictor rule
CASES = {name: (name, {}, "causal") for name in ROUTERS} | {
    f"{name}-{mode}": (name, {}, mode) for name, cls in ROUTERS.items() for mode in cls.inference_modes[1:]
} | {"mod-predictor": ("mod", {"causal": "predictor"}, "causal")}
LENGTHS = [13, 6, 1, 9]


def fitted(case: str, cfg):
    """An eval-mode model in the case's inference mode whose weights route non-uniformly (`spread`, checked)
    at about its capacity."""
    router, options, mode = CASES[case]
    model = make(router, cfg, capacity=0.5, **options).eval()
    model.router.set_inference(mode)
    spread(model, tokens(cfg, batch=2, length=32, seed=7))
    return model


def padded(rows: list[torch.Tensor], side: str, pad_seed: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows in one batch, padded on `side` with random token ids (padding's content must not matter)."""
    width = max(len(r) for r in rows)
    g = torch.Generator().manual_seed(pad_seed)
    x = torch.randint(0, 97, (len(rows), width), generator=g)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for b, r in enumerate(rows):
        cols = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        x[b, cols], mask[b, cols] = r, 1
    return x, mask


def real_columns(mask: torch.Tensor, b: int) -> torch.Tensor:
    return mask[b].nonzero().squeeze(1)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("case", list(CASES))
def test_padded_batch_equals_each_row_alone(case, side, tiny_cfg):
    model = fitted(case, tiny_cfg)
    source = tokens(tiny_cfg, batch=len(LENGTHS), length=max(LENGTHS), seed=11)
    rows = [source[b, :n] for b, n in enumerate(LENGTHS)]
    x, mask = padded(rows, side)
    with torch.no_grad():
        batch = model(x, attention_mask=mask)
        alone = [model(r.unsqueeze(0)) for r in rows]
    for b, one in enumerate(alone):
        cols = real_columns(mask, b)
        assert torch.equal(batch.routing[b, cols], one.routing[0]), (case, side, b)
        torch.testing.assert_close(batch.logits[b, cols], one.logits[0], rtol=1e-5, atol=1e-5)
    pads = mask == 0
    assert not batch.routing[pads].any() and torch.isfinite(batch.logits).all()
    x2, _ = padded(rows, side, pad_seed=4)  # other padding ids: the real tokens' logits do not move
    with torch.no_grad():
        torch.testing.assert_close(model(x2, attention_mask=mask).logits[~pads], batch.logits[~pads])


@pytest.mark.parametrize("case", ["mod-topk", "mor-topk"])
def test_topk_keeps_k_of_each_rows_real_length(case, tiny_cfg):
    model = fitted(case, tiny_cfg)
    x, mask = padded([tokens(tiny_cfg, batch=1, length=n, seed=n)[0] for n in LENGTHS], "left")
    with torch.no_grad():
        routing = model(x, attention_mask=mask).routing
    first = model.router.routed_layers[0]
    capacity = model.router.capacity if case == "mod-topk" else model.router.schedule[0]
    assert routing[:, :, first].sum(1).tolist() == [capacity_count(capacity, n) for n in LENGTHS]


def test_mod_training_topk_ignores_padding(tiny_cfg):
    """Training's top-k too (deterministic gating): k of the real tokens, and the same logits."""
    model = make("mod", tiny_cfg, capacity=0.5).train()
    rows = [tokens(tiny_cfg, batch=1, length=n, seed=n)[0] for n in LENGTHS]
    x, mask = padded(rows, "left")
    with torch.no_grad():
        batch = model(x, attention_mask=mask)
        for b, r in enumerate(rows):
            torch.testing.assert_close(batch.logits[b, real_columns(mask, b)], model(r[None]).logits[0],
                                       rtol=1e-5, atol=1e-5)


def test_targets_at_padding_are_ignored(tiny_cfg):
    model = fitted("threshold", tiny_cfg)
    rows = [tokens(tiny_cfg, batch=1, length=n, seed=n)[0] for n in (10, 4)]
    x, mask = padded(rows, "left")
    targets, _ = padded([r.roll(-1) for r in rows], "left")  # padding's targets: whatever they are
    with torch.no_grad():
        loss = model(x, targets=targets, attention_mask=mask).loss
        nats = sum(model(r[None], targets=r.roll(-1)[None]).loss * len(r) for r in rows)
    torch.testing.assert_close(loss, nats / sum(len(r) for r in rows))


@pytest.mark.parametrize("case", [c for c, (_, _, mode) in CASES.items() if mode == "causal"])
def test_left_padded_prefill_then_cached_decode_equals_each_row(case, tiny_cfg):
    """Padding is never cached, so decoding after a left-padded prefill never attends to it."""
    model = fitted(case, tiny_cfg)
    rows = [tokens(tiny_cfg, batch=1, length=n, seed=n)[0] for n in LENGTHS]
    x, mask = padded(rows, "left")
    steps = tokens(tiny_cfg, batch=len(rows), length=4, seed=5)
    with torch.no_grad():
        cache = KVCache.empty(model, len(rows))
        logits = [model(x, cache=cache, attention_mask=mask).logits[:, -1]]
        logits += [model(steps[:, i:i + 1], cache=cache).logits[:, -1] for i in range(steps.shape[1])]
        for b, r in enumerate(rows):
            full = model(torch.cat([r, steps[b]])[None]).logits[0, len(r) - 1:]
            torch.testing.assert_close(torch.stack([step[b] for step in logits]), full, rtol=1e-5, atol=1e-5)
    assert cache.positions.tolist() == [n + steps.shape[1] for n in LENGTHS]
