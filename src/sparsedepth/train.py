"""Training loop: AdamW, warm-up + cosine, clipping, router aux losses, exact resume, metrics.jsonl.

Every run directory holds: config.json (resolved), metrics.jsonl, checkpoint/ (latest, for --resume),
and on success model.safetensors + summary.json. The last step's checkpoint keeps no optimizer state and
shares its weights with model.safetensors (a hard link), so a finished run costs its weights once on disk
and still re-finishes from its checkpoint if its outputs are deleted (Snakemake does before a rerun).
A run that fails leaves no model.safetensors/summary.json, so a half-finished run can never pass for a
finished one, and a finished one is never trained over unless asked (`overwrite`:
`rundir.finished_summary`). Data paths are recorded absolute, so a run evaluates from any directory. A run
is a transaction (`rundir`): it holds the directory's lock, and validates data, model and checkpoint
before it replaces anything already there; a non-finite loss, gradient, weight or validation loss at any
step fails it. The training FLOPs spent
(analytic, from each step's actual routing) are counted, checkpointed and logged with every validation
loss, so learning curves can be compared at matched compute.

Data-parallel (`nproc` > 1, or under torchrun): see `distributed`; `batch_size` is the global batch, so a
run means the same whatever its process count. Precision (`precision`, `compile`): see `precision`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import subprocess
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from .atomic import fault_point, write_text
from .checkpoint import (
    CheckpointError,
    load_checkpoint,
    recover_checkpoint,
    save_checkpoint,
    save_weights,
    share_weights,
)
from .config import ConfigError, ModelConfig, ModelShape, from_dict, to_dict
from .data import DataError, TokenData, eval_batches, prepare, sample_batch
from .distributed import World, broadcast, mean, process_group, seed_step, shard, total, wrap
from .flops import train_flops_per_step, train_step_flops
from .model import SparseDepthModel, build_model
from .precision import PRECISIONS, allow_tf32, autocast_context, fused_adamw
from .precision import summary as precision_summary
from .routing import ROUTERS
from .rundir import DERIVED, RunDirError, finished_summary, metrics_upto, note, run_lock, should_resume
from .tracking import Tracker


class TrainingDiverged(RuntimeError):
    """The loss, a gradient, a weight or the validation loss became NaN or infinite."""


@dataclass
class TrainConfig:
    dataset: str = field(default="shakespeare", metadata={"help": "corpus (see sparsedepth.data.CORPORA)"})
    data_dir: str = field(default="results/data", metadata={
        "help": "directory of prepared token files, one subdirectory per dataset and vocabulary "
                "(relative to the current directory)"})
    data_path: str | None = field(default=None, metadata={
        "help": "local corpus file/dir (default: the corpus's package, $SPARSEDEPTH_DATA_DIR or the hub)"})
    vocab_size: int = field(default=4096, metadata={
        "minimum": 257, "maximum": 65535,
        "help": "vocabulary size (257: the bytes + end-of-text; more: byte-level BPE)"})
    router: str = field(default="dense", metadata={"help": "router name (see sparsedepth.ROUTERS)"})
    capacity: float = field(default=1.0, metadata={"exclusiveMinimum": 0, "maximum": 1,
                                                   "help": "target fraction of tokens a routed block runs"})
    route_every: int | None = field(default=None, metadata={"help": "route every k-th block"})
    router_options: dict = field(default_factory=dict, metadata={"help": "router keyword options (JSON)"})
    model: ModelShape = field(default_factory=ModelShape, metadata={"help": "model shape"})
    steps: int = field(default=300, metadata={"minimum": 1, "help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={
        "minimum": 1, "help": "sequences per step (all processes together: each of nproc takes its share)"})
    seq_len: int = field(default=128, metadata={"minimum": 2, "help": "tokens per training sequence"})
    lr: float = field(default=3e-3, metadata={"exclusiveMinimum": 0, "help": "peak learning rate (AdamW)"})
    min_lr_ratio: float = field(default=0.1, metadata={"minimum": 0, "maximum": 1,
                                                       "help": "final learning rate as a fraction of lr"})
    warmup_steps: int = field(default=30, metadata={"minimum": 0, "help": "linear warm-up steps"})
    weight_decay: float = field(default=0.1, metadata={"minimum": 0, "help": "AdamW decay of matrices"})
    grad_clip: float = field(default=1.0, metadata={"minimum": 0, "help": "gradient norm clip (0: off)"})
    log_every: int = field(default=10, metadata={"minimum": 1, "help": "steps between metrics lines"})
    eval_every: int = field(default=100, metadata={"minimum": 1, "help": "steps between validations"})
    eval_batches: int = field(default=8, metadata={"minimum": 1, "help": "batches per validation"})
    checkpoint_every: int = field(default=100, metadata={"minimum": 1, "help": "steps between checkpoints"})
    seed: int = field(default=0, metadata={"minimum": 0, "help": "seed of weights and data order"})
    threads: int = field(default=0, metadata={"minimum": 0, "help": "torch CPU threads (0: torch's default)"})
    device: str = field(default="cpu", metadata={"enum": ["cpu", "cuda"], "help": "cpu or cuda"})
    nproc: int = field(default=1, metadata={"minimum": 1, "help": "data-parallel processes (torchrun on this "
                                            "node; gloo on cpu, one GPU each on cuda)"})
    precision: str = field(default="auto", metadata={"enum": list(PRECISIONS), "help": "bf16 (autocast) or "
                                                     "fp32; auto: bf16 on cuda, fp32 on cpu"})
    compile: bool = field(default=False, metadata={"help": "torch.compile the model"})
    tensorboard: bool = field(default=False, metadata={
        "help": "also write metrics.jsonl's records as TensorBoard events in OUT/tensorboard (the "
                "`tensorboard` extra)"})

    def __post_init__(self) -> None:
        if self.router not in ROUTERS:
            raise ConfigError(f"unknown router {self.router!r}; known: {', '.join(sorted(ROUTERS))}")
        if not (0.0 < self.capacity <= 1.0):
            raise ConfigError(f"capacity must be in (0, 1], got {self.capacity}")
        if self.seq_len > self.model.max_seq_len:
            raise ConfigError(f"seq_len {self.seq_len} exceeds model.max_seq_len {self.model.max_seq_len}")
        if self.batch_size % self.nproc:
            raise ConfigError(f"batch_size {self.batch_size} must be a multiple of nproc {self.nproc} (it is "
                              "the global batch, split evenly over the processes)")

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        return from_dict(cls, data, "train config")


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to min_lr_ratio·lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_model(cfg: TrainConfig, vocab_size: int) -> SparseDepthModel:
    model_cfg = ModelConfig(**{**to_dict(cfg.model), "vocab_size": vocab_size})
    try:
        return build_model(model_cfg, cfg.router, cfg.capacity, cfg.route_every, **cfg.router_options)
    except TypeError as e:
        raise ConfigError(f"invalid router_options for {cfg.router!r}: {e}") from None


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: str = "cpu") -> torch.optim.AdamW:
    """Weight decay on matrices only (nanoGPT's rule); biases, norms and gains are left alone. Fused on
    CUDA (`precision.fused_adamw`)."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    fused = fused_adamw(device)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), foreach=False, fused=fused or None)


@torch.no_grad()
def validation_loss(model: SparseDepthModel, tokens, cfg: TrainConfig, device: str) -> float:
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for x, y in eval_batches(tokens, cfg.batch_size, cfg.seq_len, cfg.eval_batches):
        with autocast_context(device, cfg.precision):
            out = model(x.to(device), y.to(device))
        total += out.loss.item() * y.numel()
        count += y.numel()
    model.train(was_training)
    if not math.isfinite(total / count):
        raise TrainingDiverged(f"validation loss is {total / count}: the model diverged")
    return total / count


def _check_update(model: SparseDepthModel, opt: torch.optim.Optimizer, cfg: TrainConfig, step: int) -> None:
    """Clip and apply the gradients, failing on a non-finite gradient or weight: a divergence on the last
    update would otherwise reach model.safetensors and summary.json as a finished run."""
    params = [p for p in model.parameters() if p.grad is not None]
    if cfg.grad_clip > 0:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    if not torch.isfinite(norm):
        raise TrainingDiverged(f"gradient norm is {norm.item()} at step {step} (lr {lr_at(step, cfg):.2e}); "
                               "lower the learning rate or check the data")
    opt.step()
    if not torch.stack([torch.isfinite(p).all() for p in params]).all():
        raise TrainingDiverged(f"weights became non-finite at step {step} (lr {lr_at(step, cfg):.2e}); "
                               "lower the learning rate")


def git_sha() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,  # of the cwd
                              timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def load_data(cfg: TrainConfig) -> TokenData:
    if Path(cfg.data_dir).exists() and not Path(cfg.data_dir).is_dir():
        raise DataError(f"data_dir {cfg.data_dir} is a file: give a directory for the prepared data")
    directory = Path(cfg.data_dir) / f"{cfg.dataset}-v{cfg.vocab_size}"
    return TokenData.load(prepare(cfg.dataset, directory, cfg.vocab_size, cfg.data_path))


def _append(path: Path, record: dict, tracker: Tracker) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record) + "\n")
    tracker.log(record)


