"""The experiment grid: a study config (config/*.yaml) → one resolved TrainConfig per run.

The Snakefile only asks this module which runs exist and what each one's config is, so the mapping from
(model, variant, dataset, seed) to a training run lives in one tested place instead of in workflow code.
A *variant* is a named arm of the study: a router + capacity + options, optionally with its model scaled
(the iso-FLOP dense baselines are `dense` with fewer layers or a narrower width).

A study-level `budget` matches training compute instead of steps (Mixture-of-Depths' isoFLOP protocol):
every run of a model × dataset cell gets steps = round(budget / its analytic training FLOPs per step), so
arms that skip blocks train longer. The budget is N steps of a named variant (`{flops_of: V, steps: N}`)
or absolute (`{flops: F}`). The step-denominated schedule fields are given for the reference arm (V, or
for an absolute budget the cell's unscaled dense model) and scale with each arm's steps, so every arm's
learning-rate schedule has the same shape and it is evaluated at the same fractions of the budget.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import json
import sys
from collections.abc import Iterator, Sequence
from importlib import resources
from pathlib import Path

from ..config import ConfigError, ModelConfig, to_dict
from ..flops import train_flops_per_step
from ..train import TrainConfig
from . import sweeps
from .layout import RunKey

SCHEMA_NAME = "config.schema.yaml"  # packaged beside this module; the Snakefile validates with the same file
SCHEDULE = ("warmup_steps", "eval_every", "checkpoint_every", "log_every")  # scale with a run's steps



def _scaled_model(base: dict, scale: dict) -> dict:
    """Scale depth (`n_layers`) and/or width (`d_model`, kept a multiple of 2·n_heads for RoPE)."""
    model = dict(base)
    for key, factor in scale.items():
        if key == "n_layers":
            model[key] = max(1, round(model.get(key, ModelConfig.n_layers) * factor))
        elif key == "d_model":
            heads = model.get("n_heads", ModelConfig.n_heads)
            step = 2 * heads
            model[key] = max(step, round(model.get(key, ModelConfig.d_model) * factor / step) * step)
        else:
            raise ConfigError(f"variants.*.scale: only n_layers and d_model can be scaled, not {key!r}")
    return model


def _applies(variant: dict, model: str, dataset: str) -> bool:
    return model in variant.get("models", [model]) and dataset in variant.get("datasets", [dataset])


def variant_seeds(study: dict, variant: str) -> list[int]:
    """A variant's seeds: the study's, or a subset of them (exploratory arms may run fewer). A seed outside
    the study's list would have no dense partner to be paired with, so it is an error."""
    seeds = study["variants"][variant].get("seeds", study["seeds"])
    extra = sorted(set(seeds) - set(study["seeds"]))
    if extra:
        raise ConfigError(f"variants.{variant}.seeds: {extra} not among the study's seeds {study['seeds']}")
    return list(seeds)


def _runs_on(study: dict, variant: str, model: str, dataset: str) -> bool:
    if study.get("isoflop"):
        return sweeps.runs_on(study, variant, model, dataset)
    return _applies(study["variants"][variant], model, dataset)


def run_keys(study: dict) -> list[RunKey]:
    """Every run of the grid; seeds are shared across variants so comparisons can be paired."""
    return [RunKey(m, v, d, s)
            for m in study["models"] for v in study["variants"] for d in study["datasets"]
            if _runs_on(study, v, m, d) for s in variant_seeds(study, v) if sweeps.keeps_seed(study, m, d, s)]


