"""MoR (nested), LayerDrop (stochastic depth) and the shared router options: probabilistic gating and the
capacity curriculum. Causality, batch independence, hard skipping = masked reference, analytic = counted
FLOPs and cached decoding are checked for every registered router in test_model.py / test_generate.py."""

import math

import pytest
import torch
from conftest import make, tokens

from sparsedepth import ROUTERS, ConfigError, ModelConfig
from sparsedepth.evaluate import causality_violation
from sparsedepth.flops import counted_flops, dense_forward_flops, output_flops
from sparsedepth.routing.base import capacity_count
from sparsedepth.routing.layerdrop import drop_probabilities
from sparsedepth.routing.mor import geometric_schedule
from sparsedepth.train import TrainConfig, make_model

TOL = 1e-5
OPTION_VALUES = {"gating": "probabilistic", "temperature": 0.5, "curriculum": 0.3}


def taking(*options: str) -> list[str]:
    """Registered routers that declare (`Router.shared_options`) every one of `options`."""
    return [name for name, cls in ROUTERS.items() if set(options) <= set(cls.shared_options)]


def routed_ran(model, out) -> torch.Tensor:
    """[B, T, n] which routed blocks each token ran, in depth order."""
    return out.routing[..., model.router.routed_layers]


def assert_nested(ran: torch.Tensor) -> None:
    deeper, shallower = ran[..., 1:], ran[..., :-1]
    assert not torch.any(deeper & ~shallower), "a token ran depth d+1 without running depth d"


# --- mor ------------------------------------------------------------------------------------------------

def test_mor_geometric_schedule_has_the_capacity_as_its_mean():
    for capacity, n in ((0.5, 4), (0.125, 6), (1.0, 3)):
        schedule = geometric_schedule(capacity, n)
        assert sum(schedule) / n == pytest.approx(capacity, abs=1e-9)
        assert schedule == sorted(schedule, reverse=True) and schedule[0] <= 1.0


@pytest.mark.parametrize("gating", ["deterministic", "probabilistic"])
def test_mor_training_keeps_exact_nested_counts(gating, tiny_cfg):
    model = make("mor", tiny_cfg, capacity=0.3, gating=gating).train()
    out = model(tokens(tiny_cfg))
    ran = routed_ran(model, out)
    assert_nested(ran)
    expected = [capacity_count(c, 48) for c in model.router.schedule]
    assert torch.all(ran.sum(1) == torch.tensor(expected)), (ran.sum(1), expected)


@pytest.mark.parametrize("inference", ["causal", "topk"])
def test_mor_inference_stays_nested(inference, tiny_cfg):
    model = make("mor", tiny_cfg, capacity=0.5).eval()
    model.router.set_inference(inference)
    out = model(tokens(tiny_cfg))
    ran = routed_ran(model, out)
    assert_nested(ran)
    assert ran[..., -1].any() and not ran[..., 0].all()  # not vacuous: some go deep, some stop early


def test_mor_causal_rule_is_the_thresholded_router_within_the_survivors(tiny_cfg):
    """Eval keeps a token at depth d iff sigmoid(router_d) > 0.5 and it was kept at depth d-1; top-k
    mode is not causal (like MoD), the causal mode is."""
    model = make("mor", tiny_cfg, capacity=0.5).eval()
    idx = tokens(tiny_cfg)
    router, seen = model.router, []
    decide = router.decide
    router.decide = lambda h, layer: seen.append((h, layer)) or decide(h, layer)
    ran = routed_ran(model, model(idx))
    del router.decide
    kept = torch.ones(ran.shape[:2], dtype=torch.bool)
    for depth, (h, layer) in enumerate(seen):
        kept = kept & (torch.sigmoid(router.proj[depth](h).squeeze(-1)) > 0.5)
        assert torch.equal(ran[..., depth], kept), layer
    assert causality_violation(model, idx, 10) < TOL
    router.set_inference("topk")
    assert causality_violation(model, idx, 10) > TOL


def test_mor_explicit_capacities_and_bad_lists(tiny_cfg):
    model = make("mor", tiny_cfg, capacities=[1.0, 0.5, 0.5, 0.25]).train()
    counts = routed_ran(model, model(tokens(tiny_cfg))).sum(1)
    assert torch.all(counts == torch.tensor([48, 24, 24, 12]))
    for bad in ([0.5, 0.6, 0.4, 0.2], [0.5, 0.25], [1.0, 0.5, 0.0, 0.0]):
        with pytest.raises(ConfigError, match="mor capacities"):
            make("mor", tiny_cfg, capacities=bad)


def test_mor_every_depth_router_gets_gradient_from_the_loss_and_the_bce(tiny_cfg):
    model = make("mor", tiny_cfg).train()
    idx = tokens(tiny_cfg)
    out = model(idx, idx)
    out.loss.backward(retain_graph=True)  # through the router-weighted block outputs
    assert all(proj.weight.grad.abs().sum() > 0 for proj in model.router.proj)
    model.zero_grad()
    out.aux_loss.backward()  # the BCE alone, which teaches the causal inference rule
    assert all(proj.weight.grad.abs().sum() > 0 for proj in model.router.proj)