def absolute_paths(cfg: TrainConfig) -> TrainConfig:
    """`cfg` with data_dir and data_path absolute (of the current directory): what config.json records,
    so the run can be evaluated and exported from anywhere."""
    path = cfg.data_path and os.path.abspath(cfg.data_path)
    return dataclasses.replace(cfg, data_dir=os.path.abspath(cfg.data_dir), data_path=path)


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, stop_after: int | None = None,
          progress: bool = True, auto_resume: bool = False, overwrite: bool = False) -> dict:
    """Train one run into `out_dir` under its lock; returns the summary. `resume`: continue its checkpoint
    or fail; `auto_resume`: continue it when it is of this run, else start afresh (saying which, on
    stderr). A finished run is refused (`rundir.finished_summary`) unless `overwrite`, and returned as is
    to a resume of the same config. `stop_after` ends early after checkpointing (what a killed job leaves
    behind), so resume can be tested. Under torchrun every process calls this; only rank 0 locks and
    writes `out_dir`, and only it returns the summary (the others: {})."""
    out, cfg = Path(out_dir), absolute_paths(cfg)
    if overwrite and (resume or auto_resume):
        raise ConfigError("--overwrite trains afresh from step 0: it cannot be combined with --resume or "
                          "--auto-resume")
    with process_group(cfg.device) as world:
        if world.distributed and (cfg.batch_size % world.size or cfg.nproc not in (1, world.size)):
            raise ConfigError(f"torchrun started {world.size} processes for nproc {cfg.nproc} and batch_size "
                              f"{cfg.batch_size} (the global batch, which they must split evenly)")
        with run_lock(out, "train", create=True) if world.main else nullcontext():
            done = finished_summary(out, to_dict(cfg), to_dict(TrainConfig()), resume or auto_resume,
                                    overwrite) if world.main else None
            if broadcast(done is not None, world):  # before anything in `out` is touched
                return done or {}
            try:
                return _train_locked(cfg, out, resume, auto_resume, stop_after, progress, world)
            except OSError as e:  # e.g. disk full: one line, and the run stays unfinished
                raise RunDirError(f"training {out} failed: {e}") from None


