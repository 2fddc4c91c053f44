"""Self-speculative greedy decoding equals ordinary greedy decoding token for token, for every router, and
leaves the cache exactly as ordinary decoding of the same tokens would; decoding with the draft alone (the
ceiling of speculation) is greedy decoding of the model cut after its exit layer."""

import copy

import pytest
import torch
from conftest import DeviceGuard, assert_nonuniform, make, spread, tokens

from sparsedepth import ROUTERS
from sparsedepth.cache import KVCache
from sparsedepth.generate import decode_step, generate, prefill
from sparsedepth.speculative import SpeculativeStats, draft_generate, speculative_decode, speculative_generate


def model_for(router, cfg, capacity=0.5):
    """Random init with block weights scaled up (so a shallow draft disagrees with the full model and drafts
    get rejected), router weights spread and calibrated to the capacity (so routing is not uniform: tokens do
    skip blocks, early exits do exit; `spread` checks it in eval mode)."""
    model = make(router, cfg, capacity=capacity).eval()
    return spread(model, tokens(cfg, batch=4, length=32, seed=9))


def assert_ran_nonuniform(model, prompts, generated) -> None:
    """The generated sequences themselves were routed non-uniformly (one sample at a time: lengths differ)."""
    with torch.no_grad():
        for prompt, new in zip(prompts, generated, strict=True):
            assert_nonuniform(model, model(torch.tensor([prompt + new])))


def prompts_for(cfg):
    return [tokens(cfg, 1, n, seed=n)[0].tolist() for n in (7, 3, 12)]