def _fields(study: dict, key: RunKey) -> dict:
    """The run's TrainConfig fields before any budget is applied."""
    if key.model not in study["models"]:
        raise ConfigError(f"unknown model {key.model!r}; the grid has: {', '.join(study['models'])}")
    if key.variant not in study["variants"]:
        raise ConfigError(f"unknown variant {key.variant!r}; the grid has: {', '.join(study['variants'])}")
    spec = study["variants"][key.variant]
    fields = dict(study.get("train", {}))
    fields.update(
        dataset=key.dataset,
        seed=key.seed,
        vocab_size=study["vocab_size"],
        data_dir=study["data_dir"],
        threads=study.get("threads", 0),
        router=spec["router"],
        capacity=spec.get("capacity", 1.0),
        router_options=dict(spec.get("options", {})),
        model=_scaled_model(study["models"][key.model], spec.get("scale", {})),
    )
    if "route_every" in spec:
        fields["route_every"] = spec["route_every"]
    if key.dataset in study.get("data_paths", {}):
        fields["data_path"] = study["data_paths"][key.dataset]
    return fields


def train_config(study: dict, key: RunKey) -> TrainConfig:
    """The resolved, validated TrainConfig of one run (its steps set by the study's budget, if any).

    Cached per (study, run): the Snakefile resolves every run once up front, and then the rules' params and
    Slurm resources ask again per job (several times each); on the paper grid resolving a budgeted run
    costs milliseconds of analytic FLOPs, seconds in all. The key is the study's canonical JSON, so an
    edited study is resolved afresh; each caller gets its own copy."""
    return copy.deepcopy(_resolved(json.dumps(study, sort_keys=True, default=str), key))


@functools.lru_cache(maxsize=4096)
def _resolved(study_json: str, key: RunKey) -> TrainConfig:
    return _train_config(json.loads(study_json), key)


def _train_config(study: dict, key: RunKey) -> TrainConfig:
    fields = _fields(study, key)
    if study.get("budget") is None and sweeps.budget_of(study, key.model) is None:
        return TrainConfig.from_dict(fields)
    flops, ref_steps = cell_budget(study, key)
    steps = steps_for_budget(TrainConfig.from_dict({**fields, "steps": max(1, round(ref_steps))}), flops)
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for name in SCHEDULE:
        value = fields.get(name, defaults[name])
        fields[name] = value and max(1, round(value * steps / ref_steps))  # a warm-up of 0 stays 0
    return TrainConfig.from_dict({**fields, "steps": steps})


def _check_budget(study: dict, model: str) -> dict:
    """The budget of `model`'s cells: its isoflop sweep budget, else the study's `budget:`."""
    budget = sweeps.budget_of(study, model) or study["budget"]
    shapes = ({"flops_of", "steps"}, {"flops"})
    if not isinstance(budget, dict) or set(budget) not in shapes:
        raise ConfigError(f"budget must be {{flops_of: <variant>, steps: N}} or {{flops: <number>}}, "
                          f"got {budget!r}")
    if "steps" in budget and not (isinstance(budget["steps"], int) and budget["steps"] >= 1):
        raise ConfigError(f"budget.steps must be an integer ≥ 1, got {budget['steps']!r}")
    if "flops" in budget and not (isinstance(budget["flops"], int | float) and budget["flops"] > 0):
        raise ConfigError(f"budget.flops must be a number > 0, got {budget['flops']!r}")
    if "steps" in study.get("train", {}):
        raise ConfigError("train.steps conflicts with budget: with a budget every run's steps follow from "
                          "it (remove train.steps)")
    return budget


def cell_budget(study: dict, key: RunKey) -> tuple[float, float]:
    """The training-FLOP budget of `key`'s model × dataset cell, and the steps of the reference arm the
    schedule fields are given for (the `flops_of` variant, or the cell's unscaled dense model; on an
    isoflop sweep model, `isoflop.schedule_steps`: there sizes and budgets span 30× in steps, and each run's
    warm-up and validations must be the same fractions of its training)."""
    budget = _check_budget(study, key.model)
    if sweeps.is_sweep_model(study, key.model):
        return float(budget["flops"]), float(study["isoflop"]["schedule_steps"])
    if "flops" in budget:
        fields = {**_fields(study, key), "router": "dense", "capacity": 1.0, "router_options": {},
                  "model": dict(study["models"][key.model])}
        fields.pop("route_every", None)
        return float(budget["flops"]), budget["flops"] / train_flops_per_step(TrainConfig.from_dict(fields))
    name, steps = budget["flops_of"], budget["steps"]
    if name not in study["variants"]:
        raise ConfigError(f"budget.flops_of: unknown variant {name!r}; the grid has: "
                          f"{', '.join(study['variants'])}")
    if not _runs_on(study, name, key.model, key.dataset):
        raise ConfigError(f"budget.flops_of: variant {name!r} does not run on model {key.model!r} × dataset "
                          f"{key.dataset!r}, so it cannot set that cell's budget")
    ref = TrainConfig.from_dict({**_fields(study, dataclasses.replace(key, variant=name)), "steps": steps})
    return steps * train_flops_per_step(ref), float(steps)


