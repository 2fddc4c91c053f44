"""The HF wrapper's standard features: length limits, assisted decoding on our cache, resizing, clear
refusals of what it does not provide, and the ImportError that names the extra."""

import importlib
import sys

import pytest
import torch
from conftest import spread, tokens

from sparsedepth import ROUTERS
from sparsedepth.hf import RoutedCache, SparseDepthConfig, SparseDepthForCausalLM

CAUSAL = [*ROUTERS, "mod-predictor"]


def hf_model(case: str, tiny_cfg, seed: int = 0, **extra) -> SparseDepthForCausalLM:
    spec = {"router": "mod", "router_options": {"causal": "predictor"}} if case == "mod-predictor" else \
        {"router": case}
    capacity = 1.0 if spec["router"] == "dense" else 0.4
    torch.manual_seed(seed)
    config = SparseDepthConfig(**vars(tiny_cfg), capacity=capacity, **spec, **extra)
    model = SparseDepthForCausalLM(config).eval()
    spread(model.model, tokens(tiny_cfg))  # non-uniform routing (checked)
    return model


def repeated_prompt(tiny_cfg, length: int = 12):
    x = tokens(tiny_cfg, batch=1, length=length)
    return torch.cat([x, x], dim=1)  # a repeat, so prompt lookup finds candidates to verify


@pytest.mark.parametrize("case", CAUSAL)
def test_crop_rolls_the_routed_cache_back_exactly(case, tiny_cfg):
    model = hf_model(case, tiny_cfg)
    x = tokens(tiny_cfg, batch=2, length=20)
    other = tokens(tiny_cfg, batch=2, length=4, seed=7)
    with torch.no_grad():
        cache = model(x[:, :10]).cache
        model(x[:, 10:16], cache=cache)  # six draft tokens, four of them then rejected
        cache.crop(-4)
        assert cache.get_seq_length() == 12
        tail = model(other, cache=cache).logits
        full = model(torch.cat([x[:, :12], other], dim=1), use_cache=False).logits
    torch.testing.assert_close(tail, full[:, 12:], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", CAUSAL)
def test_prompt_lookup_and_assisted_decoding_equal_greedy(case, tiny_cfg, monkeypatch):
    model = hf_model(case, tiny_cfg)
    x = repeated_prompt(tiny_cfg)
    crops = []
    original = RoutedCache.crop
    monkeypatch.setattr(RoutedCache, "crop", lambda self, n: (crops.append(n), original(self, n))[1])
    greedy = model.generate(x, max_new_tokens=10, do_sample=False)
    lookup = model.generate(x, max_new_tokens=10, do_sample=False, prompt_lookup_num_tokens=3)
    assert torch.equal(lookup, greedy)
    assistant = hf_model("probe", tiny_cfg, seed=1)  # a different draft model, also on our cache
    assisted = model.generate(x, max_new_tokens=10, do_sample=False, assistant_model=assistant)
    assert torch.equal(assisted, greedy)
    assert any(n < 0 for n in crops)  # drafts were rejected and rolled back


def test_assisted_decoding_is_refused_clearly_where_no_cache_can_serve(tiny_cfg):
    x = repeated_prompt(tiny_cfg)
    topk = hf_model("mod", tiny_cfg, inference="topk")
    with pytest.raises(ValueError, match="top-k inference mode is not causal"):
        topk.generate(x, max_new_tokens=4, do_sample=False, prompt_lookup_num_tokens=3)
    with pytest.raises(ValueError, match="needs the routed cache"):
        hf_model("probe", tiny_cfg).generate(x, max_new_tokens=4, do_sample=False, prompt_lookup_num_tokens=3,
                                            use_cache=False)


def test_generation_past_max_seq_len_is_refused_before_any_forward_pass(tiny_cfg):
    model = hf_model("probe", tiny_cfg)
    x = tokens(tiny_cfg, batch=1, length=60)
    calls = []
    hook = model.register_forward_pre_hook(lambda *args: calls.append(1))
    with pytest.raises(ValueError, match=r"= 65 exceeds max_seq_len 64: lower max_new_tokens \(at most 4\)"):
        model.generate(x, max_new_tokens=5, do_sample=False)
    with pytest.raises(ValueError, match="exceeds max_seq_len 64"):
        model.generate(x, max_length=80, do_sample=False)
    assert calls == []
    hook.remove()
    assert model.generate(x, max_new_tokens=4, do_sample=False).shape == (1, 64)  # up to the limit is fine


def test_resize_token_embeddings_keeps_the_tie_and_the_old_rows(tiny_cfg, tmp_path):
    model = hf_model("threshold", tiny_cfg)
    x = tokens(tiny_cfg, batch=2, length=16)
    with torch.no_grad():
        before = model(x).logits
        embedding = model.resize_token_embeddings(101, pad_to_multiple_of=8)
        after = model(x).logits
    assert embedding is model.get_input_embeddings() and embedding.num_embeddings == 104
    assert model.model.lm_head.weight is model.model.wte.weight
    assert model.get_output_embeddings().out_features == 104
    assert model.config.vocab_size == model.model.cfg.vocab_size == 104
    torch.testing.assert_close(after[..., :97], before)
    model.save_pretrained(tmp_path)
    loaded = SparseDepthForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x).logits, after)
    model.resize_token_embeddings(90)
    assert model(x.clamp(max=89)).logits.shape[-1] == 90


def test_what_the_wrapper_does_not_provide_raises_not_implemented(tiny_cfg):
    model = hf_model("probe", tiny_cfg)
    x = tokens(tiny_cfg, batch=1, length=8)
    with pytest.raises(NotImplementedError, match="output_hidden_states"):
        model(x, output_hidden_states=True)
    with pytest.raises(NotImplementedError, match="output_attentions"):
        model(x, output_attentions=True)
    with pytest.raises(NotImplementedError, match="inputs_embeds"):
        model(inputs_embeds=model.get_input_embeddings()(x))
    with pytest.raises(NotImplementedError, match="output_hidden_states"):
        model.generate(x, max_new_tokens=2, do_sample=False, output_hidden_states=True,
                       return_dict_in_generate=True)


@pytest.mark.parametrize("transformers_module", [None, "old"])
def test_missing_or_old_transformers_names_the_extra(transformers_module, monkeypatch):
    if transformers_module == "old":
        import transformers

        monkeypatch.setattr(transformers, "__version__", "4.46.0")
    else:
        monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers → ImportError
    monkeypatch.delitem(sys.modules, "sparsedepth.hf")  # restored afterwards
    with pytest.raises(ImportError, match=r"transformers>=5.24,<6.*pip install 'sparsedepth\[hf\]'"):
        importlib.import_module("sparsedepth.hf")
