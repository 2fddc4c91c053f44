"""The study grid: which runs exist and what each one trains."""

from pathlib import Path

import pytest
import yaml

from sparsedepth.config import ConfigError
from sparsedepth.flops import train_flops_per_step
from sparsedepth.study.grid import RunKey, config_json, iter_configs, load_study, main, run_keys, train_config
from sparsedepth.train import TrainConfig

REPO = Path(__file__).resolve().parents[2]
STUDY = {
    "datasets": ["shakespeare", "wikipedia"], "seeds": [0, 1], "vocab_size": 512, "data_dir": "d",
    "threads": 1,
    "models": {"S": {"d_model": 64, "n_layers": 4, "n_heads": 4}},
    "train": {"steps": 5},
    "variants": {
        "dense": {"router": "dense"},
        "dense-shallow": {"router": "dense", "scale": {"n_layers": 0.5}},
        "dense-narrow": {"router": "dense", "scale": {"d_model": 0.75}},
        "mod": {"router": "mod", "capacity": 0.125, "datasets": ["shakespeare"]},
    },
}


def test_every_variant_shares_the_seeds_and_restrictions_hold():
    keys = run_keys(STUDY)
    assert len(keys) == 3 * 2 * 2 + 1 * 1 * 2
    assert {k.seed for k in keys if k.variant == "mod"} == {k.seed for k in keys if k.variant == "dense"}
    assert all(k.dataset == "shakespeare" for k in keys if k.variant == "mod")
    assert RunKey("S", "mod", "shakespeare", 1).path == "runs/S/mod/shakespeare/seed1"


def test_a_variant_may_run_a_subset_of_the_seeds_but_no_unpaired_one():
    study = {**STUDY, "variants": {**STUDY["variants"], "mod": {"router": "mod", "seeds": [1]}}}
    assert {k.seed for k in run_keys(study) if k.variant == "mod"} == {1}
    study["variants"]["mod"]["seeds"] = [1, 7]
    with pytest.raises(ConfigError, match=r"variants.mod.seeds: \[7\] not among the study's seeds"):
        run_keys(study)


def test_train_config_resolves_router_capacity_and_scaled_models():
    cfg = train_config(STUDY, RunKey("S", "mod", "shakespeare", 1))
    assert (cfg.router, cfg.capacity, cfg.seed, cfg.steps, cfg.vocab_size) == ("mod", 0.125, 1, 5, 512)
    assert train_config(STUDY, RunKey("S", "dense-shallow", "wikipedia", 0)).model.n_layers == 2
    narrow = train_config(STUDY, RunKey("S", "dense-narrow", "wikipedia", 0)).model
    assert narrow.d_model == 48 and narrow.d_model % (2 * narrow.n_heads) == 0
    assert '"router": "mod"' in config_json(STUDY, RunKey("S", "mod", "shakespeare", 0))


@pytest.mark.parametrize("key, message", [
    (RunKey("S", "nope", "shakespeare", 0), "unknown variant 'nope'"),
    (RunKey("X", "dense", "shakespeare", 0), "unknown model 'X'"),
])
def test_unknown_names_are_clear_errors(key, message):
    with pytest.raises(ConfigError, match=message):
        train_config(STUDY, key)


def test_bad_router_or_training_field_is_a_clear_error():
    bad = {**STUDY, "variants": {"x": {"router": "nope"}}}
    with pytest.raises(ConfigError, match="unknown router 'nope'"):
        train_config(bad, RunKey("S", "x", "shakespeare", 0))
    bad = {**STUDY, "train": {"stepz": 3}}
    with pytest.raises(ConfigError, match="stepz"):
        train_config(bad, RunKey("S", "dense", "shakespeare", 0))


@pytest.mark.parametrize("name", ["config", "smoke", "paper"])
def test_shipped_study_configs_validate_and_resolve(name):
    study = load_study(REPO / "config" / f"{name}.yaml")
    assert study["baseline"] in study["variants"]
    for key in run_keys(study):
        train_config(study, key)


def test_schema_rejects_a_bad_value_naming_the_key(tmp_path):
    text = (REPO / "config" / "smoke.yaml").read_text().replace("vocab_size: 512", "vocab_size: 7")
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="vocab_size"):
        load_study(path)



