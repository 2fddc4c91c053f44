"""Training FLOPs per step: the analytic plan (no model built) against real training-mode forwards.

How close the plan must be comes from what each router declares (`Router.training_plan`), not from a list
here: "exact" routers (top-k, fixed rules) match to rounding; "expected" ones (random drops: layerdrop,
early exit) within 3 %; "budget" ones (gates whose fraction is at its target only once trained: probe,
threshold, act) within 25 % at initialisation (measured, tiny model below, 8 steps: probe 0.88,
probe-frozen 0.99, threshold 0.82, plan / actual).
"""

import pytest
import torch

from sparsedepth import ROUTERS
from sparsedepth.flops import (
    counted_flops,
    exit_readouts,
    output_flops,
    train_flops_per_step,
    train_step_flops,
)
from sparsedepth.routing.early_exit import CONFIDENCE_RANGE
from sparsedepth.train import TrainConfig, make_model

VOCAB, T, B = 512, 64, 8
CAPACITY = {"dense": 1.0, "mod": 0.125, "random": 0.125, "threshold": 0.125}  # others: 0.5625
EXACT = [name for name, cls in ROUTERS.items() if cls.training_plan == "exact"]
# |plan / actual − 1| at initialisation, per declared kind of plan (see the module docstring)
TOLERANCE = {"expected": 0.03, "budget": 0.25}


def config(router: str, steps: int = 8, **fields) -> TrainConfig:
    return TrainConfig.from_dict({
        "router": router, "capacity": CAPACITY.get(router, 0.5625), "steps": steps, "batch_size": B,
        "seq_len": T, "vocab_size": VOCAB, "model": {"d_model": 32, "n_layers": 4, "n_heads": 4,
                                                     "max_seq_len": T}, **fields})


@torch.no_grad()
def actual(cfg: TrainConfig) -> tuple[float, float]:
    """(Σ train_step_flops, Σ 3 × output_flops) over cfg.steps training-mode forwards, as `train` runs."""
    torch.manual_seed(0)
    model = make_model(cfg, VOCAB).train()
    g = torch.Generator().manual_seed(1)
    step_sum, output_sum = 0.0, 0.0
    for step in range(cfg.steps):
        model.router.set_progress(step / cfg.steps)
        x = torch.randint(0, VOCAB, (B, T), generator=g)
        out = model(x, x)
        step_sum += train_step_flops(model, out, T)
        output_sum += 3 * output_flops(model, out, T)
    return step_sum, output_sum


@pytest.mark.parametrize("router, fields", [(r, {}) for r in EXACT] + [
    ("mod", {"route_every": 1}), ("mod", {"router_options": {"causal": "predictor"}}),
    ("mor", {"capacity": 0.25}), ("random", {"router_options": {"curriculum": 0.5}}),
    ("mod", {"router_options": {"curriculum": 0.5, "gating": "probabilistic"}}),
])
def test_exact_routers_plan_equals_three_times_the_forward(router, fields):
    cfg = config(router, **fields)
    step_sum, output_sum = actual(cfg)
    assert step_sum == pytest.approx(output_sum, rel=1e-12)
    assert cfg.steps * train_flops_per_step(cfg) == pytest.approx(output_sum, rel=1e-9)  # brief: 1 %


@pytest.mark.parametrize("router", [r for r in ROUTERS if r not in EXACT])
def test_every_router_plan_is_near_its_training_at_init(router):
    cfg = config(router)
    step_sum, _ = actual(cfg)
    tolerance = TOLERANCE[ROUTERS[router].training_plan]
    assert cfg.steps * train_flops_per_step(cfg) / step_sum == pytest.approx(1.0, abs=tolerance)


def test_early_exit_counts_its_exit_readouts_not_its_inference_readout():
    """Without layer dropout early exit's training is deterministic: the plan is exact, rotation included
    (rotation 2 reads out layers 1, 3 / 2 on alternate steps), and the confidence read-out, which only
    inference runs, is not charged to training."""
    cfg = config("early_exit", steps=5, router_options={"rotation": 2, "max_layer_dropout": 0.0})
    step_sum, output_sum = actual(cfg)
    assert cfg.steps * train_flops_per_step(cfg) == pytest.approx(step_sum, rel=1e-12)
    head = 2 * T * 32 * VOCAB * B
    assert output_sum - step_sum == pytest.approx(3 * head * (3 * 5 - (2 + 1 + 2 + 1 + 2)), rel=1e-12)
    model = make_model(cfg, VOCAB).train()
    model(torch.zeros(1, T, dtype=torch.long))
    assert exit_readouts(model.router) == 2 and exit_readouts(model.router.eval()) == 0


