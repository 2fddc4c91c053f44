"""The study grid: which runs exist and what each one trains."""

from pathlib import Path

import pytest

from sparsedepth.config import ConfigError
from sparsedepth.grid import RunKey, config_json, load_study, run_keys, train_config

REPO = Path(__file__).resolve().parents[1]
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