@pytest.mark.parametrize("router", list(ROUTERS))
@pytest.mark.parametrize(("exit_layer", "draft_tokens"), [(1, 1), (2, 3), (3, 4)])
def test_speculative_equals_greedy_generate(router, exit_layer, draft_tokens, tiny_cfg):
    model = model_for(router, tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    ref = generate(model, prompts, 18, temperature=0)
    out, stats = speculative_generate(model, prompts, 18, exit_layer, draft_tokens)
    assert out.tokens == ref.tokens
    assert_ran_nonuniform(model, prompts, ref.tokens)
    assert out.prompt_layers == ref.prompt_layers
    # every generated token but the last was fed, and ran the blocks it runs in ordinary decoding
    assert all(a == b[: len(a)] and len(a) == 17 for a, b in zip(out.layers, ref.layers, strict=True))
    assert stats.layers == out.layers and stats.rounds > 0 and 0 <= stats.accepted <= stats.drafted


def test_drafts_do_get_rejected_and_samples_accept_their_own_counts(tiny_cfg):
    """The equality above is not vacuous: a one-block draft is often wrong."""
    model = model_for("threshold", tiny_cfg)
    _, stats = speculative_generate(model, prompts_for(tiny_cfg), 18, 1, 3)
    assert stats.acceptance < 0.5


@pytest.mark.parametrize("router", list(ROUTERS))
def test_cache_after_speculation_equals_cache_of_ordinary_decoding(router, tiny_cfg):
    model = model_for(router, tiny_cfg)
    prompt = prompts_for(tiny_cfg)[0]
    cache, logits, _ = prefill(model, [prompt])
    out, _ = speculative_decode(model, cache, logits, 20, 2, 3)
    ref = KVCache.empty(model, 1)
    with torch.no_grad():
        model(torch.tensor([prompt]), cache=ref)
        for token in out[0][:-1]:  # the last token is never fed
            decode_step(model, torch.tensor([token]), ref)
    assert torch.equal(cache.positions, ref.positions)
    assert torch.equal(cache.lengths(), ref.lengths())
    for ours, theirs in zip(cache.layers, ref.layers, strict=True):
        n = int(theirs.lengths[0])
        torch.testing.assert_close(ours.k[:, :, :n], theirs.k[:, :, :n], atol=3e-5, rtol=1e-4)
        torch.testing.assert_close(ours.v[:, :, :n], theirs.v[:, :, :n], atol=3e-5, rtol=1e-4)


@pytest.mark.parametrize("router", list(ROUTERS))
def test_a_full_depth_draft_is_always_accepted(router, tiny_cfg):
    model = model_for(router, tiny_cfg)
    out, stats = speculative_generate(model, prompts_for(tiny_cfg), 17, tiny_cfg.n_layers, 3)
    assert stats.acceptance == 1.0 and stats.drafted == 3 * 3 * stats.rounds
    assert stats.rounds == 4 and all(len(t) == 17 for t in out.tokens)  # 1 + 4 rounds × (3 drafts + 1)


@pytest.mark.parametrize("max_new", [0, 1, 2, 5, 11])
def test_max_new_tokens_is_exact(max_new, tiny_cfg):
    model = model_for("mod", tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    out, _ = speculative_generate(model, prompts, max_new, 2, 4)
    assert out.tokens == generate(model, prompts, max_new, temperature=0).tokens
    assert all(len(t) == max_new for t in out.tokens)


def test_eos_stops_each_sample_at_its_own_eos(tiny_cfg):
    model = model_for("threshold", tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    free = generate(model, prompts, 16, temperature=0).tokens
    eos = free[1][5]  # sample 1 stops at its 6th token, possibly earlier; the others where they meet it
    ref = generate(model, prompts, 16, temperature=0, eos_id=eos)
    out, _ = speculative_generate(model, prompts, 16, 1, 4, eos_id=eos)
    assert out.tokens == ref.tokens
    assert out.tokens[1][-1] == eos and len(out.tokens[1]) <= 6
    assert all(eos not in t[:-1] for t in out.tokens)
    assert all(len(t) == 16 or t[-1] == eos for t in out.tokens)


def test_refuses_what_it_cannot_do(tiny_cfg):
    model = model_for("mod", tiny_cfg)
    model.router.set_inference("topk")  # a token's routing depends on later tokens: no cached draft
    with pytest.raises(ValueError, match="not causal"):
        speculative_generate(model, [[1, 2]], 4, 2, 2)
    model.router.set_inference("causal")
    for exit_layer, draft, match in ((0, 2, "exit_layer"), (5, 2, "exit_layer"), (2, 0, "draft_tokens")):
        with pytest.raises(ValueError, match=match):
            speculative_generate(model, [[1, 2]], 4, exit_layer, draft)
    with pytest.raises(ValueError, match="max_seq_len"):
        speculative_generate(model, [[1] * 60], 10, 2, 2)


def test_acceptance_before_any_draft_is_nan():
    assert SpeculativeStats().acceptance != SpeculativeStats().acceptance


@pytest.mark.parametrize("router", list(ROUTERS))
def test_every_tensor_follows_the_model_device(router, tiny_cfg):
    """Run under a meta default device: a tensor made without the model's device (a GPU bug) fails here."""
    model = model_for(router, tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    ref = generate(model, prompts, 9, temperature=0)
    eos = ref.tokens[1][4]
    guard = DeviceGuard("cpu")
    torch.set_default_device("meta")
    try:
        with guard:
            out, _ = speculative_generate(model, prompts, 9, 2, 3, eos_id=eos)
    finally:
        torch.set_default_device(None)
    assert guard.calls > 100 and out.tokens == [t[: t.index(eos) + 1] if eos in t else t for t in ref.tokens]


def truncated(model, exit_layer):
    """The model cut after `exit_layer` blocks. Its config keeps the full depth: routers that place their
    thresholds at layer / n_layers (probe) decide as they do inside the full model."""
    cut = copy.deepcopy(model)
    cut.blocks = cut.blocks[:exit_layer]
    return cut


@pytest.mark.parametrize("router", list(ROUTERS))
@pytest.mark.parametrize("exit_layer", [1, 3])
def test_draft_alone_is_greedy_decoding_of_the_model_cut_at_the_exit(router, exit_layer, tiny_cfg):
    """The prefill is the whole model's, as in speculation, so the first new token is the full model's;
    every later one is the cut model's greedy continuation."""
    model = model_for(router, tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    out = draft_generate(model, prompts, 12, exit_layer)
    first = generate(model, prompts, 1, temperature=0).tokens
    cut = truncated(model, exit_layer)
    for prompt, got, head in zip(prompts, out.tokens, first, strict=True):
        rest = generate(cut, [prompt + head], 11, temperature=0)
        assert got == head + rest.tokens[0]
    assert all(len(n) == 11 and max(n) <= exit_layer for n in out.layers)  # the last token is never fed
    assert out.prompt_layers == generate(model, prompts, 1, temperature=0).prompt_layers


@pytest.mark.parametrize("router", list(ROUTERS))
def test_a_full_depth_draft_alone_is_greedy_generate(router, tiny_cfg):
    model = model_for(router, tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    ref = generate(model, prompts, 14, temperature=0)
    out = draft_generate(model, prompts, 14, tiny_cfg.n_layers)
    assert out.tokens == ref.tokens
    assert all(a == b[: len(a)] and len(a) == 13 for a, b in zip(out.layers, ref.layers, strict=True))


def test_draft_alone_stops_at_max_new_tokens_and_each_samples_eos(tiny_cfg):
    model = model_for("mod", tiny_cfg)
    prompts = prompts_for(tiny_cfg)
    assert all(len(t) == 5 for t in draft_generate(model, prompts, 5, 2).tokens)
    assert draft_generate(model, prompts, 0, 2).tokens == [[], [], []]
    free = draft_generate(model, prompts, 16, 2).tokens
    eos = free[1][5]
    out = draft_generate(model, prompts, 16, 2, eos_id=eos).tokens
    assert out == [t[: t.index(eos) + 1] if eos in t else t for t in free]


def test_draft_alone_refuses_what_speculation_refuses(tiny_cfg):
    model = model_for("mod", tiny_cfg)
    model.router.set_inference("topk")
    with pytest.raises(ValueError, match="not causal"):
        draft_generate(model, [[1, 2]], 4, 2)
    model.router.set_inference("causal")
    with pytest.raises(ValueError, match="exit_layer"):
        draft_generate(model, [[1, 2]], 4, 0)
    with pytest.raises(ValueError, match="max_seq_len"):
        draft_generate(model, [[1] * 60], 10, 2)
