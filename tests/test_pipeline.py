"""The Snakemake workflow: dry runs of the shipped grids, lint, config errors, and the smoke study end to end
(train → evaluate → aggregate → stats → benchmark → figures → tables → paper, then the notebook on it)."""

import dataclasses
import os
import re
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


def _job_counts(stdout: str) -> dict[str, int]:
    table = stdout.split("Job stats:")[-1]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.parametrize("config", ["config.yaml", "paper.yaml", "smoke.yaml"])
def test_dry_run_of_each_shipped_grid(config, tmp_path):
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf"))
    result = snakemake("-n", "-p", "--cores", "2", "--configfile", str(REPO / "config" / config),
                       "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "paper" in result.stdout and "train" in result.stdout
    # a GPU grid's plan states what it costs, once (sparsedepth.study.cost); a CPU grid's says nothing
    costs = [line for line in result.stderr.splitlines() if "GPU-hours" in line]
    if config == "paper.yaml":
        assert len(costs) == 1 and re.match(r"paper \(GPU\): \d+ training runs, estimated [\d,.]+ GPU-hours",
                                            costs[0]), result.stderr
        # the whole paper DAG (config/rehearsal.yaml is this grid with smaller budgets: test_rehearsal):
        # enwik8: 3 budgets × (5 dense + 5 mod + 5 probe sizes) × 3 seeds, tinystories: C1 × 15 × 2 seeds,
        # and the 9 exploratory arms at C1-d256 (seed 0)
        counts = _job_counts(result.stdout)
        assert counts["train"] == counts["evaluate"] == 3 * 15 * 3 + 15 * 2 + 9 == 174
        assert counts["paper"] == 1 and counts["prepare_data"] == 2 and counts["benchmark_grid"] == 2
        assert counts["export_hf"] == counts["lm_eval"] == counts["train"]  # lm-eval: every run
    else:
        assert not costs, costs
    if config == "smoke.yaml":
        from test_bench_speculative import assert_speculative_job_reads_the_configured_runs

        assert_speculative_job_reads_the_configured_runs(result.stdout)


def test_default_grid_is_an_isoflop_study_on_enwik8_with_frontier_primaries():
    from sparsedepth.study import sweeps
    from sparsedepth.study.grid import load_study, run_keys, train_config

    study = load_study(REPO / "config" / "config.yaml")
    keys = run_keys(study)
    routers = {study["variants"][k.variant]["router"] for k in keys}
    assert {"dense", "probe", "probe-frozen", "mod", "threshold", "random", "early_exit", "mor"} <= routers
    frontier = sweeps.frontier_spec(study)
    assert frontier["dataset"] == "enwik8" and frontier["reference"] == "dense" and len(frontier["arms"]) >= 2
    swept = sweeps.models(study)
    budgets = {info["budget"] for info in swept.values() if "enwik8" in info["datasets"]}
    assert len(budgets) >= 2, "a frontier needs at least two budgets"
    for budget in budgets:
        for arm in (frontier["reference"], *frontier["arms"]):
            sizes = {k.model for k in keys if k.variant == arm and k.dataset == "enwik8"
                     and swept.get(k.model, {}).get("budget") == budget}
            assert len(sizes) >= 4, f"{arm} at {budget}: an isoFLOP profile needs >= 4 sizes"
            seeds = {k.seed for k in keys if k.variant == arm and k.dataset == "enwik8"}
            assert len(seeds) >= 2, f"{arm}: a primary arm needs >= 2 seeds (seed-to-seed variance)"
    for key in keys:  # every run at most one pass over enwik8's 90 M training bytes
        cfg = train_config(study, key)
        assert key.dataset != "enwik8" or cfg.steps * cfg.batch_size * cfg.seq_len <= 90_000_000
    cell = next(k for k in keys if k.variant == "dense" and k.model in swept)
    dense = train_config(study, cell)
    mod = train_config(study, dataclasses.replace(cell, variant="mod"))
    assert mod.steps > dense.steps  # the routed arm trains longer on the same FLOPs


def test_lint_passes():
    result = snakemake("--lint")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("replace, key", [
    ("vocab_size: 512", "vocab_size: -3"),
    ("capacity: 0.125", "capacity: 1.5"),
    ("seeds: [0, 1]", "seedz: [0, 1]"),
    ("router: mod", "router: nope"),
    ("  exit_layers: [1]\n", "  exit_layers: [2]\n"),
    ("  arms: [dense, early_exit]\n", "  arms: [dense, nope]\n"),
    ("  new_tokens: 8\n", "  new_tokens: 30\n"),
    ("  repeats: 2\n  warmup: 0\n  device: cpu\n", "  repeats: 0\n  warmup: 0\n  device: cpu\n"),
    ("    baselines: [dense-shallow]\n", "    baselines: [nope]\n"),
])
def test_invalid_config_value_stops_with_a_message_naming_the_key(replace, key, tmp_path, capsys):
    """The checks the Snakefile runs before planning (schema, then `grid.prepare` and every run's config),
    through `python -m sparsedepth.study.grid`, which runs the same ones in-process; that Snakemake stops on
    them with the message is the unknown-router test below."""
    from sparsedepth.study import grid

    text = (REPO / "config" / "smoke.yaml").read_text()
    assert replace in text
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace(replace, key))
    assert grid.main([str(bad)]) == 2
    output = capsys.readouterr().err
    assert len(output.strip().splitlines()) == 1 and str(bad) in output, output
    name = key.split(":")[0].strip()
    if replace.startswith("  "):  # the speculative block's keys (its decode cell's): named in full
        name = f"speculative.decode.{name}" if replace.startswith("    ") else f"speculative.{name}"
    assert name in output, output


