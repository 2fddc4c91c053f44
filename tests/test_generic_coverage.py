"""Generic tests run every router on non-uniform routing: a test parametrized over the registry must reach
`spread` (which checks the routing it made), directly or through a helper of its module, or be listed here
with the reason uniform routing cannot make it pass vacuously. And the check itself has teeth."""

import ast
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import ROUTED, assert_nonuniform, make

from sparsedepth import ROUTERS

TESTS = Path(__file__).parent
REGISTRY = {"ROUTERS", "ROUTED", "CASES", "CAUSAL", "taking", "EXACT"}
# registry-parametrized tests that need no routing spread: what they check does not depend on which tokens
# run which blocks
EXEMPT = {
    "test_every_router_plan_is_near_its_training_at_init": "the plan against the router's own init fraction",
    "test_exact_routers_plan_equals_three_times_the_forward": "exact counts: the count is the capacity",
    "test_curriculum_anneals_capacity_from_one_to_target": "a schedule of numbers, no forward pass",
    "test_curriculum_moves_the_layers_run_per_token": "rule-driven fractions (top-k, random drops) measured",
    "test_declared_shared_options_are_exactly_the_ones_taken": "constructor options, no forward pass",
    "test_calibration_puts_an_untrained_router_at_its_capacity": "calibration itself, from the default init",
    "test_probabilistic_topk_is_gumbel_sampling_with_exact_capacity": "exact counts and sampled choices",
    "test_every_arm_starts_from_the_dense_trunk_of_its_seed": "initial weights, no forward pass",
    "test_the_nonuniform_check_fails_on_uniform_routing": "checks the check, on routing it writes itself",
    "test_routing_stays_fp32_under_autocast": "dtypes of scores and gates (bf16 noise would flip spread "
                                              "routing's near-boundary decisions)",
    # GPU only (skipped without CUDA); the same properties are checked on spread routing on CPU
    "test_cached_decoding_equals_the_full_forward": "GPU only",
    "test_no_router_sees_the_future_or_another_sample": "GPU only",
    "test_padding_changes_no_real_tokens_logits": "GPU only",
    "test_speculative_decoding_is_greedy_decoding": "GPU only",
}


def reaches_spread(name: str, names: dict[str, set[str]], seen: set[str]) -> bool:
    """Whether function `name` calls `spread`, itself or through functions of its module it names."""
    if "spread" in names[name]:
        return True
    seen.add(name)
    return any(reaches_spread(n, names, seen) for n in names[name] & names.keys() - seen)


def registry_tests() -> dict[str, tuple[str, bool]]:
    """test name → (module, whether it reaches `spread`), for tests parametrized over the registry."""
    found = {}
    for path in sorted(TESTS.glob("test_*.py")):
        tree = ast.parse(path.read_text())
        functions = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
        names = {f: {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
                 for f, node in functions.items()}
        for name, node in functions.items():
            decorators = {n.id for d in node.decorator_list for n in ast.walk(d) if isinstance(n, ast.Name)}
            if name.startswith("test_") and decorators & REGISTRY:
                found[name] = (path.name, reaches_spread(name, names, set()))
    return found


def test_every_registry_parametrized_test_spreads_routing_or_says_why_not():
    found = registry_tests()
    assert len(found) > 20  # the scan finds them
    missing = sorted(f"{module}::{name}" for name, (module, spreads) in found.items()
                     if not spreads and name not in EXEMPT)
    assert not missing, f"registry-parametrized tests that never call spread(): {missing}"
    stale = sorted(set(EXEMPT) - {name for name, (_, spreads) in found.items() if not spreads})
    assert not stale, f"EXEMPT names no registry-parametrized test that skips spread: {stale}"


@pytest.mark.parametrize("router", ROUTED)
def test_the_nonuniform_check_fails_on_uniform_routing(router, tiny_cfg):
    """Every token running the same blocks fails the check, unless the router declares that its rule routes
    uniformly in this mode; then non-uniform routing fails it."""
    model = make(router, tiny_cfg).eval()
    layers = tiny_cfg.n_layers
    uniform = torch.ones(2, 16, layers, dtype=torch.bool)
    varied = torch.rand(2, 16, layers, generator=torch.Generator().manual_seed(0)) < 0.5
    declared = "inference" in ROUTERS[router].uniform_routing
    with pytest.raises(AssertionError):
        assert_nonuniform(model, SimpleNamespace(routing=varied if declared else uniform))
    assert_nonuniform(model, SimpleNamespace(routing=uniform if declared else varied))
