"""The speculative-decoding benchmark on (tiny) trained runs: its table, its checks, its command line.
Speed is never asserted; that speculative output equals greedy output is (the benchmark refuses otherwise)."""

import dataclasses

import pandas as pd
import pytest

from sparsedepth.bench import main
from sparsedepth.bench.speculative import COLUMNS, SpecConfig, SpeculativeMismatch, measure

ARMS = {"dense": ("dense", 1.0, {}), "early_exit": ("early_exit", 0.5625, {"rotation": 2}),
        "mod": ("mod", 0.5, {"causal": "predictor"})}
TINY = dict(arms=["dense", "early_exit"], exit_layers=[1, 2], draft_tokens=[2], prompts=2, prompt_len=8,
            new_tokens=6, repeats=2, warmup=0, device="cpu", threads=1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """dense, early_exit and mod trained for a few steps on a slice of Tiny Shakespeare, in the grid's
    layout (runs/<model>/<arm>/<dataset>/seed0)."""
    from sparsedepth.data import tinyshakespeare_path
    from sparsedepth.train import TrainConfig, train

    source = tinyshakespeare_path()
    if not source.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {source}")
    root = tmp_path_factory.mktemp("spec")
    (root / "slice.txt").write_text(source.read_text()[:60_000])
    dirs = {}
    for arm, (router, capacity, options) in ARMS.items():
        cfg = TrainConfig.from_dict({
            "dataset": "tinyshakespeare", "data_path": str(root / "slice.txt"),
            "data_dir": str(root / "data"),
            "vocab_size": 300, "router": router, "capacity": capacity, "router_options": options, "steps": 4,
            "batch_size": 4, "seq_len": 32, "warmup_steps": 1, "eval_every": 4, "eval_batches": 1,
            "checkpoint_every": 4, "threads": 1, "seed": 0,
            "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 64}})
        dirs[arm] = root / "runs" / "tiny" / arm / "tinyshakespeare" / "seed0"
        train(cfg, dirs[arm], progress=False)
    return dirs


def test_table_has_every_column_the_device_and_sane_values(runs, tmp_path):
    out = tmp_path / "spec.csv"
    flags = ["--arms", "dense,early_exit", "--exit-layers", "1,2", "--draft-tokens", "2", "--prompts", "2",
             "--prompt-len", "8", "--new-tokens", "6", "--repeats", "2", "--warmup", "0", "--device", "cpu",
             "--threads", "1"]
    assert main(["speculative", "--out", str(out), "--runs", *map(str, runs.values()), *flags]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS
    assert (df["device"] == "cpu").all() and df["device_name"].str.startswith("CPU").all()
    ordinary, spec = df[df["decoding"] == "ordinary"], df[df["decoding"] == "speculative"]
    assert set(ordinary["arm"]) == {"dense", "early_exit"}  # mod was given but not asked for
    assert len(spec) == 2 * 2 * 1 and set(spec["exit_layer"]) == {1, 2}
    assert (df[["median_ms", "tokens_per_s", "flops_per_token"]] > 0).all().all()
    assert (df[["model", "dataset", "seed", "batch"]].iloc[0] == ["tiny", "tinyshakespeare", 0, 1]).all()
    assert spec["greedy_match"].all()
    acceptance = spec["acceptance"].dropna()  # NaN only where nothing was drafted
    assert ((acceptance >= 0) & (acceptance <= 1)).all()
    assert (spec.loc[spec["drafted"] == 0, "acceptance"].isna()).all()
    dense = ordinary.set_index("arm").loc["dense"]
    assert dense["speedup"] == pytest.approx(1.0) and dense["ideal_speedup"] == pytest.approx(1.0)
    assert (spec["tokens_per_round"].dropna() >= 1).all()


def test_draft_alone_rows_give_each_exits_ceiling(runs, tmp_path):
    """One draft-only row per (arm, exit); its ceiling (the reference's ordinary median / the draft-only
    median) is written on it and on the speculative rows of the same arm and exit, not on ordinary rows."""
    spec = SpecConfig(**{**TINY, "draft_tokens": [2, 3]})
    rows = measure(spec, [runs["dense"], runs["early_exit"]], progress=lambda s: None)
    df = pd.DataFrame(rows, columns=COLUMNS)
    draft = df[df["decoding"] == "draft"]
    assert sorted(zip(draft["arm"], draft["exit_layer"], strict=True)) == [
        ("dense", 1), ("dense", 2), ("early_exit", 1), ("early_exit", 2)]
    assert draft["draft_tokens"].isna().all() and draft["greedy_match"].isna().all()
    assert (draft[["flops_per_token", "layers_per_token"]] > 0).all().all()
    assert (draft["layers_per_token"] <= draft["exit_layer"]).all()
    reference = df[(df["arm"] == "dense") & (df["decoding"] == "ordinary")]["median_ms"].item()
    medians = draft.set_index(["arm", "exit_layer"])["median_ms"]
    for _, row in df[df["decoding"] != "ordinary"].iterrows():
        assert row["ceiling_speedup"] == pytest.approx(reference / medians[row["arm"], row["exit_layer"]])
    assert len(df[df["decoding"] == "speculative"]) == 2 * 2 * 2
    assert df.loc[df["decoding"] == "ordinary", "ceiling_speedup"].isna().all()


def test_a_decode_cell_times_baselines_ordinary_and_carries_bits_per_byte(runs, tmp_path):
    """`baselines` get ordinary rows only; every row names its cell and role; a run's evaluated test bits per
    byte comes from its eval.json (not evaluated: NaN)."""
    import json

    (runs["dense"] / "eval.json").write_text(json.dumps({"modes": {"causal": {"test": {"bpb": 2.5}}}}))
    try:
        spec = SpecConfig(**{**TINY, "arms": ["early_exit"], "exit_layers": [1], "baselines": ["mod"],
                             "cell": "decode"})
        df = pd.DataFrame(measure(spec, list(runs.values()), progress=lambda s: None), columns=COLUMNS)
    finally:
        (runs["dense"] / "eval.json").unlink()
    assert (df["cell"] == "decode").all()
    roles = df.groupby("arm")["role"].unique().map(list).to_dict()
    assert roles == {"dense": ["reference"], "early_exit": ["arm"], "mod": ["baseline"]}
    assert list(df.loc[df["arm"] == "mod", "decoding"]) == ["ordinary"]
    assert list(df.loc[df["arm"] == "dense", "decoding"]) == ["ordinary"]
    bpb = df.groupby("arm")["test_bpb"].first()
    assert bpb["dense"] == 2.5 and bpb[["early_exit", "mod"]].isna().all()


def test_speculative_tokens_that_differ_from_greedy_fail_loudly(runs, monkeypatch, tmp_path, capsys):
    from sparsedepth import speculative

    real = speculative.speculative_generate

    def wrong(*args, **kwargs):
        gen, stats = real(*args, **kwargs)
        gen.tokens[0][-1] += 1
        return gen, stats

    monkeypatch.setattr(speculative, "speculative_generate", wrong)
    with pytest.raises(SpeculativeMismatch, match="prompt 0 at new token 5"):
        measure(SpecConfig(**TINY), [runs["dense"], runs["early_exit"]], progress=lambda s: None)
    out = tmp_path / "x.csv"
    assert main(["speculative", "--out", str(out), "--runs", str(runs["dense"]), "--arms", "dense",
                 "--exit-layers", "1", "--draft-tokens", "2", "--prompts", "1", "--prompt-len", "4",
                 "--new-tokens", "3", "--repeats", "1", "--device", "cpu"]) == 1
    assert "not greedy output" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("change, message", [
    ({"exit_layers": [4]}, "exit_layers \\[4\\]: arm 'dense' has 4 blocks"),
    ({"arms": ["probe"]}, "arms \\['probe'\\] have no run"),
    ({"reference": "mod"}, "arms \\['mod'\\] have no run"),
    ({"new_tokens": 60}, "exceeds arm 'dense'"),
    ({"baselines": ["nope"]}, "arms \\['nope'\\] have no run"),
])
def test_bad_settings_are_one_clear_error(runs, change, message):
    from sparsedepth.config import ConfigError

    with pytest.raises(ConfigError, match=message):
        measure(dataclasses.replace(SpecConfig(**TINY), **change), [runs["dense"], runs["early_exit"]],
                progress=lambda s: None)


def test_processes_give_medians_and_the_speedups_range(runs, tmp_path, monkeypatch):
    """`--processes 2`: the whole benchmark run twice, one row per case with the median over the runs and
    the speedup's range; deterministic columns (acceptance, tokens) as one process gives them. Each "fresh
    process" runs in this one (starting an interpreter is test_bench_processes' part, on the same code)."""
    import subprocess

    real = subprocess.run

    def in_this_process(cmd, **kwargs):
        if cmd[1:4] != ["-m", "sparsedepth.bench", "speculative"]:
            return real(cmd, **kwargs)  # e.g. git, for the rows' provenance
        return subprocess.CompletedProcess(cmd, main(cmd[3:]))

    monkeypatch.setattr(subprocess, "run", in_this_process)
    out = tmp_path / "spec.csv"
    flags = ["--arms", "early_exit", "--exit-layers", "1", "--draft-tokens", "2", "--prompts", "1",
             "--prompt-len", "8", "--new-tokens", "4", "--repeats", "1", "--warmup", "0", "--device", "cpu",
             "--threads", "1"]
    runs_flag = ["--runs", str(runs["dense"]), str(runs["early_exit"])]
    assert main(["speculative", "--out", str(out), "--processes", "2", *flags, *runs_flag]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS and len(df) == 4 and (df["processes"] == 2).all()
    assert ((df["speedup_min"] <= df["speedup"]) & (df["speedup"] <= df["speedup_max"])).all()
    one = pd.DataFrame(measure(SpecConfig(**{**TINY, "arms": ["early_exit"], "exit_layers": [1],
                                             "prompts": 1, "new_tokens": 4}),
                               [runs["dense"], runs["early_exit"]], progress=lambda s: None))
    assert df["acceptance"].equals(one["acceptance"]) and (one["processes"] == 1).all()


def test_bad_flags_exit_2_naming_the_key(runs, tmp_path, capsys):
    out = tmp_path / "x.csv"
    assert main(["speculative", "--out", str(out), "--runs", str(runs["dense"]), "--repeats", "0"]) == 2
    assert "repeats" in capsys.readouterr().err and not out.exists()
    assert main(["speculative", "--out", str(out), "--runs", str(tmp_path), "--device", "cpu"]) == 2
    assert "not a run directory" in capsys.readouterr().err


def _dry_run(tmp_path, text: str):
    import shutil

    from test_pipeline import REPO, snakemake

    shutil.copytree(REPO / "paper", tmp_path / "paper", ignore=shutil.ignore_patterns("*.pdf"))
    (tmp_path / "grid.yaml").write_text(text)
    return snakemake("-n", "-p", "--cores", "2", "--configfile", str(tmp_path / "grid.yaml"),
                     "--directory", str(tmp_path))


def assert_speculative_job_reads_the_configured_runs(stdout: str) -> None:
    """On `snakemake -n -p` of config/smoke.yaml (test_pipeline's dry run of each shipped grid): one job per
    cell, each reading exactly its configured runs (weights, summaries, evaluations) and passing its cell,
    exits and baselines; one merge of both; the table rule reads the merged CSV."""
    import shlex

    jobs = {}
    for text in stdout.split("rule benchmark_speculative:")[1:]:
        job = text.split("\n\n")[0]
        command = shlex.split(job.split("Shell command:")[1].split(">")[0])
        jobs[command[command.index("--cell") + 1]] = (job, command)
    assert set(jobs) == {"main", "decode"}
    cells = {"main": ("dense", "early_exit"), "decode": ("dense", "early_exit", "dense-shallow")}
    for cell, arms in cells.items():
        job, command = jobs[cell]
        inputs = job.split("input: ")[1].splitlines()[0].split(", ")
        runs = [f"results/runs/C1-s32/{arm}/shakespeare/seed0" for arm in arms]
        files = ("summary.json", "model.safetensors", "eval.json")
        assert sorted(inputs) == sorted(f"{r}/{f}" for r in runs for f in files), cell
        assert command[command.index("--runs") + 1:] == runs and "--exit-layers" in command
        assert ("--baselines" in command) == (cell == "decode")
    merge = stdout.split("rule merge_speculative:")[1].split("\n\n")[0]
    assert "results/bench/speculative/main.csv" in merge and "results/bench/speculative/decode.csv" in merge
    table = stdout.split("rule table:")
    assert any("results/bench/speculative.csv" in t.split("\n\n")[0] for t in table[1:])


def test_switched_off_nothing_is_planned_and_the_paper_still_builds(tmp_path):
    from test_pipeline import REPO

    text = (REPO / "config" / "smoke.yaml").read_text()
    head, tail = text.split("speculative:")[0], text.split("\nfigures:")[1]
    text = f"{head}speculative: {{enabled: false}}\n\nfigures:{tail}"
    result = _dry_run(tmp_path, text)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "benchmark_speculative" not in result.stdout and "speculative.csv" not in result.stdout
    assert "results/tables/speculative.tex" in result.stdout
