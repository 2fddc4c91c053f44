"""Run directories as transactions: one lock per directory, and the config checks of a resume.

Two `train` processes on one directory (or `evaluate`/`hf export` of a run still training) would mix
weights, config and metrics of different runs and still exit 0. Every command that works on a run
directory therefore holds `run_lock(dir, purpose)`: an `fcntl.flock` on `dir/.lock`. `train` holds it
exclusively and names itself in the file (purpose, pid, host, start time); readers of a finished run
(`evaluate`, `hf export`) share it, so they run side by side (the paper grid schedules both on every run)
and only ever wait for — rather, are refused by — a trainer. The kernel drops the lock when its holder
dies, even by kill -9, so a name left in the file is stale by construction: the next holder clears it and
says so. A finished run on read-only storage (an archive) is read without writing to it: readers lock its
existing `.lock` read-only, or, where there is none, need no lock, since no trainer can write there either.

A finished run (`FINISHED`: summary.json and model.safetensors) is never trained over unless the user
asks by name (`overwrite`): `train` into one refuses in one line, and a resume of one with the same
config does nothing (`finished_summary`).

Resume rules (`should_resume`): a checkpoint may only continue the run it belongs to, so a resume compares
the fields that define a run (everything but `NOT_DEFINING`) and refuses, naming each one, when any differ.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .checkpoint import CheckpointError, read_info
from .config import ConfigError

LOCK_NAME = ".lock"
FINISHED = ("summary.json", "model.safetensors")  # both present: the run finished (summary.json is last)
DERIVED = ("eval.json", "units.csv", "lm_eval.json")  # computed from the weights: stale once it trains afresh
READ_ONLY = frozenset({errno.EACCES, errno.EPERM, errno.EROFS})

# Where/how a run is computed, not what it computes: these may change between a run and its resume.
NOT_DEFINING = frozenset({"data_dir", "threads", "device", "checkpoint_every", "nproc", "compile",
                          "tensorboard"})


class RunDirError(CheckpointError):
    """A run directory cannot be used: locked, a corrupt file, or a failed write. (A CheckpointError, so
    the command line reports it as one line, exit 1.)"""


class RunLocked(RunDirError):
    """Another process holds the run directory's lock."""


class RunFinished(ConfigError):
    """`train` into a finished run without `--overwrite` (a user error: one line, exit 2)."""


def note(message: str) -> None:
    """What train/evaluate decided on their own (auto-resume, recovery, a stale lock): one line on stderr."""
    print(f"sparsedepth: {message}", file=sys.stderr, flush=True)


def _holder(text: str) -> str:
    if not text.strip():  # readers do not name themselves
        return "evaluate or hf export (readers of the finished run)"
    try:
        h = json.loads(text)
        return f"{h['purpose']} (pid {h['pid']} on host {h['host']}, since {h['since']})"
    except (ValueError, KeyError, TypeError):
        return "another process"


@contextmanager
def run_lock(run_dir: str | Path, purpose: str, create: bool = False, shared: bool = False) -> Iterator[Path]:
    """Hold `run_dir`'s lock for the `with` block, or raise RunLocked naming the holder at once (never
    wait: a second trainer on one directory is a mistake to report, not to queue).

    `shared`: a reader of a finished run (evaluate, hf export); readers coexist, and exclude a trainer.
    `create` makes the directory (train); otherwise a missing directory is a RunDirError. Public API for
    every command that writes into or exports from a run directory (train, evaluate, hf export)."""
    run_dir = Path(run_dir)
    if not create and not run_dir.is_dir():
        raise RunDirError(f"run directory {run_dir} does not exist")
    path = run_dir / LOCK_NAME
    while True:
        existed = path.exists()
        fd = _open_lock(run_dir, path, shared)
        if fd is None:  # a finished run on read-only storage without a lock file: nothing can write there
            yield path
            return
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            held_by = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
            os.close(fd)
            raise RunLocked(f"{run_dir} is in use by {held_by}; wait for it to finish") from None
        try:  # a releasing holder unlinks the file: if ours is no longer the one at `path`, start again
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    readers_file = False
    try:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:  # a read-only archive: write nothing
            yield path
            return
        left = os.pread(fd, 4096, 0).decode(errors="replace").strip()
        readers_file = existed and not left  # evaluate/export's (empty): a trainer leaves it as it found it
        if left:  # only a trainer names itself, and none holds the lock now (we do)
            note(f"{run_dir}: taking over the stale lock of {_holder(left)}, which ended without releasing")
        me = {"purpose": purpose, "pid": os.getpid(), "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%dT%H:%M:%S")}
        try:
            os.ftruncate(fd, 0)
            if not shared:  # readers stay anonymous: several may hold the lock at once
                os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        except OSError as e:  # e.g. disk full: the lock is held all the same, but say why it cannot be named
            raise RunDirError(f"cannot write {path}: {e}") from None
        yield path
    finally:
        if not shared and readers_file:  # empty again, as readers left it: the directory is byte-identical
            os.ftruncate(fd, 0)
        elif not shared:  # a reader leaves the file to the others; the next trainer reuses it
            path.unlink(missing_ok=True)  # before unlocking, so a waiter never locks a file going away
        os.close(fd)


