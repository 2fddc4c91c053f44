"""IsoFLOP sweeps in the grid: every (budget, size) is a model whose runs spend exactly that budget."""

import copy

import pytest

from sparsedepth.config import ConfigError
from sparsedepth.flops import train_flops_per_step
from sparsedepth.study import sweeps
from sparsedepth.study.grid import RunKey, prepare, run_keys, train_config

SWEPT = {
    "datasets": ["enwik8", "shakespeare"], "seeds": [0, 1], "vocab_size": 257, "data_dir": "d", "threads": 1,
    "train": {"batch_size": 8, "seq_len": 64, "warmup_steps": 10, "eval_every": 20},
    "models": {"D12": {"d_model": 32, "n_layers": 12, "n_heads": 2, "max_seq_len": 64}},
    "budget": {"flops_of": "dense", "steps": 50},
    "isoflop": {
        "budgets": {"C1": {"flops": 1e11}, "C3": {"flops": 3e11}},
        "sizes": {s: {"d_model": d, "n_layers": 4, "n_heads": 2, "max_seq_len": 64}
                  for s, d in (("d16", 16), ("d32", 32), ("d48", 48))},
        "datasets": {"enwik8": ["C1", "C3"], "shakespeare": ["C1"]},
        "variants": ["dense", "mod"],
        "schedule_steps": 100,
    },
    "variants": {
        "dense": {"router": "dense", "models": ["D12"]},  # swept, and on the study's own D12 by name
        "mod": {"router": "mod", "capacity": 0.125},
        "probe": {"router": "probe", "capacity": 0.5, "models": ["C3-d32"], "datasets": ["enwik8"],
                  "seeds": [0]},
        "exit": {"router": "early_exit", "capacity": 0.5, "models": ["D12"]},
    },
}


def study(change=None) -> dict:
    s = copy.deepcopy(SWEPT)
    if change:
        change(s)
    return prepare(s)


def test_every_budget_and_size_is_a_model_on_the_datasets_that_list_its_budget():
    keys = run_keys(study())
    swept = {(k.model, k.dataset) for k in keys if k.variant == "dense" and k.model != "D12"}
    assert swept == {(f"C{b}-{s}", d) for b, ds in ((1, ("enwik8", "shakespeare")), (3, ("enwik8",)))
                     for s in ("d16", "d32", "d48") for d in ds}
    assert {k.variant for k in keys if k.model == "C1-d16"} == {"dense", "mod"}
    # an exploratory arm runs only where its models: names it, paired with dense at that cell
    assert [k for k in keys if k.variant == "probe"] == [RunKey("C3-d32", "probe", "enwik8", 0)]
    # the study's own models take the unswept variants, and swept ones only where named
    assert {k.variant for k in keys if k.model == "D12"} == {"dense", "exit"}
    assert len(keys) == (3 * 2 + 3) * 2 * 2 + 1 + 2 * 2 * 2


def test_a_sweep_run_spends_its_budget_whatever_its_size_or_arm():
    s = study()
    for key in run_keys(s):
        if not sweeps.is_sweep_model(s, key.model):
            continue
        cfg = train_config(s, key)
        spent = cfg.steps * train_flops_per_step(cfg)
        budget = sweeps.models(s)[key.model]["budget_flops"]
        assert spent == pytest.approx(budget, rel=0.5 / cfg.steps + 1e-9), key
        assert cfg.model.d_model == int(key.model.split("-d")[1])
    small, large = (train_config(s, RunKey(m, "dense", "enwik8", 0)) for m in ("C1-d16",
                                                                                                 "C1-d48"))
    assert small.steps > 3 * large.steps  # a smaller model takes more steps for the same FLOPs
    c1, c3 = (train_config(s, RunKey(m, "dense", "enwik8", 0)) for m in ("C1-d32",
                                                                                           "C3-d32"))
    assert c3.steps == pytest.approx(3 * c1.steps, rel=0.02)
    for cfg in (c1, c3, small, large):  # the schedule is the same fraction of every run
        assert (cfg.warmup_steps, cfg.eval_every) == (round(cfg.steps / 10), round(cfg.steps / 5))


