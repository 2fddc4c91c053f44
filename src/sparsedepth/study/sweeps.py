"""IsoFLOP sweeps: a study's `isoflop:` section (budgets × sizes × datasets) turned into the grid's models.

Why: Mixture-of-Depths and Chinchilla (approach 2) compare architectures at their compute-optimal size, not
at one size that favours whichever arm steps fastest. For each training budget every swept arm is trained
at several model sizes, each spending exactly that budget; the minimum of loss over size is the arm's
frontier at that budget (`study.frontier`). Here each (budget, size) pair becomes one model of the grid,
named `{budget}-{size}` (e.g. `C3-d64`), whose runs get the budget as absolute FLOPs (so the budget rules of
`study.grid` apply unchanged: arms that skip blocks take more steps) and which runs only on the datasets
that budget is declared for. Seeds stay shared, so at a (budget, size, seed) every arm is paired.

Which variants run where: a variant named in `isoflop.variants` runs on every sweep model of its window;
any other variant runs on the study's own `models:` (not the sweep's) unless its `models:` names sweep
models explicitly — how an exploratory arm runs at one (budget, size) only.

Windows: a budget's `sizes:` is one list for every swept arm, or one list per arm (all of one length, as
the estimator fits every arm on as many sizes). Per-arm windows save compute where the arms' optima sit
apart: routed arms peak at larger, cheaper sizes than dense (Mixture-of-Depths Fig. 3), so a shared window
wide enough to bracket both trains the routed arms at small sizes (the costliest runs) for no purpose.
"""

from __future__ import annotations

from ..config import ConfigError

SEP = "-"  # between budget and size in a sweep model's name


def model_name(budget: str, size: str) -> str:
    return f"{budget}{SEP}{size}"


def budget_part(model: str) -> str:
    """The budget a sweep model's name starts with (`C3-d16` → `C3`): how readers of runs.csv, which do not
    have the study, tell a sweep run's budget."""
    return str(model).split(SEP)[0]


def _section(study: dict) -> dict:
    return study.get("isoflop") or {}


def windows(study: dict, budget: str) -> dict[str, list[str]]:
    """{swept variant: [sizes]} at `budget`: its `sizes:` list for every arm, its per-arm lists, or (no
    `sizes:`) every size of the sweep."""
    section = _section(study)
    sizes = section["budgets"][budget].get("sizes", list(section.get("sizes", {})))
    if isinstance(sizes, dict):
        return {v: list(sizes.get(v, [])) for v in section.get("variants", [])}
    return {v: list(sizes) for v in section.get("variants", [])}


def models(study: dict) -> dict[str, dict]:
    """{model: {"budget", "budget_flops", "size", "datasets", "variants"}} for every sweep model (empty
    without a sweep): what the frontier rule needs to group runs into profiles (handed to it as `--sweep
    JSON`); `variants`: the swept arms whose window holds the size. A budget sweeps its own `sizes:`
    (default: all), so the window can move with the budget as Chinchilla's does and the optimum stays
    inside it."""
    section = _section(study)
    out: dict[str, dict] = {}
    for budget, spec in section.get("budgets", {}).items():
        datasets = [d for d, budgets in section.get("datasets", {}).items() if budget in budgets]
        window = windows(study, budget)
        for size in section.get("sizes", {}):
            arms = [v for v, sizes in window.items() if size in sizes]
            if arms:
                out[model_name(budget, size)] = {"budget": budget, "budget_flops": float(spec["flops"]),
                                                 "size": size, "datasets": datasets, "variants": arms}
    return out


