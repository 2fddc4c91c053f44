"""The tidy runs table: fake run directories for exact values, one real tiny run end to end."""

import json
import math

import pandas as pd
import pytest

from sparsedepth.evaluate import evaluate_run
from sparsedepth.study.aggregate import RUNS_COLUMNS, AggregateError, collect_runs, main
from sparsedepth.train import TrainConfig, train


def split(loss: float, flops: float) -> dict:
    return {"loss": loss, "ppl": math.exp(loss), "layers_per_token": 2.0, "flops_per_token": flops,
            "dense_flops_per_token": 400.0, "n_tokens": 1024}


def mode(loss: float, flops: float = 200.0) -> dict:
    return {"validation": split(loss, flops), "test": split(loss + 0.1, flops),
            "counted_flops_per_token": 210.0, "train_flops_per_token": 600.0,
            "causality_violation": 0.0, "batch_leak": 0.0}


def fake_run(root, model: str, variant: str, router: str, seed: int, modes: dict, dataset="shakespeare"):
    run = root / model / variant / dataset / f"seed{seed}"
    run.mkdir(parents=True)
    config = {"dataset": dataset, "seed": seed, "router": router,
              "capacity": 0.5 if router != "dense" else 1.0,
              "steps": 10, "batch_size": 4, "seq_len": 32, "model": {"n_layers": 4, "d_model": 32}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps({"steps": 10, "n_params": 1234, "train_tokens_per_s": 99.0}))
    (run / "eval.json").write_text(json.dumps({"router": router, "dataset": dataset, "seed": seed,
                                               "capacity": config["capacity"], "modes": modes}))
    return run


@pytest.fixture
def runs_root(tmp_path):
    root = tmp_path / "runs"
    fake_run(root, "tiny", "mod", "mod", 1, {"causal": mode(3.2), "topk": mode(3.1)})
    fake_run(root, "tiny", "dense", "dense", 1, {"causal": mode(3.0, 400.0)})
    fake_run(root, "tiny", "dense", "dense", 0, {"causal": mode(3.05, 400.0)})
    return root


def test_fake_runs_give_one_row_per_run_and_mode(runs_root):
    table = collect_runs(runs_root)
    assert list(table.columns) == RUNS_COLUMNS
    assert list(zip(table["arm"], table["seed"], strict=True)) == [
        ("dense", 0), ("dense", 1), ("mod", 1), ("mod[topk]", 1)]
    topk = table[table["arm"] == "mod[topk]"].iloc[0]
    assert (topk["model"], topk["variant"], topk["router"], topk["mode"]) == ("tiny", "mod", "mod", "topk")
    assert topk["val_loss"] == 3.1 and topk["test_loss"] == pytest.approx(3.2)
    assert topk["val_ppl"] == pytest.approx(math.exp(3.1)) and topk["capacity"] == 0.5
    assert topk["train_flops"] == 600.0 * 10 * 4 * 32
    assert (topk["n_layers"], topk["d_model"], topk["n_params"]) == (4, 32, 1234)
    assert topk["run_dir"].endswith("tiny/mod/shakespeare/seed1")


def test_explicit_list_is_sorted_like_the_root_scan(runs_root):
    dirs = sorted(runs_root.glob("*/*/*/seed*"), reverse=True)
    pd.testing.assert_frame_equal(collect_runs(dirs), collect_runs(runs_root))


def test_unfinished_or_mislabelled_run_is_a_clear_error(runs_root):
    run = runs_root / "tiny" / "mod" / "shakespeare" / "seed1"
    (run / "eval.json").unlink()
    with pytest.raises(AggregateError, match=r"seed1: missing eval\.json"):
        collect_runs(runs_root)
    (run / "summary.json").unlink()
    with pytest.raises(AggregateError, match=r"seed1: missing summary\.json"):
        collect_runs([run])
    wrong = fake_run(runs_root, "tiny", "dense", "dense", 7, {"causal": mode(3.0)})
    wrong.rename(runs_root / "tiny" / "dense" / "shakespeare" / "seed8")
    with pytest.raises(AggregateError, match="config.json says shakespeare/seed7"):
        collect_runs([runs_root / "tiny" / "dense" / "shakespeare" / "seed8"])


@pytest.mark.parametrize("where", ["eval", "summary"])
def test_a_diverged_run_is_refused_naming_it_and_nothing_is_written(where, runs_root, tmp_path, capsys):
    """Issue 13: a NaN loss on the last step must not pass as a finished run (nor drop a seed silently)."""
    run = runs_root / "tiny" / "mod" / "shakespeare" / "seed1"
    if where == "eval":
        fake_eval = json.loads((run / "eval.json").read_text())
        fake_eval["modes"]["causal"]["test"]["loss"] = float("nan")
        (run / "eval.json").write_text(json.dumps(fake_eval))
    else:
        summary = json.loads((run / "summary.json").read_text())
        (run / "summary.json").write_text(json.dumps({**summary, "final_train_loss": float("inf")}))
    out = tmp_path / "runs.csv"
    assert main(["--out", str(out), "--root", str(runs_root)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(run) in err and ("nan" in err.lower() or "inf" in err)
    assert not out.exists()


def test_cli_writes_csv_and_errors_cleanly(runs_root, tmp_path, capsys):
    out = tmp_path / "results" / "runs.csv"
    dirs = [str(p) for p in sorted(runs_root.glob("*/*/*/seed*"))]
    assert main(["--out", str(out), *dirs]) == 0
    assert len(pd.read_csv(out)) == 4
    assert main(["--out", str(out), "--root", str(runs_root)]) == 0
    assert main(["--out", str(tmp_path / "x.csv"), str(tmp_path / "nope" / "m" / "v" / "d" / "seed0")]) == 2
    assert "missing config.json" in capsys.readouterr().err
    assert main(["--out", str(tmp_path / "x.csv")]) == 2
    assert not (tmp_path / "x.csv").exists()


def test_real_tiny_run_trains_evaluates_and_aggregates(tmp_path):
    cfg = TrainConfig.from_dict({
        "dataset": "shakespeare", "data_dir": str(tmp_path / "data"), "vocab_size": 300, "router": "mod",
        "capacity": 0.5, "steps": 4, "batch_size": 2, "seq_len": 16, "warmup_steps": 1, "eval_every": 4,
        "log_every": 2, "eval_batches": 1, "checkpoint_every": 4, "threads": 1,
        "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_seq_len": 16},
    })
    run = tmp_path / "runs" / "tiny" / "mod" / "shakespeare" / "seed0"
    summary = train(cfg, run, progress=False)
    evaluate_run(run, max_batches=1, out_path=run / "eval.json")
    table = collect_runs([run])
    assert list(table["arm"]) == ["mod", "mod[topk]"]
    assert table.notna().all().all()
    assert (table["n_params"] == summary["n_params"]).all() and (table["steps"] == 4).all()
    assert (table["train_flops"] > 0).all()
    # top-k keeps exactly half the tokens; the causal rule of a 4-step model may still keep them all
    topk = table[table["mode"] == "topk"]
    assert (topk["flops_per_token"] < topk["dense_flops_per_token"]).all()
