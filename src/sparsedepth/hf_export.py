"""Export a finished run as a self-contained Hugging Face model directory.

The directory loads with plain `transformers` (`trust_remote_code=True`), without this package installed:
config.json names its classes in `auto_map`, and the modeling code is written beside the weights —
`modeling_sparsedepth.py` is `sparsedepth/hf.py` down to its "end of the exported modeling code" line, and
every package module it imports is copied as a flat sibling (`sparsedepth/routing/mod.py` →
`sparsedepth_routing_mod.py`) with its relative imports rewritten, each stamped with the package version and
commit. Also written: safetensors weights, the BPE tokenizer (pad = end-of-text), the generation config and a
model card (README.md) from the run's own files, and a marker (`.sparsedepth-export.json`) listing them.

`--out` must be new, empty, or a previous export whose files are all its own (the marker says which):
that one is replaced whole. A file or any other directory is refused in one line and left untouched.

    python -m sparsedepth.hf export --run results/runs/.../seed0 --out exported/
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from . import __version__
from .checkpoint import CheckpointError, readable
from .cli import EXIT_INTERRUPTED, Parser
from .config import ConfigError
from .data import DataError, TokenData, eval_batches
from .hf import SparseDepthConfig, SparseDepthForCausalLM
from .model_card import model_card
from .rundir import run_lock

__all__ = ["AUTO_MAP", "export_code", "export_run", "from_run", "hf_tokenizer", "main", "model_card"]

PACKAGE = "sparsedepth"
MODELING = "modeling_sparsedepth"
CUT = "# --- end of the exported modeling code"
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
LEGACY = ("config.json", "generation_config.json", "*.safetensors", "tokenizer*.json",  # what exports
          "special_tokens_map.json", "README.md", f"{MODELING}.py", f"{PACKAGE}_*.py")  # wrote before MARKER
MARKER = ".sparsedepth-export.json"  # {"files": [names the export wrote]}: what replacing it may delete
AUTO_MAP = {"AutoConfig": f"{MODELING}.SparseDepthConfig",
            "AutoModelForCausalLM": f"{MODELING}.SparseDepthForCausalLM"}


def _load(run_dir: str | Path) -> tuple[SparseDepthForCausalLM, TokenData]:
    from .evaluate import load_run  # evaluate pulls in training code; only export needs it

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    model, cfg, data = load_run(run_dir)
    config = SparseDepthConfig.from_model(model, cfg.router, cfg.capacity, cfg.route_every,
                                          cfg.router_options, eos_token_id=data.eot_id,
                                          pad_token_id=data.eot_id)
    wrapper = SparseDepthForCausalLM(config)
    wrapper.model.load_state_dict(model.state_dict())
    gen = wrapper.generation_config
    gen.eos_token_id = gen.pad_token_id = data.eot_id
    return wrapper.eval(), data


def from_run(run_dir: str | Path) -> SparseDepthForCausalLM:
    """The HF model of a finished training run (eval mode, trained weights)."""
    return _load(run_dir)[0]


def hf_tokenizer(tokenizer: Tokenizer, eos_id: int, max_length: int | None = None) -> PreTrainedTokenizerFast:
    """Our BPE `tokenizers.Tokenizer` as a transformers tokenizer (a copy: the original is left as is).
    End-of-text is also the pad token (GPT-2's convention: the vocabulary, hence the model, is unchanged),
    padding on the left, as batched generation needs (the model ignores padding on either side)."""
    copy = Tokenizer.from_str(tokenizer.to_str())
    extra = {} if max_length is None else {"model_max_length": max_length}
    eos = tokenizer.id_to_token(eos_id)
    return PreTrainedTokenizerFast(tokenizer_object=copy, eos_token=eos, pad_token=eos, padding_side="left",
                                   **extra)


def _commit() -> str:
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def _flat_name(module: str) -> str:
    """`sparsedepth.routing.mod` → `sparsedepth_routing_mod` (`sparsedepth.hf` → the modeling file)."""
    return MODELING if module == f"{PACKAGE}.hf" else module.replace(".", "_")


def _module_file(module: str) -> Path:
    root = Path(__file__).parent.parent
    path = root.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    """Absolute name of a relative import inside `module` (a package's own name for an `__init__`)."""
    is_package = _module_file(module).stem == "__init__"
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    if node.module is None:
        raise ValueError(f"{module}: `from {'.' * node.level} import ...` cannot be flattened; "
                         "import names from a module instead")
    return ".".join([*base, node.module])


def _flatten(module: str, source: str) -> tuple[str, list[str]]:
    """`source` with its relative imports pointing at flat siblings; returns it and the modules imported."""
    lines = source.splitlines(keepends=True)
    found = []
    for node in sorted((n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom) and n.level),
                       key=lambda n: -n.lineno):
        target = _resolve(module, node)
        found.append(target)
        flat = ast.ImportFrom(module=_flat_name(target), names=node.names, level=1)
        indent = " " * node.col_offset
        lines[node.lineno - 1: node.end_lineno] = [indent + ast.unparse(flat) + "\n"]
    return "".join(lines), found


def export_code(out_dir: str | Path) -> list[str]:
    """Write the modeling code (hf.py's exported part and every package module it needs) into `out_dir`;
    returns the file names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# Generated by sparsedepth {__version__} (commit {_commit()}) from {{source}}:\n"
              "# the code an exported SparseDepth model runs (trust_remote_code=True). Do not edit.\n")
    todo, done, written = [f"{PACKAGE}.hf"], set(), []
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        path = _module_file(module)
        source = path.read_text()
        if module == f"{PACKAGE}.hf":
            source = source[: source.index(CUT)].rstrip() + "\n"
        source, imported = _flatten(module, source)
        todo.extend(imported)
        name = _flat_name(module) + ".py"
        relative = path.relative_to(Path(__file__).parent.parent).as_posix()
        (out / name).write_text(header.format(source=relative) + source)
        written.append(name)
    return sorted(written)


def _routing_stats(model: SparseDepthForCausalLM, data: TokenData, batches: int = 4) -> dict:
    """What the router learned, measured on validation windows: blocks per token, fraction run per block."""
    seq_len = model.config.max_seq_len
    ran = []
    try:
        windows = list(eval_batches(data.validation, 4, seq_len, batches))
    except DataError:  # a split shorter than one window
        windows = []
    with torch.no_grad():
        for x, _ in windows:
            ran.append(model.model(x).routing.flatten(0, 1).float())
    if not ran:
        return {}
    routing = torch.cat(ran)  # [tokens, L]
    return {"tokens": routing.shape[0], "layers_per_token": routing.sum(1).mean().item(),
            "fraction_run_per_block": [round(v, 4) for v in routing.mean(0).tolist()]}


def _inside_a_run(out: Path) -> Path | None:
    """The run directory `out` would land in (a run's own files must never be overwritten by an export)."""
    for d in (out, *out.parents):
        if (d / "config.json").is_file() and ((d / "metrics.jsonl").exists() or (d / "checkpoint").exists()):
            return d
    return None


def check_target(out: Path, given: str | Path) -> None:
    """Refuse, before anything is read or written, an `--out` that is neither new, nor empty, nor a
    previous export holding only the files it wrote (those are what replacing it deletes)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise CheckpointError(f"--out {given} is a file: export to a new or empty directory")
    entries = sorted(p.name for p in out.iterdir())
    if not entries:
        return
    written = _export_files(out, entries)
    if written is None:
        raise CheckpointError(f"--out {given} is a directory that is not a sparsedepth export (it holds "
                              f"{', '.join(entries[:3])}{', …' if len(entries) > 3 else ''}): export to a "
                              "new or empty directory")
    foreign = [name for name in entries if name not in written and name != MARKER]
    if foreign:
        raise CheckpointError(f"--out {given} is an export that now also holds {', '.join(foreign[:3])}"
                              f"{', …' if len(foreign) > 3 else ''}: move those away, or export elsewhere")


def _export_files(out: Path, entries: list[str]) -> set[str] | None:
    """The names a previous export in `out` wrote (its marker's list), or None if `out` is not one. An
    export from before the marker is known by its config's `auto_map` and names an export writes."""
    try:
        return set(json.loads((out / MARKER).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        pass
    try:
        ours = json.loads((out / "config.json").read_text()).get("auto_map") == AUTO_MAP
    except (OSError, ValueError, AttributeError):
        return None
    return {n for n in entries if any(fnmatch.fnmatch(n, pattern) for pattern in LEGACY)} if ours else None


def export_run(run_dir: str | Path, out_dir: str | Path) -> Path:
    """Write a run as a self-contained HF model directory: config (with `auto_map`), modeling code,
    safetensors weights, tokenizer (with a pad token), generation config and model card.

    The run is locked while it is read (read-only storage is fine); the directory is written beside `out`
    and renamed into place, so a failure (disk full) leaves no partial export, and an output inside a run
    directory, a file or a foreign directory (`check_target`) is refused."""
    out = Path(out_dir).resolve()
    run = _inside_a_run(out)
    if run is not None:
        raise CheckpointError(f"--out {out_dir} is inside the run directory {run}: export elsewhere")
    check_target(out, out_dir)
    made = next((d for d in reversed(out.parents) if not d.exists()), None)  # parents that writing makes
    with run_lock(run_dir, "export", shared=True):
        model, data = _load(run_dir)
        tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
        try:
            _write_export(model, data, Path(run_dir), tmp)
            check_target(out, out_dir)  # still new, empty or our own export (nothing was added meanwhile)
            if out.exists():  # a previous export: replaced whole, never merged with stale files
                old = out.with_name(f".{out.name}.old-{os.getpid()}")
                out.rename(old)
                tmp.rename(out)
                shutil.rmtree(old)
            else:
                tmp.rename(out)
        except BaseException as e:
            if made is not None:
                shutil.rmtree(made, ignore_errors=True)
            if isinstance(e, OSError):
                raise CheckpointError(f"cannot write the export {out_dir}: {e.strerror or e}") from None
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return Path(out_dir)


def _write_export(model: SparseDepthForCausalLM, data: TokenData, run_dir: Path, out: Path) -> None:
    model.config.auto_map = dict(AUTO_MAP)
    model.save_pretrained(out)
    for weights in out.glob("*.safetensors"):  # written 0600 whatever the umask
        readable(weights)
    hf_tokenizer(data.tokenizer, data.eot_id, model.config.max_seq_len).save_pretrained(out)
    settings = out / "tokenizer_config.json"  # transformers 5 names its own backend class; 4.x knows this one
    settings.write_text(json.dumps(json.loads(settings.read_text()) | {"tokenizer_class": TOKENIZER_CLASS},
                                   indent=2) + "\n")
    code = export_code(out)
    (out / "README.md").write_text(model_card(run_dir, model, _routing_stats(model, data), code,
                                              f"{__version__} (commit {_commit()})"))
    files = sorted(p.name for p in out.iterdir())
    (out / MARKER).write_text(json.dumps({"files": files}, indent=1) + "\n")  # last: the export is whole


def main(argv: Sequence[str] | None = None) -> int:
    parser = Parser(prog="python -m sparsedepth.hf", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    export = sub.add_parser("export", help="save a trained run as a self-contained Hugging Face directory")
    export.add_argument("--run", required=True, help="run directory (holds config.json, model.safetensors)")
    export.add_argument("--out", required=True, help="output directory (weights, code, tokenizer, card)")
    args = parser.parse_args(argv)
    try:
        out = export_run(args.run, args.out)
    except (CheckpointError, ConfigError, DataError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: nothing was exported", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(f"exported {args.run} -> {out} (load with AutoModelForCausalLM.from_pretrained(..., "
          "trust_remote_code=True); no sparsedepth install needed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