# --- layerdrop -----------------------------------------------------------------------------------------

def test_layerdrop_profile_is_linear_in_depth_with_mean_one_minus_capacity():
    p = drop_probabilities(0.5, 4)
    assert p == pytest.approx([0.2, 0.4, 0.6, 0.8])
    for capacity, n in ((0.125, 6), (0.3, 4), (0.9, 12)):
        p = drop_probabilities(capacity, n)
        assert sum(p) / n == pytest.approx(1 - capacity, abs=1e-9)
        assert all(0 <= a <= b <= 1 for a, b in zip(p, p[1:], strict=False))
    assert drop_probabilities(1.0, 4) == [0.0] * 4


def test_layerdrop_training_drops_single_tokens_at_the_scheduled_rates(tiny_cfg):
    model = make("layerdrop", tiny_cfg, capacity=0.5).train()
    torch.manual_seed(0)
    ran = routed_ran(model, model(tokens(tiny_cfg, batch=32, length=64))).float()  # [B, T, n]
    torch.testing.assert_close(1 - ran.mean((0, 1)), torch.tensor([0.2, 0.4, 0.6, 0.8]), atol=0.03, rtol=0)
    assert not torch.all(ran == ran[:, :1]), "drops are per token, not per sample"
    assert ran.mean().item() == pytest.approx(0.5, abs=0.02)  # expected depth = capacity


@pytest.mark.parametrize("capacity", [0.125, 0.5, 0.75])
def test_layerdrop_inference_is_a_fixed_skip_at_the_training_depth(capacity, tiny_cfg):
    cfg = ModelConfig(vocab_size=97, d_model=32, n_layers=8, n_heads=4, max_seq_len=64)
    model = make("layerdrop", cfg, capacity=capacity).eval()
    a, b = model(tokens(cfg, seed=1)), model(tokens(cfg, seed=2))
    assert torch.equal(a.routing, b.routing)  # deterministic, whatever the input
    assert torch.all(a.routing == a.routing[:1, :1])  # the same blocks for every token
    n = len(model.router.routed_layers)
    kept = routed_ran(model, a)[0, 0]
    assert kept.sum().item() == math.floor(capacity * n + 0.5)  # expected training depth, rounded
    assert torch.equal(kept, kept.sort(descending=True).values)  # the shallowest blocks: least dropped
    p = drop_probabilities(capacity, n)
    if capacity == 0.5:  # unsaturated profile: the rule is exactly "skip blocks with p ≥ 0.5"
        assert kept.tolist() == [q < 0.5 for q in p]


# --- hard skipping at low capacity -----------------------------------------------------------------------

@pytest.mark.parametrize("router,inference,bound", [("mor", "topk", 0.3), ("mor", "causal", 1.0),
                                                   ("layerdrop", None, 0.3)])
def test_new_routers_cut_counted_flops_at_capacity_0125(router, inference, bound):
    cfg = ModelConfig(vocab_size=97, d_model=64, n_layers=6, n_heads=4, max_seq_len=128)
    idx = tokens(cfg, batch=1, length=128)
    model = make(router, cfg, capacity=0.125).eval()
    if inference:
        model.router.set_inference(inference)
    counted = counted_flops(lambda: model(idx))
    assert counted == pytest.approx(output_flops(model, model(idx), 128), rel=1e-9)
    assert counted < bound * dense_forward_flops(cfg, 1, 128)


# --- probabilistic gating ------------------------------------------------------------------------------

def _spread(linear: torch.nn.Linear) -> None:
    """Router weights large enough that probabilities cover (0, 1), so the sampling check has teeth."""
    torch.nn.init.normal_(linear.weight, std=0.4)


@pytest.mark.parametrize("router", ["probe", "threshold"])
def test_probabilistic_gates_sample_at_the_router_probability(router, tiny_cfg):
    model = make(router, tiny_cfg, gating="probabilistic", temperature=2.0)
    r = model.router
    _spread(r.probe if router == "probe" else r.gates[1])
    h = torch.randn(64, 64, tiny_cfg.d_model)
    layer = r.routed_layers[1]
    r.train().begin(h, torch.arange(64))
    if router == "probe":
        margin = r.logit - torch.logit(torch.tensor(layer / tiny_cfg.n_layers))
    else:
        margin = r.gates[1](h).squeeze(-1)
    prob = torch.sigmoid(margin / 2.0).detach()
    torch.manual_seed(0)
    mask = r.decide(h, layer).mask.float()
    for part in (prob < 0.5, prob >= 0.5):  # calibrated on both sides of the boundary, not only on average
        assert part.sum() > 500
        assert mask[part].mean().item() == pytest.approx(prob[part].mean().item(), abs=0.03)
    assert 0.05 < (mask != (margin > 0).float()).float().mean() < 0.5  # it does explore
    r.eval().begin(h, torch.arange(64))
    assert torch.equal(r.decide(h, layer).mask, margin > 0)  # eval: deterministic


