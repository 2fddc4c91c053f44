"""ACT/PonderNet halting: the rule (survival > ε, nested depths), its own initialisation at the capacity, the
ponder cost at the end of the pass, and state propagation in the training FLOP plan. Causality, batch
independence, the masked reference, FLOPs, caching and speculative decoding are the generic tests'."""

import math

import pytest
import torch
from conftest import make, spread, tokens

from sparsedepth import ConfigError
from sparsedepth.config import to_dict
from sparsedepth.flops import block_flops, counted_flops, train_flops_per_step, train_step_flops
from sparsedepth.routing.act import initial_halting
from sparsedepth.train import TrainConfig, make_model


@pytest.mark.parametrize("capacity, n", [(0.5, 4), (0.25, 4), (1.0, 4), (0.3, 6), (0.125, 16)])
def test_a_constant_halting_probability_runs_capacity_times_n_blocks(capacity, n):
    survival = [(1 - initial_halting(capacity, n, 0.01)) ** (j + 1) for j in range(n)]
    assert sum(s > 0.01 for s in survival) == math.floor(capacity * n + 0.5)


@pytest.mark.parametrize("capacity", [0.25, 0.5, 0.75])
def test_the_model_keeps_the_routers_own_initialisation(capacity, tiny_cfg):
    """`reset_parameters` sets the halting bias so training starts at its budget; the model no longer
    overwrites it with zeros (which made every token halt after a fixed, capacity-blind depth)."""
    model = make("act", tiny_cfg, capacity=capacity)
    halting = initial_halting(capacity, 4, 0.01)
    assert model.router.halt[0].bias.item() == pytest.approx(math.log(halting / (1 - halting)))
    ran = model(tokens(tiny_cfg)).routing.float().mean().item()
    assert ran == pytest.approx(capacity, abs=0.01)


def test_a_token_runs_a_block_while_its_survival_exceeds_epsilon_and_never_after(tiny_cfg):
    idx = tokens(tiny_cfg)
    model = spread(make("act", tiny_cfg).eval(), idx)
    router, seen = model.router, []
    decide = router.decide
    router.decide = lambda h, layer: seen.append(h) or decide(h, layer)
    ran = model(idx).routing
    del router.decide
    log_survival = torch.zeros(ran.shape[:2])
    for j, h in enumerate(seen):
        halting = torch.sigmoid(router.halt[j](h).squeeze(-1))
        log_survival = log_survival + torch.log1p(-halting)
        assert torch.equal(ran[..., j], log_survival > math.log(0.01)), j
    assert not torch.any(ran[..., 1:] & ~ran[..., :-1]), "a halted token ran a later block"
    depths = ran.sum(-1)
    assert depths.min() < depths.max()  # not vacuous


def test_ponder_cost_is_added_once_at_the_end_and_pulls_the_depth_to_the_capacity(tiny_cfg):
    idx = tokens(tiny_cfg, batch=2, length=32)
    model = make("act", tiny_cfg, capacity=0.25).train()
    model.requires_grad_(False)
    model.router.requires_grad_(True)  # the ponder cost alone moves the halting units (and only they train)
    with torch.no_grad():
        for unit in model.router.halt:
            unit.bias.fill_(-4.0)  # rarely halts: far over budget
    out = model(idx, idx)
    fraction = out.routing.float().mean()
    assert out.aux_loss.item() == pytest.approx(((fraction - 0.25) ** 2).item(), rel=1e-5)
    opt = torch.optim.Adam(model.router.parameters(), lr=0.2)
    fractions = []
    for _ in range(60):
        out = model(idx)
        opt.zero_grad()
        out.aux_loss.backward()
        opt.step()
        fractions.append(out.routing.float().mean().item())
    assert fractions[0] > 0.9 and abs(sum(fractions[-20:]) / 20 - 0.25) < 0.1, fractions[::10]


def config(propagate: bool) -> TrainConfig:
    return TrainConfig.from_dict({
        "router": "act", "capacity": 0.5, "steps": 3, "batch_size": 2, "seq_len": 32, "vocab_size": 300,
        "router_options": {"propagate": propagate},
        "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 32}})


@pytest.mark.parametrize("propagate", [False, True])
def test_a_training_step_counts_state_propagation(propagate):
    """Non-uniform halting in training: torch's own count of a step (forward and backward) equals the
    analytic step, which charges halted tokens' keys/values when they propagate."""
    cfg = config(propagate)
    model = make_model(cfg, 300).train()
    x = torch.randint(0, 300, (1, 32), generator=torch.Generator().manual_seed(1))  # one sample: no padding
    spread(model, x)
    outputs = []

    def step():
        out = model(x, x)
        (out.loss + out.aux_loss).backward()
        outputs.append(out)

    counted = counted_flops(step)
    assert model.router.propagates_state == propagate
    assert counted == pytest.approx(train_step_flops(model, outputs[0], 32), rel=1e-9)


def test_the_training_plan_counts_state_propagation():
    """At initialisation every token halts at capacity × n blocks, so the plan is exact; with `propagate`
    the plan charges, for the block half the tokens run (capacity 0.625: depth 2.5 of 4), the other half's
    keys/values over the whole sequence (the plan once left them out)."""
    plain = config(False)
    model = make_model(plain, 300).train()
    x = torch.randint(0, 300, (2, 32), generator=torch.Generator().manual_seed(1))
    assert plain.steps * train_flops_per_step(plain, 300) == pytest.approx(
        sum(train_step_flops(model, model(x, x), 32) for _ in range(plain.steps)), rel=1e-12)
    fields = {"capacity": 0.625, "router_options": {"propagate": True}}
    propagating = TrainConfig.from_dict({**to_dict(plain), **fields})
    half = TrainConfig.from_dict({**to_dict(plain), "capacity": 0.625})
    model_cfg = make_model(half, 300).cfg
    extra = 3 * 2 * (block_flops(16.0, model_cfg, 32.0) - block_flops(16.0, model_cfg))
    assert train_flops_per_step(propagating, 300) - train_flops_per_step(half, 300) == pytest.approx(extra)
    assert extra > 0


@pytest.mark.parametrize("options, match", [({"epsilon": 0.0}, "epsilon"), ({"epsilon": 1.0}, "epsilon"),
                                            ({"ponder_weight": -1.0}, "ponder_weight")])
def test_bad_options_are_rejected(options, match, tiny_cfg):
    with pytest.raises(ConfigError, match=match):
        make("act", tiny_cfg, **options)
