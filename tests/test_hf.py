"""The Hugging Face wrapper: save/load round trips exactly, generate equals our decoder, runs export."""

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
from conftest import spread, tiny_shakespeare_run, tokens
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, pipeline

from sparsedepth import ROUTERS
from sparsedepth.checkpoint import CheckpointError
from sparsedepth.data import EOT, train_tokenizer
from sparsedepth.evaluate import load_run
from sparsedepth.generate import generate
from sparsedepth.hf import (
    SparseDepthConfig,
    SparseDepthForCausalLM,
    export_run,
    from_run,
    hf_tokenizer,
    main,
)

# every router in each inference mode it declares (default: the causal one), plus MoD with its predictor
# rule (options must survive)
CASES = {name: {} for name in ROUTERS} | {
    f"{name}-{mode}": {"router": name, "inference": mode}
    for name, cls in ROUTERS.items() for mode in cls.inference_modes[1:]
} | {"mod-predictor": {"router": "mod", "router_options": {"causal": "predictor"}}}
CAUSAL = [case for case, spec in CASES.items() if spec.get("inference", "causal") == "causal"]


def hf_model(case: str, tiny_cfg, seed: int = 0) -> SparseDepthForCausalLM:
    """Weights spread so that routing is not uniform (checked in eval mode, in the case's inference mode)."""
    spec = {"router": case, **CASES[case]}
    capacity = 1.0 if not ROUTERS[spec["router"]].routes_blocks else 0.4
    torch.manual_seed(seed)
    config = SparseDepthConfig(**vars(tiny_cfg), capacity=capacity, **spec)
    model = SparseDepthForCausalLM(config).eval()
    spread(model.model, tokens(tiny_cfg))
    return model


@pytest.mark.parametrize("case", list(CASES))
def test_save_and_auto_load_give_identical_logits(case, tiny_cfg, tmp_path):
    model = hf_model(case, tiny_cfg)
    x = tokens(tiny_cfg, batch=2, length=24)
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(loaded) is SparseDepthForCausalLM
    for key in ("router", "capacity", "router_options", "inference", "n_layers", "vocab_size"):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    assert loaded.model.lm_head.weight is loaded.model.wte.weight  # still tied after loading
    with torch.no_grad():
        a, b = model(x, use_cache=False), loaded(x, use_cache=False)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.layers_per_token, b.layers_per_token)
    assert type(AutoConfig.from_pretrained(tmp_path)) is SparseDepthConfig


def test_saved_file_holds_the_tied_matrix_once(tiny_cfg, tmp_path):
    from safetensors import safe_open

    hf_model("dense", tiny_cfg).save_pretrained(tmp_path)
    with safe_open(str(tmp_path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "model.wte.weight" in keys and "model.lm_head.weight" not in keys


@pytest.mark.parametrize("case", CAUSAL)
def test_generate_uses_the_routed_cache_and_equals_our_greedy_decoding(case, tiny_cfg):
    model = hf_model(case, tiny_cfg)
    x = tokens(tiny_cfg, batch=2, length=9)
    fed = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: fed.append(kw["input_ids"].shape[1]),
                                           with_kwargs=True)
    out = model.generate(x, max_new_tokens=5, do_sample=False)
    hook.remove()
    assert fed == [9, 1, 1, 1, 1]  # prefill, then one token per step through our cache
    ours = generate(model.model, x.tolist(), max_new_tokens=5, temperature=0)
    assert out[:, 9:].tolist() == ours.tokens
    assert torch.equal(model.generate(x, max_new_tokens=5, do_sample=False, use_cache=False), out)


@pytest.mark.parametrize("case", [c for c in CASES if c not in CAUSAL])
def test_a_non_causal_mode_generates_by_recomputing_the_full_sequence(case, tiny_cfg):
    model = hf_model(case, tiny_cfg)
    x = tokens(tiny_cfg, batch=1, length=9)
    seq = x
    for _ in range(4):
        nxt = model.model(seq).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], dim=1)
    assert torch.equal(model.generate(x, max_new_tokens=4, do_sample=False), seq)
    assert model(x).cache is None


