"""The router interface is declared, not implicit: every registered router honours the hooks `Router`
declares, and no code outside `routing/` probes a router with getattr/hasattr or branches on its name."""

import re
from pathlib import Path

import pytest
import torch
from conftest import make, tokens

from sparsedepth import ROUTERS, ConfigError
from sparsedepth.bench import calibrate
from sparsedepth.routing import Decision, Router

SRC = Path(__file__).resolve().parents[1] / "src" / "sparsedepth"
HOOKS = ("begin", "decide", "aux_loss", "target_loss", "set_inference", "calibrate", "fit_capacity",
         "attach", "set_progress", "flops_per_token", "weight_flops_per_token", "training_counts",
         "training_readouts", "training_flops_per_token", "carry", "restore")


def test_the_base_class_declares_every_hook_with_a_default():
    for hook in HOOKS:
        assert callable(getattr(Router, hook)), hook
    assert Router.inference_modes == ("causal",) and isinstance(Router.propagates_state, property)
    for fact in ("name", "causal_in_training", "default_route_every", "routes_blocks", "learned"):
        assert fact in vars(Router), fact


@pytest.mark.parametrize("name", sorted(ROUTERS))
def test_every_router_honours_the_declared_hooks(name, tiny_cfg):
    cls = ROUTERS[name]
    assert issubclass(cls, Router) and cls.name == name
    assert cls.decide is not Router.decide, "decide is the one hook a router must provide"
    assert cls.inference_modes and cls.inference_modes[0] == "causal"  # generation needs the causal rule
    model = make(name, tiny_cfg, capacity=0.5).eval()
    router = model.router
    assert router.inference == "causal" and router.readout is not None  # attached by the model
    assert (router.routed_layers == []) == (not cls.routes_blocks)
    idx = tokens(tiny_cfg, batch=2, length=12)
    for mode in cls.inference_modes:  # every declared mode is accepted and runs
        router.set_inference(mode)
        assert router.inference == mode
        model(idx)
    with pytest.raises(ConfigError, match="inference mode"):
        router.set_inference("no-such-mode")
    router.set_inference("causal")
    if cls.routes_blocks:
        router.begin(model.wte(idx), torch.arange(12))
        decision = router.decide(model.wte(idx), router.routed_layers[0])
        assert isinstance(decision, Decision) and decision.propagate == router.propagates_state
    assert router.target_loss(idx) is None  # nothing was recorded in eval mode
    calibrate(model, idx)  # fit_capacity, then inference mode and eval mode restored
    assert router.inference == "causal" and not model.training
    model.train()
    out = model(idx, idx)
    assert out.loss is not None and isinstance(router.propagates_state, bool)


def _calls_outside_routing(pattern: str):
    for path in sorted(SRC.rglob("*.py")):
        if "routing" in path.relative_to(SRC).parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            for match in re.finditer(pattern, line):
                yield f"{path.relative_to(SRC)}:{number}", match


# getattr/hasattr outside routing/ that are not on routers: (file, first argument) → why it is legitimate
ALLOWED_GETATTR = {
    ("cli.py", "args"): "argparse namespace: which generated flags were given",
    ("data/base.py", "module"): "lazy import of an optional module",
    ("data/tokens.py", "self"): "split name → token array",
    ("config.py", "e"): "a YAML error's optional position and problem",
    ("hf.py", "self"): "HF config fields → ModelConfig",
    ("hf.py", "module"): "HF weight init of a module's optional bias",
    ("hf.py", "fresh"): "HF init copies a freshly built buffer",
    ("hf.py", "hf_export"): "lazy re-export of the Hub export helpers",
    ("hf.py", "generation_config"): "HF generation options that SparseDepth refuses",
}


def test_no_code_outside_routing_probes_a_router():
    found = {}
    for where, match in _calls_outside_routing(r"\b(?:get|has)attr\(\s*([^,()]+)"):
        subject = match.group(1).strip()
        found[where] = subject
        assert not re.search(r"router|decision", subject, re.I), f"{where}: {match.group(0)} probes a router"
        assert (where.split(":")[0], subject) in ALLOWED_GETATTR, f"{where}: {match.group(0)} is not allowed"
    assert found  # the scan saw the allowed uses, so the pattern works


def test_no_code_outside_routing_branches_on_a_router_name():
    names = "|".join(re.escape(n) for n in ROUTERS)
    literal = rf"""["'](?:{names})["']"""
    patterns = [r"\.name\s*[=!]=", rf"[=!]=\s*{literal}", rf"{literal}\s*[=!]=",
                rf"\bin\s*[(\[{{]\s*{literal}"]
    hits = [f"{where}: {m.group(0)}" for p in patterns for where, m in _calls_outside_routing(p)]
    assert not hits, hits