def steps_for_budget(cfg: TrainConfig, flops: float, vocab_size: int | None = None) -> int:
    """The step count whose planned training FLOPs come closest to `flops`, starting from `cfg.steps`.
    The cost per step depends on the step count only through schedules tied to the run's length
    (a capacity curriculum, early exit's rotation), so a few fixed-point rounds settle it."""
    steps = cfg.steps
    for _ in range(10):
        new = max(1, round(flops / train_flops_per_step(dataclasses.replace(cfg, steps=steps), vocab_size)))
        if new == steps:
            break
        steps = new
    return steps


def iter_configs(study: dict) -> Iterator[tuple[RunKey, TrainConfig]]:
    for key in run_keys(study):
        yield key, train_config(study, key)


def config_json(study: dict, key: RunKey) -> str:
    """A run's resolved config as one JSON line (how the workflow hands it to `sparsedepth train`)."""
    return json.dumps(to_dict(train_config(study, key)), sort_keys=True)


def prepare(study: dict) -> dict:
    """A validated study made ready for the grid (in place): its isoflop sweep expanded into models, and
    every name the schema cannot know checked. The Snakefile and `load_study` both call this."""
    sweeps.expand(study)
    if not study.get("models"):
        raise ConfigError("the study has no models: give models: or an isoflop: sweep")
    check_names(study)
    return study


def check_names(study: dict) -> None:
    """Names the schema cannot know: benchmark routers must be registered routers, and the routing-map
    variants must include one of the grid's (a stale name would otherwise fail a job an hour in, or draw
    nothing)."""
    from ..routing import ROUTERS

    unknown = [r for r in study.get("benchmark", {}).get("routers", []) if r not in ROUTERS]
    if unknown:
        raise ConfigError(f"benchmark.routers: unknown router(s) {unknown}; "
                          f"known: {', '.join(sorted(ROUTERS))}")
    speculative_cells(study)  # checks its names and sizes
    sweeps.frontier_spec(study)  # the frontier's arms must be swept
    variants = study.get("variants", {})
    wanted = study.get("figures", {}).get("routing_map_variants", [])
    if wanted and not set(wanted) & set(variants):  # the map draws those of them the grid has
        raise ConfigError(f"figures.routing_map_variants: none of {wanted} is a variant of this grid "
                          f"({', '.join(variants)})")


SHARED_SPECULATIVE = ("dataset", "seed", "prompts", "prompt_len", "new_tokens", "repeats", "warmup", "device",
                      "threads", "processes")  # `speculative:` keys every cell of it shares
# per cell (a decode cell may time itself in more processes, or at another thread count, than the main cell)
CELL_SPECULATIVE = ("model", "reference", "arms", "baselines", "exit_layers", "draft_tokens", "processes",
                    "threads")