def test_unknown_router_in_the_grid_is_a_clear_error(tmp_path):
    text = (REPO / "config" / "smoke.yaml").read_text().replace("router: mod", "router: nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    result = snakemake("-n", "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path))
    assert result.returncode != 0
    assert "unknown router 'nope'" in result.stdout + result.stderr


def test_config_values_reach_the_shell_quoted(tmp_path):
    """Issue 13: a study config is data. `data_dir`/`data_paths` with shell syntax stay one argument each."""
    import shlex

    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf"))
    text = (REPO / "config" / "smoke.yaml").read_text().replace("data_dir: results/data",
                                                                 'data_dir: "x; touch PWNED"')
    bad = tmp_path / "evil.yaml"
    bad.write_text(text + 'data_paths: {shakespeare: "y $(touch PWNED2)"}\n')
    result = snakemake("-n", "-p", "--cores", "1", "--configfile", str(bad), "--directory", str(tmp_path))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    commands = [line.split(":", 1)[1] for line in lines if line.startswith("Shell command:")]
    prepare = next(shlex.split(c) for c in commands if "sparsedepth prepare" in c)
    assert prepare[prepare.index("--out") + 1] == "x; touch PWNED/shakespeare-v512"
    assert prepare[prepare.index("--data-path") + 1] == "y $(touch PWNED2)"
    train = next(shlex.split(c) for c in commands if "sparsedepth train" in c)
    assert '"data_dir": "x; touch PWNED"' in train[train.index("--config") + 1]
    assert not list(tmp_path.rglob("PWNED*"))


