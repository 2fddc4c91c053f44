"""The optional `lm_eval` rule's parts: the harness's task is our test split, its bits per byte land in
runs.csv beside ours, and on a real tiny run the two measurements agree."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparsedepth.data import encode_documents, tinyshakespeare_path
from sparsedepth.evaluate import evaluate_run
from sparsedepth.harness import held_out_documents, write_task
from sparsedepth.hf_export import export_run
from sparsedepth.study.aggregate import RUNS_COLUMNS, collect_runs
from sparsedepth.train import TrainConfig, load_data, train

# `evaluate` scores the split as one stream in seq_len windows (a tail shorter than one window unscored);
# the harness scores each document in max_seq_len windows. One document, seq_len == max_seq_len: they differ
# only by that tail and the first token (measured: 0.05 %)
TOLERANCE = 0.01


def fake_run(root: Path, variant: str, router: str, modes: list[str]) -> Path:
    """A run directory with the JSON files aggregate reads (values arbitrary but finite)."""
    run = root / "tiny" / variant / "shakespeare" / "seed0"
    run.mkdir(parents=True)
    config = {"dataset": "shakespeare", "seed": 0, "router": router, "capacity": 0.5, "steps": 10,
              "batch_size": 4, "seq_len": 32, "model": {"n_layers": 4, "d_model": 32}}
    split = {"loss": 3.0, "ppl": 20.0, "bpb": 4.0, "layers_per_token": 2.0, "flops_per_token": 200.0,
             "dense_flops_per_token": 400.0}
    entry = {"validation": split, "test": split, "counted_flops_per_token": 210.0,
             "train_flops_per_token": 600.0, "causality_violation": 0.0, "batch_leak": 0.0}
    (run / "config.json").write_text(json.dumps(config))
    (run / "summary.json").write_text(json.dumps({"steps": 10, "n_params": 1234, "train_tokens_per_s": 9.0}))
    (run / "eval.json").write_text(json.dumps({"modes": {m: entry for m in modes}}))
    return run


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A real (tiny) trained and evaluated run, in the study's layout, on a slice of Tiny Shakespeare."""
    source = tinyshakespeare_path()
    if not source.is_file():
        pytest.skip(f"Tiny Shakespeare not found at {source}")
    root = tmp_path_factory.mktemp("lm_eval_rule")
    (root / "slice.txt").write_text(source.read_text()[:60_000])
    cfg = TrainConfig.from_dict({
        "dataset": "tinyshakespeare", "data_path": str(root / "slice.txt"), "data_dir": str(root / "data"),
        "vocab_size": 300, "router": "mod", "capacity": 0.5, "steps": 6, "batch_size": 4, "seq_len": 32,
        "warmup_steps": 1, "eval_every": 6, "eval_batches": 1, "checkpoint_every": 6, "threads": 1,
        "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "max_seq_len": 32},
    })
    run = root / "runs" / "tiny" / "mod" / "tinyshakespeare" / "seed0"
    train(cfg, run, progress=False)
    evaluate_run(run, out_path=run / "eval.json")
    return run, cfg


def test_task_documents_are_the_test_split_evaluate_reads(tiny_run, tmp_path):
    run, cfg = tiny_run
    data = load_data(cfg)
    docs = held_out_documents(run)
    encoded = encode_documents(data.tokenizer, [docs], data.eot_id)
    assert np.array_equal(encoded, np.asarray(data.test))  # decoding and re-encoding loses nothing
    task = write_task(docs, tmp_path / "tasks")
    lines = (task / "documents.jsonl").read_text().splitlines()
    assert [json.loads(line)["text"] for line in lines] == docs
    assert "output_type: loglikelihood_rolling" in (task / "sparsedepth_test.yaml").read_text()


def test_aggregate_puts_lm_eval_bpb_beside_test_bpb_on_the_scored_mode(tmp_path):
    root = tmp_path / "runs"
    mod = fake_run(root, "mod", "mod", ["causal", "topk"])
    fake_run(root, "dense", "dense", ["causal"])
    assert list(collect_runs(root).columns) == RUNS_COLUMNS  # no harness results: the contract's columns
    (mod / "lm_eval.json").write_text(json.dumps({"bits_per_byte": 4.5, "mode": "causal"}))
    table = collect_runs(root)
    assert table.columns[list(table.columns).index("test_bpb") + 1] == "lm_eval_bpb"
    by_arm = dict(zip(table["arm"], table["lm_eval_bpb"], strict=True))
    assert by_arm["mod"] == 4.5 and np.isnan(by_arm["mod[topk]"]) and np.isnan(by_arm["dense"])
    weights = mod / "model.safetensors"  # retrained after the harness ran: its number is not this run's
    weights.write_bytes(b"")
    os.utime(mod / "lm_eval.json", (0, 0))
    assert "lm_eval_bpb" not in collect_runs(root).columns


@pytest.mark.slow  # export + lm-evaluation-harness in a fresh interpreter: ~30 s
def test_harness_on_a_tiny_run_agrees_with_our_evaluation(tiny_run, tmp_path):
    if importlib.util.find_spec("lm_eval") is None:
        pytest.skip("lm-evaluation-harness is not installed (pip install 'sparsedepth[eval]')")
    run, _ = tiny_run
    export_run(run, run.parent / "hf")
    cmd = [sys.executable, "-m", "sparsedepth.harness", "--run", str(run), "--model", str(run.parent / "hf"),
           "--out", str(run / "lm_eval.json"), "--batch-size", "4"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads((run / "lm_eval.json").read_text())
    assert result["mode"] == "causal" and result["documents"] == 1 and result["lm_eval"]
    ours = json.loads((run / "eval.json").read_text())["modes"]["causal"]["test"]["bpb"]
    assert result["bits_per_byte"] == pytest.approx(ours, rel=TOLERANCE)
    table = collect_runs(run.parents[3])
    causal = table[table["mode"] == "causal"].iloc[0]
    assert causal["lm_eval_bpb"] == result["bits_per_byte"] and causal["test_bpb"] == ours
    shutil.rmtree(run.parent / "hf")
