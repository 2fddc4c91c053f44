"""Figure helpers whose mistakes would mislead a reader: colours that repeat, a wrong Pareto front."""

import pandas as pd

from sparsedepth.study.plots import arm_palette, pareto_front


def test_every_variant_gets_its_own_colour_and_modes_share_it():
    arms = ["dense", "mod", "mod[topk]"] + [f"arm{i}" for i in range(16)]
    palette = arm_palette(arms)
    variants = [a for a in arms if "[" not in a]
    assert len({tuple(palette[a]) for a in variants}) == len(variants)
    assert palette["mod"] == palette["mod[topk]"]


def test_pareto_front_keeps_only_undominated_arms():
    points = pd.DataFrame({
        "model": "m", "dataset": "d", "arm": ["dense", "cheap-good", "cheap-bad", "dear-bad"],
        "x": [10.0, 5.0, 5.0, 12.0], "y": [3.0, 2.9, 3.5, 3.2],
    })
    front = pareto_front(points)
    assert set(front["arm"]) == {"cheap-good"}


def test_the_analysis_side_starts_without_torch():
    """Each table, statistic and (table) figure is its own Snakemake job: none may pay torch's import
    (docs/CONTRACT.md). A fresh interpreter, since this one has torch loaded."""
    import subprocess
    import sys

    modules = ["aggregate", "stats", "frontier", "tables", "figures", "paper", "sweep_report"]
    code = (f"import sys\nfor m in {modules}: __import__('sparsedepth.study.' + m)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torch')[:3])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
