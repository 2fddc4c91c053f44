"""The experiment grid: a study config (config/*.yaml) → one resolved TrainConfig per run.

The Snakefile only asks this module which runs exist and what each one's config is, so the mapping from
(model, variant, dataset, seed) to a training run lives in one tested place instead of in workflow code.
A *variant* is a named arm of the study: a router + capacity + options, optionally with its model scaled
(the iso-FLOP dense baselines are `dense` with fewer layers or a narrower width).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import ConfigError, ModelConfig, to_dict
from .train import TrainConfig

SCHEMA = Path(__file__).resolve().parents[2] / "workflow" / "schemas" / "config.schema.yaml"


@dataclass(frozen=True)
class RunKey:
    model: str
    variant: str
    dataset: str
    seed: int

    @property
    def path(self) -> str:
        """The run directory, relative to the results root (literal wildcard layout of the workflow)."""
        return f"runs/{self.model}/{self.variant}/{self.dataset}/seed{self.seed}"


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


def run_keys(study: dict) -> list[RunKey]:
    """Every run of the grid; seeds are shared across variants so comparisons can be paired."""
    return [RunKey(m, v, d, s)
            for m in study["models"] for v, spec in study["variants"].items() for d in study["datasets"]
            if _applies(spec, m, d) for s in study["seeds"]]


def train_config(study: dict, key: RunKey) -> TrainConfig:
    """The resolved, validated TrainConfig of one run."""
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
    return TrainConfig.from_dict(fields)


def iter_configs(study: dict) -> Iterator[tuple[RunKey, TrainConfig]]:
    for key in run_keys(study):
        yield key, train_config(study, key)


def config_json(study: dict, key: RunKey) -> str:
    """A run's resolved config as one JSON line (how the workflow hands it to `sparsedepth train`)."""
    return json.dumps(to_dict(train_config(study, key)), sort_keys=True)


def load_study(path: str | Path) -> dict:
    """A study config validated against the workflow's schema, defaults filled in (as the Snakefile does)."""
    from snakemake.utils import validate

    from .config import load_file

    study = load_file(path)
    try:
        validate(study, str(SCHEMA), set_default=True)
    except Exception as e:  # snakemake raises WorkflowError with the jsonschema message
        raise ConfigError(f"{path}: {e}") from e
    return study


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m sparsedepth.grid CONFIG.yaml`: list the runs and check every config resolves."""
    p = argparse.ArgumentParser(prog="python -m sparsedepth.grid", description=main.__doc__)
    p.add_argument("config", help="study config (YAML), e.g. config/config.yaml")
    args = p.parse_args(argv)
    try:
        configs = list(iter_configs(load_study(args.config)))
    except (ConfigError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for key, cfg in configs:
        print(f"{key.path}  router={cfg.router} capacity={cfg.capacity} layers={cfg.model.n_layers} "
              f"d_model={cfg.model.d_model}")
    print(f"{len(configs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