def _open_lock(run_dir: Path, path: Path, shared: bool) -> int | None:
    """The lock file's descriptor (read-write, created if need be). A reader of a finished run on storage
    it cannot write gets the existing file read-only (flock works on it), or None where there is none."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        if not (shared and e.errno in READ_ONLY and is_finished(run_dir)):
            raise RunDirError(f"cannot lock {run_dir}: {e}") from None
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RunDirError(f"cannot lock {run_dir}: {e}") from None


def is_finished(run_dir: str | Path) -> bool:
    return all((Path(run_dir) / name).is_file() for name in FINISHED)


def finished_summary(out: Path, given: dict[str, Any], defaults: dict[str, Any], resume: bool,
                     overwrite: bool) -> dict[str, Any] | None:
    """None when `train` may go on into `out`; the run's summary when `out` is a finished run of this very
    config and `resume` (--resume/--auto-resume) asks to continue it: nothing is left to do. Any other
    train into a finished run is refused, naming the fields that differ, unless `overwrite`."""
    if overwrite or not is_finished(out):
        return None
    saved = {**defaults, **read_json(out / "config.json", "the run's config")}
    changed = changed_fields(saved, given)
    again = "pass --overwrite to train it again from step 0, or use another --out"
    if changed:
        raise RunFinished(f"{out} is a finished run of another config ({'; '.join(changed)}); refusing to "
                          f"train over it: {again}")
    if not resume:
        raise RunFinished(f"{out} is a finished run of this config; refusing to train over it: pass "
                          f"--auto-resume to accept it as done, or {again}")
    note(f"{out} is a finished run of this config: nothing to do (--overwrite trains it again)")
    return read_json(out / "summary.json", "the run's summary")


def read_json(path: Path, what: str) -> dict[str, Any]:
    """A JSON file of a run directory, or a one-line RunDirError saying it is damaged."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise RunDirError(f"{path} is missing") from None
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} is corrupt ({what}): {e}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path} is corrupt ({what}): not a JSON object")
    return data


def saved_config(run_dir: str | Path) -> dict[str, Any]:
    """The config a run directory was trained with (what `train --resume` continues when given no
    --config), or {} when it has none."""
    path = Path(run_dir) / "config.json"
    return read_json(path, "the run's config") if path.exists() else {}


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in d.items():
        if isinstance(value, dict) and key != "router_options":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_fields(saved: dict[str, Any], given: dict[str, Any]) -> list[str]:
    """`field (saved → given)` for every run-defining field that differs, dotted for nested ones."""
    a, b = _flatten(saved), _flatten(given)
    for flat in (a, b):  # a relative data_path names the same file as its absolute form (train records that)
        if isinstance(flat.get("data_path"), str):
            flat["data_path"] = os.path.abspath(flat["data_path"])
    keys = sorted(k for k in a.keys() | b.keys() if k.split(".")[0] not in NOT_DEFINING)
    return [f"{k} ({a.get(k)!r} → {b.get(k)!r})" for k in keys if a.get(k) != b.get(k)]


def metrics_upto(path: Path, step: int) -> list[str]:
    """The lines of metrics.jsonl up to `step` (a resume drops what was logged after its checkpoint).

    A torn last line (a job killed mid-append) is dropped; any other unreadable line is a RunDirError,
    raised before the resume replaces anything."""
    if not path.exists():
        return []
    try:
        *lines, torn = path.read_text().split("\n")  # torn: '' when the file ends with a newline
    except (OSError, ValueError) as e:
        raise RunDirError(f"{path} is unreadable: {e}") from None
    kept = []
    for number, line in enumerate(lines, 1):
        try:
            record_step = json.loads(line)["step"]
            if not isinstance(record_step, int):
                raise TypeError(f"step {record_step!r}")
        except (ValueError, KeyError, TypeError) as e:
            raise RunDirError(f"{path} line {number} is corrupt ({type(e).__name__}: {e}); the run's "
                              "learning curve is lost: delete the run directory and train it again") from None
        if record_step <= step:
            kept.append(line)
    if torn:
        note(f"{path}: dropped a half-written last line (a job was killed while logging)")
    return kept


def should_resume(out: Path, given: dict[str, Any], defaults: dict[str, Any], resume: bool,
                  auto_resume: bool) -> bool:
    """Whether `train` continues `out`'s checkpoint: refuse (--resume) or skip (--auto-resume, with a note)
    a checkpoint of another run (`changed_fields`). `given`: the config to train; `defaults`: TrainConfig's,
    for fields added since the checkpoint was written (precision, nproc, compile took their default then)."""
    checkpoint = out / "checkpoint"
    if not checkpoint.exists():
        if resume:
            raise CheckpointError(f"--resume given but {checkpoint} does not exist")
        if auto_resume:
            note(f"auto-resume: no checkpoint in {out}: training from step 0")
        return False
    if not (resume or auto_resume):
        return False
    try:
        info = read_info(checkpoint)
    except CheckpointError as e:
        raise CheckpointError(f"{e} (delete {checkpoint} to train afresh)") from None
    saved = info.get("config") or saved_config(out)  # checkpoints before 'config' was kept: config.json
    changed = changed_fields({**defaults, **saved}, given) if saved else []
    if changed and resume:
        raise ConfigError(f"--resume refuses to change what defines the run in {out}: {'; '.join(changed)} "
                          "(use another --out, or train without --resume to start afresh)")
    if changed:
        note(f"auto-resume: the checkpoint in {out} is of another config ({'; '.join(changed)}): "
             "training afresh from step 0")
        return False
    if auto_resume:
        note(f"auto-resume: resuming {out} from step {info['step']} of {given['steps']}")
    return True