def test_the_study_budget_still_sets_its_own_models():
    s = study()
    dense, exit_ = (train_config(s, RunKey("D12", v, "enwik8", 0)) for v in ("dense", "exit"))
    assert dense.steps == 50  # the study's budget: 50 steps of dense, at its model, not a sweep budget
    assert exit_.steps * train_flops_per_step(exit_) == pytest.approx(50 * train_flops_per_step(dense),
                                                                      rel=1 / exit_.steps)


def test_sweep_is_what_the_frontier_rule_reads():
    models = sweeps.models(study())
    assert models["C3-d48"] == {"budget": "C3", "budget_flops": 3e11, "size": "d48", "datasets": ["enwik8"],
                                "variants": ["dense", "mod"]}
    assert len(models) == 6


def test_a_budget_may_sweep_its_own_window_of_sizes():
    s = study(lambda s: s["isoflop"]["budgets"]["C3"].update(sizes=["d32", "d48"]))
    assert sorted(sweeps.models(s)) == ["C1-d16", "C1-d32", "C1-d48", "C3-d32", "C3-d48"]


def test_each_arm_may_sweep_its_own_window_of_as_many_sizes():
    s = study(lambda s: s["isoflop"]["budgets"]["C1"].update(sizes={"dense": ["d16", "d32"],
                                                                     "mod": ["d32", "d48"]}))
    swept = {(k.model, k.variant) for k in run_keys(s) if k.model.startswith("C1") and k.dataset == "enwik8"}
    assert swept == {("C1-d16", "dense"), ("C1-d32", "dense"), ("C1-d32", "mod"), ("C1-d48", "mod")}
    assert sweeps.models(s)["C1-d16"]["variants"] == ["dense"]
    assert {k.model for k in run_keys(s) if k.model.startswith("C3")} == {"C3-d16", "C3-d32", "C3-d48"}


def test_a_second_domain_may_be_swept_with_fewer_seeds():
    s = study(lambda s: s["isoflop"].update(seeds={"shakespeare": [1]}))
    keys = run_keys(s)
    assert {k.seed for k in keys if k.dataset == "shakespeare" and k.model != "D12"} == {1}
    assert {k.seed for k in keys if k.dataset == "enwik8"} == {0, 1}
    assert {k.seed for k in keys if k.dataset == "shakespeare" and k.model == "D12"} == {0, 1}


def test_expansion_is_idempotent():
    once = study()
    twice = prepare(copy.deepcopy(once))
    assert run_keys(once) == run_keys(twice)


@pytest.mark.parametrize("change, message", [
    (lambda s: s["isoflop"]["datasets"].update(wiki=["C1"]), "isoflop.datasets: 'wiki'"),
    (lambda s: s["isoflop"]["budgets"]["C1"].update(sizes=["d16", "d8"]),
     r"C1.sizes: unknown size\(s\) \['d8'\]"),
    (lambda s: s["isoflop"]["datasets"].update(enwik8=["C9"]), r"unknown budget\(s\) \['C9'\]"),
    (lambda s: s["isoflop"]["budgets"]["C1"].update(sizes={"dense": ["d16", "d32"], "mod": ["d32"]}),
     "C1.sizes: every arm's window needs as many sizes"),
    (lambda s: s["isoflop"]["budgets"]["C1"].update(sizes={"dense": ["d16", "d32"]}),
     "C1.sizes: per-arm windows must name exactly the swept variants"),
    (lambda s: s["isoflop"]["budgets"]["C1"].update(sizes={"dense": ["d16"], "mod": ["d8"]}),
     r"C1.sizes: unknown size\(s\) \['d8'\]"),
    (lambda s: s["isoflop"].update(variants=["dense", "nope"]), r"isoflop.variants: \['nope'\]"),
    (lambda s: s["isoflop"].update(seeds={"shakespeare": [7]}), "isoflop.seeds.shakespeare"),
    (lambda s: s["variants"]["probe"].update(models=["C7-d32"]), r"variants.probe.models: \['C7-d32'\]"),
    (lambda s: s["models"].update({"C1-d16": {"d_model": 8, "n_layers": 1, "n_heads": 1}}), "clash"),
])
def test_names_the_schema_cannot_check_are_one_clear_error(change, message):
    with pytest.raises(ConfigError, match=message):
        study(change)
