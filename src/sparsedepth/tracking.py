"""Optional TensorBoard view of a run: metrics.jsonl's records, as events in `OUT/tensorboard/`.

metrics.jsonl stays the record (statistics and figures read it); the events are a view of the same
records, written as each is appended, so `tensorboard --logdir results/runs` shows every run's curves. A
resume keeps metrics.jsonl up to its checkpoint, so the events are rebuilt from exactly those lines and a
resumed run never shows a step twice. Off by default (`TrainConfig.tensorboard`); needs the `tensorboard`
extra.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .config import ConfigError

TB_DIR = "tensorboard"


def tag(record: dict[str, Any], key: str) -> str:
    """`train/loss`, `train/lr`, …; a validation record's (`val_loss`, `train_flops`): `val/loss`,
    `val/train_flops`."""
    return f"val/{key.removeprefix('val_')}" if "val_loss" in record else f"train/{key}"


class Tracker:
    """Writes each metrics record as scalars when `enabled`; does nothing otherwise. Created while a run is
    validated (a missing package fails it then), started when the run commits to its directory."""

    def __init__(self, enabled: bool) -> None:
        self.writer = None
        self.writer_class = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise ConfigError("tensorboard: true needs the tensorboard package (pip install "
                                  "'sparsedepth[tensorboard]')") from None
            self.writer_class = SummaryWriter

    def start(self, out: Path, kept: list[str]) -> None:
        """(Re)build `out/tensorboard` from the metrics lines the run keeps; removes it when disabled, since
        events past a resumed checkpoint (or of an earlier config) would be curves no record backs."""
        shutil.rmtree(out / TB_DIR, ignore_errors=True)
        if self.writer_class is None:
            return
        self.writer = self.writer_class(str(out / TB_DIR))
        for line in kept:
            self.log(json.loads(line))

    def log(self, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "step" and isinstance(value, int | float):
                self.writer.add_scalar(tag(record, key), value, record["step"])
        self.writer.flush()  # on disk with its metrics line: a killed run's curves are as far as its record

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
