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


def _bench(processes: int) -> pd.DataFrame:
    rows = []
    for router, speedup in (("dense", 1.0), ("mod", 1.5)):
        for seq in (128, 512):
            rows.append({"device": "cpu", "device_name": "CPU: test", "kind": "prefill", "impl": "gather",
                         "router": router, "capacity": 0.125, "batch": 8, "seq_len": seq, "speedup": speedup,
                         "speedup_min": speedup - 0.1, "speedup_max": speedup + 0.2, "processes": processes,
                         "torch": "2.13", "threads": 2, "grid": "main"})
    return pd.DataFrame(rows)


def test_the_speed_figure_shows_the_range_over_processes_and_says_so():
    """Timed in three processes: a bar per point over its speedup's range, and the title says what points and
    bars are; in one process neither."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection

    from sparsedepth.study.plots import figure_speed

    def bars(fig):
        return [seg for ax in fig.axes for c in ax.collections if isinstance(c, LineCollection)
                for seg in c.get_segments()]

    three = figure_speed(_bench(3))
    spans = sorted((s[0][0], s[0][1], s[1][1]) for s in bars(three))
    assert [tuple(round(v, 6) for v in s) for s in spans] == [(128, 1.4, 1.7), (512, 1.4, 1.7)]
    assert "median over 3 processes, bars: their range" in three._suptitle.get_text()
    one = figure_speed(_bench(1))
    assert not bars(one) and "processes" not in one._suptitle.get_text()
    plt.close("all")
