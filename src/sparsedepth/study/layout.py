"""Where a run lives: the one place that spells the run-directory layout.

The workflow's wildcard paths, the grid's run keys, aggregation and the figures' run lookup all go through
these functions, so the layout `{root}/runs/{model}/{variant}/{dataset}/seed{seed}` can change here alone
(docs/CONTRACT.md). `model` and `variant` are recorded nowhere else than in this path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUN_TEMPLATE = "{model}/{variant}/{dataset}/seed{seed}"  # also Snakemake's wildcard pattern
SEED_DIR = re.compile(r"seed(\d+)")


class LayoutError(ValueError):
    """A path that is not a run directory; the message names it."""


@dataclass(frozen=True)
class RunKey:
    model: str
    variant: str
    dataset: str
    seed: int

    @property
    def path(self) -> str:
        """The run directory, relative to the results root."""
        return run_dir("", self).lstrip("/")


def run_dir(root: str | Path, key: RunKey) -> str:
    """`{root}/runs/{model}/{variant}/{dataset}/seed{seed}` of one run."""
    return f"{root}/runs/" + RUN_TEMPLATE.format(model=key.model, variant=key.variant, dataset=key.dataset,
                                                 seed=key.seed)


def run_dir_pattern(root: str | Path) -> str:
    """The run directory with Snakemake wildcards in place of the key: `{root}/runs/{model}/...`."""
    return f"{root}/runs/{RUN_TEMPLATE}"


def parse_run_dir(path: str | Path) -> RunKey:
    """The key of a run directory `.../{model}/{variant}/{dataset}/seed{seed}` (the path's last parts)."""
    parts = Path(path).parts
    match = SEED_DIR.fullmatch(parts[-1]) if parts else None
    if len(parts) < 4 or match is None:
        raise LayoutError(f"{path}: not a run directory of the form .../{{model}}/{{variant}}/{{dataset}}/"
                          "seed{seed}")
    return RunKey(parts[-4], parts[-3], parts[-2], int(match.group(1)))


def find_run_dirs(runs_root: str | Path, marker: str | None = None) -> list[Path]:
    """Every run directory under `runs_root` (its `runs/` folder), sorted; with `marker`, only those holding
    that file (e.g. `model.safetensors`: finished runs)."""
    root = Path(runs_root)
    if not root.is_dir():
        raise LayoutError(f"runs root not found: {root}")
    found = [p for p in root.glob("*/*/*/seed*") if p.is_dir() and SEED_DIR.fullmatch(p.name)]
    return sorted(p for p in found if marker is None or (p / marker).is_file())