def test_early_exit_plan_counts_only_the_layers_it_reads_out():
    """`read_layers`: the plan charges the read-outs of the named layers only, exactly (no layer dropout)."""
    cfg = config("early_exit", steps=5, router_options={"rotation": 2, "max_layer_dropout": 0.0,
                                                        "read_layers": [2]})
    step_sum, _ = actual(cfg)
    assert cfg.steps * train_flops_per_step(cfg) == pytest.approx(step_sum, rel=1e-12)
    everything = config("early_exit", steps=5, router_options={"rotation": 2, "max_layer_dropout": 0.0})
    assert train_flops_per_step(cfg) < train_flops_per_step(everything)


def test_every_router_declares_a_known_plan_and_the_exact_ones_include_top_k():
    assert {cls.training_plan for cls in ROUTERS.values()} <= {"exact", *TOLERANCE}
    assert {"dense", "mod"} <= set(EXACT)


def test_curriculum_costs_more_and_the_plan_is_independent_of_the_global_rng():
    state = torch.get_rng_state()
    plain = train_flops_per_step(config("mod", steps=100))
    ramp = train_flops_per_step(config("mod", steps=100, router_options={"curriculum": 0.5}))
    assert torch.equal(state, torch.get_rng_state())
    assert plain < ramp < train_flops_per_step(config("dense"))
    assert train_flops_per_step(config("mod"), vocab_size=2 * VOCAB) > plain  # the head grows with V


# --- early exit's confidence measures: analytic = torch's FlopCounterMode, training and inference ---------

@pytest.mark.parametrize("confidence", list(CONFIDENCE_RANGE))
@pytest.mark.parametrize("exit_loss_weight", [1.0, 0.0])
def test_early_exit_training_step_flops_equal_counted(confidence, exit_loss_weight):
    """Forward + backward of one training step, counted by torch, equals the analytic step: exit-loss
    read-outs at 3 × the head, the classifier at 2 × its weights (its input is detached), and without an
    exit loss the classifier's label read-out at 1 × the head (no gradient)."""
    options = {"rotation": 2, "max_layer_dropout": 0.0, "confidence": confidence,
               "exit_loss_weight": exit_loss_weight}
    cfg = config("early_exit", router_options=options)
    model = make_model(cfg, VOCAB).train()
    x = torch.randint(0, VOCAB, (2, T), generator=torch.Generator().manual_seed(1))
    outputs = []

    def step():
        out = model(x, x)
        loss = out.loss if out.aux_loss is None else out.loss + out.aux_loss
        loss.backward()
        outputs.append(out)

    counted = counted_flops(step)
    assert counted == pytest.approx(train_step_flops(model, outputs[0], T), rel=1e-12)


@pytest.mark.parametrize("confidence, per_layer", [("softmax", 2 * 32 * VOCAB), ("saturation", 6 * 32),
                                                   ("classifier", 2 * 32)])
def test_early_exit_inference_flops_equal_counted_with_each_measure_cost(confidence, per_layer):
    cfg = config("early_exit", router_options={"confidence": confidence})
    model = make_model(cfg, VOCAB).eval()
    assert model.router.flops_per_token() == 3 * per_layer  # layers 1, 2, 3 are checked
    batch = torch.randint(0, VOCAB, (4, T), generator=torch.Generator().manual_seed(2))
    model.router.calibrate(model, [batch])
    x = torch.randint(0, VOCAB, (1, T), generator=torch.Generator().manual_seed(3))
    out = model(x)
    assert out.layers_per_token.mean() < 4  # tokens exit
    assert counted_flops(lambda: model(x)) == pytest.approx(output_flops(model, out, T), rel=1e-9)


def test_classifier_plan_is_exact_without_layer_dropout():
    cfg = config("early_exit", steps=5, router_options={"rotation": 2, "max_layer_dropout": 0.0,
                                                        "confidence": "classifier"})
    step_sum, _ = actual(cfg)
    assert cfg.steps * train_flops_per_step(cfg) == pytest.approx(step_sum, rel=1e-12)
    plain = config("early_exit", steps=5, router_options={"rotation": 2, "max_layer_dropout": 0.0})
    classifier = 4 * 32 * (2 + 1 + 2 + 1 + 2) * T * B  # 4·d per read-out layer per token
    assert cfg.steps * (train_flops_per_step(cfg) - train_flops_per_step(plain)) == pytest.approx(classifier)