def check(study: dict) -> None:
    """Names the schema cannot check: every dataset and variant of the sweep is one of the study's, every
    budget a dataset lists exists, and no sweep model shadows one of the study's own `models:`."""
    section = _section(study)
    if not section:
        return
    budgets = section["budgets"]
    unknown = [v for v in section["variants"] if v not in study["variants"]]
    if unknown:
        raise ConfigError(f"isoflop.variants: {unknown} not among the study's variants")
    for budget, spec in budgets.items():
        where = f"isoflop.budgets.{budget}.sizes"
        per_arm = spec.get("sizes") if isinstance(spec.get("sizes"), dict) else {}
        if per_arm and set(per_arm) != set(section["variants"]):
            raise ConfigError(f"{where}: per-arm windows must name exactly the swept variants "
                              f"({', '.join(section['variants'])}), got {', '.join(per_arm)}")
        window = windows(study, budget)
        for sizes in window.values():
            unknown = [z for z in sizes if z not in section["sizes"]]
            if unknown:
                raise ConfigError(f"{where}: unknown size(s) {unknown}; isoflop.sizes has "
                                  f"{', '.join(section['sizes'])}")
        if len({len(sizes) for sizes in window.values()}) > 1:
            raise ConfigError(f"{where}: every arm's window needs as many sizes (the estimator fits each arm "
                              f"on K sizes), got {({a: len(z) for a, z in window.items()})}")
    for dataset, listed in section["datasets"].items():
        if dataset not in study["datasets"]:
            raise ConfigError(f"isoflop.datasets: {dataset!r} is not one of the study's datasets "
                              f"({', '.join(study['datasets'])})")
        unknown = [b for b in listed if b not in budgets]
        if unknown:
            raise ConfigError(f"isoflop.datasets.{dataset}: unknown budget(s) {unknown}; "
                              f"isoflop.budgets has {', '.join(budgets)}")
    for dataset, seeds in section.get("seeds", {}).items():
        extra = sorted(set(seeds) - set(study["seeds"]))
        if dataset not in section["datasets"] or extra:
            raise ConfigError(f"isoflop.seeds.{dataset}: must name a swept dataset and a subset of the "
                              f"study's seeds {study['seeds']}")
    for name, spec in study["variants"].items():
        named = [m for m in spec.get("models", []) if SEP in m and m not in models(study)
                 and m not in study.get("models", {})]
        if named:
            raise ConfigError(f"variants.{name}.models: {named} are neither models of the study nor of its "
                              f"isoflop sweep ({', '.join(models(study))})")


def _generated(study: dict) -> set[str]:
    return set(study.get("_isoflop_models", []))


def expand(study: dict) -> dict:
    """Add the sweep's models to `study["models"]` (in place; idempotent) and return the study. Each sweep
    model is its size's shape; `_isoflop_models` records which names were generated, so a second call (or
    `check`) tells them from the study's own."""
    section = _section(study)
    if not section:
        return study
    check(study)
    own = study.setdefault("models", {})
    swept = models(study)
    clash = sorted(set(swept) & set(own) - _generated(study))
    if clash:
        raise ConfigError(f"models: {clash} clash with the isoflop sweep's generated model names")
    generated = []
    for name, info in swept.items():
        own[name] = dict(section["sizes"][info["size"]])
        generated.append(name)
    study["_isoflop_models"] = generated
    return study


def is_sweep_model(study: dict, model: str) -> bool:
    return model in models(study)


def budget_of(study: dict, model: str) -> dict | None:
    """The sweep model's budget in `budget:` form ({"flops": F}); None for the study's own models."""
    info = models(study).get(model)
    return None if info is None else {"flops": info["budget_flops"]}


def runs_on(study: dict, variant: str, model: str, dataset: str) -> bool:
    """Whether `variant` runs on `model` × `dataset` in a study with a sweep (see the module docstring):
    on a sweep model, if that model's budget is declared for the dataset and the variant is swept there (the
    size is in its window) or names the model; on one of the study's own models, if the variant names it,
    or names no models and is not swept. A variant's `datasets:` restricts both."""
    spec = study["variants"][variant]
    if dataset not in spec.get("datasets", [dataset]):
        return False
    swept = variant in _section(study).get("variants", [])
    info = models(study).get(model)
    if info is not None:
        return dataset in info["datasets"] and ((swept and variant in info["variants"])
                                                or model in spec.get("models", []))
    return model in spec["models"] if "models" in spec else not swept


def keeps_seed(study: dict, model: str, dataset: str, seed: int) -> bool:
    """Whether a sweep run of `dataset` uses `seed`: all the study's seeds unless `isoflop.seeds` narrows
    them for that dataset (a second domain swept more cheaply); the study's own models keep theirs."""
    wanted = _section(study).get("seeds", {}).get(dataset)
    return wanted is None or not is_sweep_model(study, model) or seed in wanted


def frontier_spec(study: dict) -> dict:
    """The frontier primaries of a study with a sweep ({} without one): `frontier:` with its defaults — the
    first swept dataset, the baseline as reference, every other swept variant as a compared arm."""
    section = _section(study)
    if not section:
        return {}
    spec = dict(study.get("frontier") or {})
    spec.setdefault("dataset", next(iter(section["datasets"])))
    spec.setdefault("reference", study.get("baseline", "dense"))
    spec.setdefault("arms", [v for v in section["variants"] if v != spec["reference"]])
    spec.setdefault("resamples", 2000)
    for arm in (spec["reference"], *spec["arms"]):
        if arm not in section["variants"]:
            raise ConfigError(f"frontier: {arm!r} is not a swept variant (isoflop.variants: "
                              f"{', '.join(section['variants'])}); a frontier needs every size")
    if spec["dataset"] not in section["datasets"]:
        raise ConfigError(f"frontier.dataset: {spec['dataset']!r} is not swept (isoflop.datasets: "
                          f"{', '.join(section['datasets'])})")
    return spec