@pytest.mark.parametrize("old, new, key", [
    ("routers: [mod]", "routers: [mod, seed]", "benchmark.routers: unknown router"),
    ("  tokens:", "  routing_map_variants: [nope]\n  tokens:", "routing_map_variants: none of \\['nope'\\]"),
])
def test_names_the_schema_cannot_check_are_clear_errors(tmp_path, old, new, key):
    text = (REPO / "config" / "smoke.yaml").read_text()
    assert old in text
    (tmp_path / "bad.yaml").write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError, match=key):
        load_study(tmp_path / "bad.yaml")

# --- compute-matched training: a study-level FLOP budget ------------------------------------------------

BUDGETED = {
    **STUDY, "datasets": ["shakespeare"], "seeds": [0],
    "train": {"warmup_steps": 10, "eval_every": 25, "checkpoint_every": 50, "log_every": 5},
    "budget": {"flops_of": "dense", "steps": 100},
    "variants": {
        "dense": {"router": "dense"},
        "dense-shallow": {"router": "dense", "scale": {"n_layers": 0.5}},
        "mod": {"router": "mod", "capacity": 0.125},  # alternate blocks
        "mor": {"router": "mor", "capacity": 0.5},  # every block
    },
}


def budgeted(study: dict) -> dict[str, TrainConfig]:
    return {key.variant: cfg for key, cfg in iter_configs(study)}


def test_budget_matches_training_flops_and_scales_the_schedule():
    configs = budgeted(BUDGETED)
    budget = 100 * train_flops_per_step(configs["dense"])
    assert configs["dense"].steps == 100
    for name, cfg in configs.items():
        assert cfg.steps * train_flops_per_step(cfg) == pytest.approx(budget, rel=0.02), name
        scale = cfg.steps / 100
        assert (cfg.warmup_steps, cfg.eval_every, cfg.checkpoint_every, cfg.log_every) == \
            (round(10 * scale), round(25 * scale), round(50 * scale), round(5 * scale)), name
    assert min(configs[n].steps for n in ("mod", "mor", "dense-shallow")) > 120
    assert budgeted({**BUDGETED, "budget": {"flops": budget}}) == configs  # the same budget, absolute


def test_without_budget_every_arm_trains_the_same_steps():
    study = {key: value for key, value in BUDGETED.items() if key != "budget"}
    assert {cfg.steps for cfg in budgeted({**study, "train": {"steps": 7}}).values()} == {7}


def test_schedule_fields_scale_from_their_defaults_and_never_reach_zero():
    configs = budgeted({**BUDGETED, "train": {"warmup_steps": 0}})
    assert configs["dense"].eval_every == TrainConfig.eval_every  # given for the reference arm
    assert configs["mod"].eval_every == round(TrainConfig.eval_every * configs["mod"].steps / 100)
    assert all(cfg.warmup_steps == 0 for cfg in configs.values())
    tiny = budgeted({**BUDGETED, "budget": {"flops_of": "dense", "steps": 1}})
    assert all(cfg.steps >= 1 and cfg.log_every >= 1 and cfg.eval_every >= 1 for cfg in tiny.values())


@pytest.mark.parametrize("change, message", [
    ({"budget": {"flops_of": "nope", "steps": 10}}, "budget.flops_of: unknown variant 'nope'"),
    ({"budget": {"flops_of": "mod", "steps": 10},
      "variants": {**BUDGETED["variants"], "mod": {"router": "mod", "datasets": ["wikipedia"]}}},
     "variant 'mod' does not run on model 'S' × dataset 'shakespeare'"),
    ({"train": {"steps": 5}}, "train.steps conflicts with budget"),
    ({"budget": {"flops_of": "dense"}}, "budget must be"),
    ({"budget": {"flops": -1.0}}, "budget.flops"),
])
def test_bad_budget_is_one_clear_error(change, message):
    with pytest.raises(ConfigError, match=message):
        budgeted({**BUDGETED, **change})


def test_budget_validates_in_the_schema_and_the_grid_prints_steps_and_flops(tmp_path, capsys):
    study = {key: value for key, value in BUDGETED.items() if key != "data_dir"}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({**study, "budget": {"flops_of": "dense", "steps": 100, "x": 1}}))
    with pytest.raises(ConfigError, match="'x': 1} is not valid"):
        load_study(path)
    path.write_text(yaml.safe_dump(study))
    assert main([str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "steps=100 train_flops=" in next(line for line in lines if "/dense/" in line)
    path.write_text(yaml.safe_dump({**study, "budget": {"flops_of": "nope", "steps": 100}}))
    assert main([str(path)]) == 2
    assert capsys.readouterr().err.count("unknown variant 'nope'") == 1
