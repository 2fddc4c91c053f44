"""The Snakemake workflow: dry runs of the shipped grids, lint, config errors, and the smoke study end to end
(train → evaluate → aggregate → stats → benchmark → figures → tables → paper, then the notebook on it)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def snakemake(*args: str, cwd: Path = REPO, timeout: float = 120) -> subprocess.CompletedProcess:
    """Snakemake from this interpreter, its jobs' `python` this interpreter too (as `make` arranges)."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml", "smoke.yaml"])
def test_dry_run_of_each_shipped_grid(config, tmp_path):
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf"))
    result = snakemake("-n", "--cores", "2", "--configfile", str(REPO / "config" / config),
                       "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "paper" in result.stdout and "train" in result.stdout


def test_default_grid_has_every_router_and_three_shared_seeds():
    from sparsedepth.grid import load_study, run_keys

    study = load_study(REPO / "config" / "config.yaml")
    keys = run_keys(study)
    routers = {study["variants"][k.variant]["router"] for k in keys}
    assert {"dense", "seed", "seed-frozen", "mod", "threshold", "random"} <= routers
    assert len(study["models"]) >= 2 and len(study["seeds"]) >= 3
    assert {"shakespeare", "wikipedia"} <= set(study["datasets"])
    assert any(v.get("scale") for v in study["variants"].values())  # an iso-FLOP dense baseline


def test_lint_passes():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("replace, key", [
    ("vocab_size: 512", "vocab_size: -3"),
    ("capacity: 0.125", "capacity: 1.5"),
    ("seeds: [0, 1]", "seedz: [0, 1]"),
])
def test_invalid_config_value_stops_with_a_message_naming_the_key(replace, key, tmp_path):
    text = (REPO / "config" / "smoke.yaml").read_text()
    assert replace in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(replace, key))
    result = snakemake("-n", "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path))
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert key.split(":")[0] in output or key.split(":")[1].strip() in output, output[-2000:]


def test_unknown_router_in_the_grid_is_a_clear_error(tmp_path):
    text = (REPO / "config" / "smoke.yaml").read_text().replace("router: mod", "router: nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = snakemake("-n", "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path))
    assert result.returncode != 0
    assert "unknown router 'nope'" in result.stdout + result.stderr


@pytest.mark.slow
def test_smoke_study_end_to_end_then_the_notebook(tmp_path):
    """The whole pipeline on the tiny grid, in a scratch directory, then the notebook on its results."""
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf", "*.aux"))
    build_paper = shutil.which("latexmk") is not None
    targets = [] if build_paper else ["results/tables/numbers.tex", "results/figures/speed.pdf"]
    smoke = str(REPO / "config" / "smoke.yaml")
    result = snakemake("--cores", "2", "--resources", "gpu=1", "--configfile", smoke,
                       "--directory", str(tmp_path), *targets, timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    results = tmp_path / "results"
    runs = pd.read_csv(results / "runs.csv")
    assert len(runs[runs["mode"] == "causal"]) == 8  # 1 model × 4 variants × 1 dataset × 2 seeds
    assert set(runs["arm"]) >= {"dense", "dense-shallow", "seed", "mod", "mod[topk]"}
    stats = pd.read_csv(results / "stats.csv")
    assert {"p_holm", "ci_low", "ci_high"} <= set(stats.columns) and len(stats) > 0
    bench = pd.read_csv(results / "bench" / "bench.csv")
    assert set(bench["kind"]) == {"train_step", "prefill", "decode"}
    for name in ("pareto", "train_flops", "layers_hist", "routing_map", "speed", "attention"):
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 0
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
    numbers = (results / "tables" / "numbers.tex").read_text()
    assert "\\newcommand{\\NumRuns}{8}" in numbers
    if build_paper:
        assert (tmp_path / "paper" / "main.pdf").stat().st_size > 10_000

    nbclient = pytest.importorskip("nbclient")
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    os.environ["SPARSEDEPTH_RESULTS"] = str(results)
    try:
        where = {"metadata": {"path": str(REPO / "notebooks")}}
        nbclient.NotebookClient(nb, timeout=300, resources=where).execute()
    finally:
        del os.environ["SPARSEDEPTH_RESULTS"]
    text = "\n".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "rows in runs.csv" in text and "No results yet" not in text