@pytest.mark.parametrize("router", [r for r in taking("gating") if ROUTERS[r].training_plan == "exact"])
def test_probabilistic_topk_is_gumbel_sampling_with_exact_capacity(router, tiny_cfg):
    model = make(router, tiny_cfg, capacity=0.25, gating="probabilistic").train()
    idx = tokens(tiny_cfg)
    torch.manual_seed(0)
    a = model(idx)
    torch.manual_seed(1)
    b = model(idx)
    routed = model.router.routed_layers
    assert torch.equal(a.layer_counts[:, routed], b.layer_counts[:, routed])
    planned = torch.tensor([n for n, _ in model.router.training_counts(48).values()])
    assert torch.all(a.layer_counts[:, routed] == planned)  # the exact counts of the plan
    assert not torch.equal(a.routing, b.routing)  # sampled, not argmax
    model.router.temperature = 1e-12  # vanishing noise (below float32 resolution): plain top-k
    reference = make(router, tiny_cfg, capacity=0.25).train()
    assert torch.equal(model(idx).routing, reference(idx).routing)


# --- curriculum ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("router", taking("curriculum"))
def test_curriculum_anneals_capacity_from_one_to_target(router, tiny_cfg):
    r = make(router, tiny_cfg, capacity=0.25, curriculum=0.4).router.train()
    for progress, expected in ((0.0, 1.0), (0.2, 0.625), (0.4, 0.25), (0.9, 0.25)):
        r.set_progress(progress)
        assert r.effective_capacity == pytest.approx(expected)
    r.set_progress(0.0)
    assert r.eval().effective_capacity == 0.25  # evaluation always measures the target


@pytest.mark.parametrize("router", [r for r in taking("curriculum") if ROUTERS[r].training_plan != "budget"])
def test_curriculum_moves_the_layers_run_per_token(router, tiny_cfg):
    """Routers whose training fraction follows the capacity by rule (top-k, random drops); budget routers
    only chase it through their loss (next test)."""
    model = make(router, tiny_cfg, capacity=0.25, curriculum=0.5).train()
    idx = tokens(tiny_cfg, batch=8)
    routed = model.router.routed_layers
    model.router.set_progress(0.0)
    assert torch.all(model(idx).layers_per_token == tiny_cfg.n_layers)
    model.router.set_progress(1.0)
    fraction = model(idx).routing[..., routed].float().mean().item()
    assert fraction == pytest.approx(0.25, abs=0.03)


@pytest.mark.parametrize("router", ["probe", "threshold"])
def test_curriculum_moves_the_budget_target(router, tiny_cfg):
    """Budget routers chase the effective capacity: their penalty is (fraction run − target)²."""
    model = make(router, tiny_cfg, capacity=0.25, curriculum=0.5).train()
    idx = tokens(tiny_cfg)
    routed = model.router.routed_layers
    for progress, target in ((0.0, 1.0), (1.0, 0.25)):
        model.router.set_progress(progress)
        out = model(idx)
        ran = out.routing[..., routed].float()
        if router == "probe":
            expected = (ran.mean() - target) ** 2
        else:
            expected = ((ran.mean((0, 1)) - target) ** 2).mean()
        assert out.aux_loss.item() == pytest.approx(expected.item(), rel=1e-5)


# --- options plumbing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("router", list(ROUTERS))
def test_declared_shared_options_are_exactly_the_ones_taken(router, tiny_cfg):
    """Every declared shared option reaches the router through the train config; an undeclared one is
    refused (a router that routes nothing ignores them all), so the declaration the generic option tests
    parametrize over cannot drift from the constructors."""
    for option, value in OPTION_VALUES.items():
        cfg = TrainConfig.from_dict({"router": router, "capacity": 0.5, "router_options": {option: value}})
        if option in ROUTERS[router].shared_options:
            assert getattr(make_model(cfg, 97).router, option) == value
        elif ROUTERS[router].routes_blocks:
            with pytest.raises(ConfigError, match="router_options"):
                make_model(cfg, 97)


@pytest.mark.parametrize("options,match", [({"gating": "sometimes"}, "gating"),
                                           ({"temperature": 0.0}, "temperature"),
                                           ({"curriculum": 1.5}, "curriculum")])
def test_bad_router_options_are_rejected(options, match, tiny_cfg):
    with pytest.raises(ConfigError, match=match):
        make("threshold", tiny_cfg, **options)
    cfg = TrainConfig.from_dict({"router": "layerdrop", "router_options": {"gating": "probabilistic"}})
    with pytest.raises(ConfigError, match="router_options"):
        make_model(cfg, 97)