def _train_locked(cfg: TrainConfig, out: Path, resume: bool, auto_resume: bool, stop_after: int | None,
                  progress: bool, world: World) -> dict:
    """Validate everything (data, model, checkpoint, metrics) before replacing anything, then train. Rank 0
    decides and writes; the other ranks read the data and checkpoint it decided on."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = world.device(cfg.device)
    allow_tf32(device)
    if world.main:
        recovered = recover_checkpoint(out / "checkpoint")
        if recovered:
            note(recovered)
        for leftover in [*out.glob("*.tmp"), *out.glob("checkpoint/*.tmp")]:  # of a killed job (never read)
            leftover.unlink()
        resume = should_resume(out, to_dict(cfg), to_dict(TrainConfig()), resume, auto_resume)
        data = load_data(cfg)  # rank 0 prepares the data, if needed, before the others read it
    resume = broadcast(resume, world)
    if not world.main:
        data = load_data(cfg)
    model = make_model(cfg, data.vocab_size).to(device)
    opt = make_optimizer(model, cfg, device)
    data_rng = torch.Generator().manual_seed(cfg.seed)
    metrics, tracker = out / "metrics.jsonl", Tracker(cfg.tensorboard and world.main)
    start, spent, kept = 0, 0.0, []  # spent: training FLOPs so far; kept: metrics lines up to the checkpoint
    if resume:
        info = load_checkpoint(out / "checkpoint", model, opt, data_rng)
        for group in opt.param_groups:  # the checkpoint's flags are of the device it was written on
            group.update(foreach=False, fused=fused_adamw(device) or None)
        start = info["step"]
        if start < cfg.steps and not info.get("optimizer_state", True):
            raise CheckpointError(f"{out / 'checkpoint'} holds no optimizer state (a finished run's) and "
                                  f"cannot continue from step {start} to {cfg.steps}; train without --resume")
        spent = info.get("train_flops")
        if spent is None:  # a checkpoint from before the counter: assume the steps so far cost the plan
            spent = start * train_flops_per_step(cfg, data.vocab_size)
        kept = metrics_upto(metrics, start) if world.main else []
    if world.main:  # validated: only now does this run replace what the directory held (finished runs first)
        for stale in ("summary.json", "model.safetensors"):
            (out / stale).unlink(missing_ok=True)
        if not resume:  # afresh: the old checkpoint and what was computed from the old weights go
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            for derived in DERIVED:
                (out / derived).unlink(missing_ok=True)
        write_text(json.dumps(to_dict(cfg), indent=1), out / "config.json")
        write_text("".join(line + "\n" for line in kept), metrics)
        tracker.start(out, kept)
        fault_point("train:committed")

    model.train()
    forward = wrap(model, world)  # DDP when data-parallel (after every rank has loaded the checkpoint)
    if cfg.compile:
        forward = torch.compile(forward)
    tokens_per_step = cfg.batch_size * cfg.seq_len  # the global batch
    last_logged, t_log, wall_start = start, time.perf_counter(), time.perf_counter()
    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not (progress and world.main),
               desc=f"{cfg.router}/{cfg.dataset}/seed{cfg.seed}")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        model.router.set_progress(step / cfg.steps)
        seed_step(cfg.seed, step, world)
        x, y = sample_batch(data.train, cfg.batch_size, cfg.seq_len, data_rng)  # the same on every rank
        x, y = shard(x, world), shard(y, world)
        with autocast_context(device, cfg.precision):
            output = forward(x.to(device), y.to(device))
        spent += total(train_step_flops(model, output, cfg.seq_len), world, device)
        aux = output.aux_loss if output.aux_loss is not None else torch.zeros((), device=device)
        loss = output.loss + aux
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"loss is {loss.item()} at step {step} (lr {lr_at(step, cfg):.2e}); "
                                   "lower the learning rate or check the data")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        _check_update(model, opt, cfg, step)
        done = step + 1
        logged = done % cfg.log_every == 0 or done == cfg.steps
        if logged:
            elapsed = time.perf_counter() - t_log  # training steps only: eval/checkpoint time is excluded
            lm, aux_mean, lpt = mean([output.loss.item(), aux.item(), output.layers_per_token.mean().item()],
                                     world, device)
            speed = tokens_per_step * (done - last_logged) / elapsed
            record = {"step": done, "loss": lm, "aux": aux_mean, "layers_per_token": lpt,
                      "lr": lr_at(step, cfg), "tokens_per_s": speed}
            if world.main:
                _append(metrics, record, tracker)
            bar.set_postfix(loss=f"{record['loss']:.3f}", lpt=f"{record['layers_per_token']:.2f}")
            last_logged = done
        if world.main:  # validation, calibration and checkpoints: rank 0 alone, on the unwrapped model
            if done == cfg.steps:  # e.g. early exit's threshold, to hit the capacity (most routers: nothing)
                batches = eval_batches(data.validation, cfg.batch_size, cfg.seq_len, cfg.eval_batches)
                with autocast_context(device, cfg.precision):
                    model.router.calibrate(model, [x.to(device) for x, _ in batches])
            if done % cfg.eval_every == 0 or done == cfg.steps:
                val = validation_loss(model, data.validation, cfg, device)
                _append(metrics, {"step": done, "val_loss": val, "train_flops": spent}, tracker)
            if done % cfg.checkpoint_every == 0 or done == stop_after or done == cfg.steps:
                final = done == cfg.steps  # no step follows: Adam's moments would be dead weight on disk
                save_checkpoint(out / "checkpoint", model, None if final else opt, data_rng,
                                {"step": done, "train_flops": spent, "config": to_dict(cfg),
                                 "optimizer_state": not final})
        if done == stop_after and done < cfg.steps:
            tracker.close()
            return {"stopped_at": done}
        if logged:
            t_log = time.perf_counter()
    tracker.close()
    return _finish(cfg, out, model, data, spent, wall_start, world) if world.main else {}


def _finish(cfg: TrainConfig, out: Path, model: SparseDepthModel, data: TokenData, spent: float,
            wall_start: float, world: World) -> dict:
    """Weights, then summary.json (last: it marks the run finished)."""
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    speeds = [r["tokens_per_s"] for r in records if "tokens_per_s" in r]
    summary = {
        "steps": cfg.steps,
        "train_flops": spent,
        "planned_train_flops": cfg.steps * train_flops_per_step(cfg, data.vocab_size),
        "final_train_loss": next(r["loss"] for r in reversed(records) if "loss" in r),
        "val_loss": next(r["val_loss"] for r in reversed(records) if "val_loss" in r),
        "train_tokens_per_s": sorted(speeds)[len(speeds) // 2],
        "wall_s_this_session": time.perf_counter() - wall_start,
        "n_params": sum(p.numel() for p in model.parameters()),
        "train_tokens": cfg.steps * cfg.batch_size * cfg.seq_len,
        "train_split_tokens": int(len(data.train)),  # epochs = train_tokens / this (≤ 1: no token seen twice)
        "git_sha": git_sha(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": cfg.device,
        "world_size": world.size,
        **precision_summary(cfg.precision, cfg.device, cfg.compile),
    }
    model.router.set_progress(1.0)
    save_weights(model, out / "model.safetensors")
    share_weights(out / "checkpoint", out / "model.safetensors")  # the final weights, stored once
    fault_point("train:before_summary")
    write_text(json.dumps(summary, indent=1), out / "summary.json")  # last: it marks the run finished
    return summary
