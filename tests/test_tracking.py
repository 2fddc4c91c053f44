"""TensorBoard events are a view of metrics.jsonl: the same scalars at the same steps, rebuilt on resume."""

import json

import pytest
from test_faults import config, data_dir  # noqa: F401 (the session's prepared corpus)

from sparsedepth.tracking import TB_DIR, Tracker, tag
from sparsedepth.train import TrainConfig, train

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402


def scalars(run) -> dict[str, list[tuple[int, float]]]:
    events = EventAccumulator(str(run / TB_DIR))
    events.Reload()
    return {name: [(e.step, e.value) for e in events.Scalars(name)] for name in events.Tags()["scalars"]}


def records(run) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for line in (run / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record.items():
            if key != "step":
                out.setdefault(tag(record, key), []).append((record["step"], value))
    return out


def test_events_hold_exactly_the_metrics_records_after_a_resume(data_dir, tmp_path):  # noqa: F811
    """A job killed after logging step 9 but before its checkpoint: the resume from step 6 drops line 9
    from metrics.jsonl, and the events it had written for step 9 with it."""
    from torch.utils.tensorboard import SummaryWriter

    cfg = TrainConfig.from_dict(config(data_dir, tensorboard=True))
    run = tmp_path / "run"
    train(cfg, run, stop_after=6, progress=False)
    with (run / "metrics.jsonl").open("a") as f:
        f.write(json.dumps({"step": 9, "loss": 99.0}) + "\n")
    with SummaryWriter(str(run / TB_DIR)) as killed:
        killed.add_scalar("train/loss", 99.0, 9)
    train(cfg, run, resume=True, progress=False)
    expected, got = records(run), scalars(run)
    assert set(got) == set(expected) and {"train/loss", "val/loss", "val/train_flops"} <= set(got)
    for name, points in expected.items():
        assert [s for s, _ in got[name]] == [s for s, _ in points], name
        assert [v for _, v in got[name]] == pytest.approx([v for _, v in points], rel=1e-6), name
    assert 99.0 not in [v for _, v in got["train/loss"]]


def test_off_by_default_and_turning_it_off_removes_stale_events(data_dir, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    train(TrainConfig.from_dict(config(data_dir, steps=3, tensorboard=True)), run, progress=False)
    assert scalars(run)["train/loss"]
    train(TrainConfig.from_dict(config(data_dir, steps=3)), run, progress=False, overwrite=True)
    assert not (run / TB_DIR).exists()
    Tracker(False).log({"step": 1, "loss": 1.0})  # disabled: a no-op, no writer
