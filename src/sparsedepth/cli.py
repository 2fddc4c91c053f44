"""Command line: `python -m sparsedepth train|evaluate ...` (flags generated from the config dataclasses).

Precedence: dataclass defaults < --config file (JSON/YAML) < explicit flags. Any known failure (bad
config, missing data, corrupt checkpoint, diverged loss) prints one line and exits non-zero; so does a
flag out of its range (at parse time, exit 2) and Ctrl-C (exit 130). A command that fails leaves no
directory it created behind.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import shutil
import sys
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path

from .checkpoint import CheckpointError
from .config import ConfigError, load_file
from .rundir import RunLocked
from .startup import skip_dynamo_import

EXIT_USER_ERROR = 2
EXIT_RUNTIME_ERROR = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for a command stopped by Ctrl-C


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2) like every other bad input."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see --help)\n")


def ranged(kind: type, low: float, high: float | None = None, above: bool = False) -> Callable[[str], object]:
    """An argparse type: a `kind` of at least `low` (`above`: more than `low`) and at most `high`; anything
    else (NaN included) is a usage error naming the flag and the range."""
    bounds = " and ".join([f"{'>' if above else '>='} {low}", *([f"<= {high}"] if high is not None else [])])

    def parse(text: str):
        value = kind(text)  # a ValueError: argparse's "invalid int value"
        if not (value > low if above else value >= low) or (high is not None and value > high) \
                or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text} is out of range (must be {bounds})")
        return value

    parse.__name__ = kind.__name__  # what argparse names in "invalid int value"
    return parse


def _flag_type(annotation) -> Callable[[str], object]:
    """How a flag's text becomes the field's value: `X | None` as X, dict as JSON, list[X] comma-separated."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if annotation is dict:
        return json.loads
    if typing.get_origin(annotation) is list:
        (item,) = typing.get_args(annotation)

        def comma_list(text: str) -> list:
            return [item(x) for x in text.split(",") if x]

        return comma_list
    return annotation


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, prefix: str = "") -> None:
    """One flag per field (`--a_b` and `--a-b`; nested dataclasses as `--field.sub`), help from the field's
    metadata; bool fields become `--x/--no-x`. Every default is None, so only given flags override."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            add_dataclass_flags(parser, hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if isinstance(default, list):
            default = ",".join(map(str, default))
        names = dict.fromkeys([f"--{prefix}{f.name}", f"--{prefix}{f.name}".replace("_", "-")])
        parse = dict(action=argparse.BooleanOptionalAction) if hints[f.name] is bool \
            else dict(type=_flag_type(hints[f.name]))
        parser.add_argument(*names, dest=f"{prefix}{f.name}", default=None, **parse,
                            help=f"{f.metadata.get('help', '')} (default: {default})".strip())


def flags_to_overrides(args: argparse.Namespace, cls: type) -> dict:
    """Nested dict of the flags the user actually gave (dotted names become nested keys)."""
    overrides: dict = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            nested = {k.split(".", 1)[1]: v for k, v in vars(args).items()
                      if k.startswith(f"{f.name}.") and v is not None}
            if nested:
                overrides[f.name] = nested
        elif getattr(args, f.name, None) is not None:
            overrides[f.name] = getattr(args, f.name)
    return overrides


def merge(base: dict, overrides: dict) -> dict:
    merged = dict(base)
    for key, value in overrides.items():
        nested = isinstance(value, dict) and key != "router_options"  # router_options replace, not merge
        merged[key] = merge(merged.get(key, {}), value) if nested else value
    return merged


def read_config(source: str) -> dict:
    """A config file, or inline JSON (how the workflow passes each run's resolved config)."""
    if source.lstrip().startswith("{"):
        try:
            return json.loads(source)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--config: invalid inline JSON: {e}") from e
    return load_file(source)


def resolve_config(args: argparse.Namespace):
    """The TrainConfig of `--config` (or, on `--resume`, the run's own config.json) and the flags; an
    invalid one names the file it came from."""
    from .rundir import saved_config
    from .train import TrainConfig

    data = read_config(args.config) if args.config else saved_config(args.out) if args.resume else {}
    overrides = flags_to_overrides(args, TrainConfig)
    try:
        return TrainConfig.from_dict(merge(data, overrides))
    except ConfigError as e:
        if not args.config:
            raise
        origin = "--config" if args.config.lstrip().startswith("{") else args.config
        raise ConfigError(f"{origin}{' with flags' if overrides else ''}: {e}") from None


def cmd_train(args: argparse.Namespace) -> int:
    """`--nproc N` (N > 1) outside torchrun re-runs this very command under torch.distributed.run;
    under torchrun every process trains and rank 0 reports."""
    from .data import DataError
    from .distributed import launch, launched, rank_zero
    from .train import train

    cfg = resolve_config(args)
    if cfg.nproc > 1 and not launched():
        return launch(args.argv, cfg.nproc)
    out = Path(args.out)
    created = _first_missing(out) if rank_zero() else None
    try:
        summary = train(cfg, out, resume=args.resume, auto_resume=args.auto_resume, overwrite=args.overwrite,
                        progress=not args.quiet)
    except RunLocked:  # another trainer may have made it meanwhile: it is theirs
        raise
    except (ConfigError, DataError, ValueError, CheckpointError, KeyboardInterrupt) as e:
        # bad input leaves no partial run directory behind; any other failure only one that holds no run
        # to resume yet (config.json is written once everything is validated)
        bad_input = isinstance(e, ConfigError | DataError | ValueError)
        if created and (bad_input or not (out / "config.json").exists()):
            shutil.rmtree(created, ignore_errors=True)
        raise
    if rank_zero():
        print(json.dumps(summary, indent=1))
    return 0


def _first_missing(path: Path) -> Path | None:
    """The outermost directory that making `path` creates (None: it exists)."""
    missing = None
    for d in (path, *path.parents):
        if d.exists():
            return missing
        missing = d
    return missing


def cmd_prepare(args: argparse.Namespace) -> None:
    from .data import prepare

    out = prepare(args.dataset, args.out, args.vocab_size, args.data_path)
    print(f"prepared {args.dataset} (vocab {args.vocab_size}) in {out}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from .evaluate import evaluate_run

    skip_dynamo_import()  # evaluation never compiles
    result = evaluate_run(args.run, max_batches=args.max_batches, out_path=args.out, units_path=args.units,
                          segment_tokens=args.segment_tokens, device=args.device)
    for mode, entry in result["modes"].items():
        v = entry["validation"]
        print(f"{mode}: val loss {v['loss']:.4f}  ppl {v['ppl']:.2f}  bpb {v['bpb'] or float('nan'):.4f}  "
              f"layers/token {v['layers_per_token']:.2f}  "
              f"FLOPs/token {v['flops_per_token']:.3g}")


def cmd_sample(args: argparse.Namespace) -> None:
    from .evaluate import load_run, set_mode
    from .generate import generate, render_routing

    model, cfg, data = load_run(args.run)
    set_mode(model, "causal")
    prompt = data.tokenizer.encode(args.prompt).ids or [data.eot_id]
    if args.speculative_exit is None:
        result = generate(model, [prompt], args.max_new_tokens, args.temperature, args.top_k, args.top_p,
                          eos_id=data.eot_id, seed=args.seed)
    else:
        from .speculative import speculative_generate

        if args.temperature != 0:
            raise ValueError("--speculative-exit decodes greedily: pass --temperature 0")
        result, stats = speculative_generate(model, [prompt], args.max_new_tokens, args.speculative_exit,
                                             args.draft_tokens, eos_id=data.eot_id)
        print(f"(self-speculative: blocks 0..{args.speculative_exit - 1} draft {args.draft_tokens} a round; "
              f"{stats.accepted}/{stats.drafted} drafts accepted in {stats.rounds} rounds)", file=sys.stderr)
    ids = prompt + result.tokens[0]
    if not args.show_routing:
        print(data.tokenizer.decode(ids))
        return
    layers = result.prompt_layers[0] + result.layers[0]
    pieces = [data.tokenizer.decode([i]) for i in ids[: len(layers)]]
    print(render_routing(pieces, layers, cfg.model.n_layers, color=not args.no_color))
    print(f"(subscript: blocks run, of {cfg.model.n_layers}; router {cfg.router}, capacity {cfg.capacity})")


def build_parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    parser = Parser(prog="sparsedepth", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    p = sub.add_parser("train", help="train one model/router/dataset/seed into a run directory")
    p.add_argument("--out", required=True, help="run directory (created)")
    p.add_argument("--config", help="JSON/YAML file (or inline JSON) of TrainConfig fields")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint exactly")
    p.add_argument("--auto-resume", action="store_true",
                   help="resume when OUT holds a checkpoint of the same config, else start afresh; a "
                   "finished run of the same config is left as it is")
    p.add_argument("--overwrite", action="store_true",
                   help="train afresh even if OUT holds a finished run (replaced; otherwise refused)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_flags(p, TrainConfig)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prepare", help="download/clean/split a corpus, train its BPE, cache the tokens")
    p.add_argument("--dataset", required=True, help="corpus name (see sparsedepth.data.CORPORA)")
    p.add_argument("--out", required=True, help="prepared data directory (created atomically)")
    p.add_argument("--vocab-size", "--vocab_size", type=int, default=4096, help="BPE vocabulary size")
    p.add_argument("--data-path", "--data_path", default=None,
                   help="local corpus file/dir (default: the corpus's package, $SPARSEDEPTH_DATA_DIR or the "
                   "hub); the prepared data records it and is never reused for another source")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("evaluate", help="val/test loss, perplexity, layers/token, FLOPs/token of a run")
    p.add_argument("--run", required=True, help="finished run directory")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--max-batches", type=ranged(int, 1), default=None,
                   help="cap the number of eval batches per split (default: the whole split)")
    p.add_argument("--units", default=None, help="write the per-(document, segment) table as CSV here "
                   "(columns mode,split,doc,segment,nats,tokens,bytes)")
    p.add_argument("--segment-tokens", type=ranged(int, 1), default=2048,
                   help="targets per segment in --units (default: 2048)")
    p.add_argument("--device", default=None,
                   help="cpu, cuda or cuda:N (default: the run's configured device)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("sample", help="generate text from a finished run (cached, routed decoding)")
    p.add_argument("--run", required=True, help="finished run directory")
    p.add_argument("--prompt", default="", help="text to continue")
    p.add_argument("--max-new-tokens", type=ranged(int, 1), default=60)
    p.add_argument("--temperature", type=ranged(float, 0), default=0.8, help="0 = greedy")
    p.add_argument("--top-k", type=ranged(int, 1), default=None, help="sample among the k likeliest tokens")
    p.add_argument("--top-p", type=ranged(float, 0, 1, above=True), default=None,
                   help="sample among the likeliest tokens whose probabilities reach p (0 < p <= 1)")
    p.add_argument("--seed", type=ranged(int, 0), default=0)
    p.add_argument("--speculative-exit", type=ranged(int, 1), default=None, metavar="E",
                   help="self-speculative greedy decoding (needs --temperature 0): the first E blocks draft, "
                   "the rest verify; same text as plain greedy decoding")
    p.add_argument("--draft-tokens", type=ranged(int, 1), default=4,
                   help="with --speculative-exit: drafts per round")
    p.add_argument("--show-routing", action="store_true", help="mark each token with the blocks it ran")
    p.add_argument("--no-color", action="store_true", help="with --show-routing: subscripts only")
    p.set_defaults(func=cmd_sample)
    return parser


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split())


def main(argv: Sequence[str] | None = None) -> int:
    from .data import DataError
    from .train import TrainingDiverged

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = argv  # what `train --nproc N` re-runs under torchrun
    if getattr(args, "overwrite", False) and (args.resume or args.auto_resume):
        parser.error("--overwrite trains afresh: it cannot be combined with --resume or --auto-resume")
    try:
        status = args.func(args)
    except KeyboardInterrupt:
        resume = " (train: rerun with --auto-resume to continue from its last checkpoint)" \
            if args.command == "train" else ""
        print(f"sparsedepth: interrupted{resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ConfigError, DataError, ValueError) as e:
        print(f"sparsedepth: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (CheckpointError, TrainingDiverged) as e:
        print(f"sparsedepth: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_RUNTIME_ERROR
    return status or 0

