"""The router interface is declared, not implicit: every registered router honours the hooks `Router`
declares, and no code outside `routing/` probes a router with getattr/hasattr or branches on its name."""

import re
from pathlib import Path

import pytest
import torch
from conftest import assert_nonuniform, make, spread, tokens

import sparsedepth
from sparsedepth import ROUTERS, ConfigError
from sparsedepth.bench import calibrate
from sparsedepth.routing import Decision, Router, contract

SRC = Path(__file__).resolve().parents[1] / "src" / "sparsedepth"
HOOKS = ("begin", "decide", "finish", "reset_parameters", "aux_loss", "target_loss", "set_inference",
         "calibrate", "fit_capacity", "attach", "set_progress", "flops_per_token", "weight_flops_per_token",
         "training_counts", "training_readouts", "training_flops_per_token", "carry", "restore")


def test_every_public_router_member_is_in_the_documented_contract():
    """The table in docs/CONTRACT.md is what `python -m sparsedepth.routing.contract` generates from
    `Router` (every member, its signature, default and caller), and names every hook the model calls."""
    members = contract.members()
    assert set(HOOKS) <= set(members)
    assert set(contract.WHEN) == set(members), set(contract.WHEN) ^ set(members)
    documented = contract.documented(contract.DOC.read_text())
    assert documented == contract.table(), "stale: python -m sparsedepth.routing.contract --write"
    for member in members:
        assert f"| `{member}` |" in documented, member


def test_the_contract_check_fails_on_an_undocumented_hook(monkeypatch):
    monkeypatch.setattr(Router, "new_hook", lambda self: None, raising=False)
    with pytest.raises(KeyError, match="new_hook"):
        contract.table()


def _all_subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _all_subclasses(sub)


def test_every_router_class_in_the_package_is_registered():
    """Registration is by existing: a subclass defined in sparsedepth with its own name is in ROUTERS, and
    one without a name of its own (a forgotten `name`) fails here, named."""
    ours = [c for c in _all_subclasses(Router) if c.__module__.startswith(f"{sparsedepth.__name__}.")]
    assert ours  # the scan finds them
    unregistered = [f"{c.__module__}.{c.__qualname__}" for c in ours
                    if ROUTERS.get(vars(c).get("name")) is not c]
    assert not unregistered, f"Router subclasses not registered (no own `name`?): {unregistered}"


def test_every_module_of_the_routing_package_is_imported_statically():
    """The export copies only statically imported modules, so `routing/__init__.py` imports each one."""
    import ast
    import pkgutil

    import sparsedepth.routing as package

    init = ast.parse(Path(package.__file__).read_text())
    imported = {n.module for n in init.body if isinstance(n, ast.ImportFrom) and n.level == 1}
    modules = {m.name for m in pkgutil.iter_modules(package.__path__)} - {"contract", "fitting"}
    assert modules <= imported, f"routing/__init__.py does not import: {sorted(modules - imported)}"


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
    long = tokens(tiny_cfg)
    spread(model, long)  # non-uniform routing in training mode (checked), so the hooks below see real work
    out = model(long, long)
    assert_nonuniform(model, out)
    assert out.loss is not None and isinstance(router.propagates_state, bool)
    router.finish()  # idempotent after the pass: the model already called it
    assert router.aux_loss() is None or torch.isfinite(router.aux_loss())


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
    ("__init__.py", "module"): "the package's names imported on first use (no torch for the analysis side)",
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
