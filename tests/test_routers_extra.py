"""Router-specific promises beyond the shared suite (which parametrises over every router): MoR's nesting,
LayerDrop's fixed inference depth, the capacity curriculum and probabilistic gating."""

import pytest
import torch
from conftest import make, tokens

from sparsedepth import ConfigError
from sparsedepth.evaluate import causality_violation

TOL = 1e-5


@pytest.mark.parametrize("mode", ["train", "topk", "causal"])
def test_mor_keeps_a_nested_subset_at_each_depth(mode, tiny_cfg):
    model = make("mor", tiny_cfg, capacity=0.25).train(mode == "train")
    if mode != "train":
        model.router.set_inference(mode)
        with torch.no_grad():  # a spread of logits so the causal rule keeps some tokens and drops others
            for proj in model.router.proj:
                proj.bias.fill_(0.5)
    idx = tokens(tiny_cfg, batch=3)
    routing = model(idx, idx).routing
    routed = sorted(model.routed)
    for shallow, deep in zip(routed, routed[1:], strict=False):
        assert not (routing[..., deep] & ~routing[..., shallow]).any()  # deep ⊆ shallow
    counts = routing[..., routed].sum(1).float().mean(0)
    assert (counts[1:] <= counts[:-1]).all()
    if mode != "causal":  # top-k keeps the scheduled count exactly: linear 1 → 0.25 over 4 depths
        expected = [torch.tensor(c * 48).ceil() for c in (0.8125, 0.625, 0.4375, 0.25)]
        assert counts.tolist() == [e.item() for e in expected]


def test_mor_topk_inference_is_not_causal_but_its_causal_rule_is(tiny_cfg):
    model = make("mor", tiny_cfg, capacity=0.25).eval()
    idx = tokens(tiny_cfg, batch=2)
    model.router.set_inference("topk")
    assert causality_violation(model, idx, 10) > TOL
    model.router.set_inference("causal")
    assert causality_violation(model, idx, 10) < TOL


def test_mor_rejects_a_bad_schedule(tiny_cfg):
    with pytest.raises(ConfigError, match="non-increasing"):
        make("mor", tiny_cfg, capacity=0.25, capacities=[0.5, 0.9, 0.3, 0.25])


def test_layerdrop_inference_is_a_fixed_pruning_matching_training_depth(tiny_cfg):
    model = make("layerdrop", tiny_cfg, capacity=0.5)
    probs = [model.router.drop_probability(layer) for layer in model.router.routed_layers]
    assert probs == sorted(probs) and abs(1 - sum(probs) / len(probs) - 0.5) < 1e-9  # rising; keep = 0.5
    model.eval()
    a, b = model(tokens(tiny_cfg, seed=1)), model(tokens(tiny_cfg, seed=2))
    assert torch.equal(a.routing, b.routing)  # deterministic, input-independent
    kept = [p < 0.5 for p in probs]
    assert a.routing[0, 0].tolist() == kept
    model.train()
    torch.manual_seed(0)
    fraction = model(tokens(tiny_cfg, batch=8)).layers_per_token.mean().item() / tiny_cfg.n_layers
    assert abs(fraction - 0.5) < 0.05


@pytest.mark.parametrize("router", ["mod", "seed", "threshold", "mor", "random", "layerdrop"])
def test_curriculum_falls_from_full_capacity_to_the_target(router, tiny_cfg):
    model = make(router, tiny_cfg, capacity=0.25, curriculum=0.5).train()
    model.router.set_progress(0.0)
    assert model.router.effective_capacity == 1.0
    model.router.set_progress(0.25)
    assert model.router.effective_capacity == pytest.approx(0.625)
    for progress in (0.5, 0.9):
        model.router.set_progress(progress)
        assert model.router.effective_capacity == 0.25


def test_curriculum_reaches_the_target_layers_per_token(tiny_cfg):
    model = make("mod", tiny_cfg, capacity=0.25, curriculum=0.5).train()
    idx = tokens(tiny_cfg)
    model.router.set_progress(0.0)
    assert model(idx, idx).layers_per_token.mean().item() == tiny_cfg.n_layers  # every token, every block
    model.router.set_progress(1.0)
    assert model(idx, idx).layers_per_token.mean().item() == 2 + 2 * 12 / 48  # 2 dense + 25 % of 2 routed


@pytest.mark.parametrize("router", ["seed", "threshold"])
def test_probabilistic_gating_runs_the_expected_capacity(router, tiny_cfg):
    """Sampled gates match the router's probabilities on average (so the budget it is trained to is what
    runs), and the gradient still reaches the router; inference stays deterministic."""
    model = make(router, tiny_cfg, gating="probabilistic", temperature=0.5).train()
    idx = tokens(tiny_cfg, batch=64)
    torch.manual_seed(0)
    out = model(idx, idx)
    h = model.wte(idx)
    model.router.begin(h, torch.arange(idx.shape[1]))
    layer = model.router.routed_layers[-1]
    logit = model.router.logit - torch.logit(torch.tensor(layer / tiny_cfg.n_layers)) if router == "seed" \
        else model.router.gates[model.router.slot[layer]](h).squeeze(-1)
    expected = torch.sigmoid(logit / 0.5).mean().item()
    torch.manual_seed(1)
    draws = [model.router.decide(h, layer).mask.float().mean() for _ in range(50)]
    sampled = torch.stack(draws).mean().item()
    assert abs(sampled - expected) < 0.02
    (out.loss + out.aux_loss).backward()
    assert all(p.grad is not None for p in model.router.parameters())
    model.eval()
    assert torch.equal(model(idx).routing, model(idx).routing)


@pytest.mark.parametrize("router", ["mod", "mor"])
def test_probabilistic_top_k_keeps_the_exact_count(router, tiny_cfg):
    model = make(router, tiny_cfg, capacity=0.25, gating="probabilistic").train()
    idx = tokens(tiny_cfg, batch=4)
    torch.manual_seed(0)
    a = model(idx, idx).layer_counts
    torch.manual_seed(1)
    b = model(idx, idx).layer_counts
    assert torch.equal(a, b)  # the same counts …
    torch.manual_seed(0)
    r0 = model(idx, idx).routing
    torch.manual_seed(1)
    assert not torch.equal(r0, model(idx, idx).routing)  # … of different, sampled tokens


@pytest.mark.parametrize("options, message", [
    ({"gating": "maybe"}, "gating"),
    ({"temperature": 0.0}, "temperature"),
    ({"curriculum": 2.0}, "curriculum"),
])
def test_bad_gating_options_are_clear_errors(options, message, tiny_cfg):
    with pytest.raises(ConfigError, match=message):
        make("mod", tiny_cfg, **options)