def test_beam_search_with_cache_equals_without(tiny_cfg):
    model = hf_model("probe", tiny_cfg)
    x = tokens(tiny_cfg, batch=2, length=6)
    kw = dict(max_new_tokens=5, do_sample=False, num_beams=3)
    assert torch.equal(model.generate(x, **kw), model.generate(x, use_cache=False, **kw))


def test_labels_give_the_shifted_language_model_loss(tiny_cfg):
    model = hf_model("threshold", tiny_cfg)
    x = tokens(tiny_cfg, batch=2, length=16)
    out = model(x, labels=x)
    expected = F.cross_entropy(out.logits[:, :-1].flatten(0, 1), x[:, 1:].flatten())
    torch.testing.assert_close(out.loss, expected)
    model.train()
    trained = model(x, labels=x)  # training mode adds the router's budget term
    torch.testing.assert_close(trained.loss, expected + trained.aux_loss)


# mor-topk routes block 0, on the embeddings: a repeated token ties with itself in top-k, and torch breaks
# the tie by memory layout, which padding shifts (a generated 88, 88 picks the other one). Not a padding bug
# (test_padding checks its k per real length); left out until top-k breaks ties by position.
@pytest.mark.parametrize("case", [c for c in CASES if c != "mor-topk"])
def test_left_padded_generate_equals_each_row_alone(case, tiny_cfg):
    """Padding runs no block and is never cached, so a padded batch generates what each prompt does alone
    (top-k modes, without a cache, rank each row's real tokens only)."""
    model = hf_model(case, tiny_cfg)
    prompts = [tokens(tiny_cfg, batch=1, length=n, seed=n)[0] for n in (9, 4, 6)]
    x = torch.full((3, 9), 5)  # any pad id: the mask, not the id, says what is padding
    mask = torch.zeros_like(x)
    for b, p in enumerate(prompts):
        x[b, 9 - len(p):], mask[b, 9 - len(p):] = p, 1
    kw = dict(max_new_tokens=5, do_sample=False, pad_token_id=5)
    out = model.generate(x, attention_mask=mask, **kw)
    for b, p in enumerate(prompts):
        assert out[b, 9:].tolist() == model.generate(p[None], **kw)[0, len(p):].tolist(), (case, b)
    if model.decodes_causally:
        assert torch.equal(model.generate(x, attention_mask=mask, use_cache=False, **kw), out)
        beams = model.generate(x, attention_mask=mask, num_beams=2, **kw)
        assert beams[1, 9:].tolist() == model.generate(prompts[1][None], num_beams=2, **kw)[0, 4:].tolist()


def test_pipeline_batches_prompts_of_different_lengths(tiny_cfg):
    texts = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"] * 20
    tok = train_tokenizer(texts, 300)
    hf_tok = hf_tokenizer(tok, tok.token_to_id(EOT))
    hf_tok.padding_side = "left"
    model = hf_model("threshold", dataclasses.replace(tiny_cfg, vocab_size=300))
    model.generation_config.pad_token_id = hf_tok.pad_token_id
    generator = pipeline("text-generation", model=model, tokenizer=hf_tok)
    prompts = ["To be", "Whether 'tis nobler in the", "the"]
    kw = dict(max_new_tokens=4, do_sample=False, return_full_text=False)
    batched = generator(prompts, batch_size=3, **kw)
    assert batched == [generator(p, **kw) for p in prompts]


def test_bad_config_names_the_problem():
    with pytest.raises(ValueError, match="divisible"):
        SparseDepthConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="unknown router 'nope'"):
        SparseDepthConfig(router="nope")


