"""Training on real text: loss falls, resume is exact, runs are deterministic, failures are clean."""

import json
import math

import pytest
import torch

from sparsedepth.checkpoint import CheckpointError
from sparsedepth.config import ConfigError
from sparsedepth.evaluate import evaluate_run
from sparsedepth.train import TrainConfig, TrainingDiverged, make_model, train


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data"))


def tiny(data_dir: str, **overrides) -> TrainConfig:
    base = {
        "dataset": "shakespeare", "data_dir": data_dir, "vocab_size": 512, "steps": 40, "batch_size": 8,
        "seq_len": 64, "lr": 3e-3, "warmup_steps": 5, "eval_every": 10, "log_every": 10, "eval_batches": 4,
        "checkpoint_every": 20, "threads": 1,
        "model": {"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 64},
    }
    return TrainConfig.from_dict({**base, **overrides})


def val_curve(run_dir) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["val_loss"] for r in lines if "val_loss" in r]


@pytest.mark.parametrize("router, capacity", [("dense", 1.0), ("probe", 0.5), ("mod", 0.125)])
def test_short_run_on_real_text_lowers_validation_loss(router, capacity, data_dir, tmp_path):
    summary = train(tiny(data_dir, router=router, capacity=capacity, steps=60), tmp_path, progress=False)
    curve = val_curve(tmp_path)
    assert curve[-1] < curve[0] - 0.3, curve
    assert summary["val_loss"] < math.log(512) - 0.5  # well below the uniform guess
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "summary.json").exists()