def speculative_cells(study: dict) -> dict[str, dict]:
    """The speculative benchmark's cells ({} when it is off): `main`, the grid's own (`speculative:`), and
    `decode` when `speculative.decode:` names a deeper model trained to exit early. Each is its settings
    (the shared ones and its own) and `runs`, the trained runs it reads, reference first. A name or size that
    could not run is a ConfigError naming its `speculative.*` key, before any job starts."""
    spec = study.get("speculative", {})
    if not spec.get("enabled"):
        return {}
    shared = {k: spec[k] for k in SHARED_SPECULATIVE if k in spec}
    cells = {"main": (spec, "speculative")}
    if spec.get("decode"):
        cells["decode"] = (spec["decode"], "speculative.decode")
    out = {}
    for name, (own, where) in cells.items():
        cell = {**shared, "baselines": [], **{k: own[k] for k in CELL_SPECULATIVE if k in own}, "cell": name}
        cell["runs"] = _speculative_keys(study, cell, where)
        out[name] = cell
    return out


def _speculative_keys(study: dict, cell: dict, where: str) -> list[RunKey]:
    """The runs one cell reads (reference, arms, baselines), each checked to be trained by the grid."""
    places = (("model", study["models"], where), ("dataset", study["datasets"], "speculative"))
    for key, known, place in places:
        if cell.get(key) not in known:
            raise ConfigError(f"{place}.{key}: {cell.get(key)!r} is not one of the grid's {key}s "
                              f"({', '.join(known)})")
    arms = list(dict.fromkeys([cell["reference"], *cell["arms"], *cell["baselines"]]))
    keys = [RunKey(cell["model"], arm, cell["dataset"], cell["seed"]) for arm in arms]
    trained = set(run_keys(study))
    for key in keys:
        if key not in trained:
            field = ("reference" if key.variant == cell["reference"]
                     else "arms" if key.variant in cell["arms"] else "baselines")
            raise ConfigError(f"{where}.{field}: the grid trains no run {key.path} (a variant of this "
                              f"grid, at that cell and seed?)")
        model = train_config(study, key).model
        length = cell["prompt_len"] + cell["new_tokens"]
        if length > model.max_seq_len:
            raise ConfigError(f"speculative.new_tokens: prompt_len + new_tokens = {length} exceeds "
                              f"{key.variant}'s max_seq_len {model.max_seq_len}")
        bad = [e for e in cell["exit_layers"] if key.variant in cell["arms"] and e >= model.n_layers]
        if bad:
            raise ConfigError(f"{where}.exit_layers: {bad} not below {key.variant}'s {model.n_layers} "
                              "blocks")
    return keys


def validate(study: dict, where: str | Path = "config") -> dict:
    """The study checked against the workflow's schema, defaults filled in (in place), as the Snakefile and
    `load_study` both do. A violation is one line naming the key (jsonschema's best match), not Snakemake's
    dump of the whole schema."""
    import jsonschema
    import yaml
    from snakemake.utils import validate as fill_defaults

    schema_file = resources.files(__package__) / SCHEMA_NAME
    schema = yaml.safe_load(schema_file.read_text())
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(study))
    if error is not None:
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ConfigError(f"{where}: {key}: {error.message}")
    with resources.as_file(schema_file) as path:
        fill_defaults(study, str(path), set_default=True)
    return study


def load_study(path: str | Path) -> dict:
    """A study config validated against the workflow's schema, defaults filled in (as the Snakefile does)."""
    from ..config import load_file

    study = validate(load_file(path), path)
    try:
        prepare(study)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return study


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sparsedepth.study.grid CONFIG.yaml`: list the runs and check every config resolves."""
    p = argparse.ArgumentParser(prog="python -m sparsedepth.study.grid", description=main.__doc__)
    p.add_argument("config", help="study config (YAML), e.g. config/config.yaml")
    args = p.parse_args(argv)
    try:
        configs = list(iter_configs(load_study(args.config)))
    except (ConfigError, KeyError) as e:
        where = "" if str(e).startswith(str(args.config)) else f"{args.config}: "
        print(f"error: {where}{e}", file=sys.stderr)
        return 2
    for key, cfg in configs:
        print(f"{key.path}  router={cfg.router} capacity={cfg.capacity} layers={cfg.model.n_layers} "
              f"d_model={cfg.model.d_model} steps={cfg.steps} "
              f"train_flops={cfg.steps * train_flops_per_step(cfg):.4g}")
    print(f"{len(configs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
