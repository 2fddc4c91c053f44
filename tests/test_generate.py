"""Cached decoding equals the full forward pass, for every router, in its causal inference mode."""

import pytest
import torch
from conftest import cached_decode, make, spread, tokens

from sparsedepth import ROUTERS
from sparsedepth.cache import KVCache
from sparsedepth.generate import decode_step, generate, prefill, sample_next


@pytest.mark.parametrize("router", list(ROUTERS))
def test_cached_decoding_matches_full_forward(router, tiny_cfg):
    seq = tokens(tiny_cfg, batch=3, length=40)
    model = spread(make(router, tiny_cfg, capacity=0.4).eval(), tokens(tiny_cfg), seq)
    full = model(seq)
    logits, layers, cache = cached_decode(model, seq)
    torch.testing.assert_close(logits, full.logits, atol=3e-5, rtol=1e-4)
    assert torch.equal(layers, full.layers_per_token)
    # the cache holds exactly the tokens that ran each block: skipped tokens are not keys there, unless
    # the rule propagates state (every token gives K/V)
    held = torch.full_like(full.layer_counts, 40) if model.router.propagates_state else full.layer_counts
    torch.testing.assert_close(cache.lengths().float(), held)


@pytest.mark.parametrize("router", list(ROUTERS))
def test_prompts_of_different_lengths_decode_like_separate_runs(router, tiny_cfg):
    seq = tokens(tiny_cfg, batch=3, length=30)
    model = spread(make(router, tiny_cfg, capacity=0.4).eval(), tokens(tiny_cfg), seq)
    prompts = [seq[0, :5].tolist(), seq[1, :17].tolist(), seq[2, :9].tolist()]
    cache, logits, _ = prefill(model, prompts)
    for b, p in enumerate(prompts):
        torch.testing.assert_close(logits[b], model(torch.tensor([p])).logits[0, -1], atol=3e-5, rtol=1e-4)
    nxt = seq[:, 20]
    stepped = decode_step(model, nxt, cache).logits[:, 0]
    for b, p in enumerate(prompts):
        alone = model(torch.tensor([p + [int(nxt[b])]])).logits[0, -1]
        torch.testing.assert_close(stepped[b], alone, atol=3e-5, rtol=1e-4)


def test_mod_topk_mode_cannot_decode_causally(tiny_cfg):
    """The complaint about MoD: top-k needs the whole sequence. In top-k mode, a cached decode differs
    from the full pass; the causal mode (tested above) does not."""
    model = make("mod", tiny_cfg, capacity=0.25).eval()
    model.router.set_inference("topk")
    seq = tokens(tiny_cfg, batch=1, length=30)
    full = model(seq).logits
    cache = KVCache.empty(model, 1)
    model(seq[:, :10], cache=cache)
    stepped = torch.cat([decode_step(model, seq[:, t], cache).logits for t in range(10, 30)], dim=1)
    assert (stepped - full[:, 10:]).abs().max() > 1e-3


def test_generate_greedy_is_deterministic_and_reports_layers(tiny_cfg):
    model = make("threshold", tiny_cfg, capacity=0.5)
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    a = generate(model, prompts, max_new_tokens=6, temperature=0)
    b = generate(model, prompts, max_new_tokens=6, temperature=0)
    assert a.tokens == b.tokens and all(len(t) == 6 for t in a.tokens)
    assert all(1 <= n <= tiny_cfg.n_layers for row in a.layers for n in row)
    assert [len(x) for x in a.prompt_layers] == [3, 5]
    # greedy generation equals repeatedly taking the argmax of a full forward pass
    seq = list(prompts[1])
    for _ in range(6):
        seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    assert a.tokens[1] == seq[5:]


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    g = torch.Generator().manual_seed(0)
    assert {int(sample_next(logits, top_k=1, generator=g)) for _ in range(20)} == {3}
    assert {int(sample_next(logits, top_p=0.5, generator=g)) for _ in range(50)} <= {2, 3}
    assert int(sample_next(logits, temperature=0)) == 3


def test_generate_rejects_too_long_and_empty_prompts(tiny_cfg):
    model = make("dense", tiny_cfg)
    with pytest.raises(ValueError, match="max_seq_len"):
        generate(model, [[1] * 60], max_new_tokens=10)
    with pytest.raises(ValueError, match="at least one token"):
        generate(model, [[]], max_new_tokens=1)