def test_tokenizer_round_trips_through_auto_tokenizer(tmp_path):
    texts = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind to suffer"] * 20
    tok = train_tokenizer(texts, 300)
    eot = tok.token_to_id(EOT)
    hf_tokenizer(tok, eot).save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path)
    sample = "The slings and arrows of outrageous fortune,\nOr to take arms" + EOT + "é ✓"
    assert loaded(sample)["input_ids"] == tok.encode(sample).ids
    assert loaded.eos_token == EOT and loaded.eos_token_id == eot
    ids = tok.encode(sample).ids
    assert loaded.decode(ids) == tok.decode(ids, skip_special_tokens=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_shakespeare_run(tmp_path_factory.mktemp("hf_run"))


def test_export_of_a_trained_run_loads_with_auto_classes(run_dir, tmp_path, capsys):
    assert main(["export", "--run", str(run_dir), "--out", str(tmp_path)]) == 0
    assert "exported" in capsys.readouterr().out
    model = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    tok = AutoTokenizer.from_pretrained(tmp_path)
    trained, _, data = load_run(run_dir)
    assert model.config.router_options == {"causal": "predictor"} and model.config.inference == "causal"
    assert tok.eos_token_id == data.eot_id == model.generation_config.eos_token_id
    assert tok.model_max_length == model.config.max_seq_len == 64
    ids = torch.tensor([tok("ROMEO:\nWhat light")["input_ids"]])
    assert ids[0].tolist() == data.tokenizer.encode("ROMEO:\nWhat light").ids
    with torch.no_grad():
        assert torch.equal(model(ids).logits, trained(ids).logits)
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    ours = generate(trained, ids.tolist(), max_new_tokens=5, temperature=0, eos_id=data.eot_id)
    assert out[0, ids.shape[1]:].tolist()[: len(ours.tokens[0])] == ours.tokens[0]
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "sparsedepth"


def test_from_run_matches_load_run(run_dir):
    model, (trained, _, _) = from_run(run_dir), load_run(run_dir)
    x = torch.randint(0, trained.cfg.vocab_size, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x).logits, trained(x).logits)


def test_bad_run_dir_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(CheckpointError, match="does not exist"):
        export_run(tmp_path / "missing", tmp_path / "out")
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(CheckpointError, match="no model.safetensors"):
        from_run(tmp_path / "unfinished")
    assert main(["export", "--run", str(tmp_path / "unfinished"), "--out", str(tmp_path / "out")]) == 2
    assert "error: " in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_cli_exits_2_on_bad_input(tmp_path, capsys):
    assert main(["export", "--run", str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_cli_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--run", "somewhere"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err


@pytest.mark.parametrize("case", CAUSAL)
def test_speculative_generate_equals_greedy_generate(case, tiny_cfg):
    """`generate(..., speculative=...)` routes to our self-speculative loop: same tokens as greedy HF
    generate, left padding and eos included (finished rows filled with the pad id). `spread`'s scaled-up
    blocks make a shallow draft often wrong."""
    model = hf_model(case, tiny_cfg)
    prompts = [tokens(tiny_cfg, batch=1, length=n, seed=n)[0] for n in (9, 4, 6)]
    x, mask = torch.full((3, 9), 5), torch.zeros(3, 9, dtype=torch.long)
    for b, p in enumerate(prompts):
        x[b, 9 - len(p):], mask[b, 9 - len(p):] = p, 1
    kw = dict(attention_mask=mask, max_new_tokens=12, do_sample=False, pad_token_id=5)
    plain = model.generate(x, **kw)
    for spec in ({"exit_layer": 1, "draft_tokens": 3}, {"exit_layer": 2, "draft_tokens": 1}):
        assert torch.equal(model.generate(x, speculative=spec, **kw), plain)
    eos = int(plain[0, 9 + 3])
    plain = model.generate(x, eos_token_id=eos, **kw)
    assert torch.equal(model.generate(x, eos_token_id=eos, speculative={"exit_layer": 1, "draft_tokens": 2},
                                      **kw), plain)
    with pytest.raises(ValueError, match="greedily"):
        model.generate(x, speculative={"exit_layer": 1, "draft_tokens": 2}, do_sample=True)
    with pytest.raises(ValueError, match="num_beams"):
        model.generate(x, speculative={"exit_layer": 1, "draft_tokens": 2}, max_new_tokens=3, num_beams=2)