@pytest.mark.slow(seconds=220)
def test_smoke_study_end_to_end_then_the_notebook(tmp_path):
    """The whole pipeline on the tiny grid, in a scratch directory, then the notebook on its results."""
    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf", "*.aux"))
    build_paper = shutil.which("latexmk") is not None  # without LaTeX: every output but the PDF
    (tmp_path / "no_paper.yaml").write_text("paper: false\n")
    no_paper = [] if build_paper else [str(tmp_path / "no_paper.yaml")]  # merged over the grid
    smoke = str(REPO / "config" / "smoke.yaml")
    result = snakemake("--cores", "2", "--resources", "gpu=1", "--configfile", smoke, *no_paper,
                       "--directory", str(tmp_path), timeout=900)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    results = tmp_path / "results"
    runs = pd.read_csv(results / "runs.csv")
    # the sweep: 3 sizes × dense, mod × 2 seeds (mod's window one size up: s24-s40); at C1-s32 also
    # probe × 2, dense-shallow and early_exit × 1
    assert len(runs[runs["mode"] == "causal"]) == 16
    assert set(runs["arm"]) >= {"dense", "dense-shallow", "probe", "mod", "mod[topk]"}
    assert (runs["tokens_per_param"] > 0).all() and (runs["epochs"] < 1).all()
    frontier = pd.read_csv(results / "frontier.csv")
    assert set(frontier["arm"]) == {"dense", "mod"} and set(frontier["budget"]) == {"C1"}
    assert set(frontier.loc[frontier["arm"] == "mod", "family"]) == {"primary"}
    profiles = pd.read_csv(results / "isoflop.csv")
    assert len(profiles) == 2 * 3 and profiles["bpb"].notna().all()
    assert runs["test_bpb"].notna().all() and (runs["train_flops"] > 0).all()
    stats = pd.read_csv(results / "stats.csv")
    assert {"effect", "ci_low", "ci_high", "p_adj", "mde", "verdict"} <= set(stats.columns)
    # the two declared primaries at C1-s32; the best-of (mod, probe) also at C1-s24 (mod alone); nothing at
    # C1-s16 (dense alone) or C1-s40 (mod alone, no dense to compare with)
    assert (stats["family"] == "primary").sum() == 3
    assert set(stats["model"]) == {"C1-s24", "C1-s32"}
    curves = pd.read_csv(results / "curves.csv")
    assert curves["train_flops"].notna().all() and len(curves) >= 7
    bench = pd.read_csv(results / "bench" / "bench.csv")
    assert set(bench["kind"]) == {"train_step", "prefill", "decode"}
    figures = ("pareto", "train_flops", "learning_curve", "layers_hist", "routing_map", "speed", "attention",
               "isoflop", "frontier")
    for name in figures:
        assert (results / "figures" / f"{name}.pdf").stat().st_size > 0
        assert (results / "figures" / f"{name}.png").stat().st_size > 0
    numbers = (results / "tables" / "numbers.tex").read_text()
    assert "\\newcommand{\\NumRuns}{16}" in numbers and "\\newcommand{\\NumPrimaries}{3}" in numbers
    assert "\\newcommand{\\FrontierNumComparisons}{1}" in numbers and "\\FrontierOutcome" in numbers
    assert (results / "tables" / "frontier.tex").stat().st_size > 0
    # without LaTeX too: every number the paper quotes (\\Name{}) is a macro the pipeline defined
    defined = set(re.findall(r"\\newcommand\{\\([A-Za-z]+)\}", numbers))
    quoted = set(re.findall(r"\\([A-Z][A-Za-z]+)\{\}", (tmp_path / "paper" / "main.tex").read_text()))
    assert quoted and not quoted - defined, sorted(quoted - defined)
    if build_paper:
        assert (tmp_path / "paper" / "main.pdf").stat().st_size > 10_000
    report = tmp_path / "report.zip"  # browsable: every figure and table with its caption
    result = snakemake("--report", str(report), "--configfile", smoke, *no_paper,
                       "--directory", str(tmp_path), timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert report.stat().st_size > 10_000

    nbclient = pytest.importorskip("nbclient")
    import nbformat

    nb = nbformat.read(REPO / "notebooks" / "analysis.ipynb", as_version=4)
    os.environ["SPARSEDEPTH_RESULTS"] = str(results)
    try:
        where = {"metadata": {"path": str(REPO / "notebooks")}}
        nbclient.NotebookClient(nb, timeout=300, resources=where).execute()
    finally:
        del os.environ["SPARSEDEPTH_RESULTS"]
    assert not (REPO / "notebooks" / "results").exists(), "the notebook wrote data into the checkout"
    text = "\n".join(str(o.get("text", "")) for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "rows in runs.csv" in text and "No results yet" not in text
    if not build_paper:
        pytest.skip("LaTeX (latexmk) not installed: everything but paper/main.pdf was built and checked; "
                    "`make latex` installs it")