def test_resume_after_kill_is_exact(data_dir, tmp_path):
    """Train 2N steps straight vs N, stop (as a killed job would, after its checkpoint), resume N."""
    cfg = tiny(data_dir, router="probe", capacity=0.5, steps=40, checkpoint_every=20)
    straight = train(cfg, tmp_path / "straight", progress=False)
    partial = train(cfg, tmp_path / "resumed", stop_after=20, progress=False)
    assert partial == {"stopped_at": 20} and not (tmp_path / "resumed" / "model.safetensors").exists()
    resumed = train(cfg, tmp_path / "resumed", resume=True, progress=False)
    assert resumed["final_train_loss"] == straight["final_train_loss"]
    assert resumed["val_loss"] == straight["val_loss"]
    assert resumed["train_flops"] == straight["train_flops"]  # the counter is restored exactly
    strip = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
             for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()]
    ref = [{k: v for k, v in json.loads(line).items() if k != "tokens_per_s"}
           for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert strip == ref


def test_training_flops_are_counted_logged_and_match_the_plan(data_dir, tmp_path):
    """MoD's top-k routing is exact, so the FLOPs spent equal the plan; the learning curve carries the
    cumulative count, ending at the summary's."""
    summary = train(tiny(data_dir, router="mod", capacity=0.125, steps=20, eval_every=5), tmp_path,
                    progress=False)
    assert summary["train_flops"] == pytest.approx(summary["planned_train_flops"], rel=1e-9)
    spent = [r["train_flops"] for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
             if "val_loss" in r]
    assert len(spent) == 4 and all(a < b for a, b in zip(spent, spent[1:], strict=False))
    assert spent[-1] == summary["train_flops"] and spent[0] == pytest.approx(spent[-1] / 4, rel=1e-9)


def test_same_seed_same_metrics_and_different_seed_differs(data_dir, tmp_path):
    a = train(tiny(data_dir, router="random", capacity=0.5, steps=20), tmp_path / "a", progress=False)
    b = train(tiny(data_dir, router="random", capacity=0.5, steps=20), tmp_path / "b", progress=False)
    c = train(tiny(data_dir, router="random", capacity=0.5, steps=20, seed=1), tmp_path / "c", progress=False)
    assert a["val_loss"] == b["val_loss"] and a["final_train_loss"] == b["final_train_loss"]
    assert a["val_loss"] != c["val_loss"]


def test_nan_loss_stops_with_clear_error_and_no_final_outputs(data_dir, tmp_path, monkeypatch):
    def poisoned(cfg, vocab_size):
        model = make_model(cfg, vocab_size)
        with torch.no_grad():
            model.wte.weight[0, 0] = float("nan")
        return model

    monkeypatch.setattr("sparsedepth.train.make_model", poisoned)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 0"):
        train(tiny(data_dir), tmp_path, progress=False)
    assert not (tmp_path / "model.safetensors").exists() and not (tmp_path / "summary.json").exists()


def test_evaluate_reports_both_mod_modes(data_dir, tmp_path):
    train(tiny(data_dir, router="mod", capacity=0.25, steps=10), tmp_path, progress=False)
    result = evaluate_run(tmp_path, max_batches=2, out_path=tmp_path / "eval.json")
    assert set(result["modes"]) == {"causal", "topk"}
    causal, topk = result["modes"]["causal"], result["modes"]["topk"]
    assert causal["causality_violation"] < 1e-5 and topk["causality_violation"] > 1e-5
    assert causal["batch_leak"] < 1e-5
    for entry in (causal, topk):
        assert entry["validation"]["flops_per_token"] < entry["validation"]["dense_flops_per_token"]
        assert entry["test"]["ppl"] == pytest.approx(math.exp(entry["test"]["loss"]))
    assert json.loads((tmp_path / "eval.json").read_text()) == json.loads(json.dumps(result))


def test_corrupt_checkpoint_is_a_clear_error(data_dir, tmp_path):
    cfg = tiny(data_dir, steps=20, checkpoint_every=10)
    train(cfg, tmp_path, stop_after=10, progress=False)
    (tmp_path / "checkpoint" / "state.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt checkpoint"):
        train(cfg, tmp_path, resume=True, progress=False)
    (tmp_path / "checkpoint" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read weights"):
        train(cfg, tmp_path, resume=True, progress=False)


def test_resume_without_checkpoint_is_a_clear_error(data_dir, tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        train(tiny(data_dir), tmp_path, resume=True, progress=False)


@pytest.mark.parametrize("bad, message", [
    ({"router": "nope"}, "unknown router 'nope'"),
    ({"capacity": 0}, "capacity"),
    ({"capacity": 1.5}, "capacity"),
    ({"steps": "ten"}, "steps"),
    ({"learning_rate": 1.0}, "learning_rate"),
    ({"model": {"d_model": 30, "n_heads": 4}}, "divisible"),
    ({"seq_len": 512}, "max_seq_len"),
    ({"router_options": {"bogus": 1}, "router": "mod"}, "router_options"),
])
def test_bad_config_is_rejected_naming_the_problem(bad, message, data_dir, tmp_path):
    with pytest.raises(ConfigError, match=message):
        cfg = TrainConfig.from_dict({"data_dir": data_dir, "vocab_size": 512, "steps": 1, **bad})
        train(cfg, tmp_path, progress=False)


def test_checkpoint_holds_no_pickles(data_dir, tmp_path):
    train(tiny(data_dir, steps=10, checkpoint_every=10), tmp_path, progress=False)
    for f in (tmp_path / "checkpoint").iterdir():
        assert f.suffix in {".safetensors", ".json"}, f


def test_a_failed_train_leaves_the_finished_run_alone(data_dir, tmp_path):
    """Bad data fails before anything is replaced; --resume of a finished run (even without its
    checkpoint) has nothing to do, and does nothing."""
    from sparsedepth.data import DataError

    cfg = tiny(data_dir, steps=3, checkpoint_every=3)
    train(cfg, tmp_path, progress=False)
    finished = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises((ConfigError, DataError), match="shakespear"):
        train(tiny(data_dir, steps=3, dataset="shakespear"), tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == finished
    for f in (tmp_path / "checkpoint").iterdir():
        f.unlink()
    (tmp_path / "checkpoint").rmdir()
    assert train(cfg, tmp_path, resume=True, progress=False) == json.loads(finished["summary.json"])
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == finished


def test_divergence_on_the_last_update_fails_the_run(data_dir, tmp_path, monkeypatch):
    """The last update is checked too: non-finite weights (an infinite step) or gradients fail the run."""
    import sparsedepth.train as train_module

    cfg = tiny(data_dir, steps=4, eval_every=2, log_every=2)
    finite_lr = train_module.lr_at
    monkeypatch.setattr(train_module, "lr_at", lambda step, c: math.inf if step == 3 else finite_lr(step, c))
    with pytest.raises(TrainingDiverged, match="weights became non-finite at step 3"):
        train(cfg, tmp_path / "lr", progress=False)
    assert not (tmp_path / "lr" / "model.safetensors").exists()
    assert not (tmp_path / "lr" / "summary.json").exists()
    monkeypatch.setattr(train_module, "lr_at", finite_lr)

    def poisoned(cfg, vocab_size):
        model = make_model(cfg, vocab_size)
        calls = []
        model.wte.weight.register_hook(lambda g: g * math.nan if calls.append(1) or len(calls) == 4 else g)
        return model

    monkeypatch.setattr(train_module, "make_model", poisoned)
    with pytest.raises(TrainingDiverged, match="gradient norm is nan at step 3"):
        train(cfg, tmp_path / "grad", progress=False)
    assert not (tmp_path / "grad" / "summary.json").exists()


def test_resume_refuses_a_changed_run_and_auto_resume_says_what_it_does(data_dir, tmp_path, capsys):
    short = {"steps": 6, "checkpoint_every": 3, "eval_every": 3, "log_every": 3}
    train(tiny(data_dir, **short), tmp_path, stop_after=3, progress=False)
    saved = (tmp_path / "config.json").read_text()
    with pytest.raises(ConfigError, match=r"lr \(0.003 → 0.001\); seed \(0 → 1\)"):
        train(tiny(data_dir, **short, seed=1, lr=1e-3), tmp_path, resume=True, progress=False)
    wider = tiny(data_dir, **short, model={"d_model": 64, "n_layers": 4, "n_heads": 4, "max_seq_len": 64})
    with pytest.raises(ConfigError, match=r"model.d_model \(32 → 64\)"):
        train(wider, tmp_path, resume=True, progress=False)
    assert (tmp_path / "config.json").read_text() == saved
    capsys.readouterr()
    train(tiny(data_dir, **short, threads=2), tmp_path, auto_resume=True, progress=False)  # not run-defining
    assert f"resuming {tmp_path} from step 3 of 6" in capsys.readouterr().err


def test_evaluate_refuses_non_finite_results(data_dir, tmp_path, monkeypatch):
    from sparsedepth.evaluate import NonFiniteLoss

    train(tiny(data_dir, steps=2), tmp_path, progress=False)
    monkeypatch.setattr("sparsedepth.evaluate.causality_violation", lambda *a, **k: math.nan)
    with pytest.raises(NonFiniteLoss, match="causality_violation is nan"):
        evaluate_run(tmp_path, max_batches=1, out_path=tmp_path / "eval.json")
    assert not (tmp_path / "eval.json").exists()
