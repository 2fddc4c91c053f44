"""The model card (README.md) of an exported run: its config, data, metrics and learned routing.

Every number comes from the run's own files (config.json, summary.json, eval.json when the run was
evaluated) or is measured on the exported model at export time; nothing is typed in by hand.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .hf import TRANSFORMERS_TESTED

_EVAL_KEYS = ("loss", "ppl", "bpb", "layers_per_token", "flops_per_token", "dense_flops_per_token",
              "n_tokens")
_SUMMARY_KEYS = ("steps", "final_train_loss", "val_loss", "train_flops", "n_params", "git_sha", "torch",
                 "device")


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return f"`{json.dumps(value)}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _table(rows: list[tuple[str, Any]], head: tuple[str, str] = ("key", "value")) -> list[str]:
    return [f"| {head[0]} | {head[1]} |", "|---|---|", *(f"| {k} | {_fmt(v)} |" for k, v in rows)]


def model_card(run_dir: Path, model, routing: dict, code_files: list[str], version: str) -> str:
    """Markdown with YAML front matter. `model` is the exported HF model (its config is what loads),
    `routing` what `hf_export._routing_stats` measured, `code_files` the modeling files written."""
    cfg = _read(run_dir / "config.json") or {}
    summary = _read(run_dir / "summary.json")
    evaluation = _read(run_dir / "eval.json")
    config = model.config
    dataset = cfg.get("dataset", "unknown")
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             f"tags: [sparsedepth, dynamic-depth, custom_code, router-{config.router}]", "---", "",
             f"# SparseDepth: `{config.router}` router at capacity {config.capacity:g}, "
             f"trained on `{dataset}`",
             "",
             "A decoder-only transformer whose routed blocks run only on the tokens their router keeps "
             "(per-token dynamic depth with hard skipping). Exported by "
             f"`sparsedepth` {version} from `{run_dir}`.", "",
             "## Use", "",
             "No `sparsedepth` install is needed: the modeling code is in this directory "
             f"({', '.join(f'`{f}`' for f in code_files)}), so loading needs `trust_remote_code=True` and "
             f"`torch`, `transformers{TRANSFORMERS_TESTED}` and `jsonschema`.", "",
             "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer",
             "model = AutoModelForCausalLM.from_pretrained(PATH, trust_remote_code=True)",
             "tok = AutoTokenizer.from_pretrained(PATH, trust_remote_code=True)  # reads config.json too",
             'ids = tok("ROMEO:", return_tensors="pt").input_ids',
             "print(tok.decode(model.generate(ids, max_new_tokens=20, do_sample=False)[0]))",
             "```", "",
             f"Context: at most {config.max_seq_len} tokens (prompt + new tokens; longer requests are "
             "refused up front). Greedy, sampling, beam search and assisted/prompt-lookup decoding use the "
             "routed cache (a token is a key/value only in the blocks it ran). Padded batches, "
             "`output_hidden_states`, `output_attentions` and `inputs_embeds` are not supported. The pad "
             "token is the end-of-text token.", "",
             "## Model", ""]
    lines += _table([("router", config.router), ("capacity", config.capacity),
                     ("route_every", config.route_every), ("router_options", config.router_options),
                     ("inference", config.inference), ("layers", config.n_layers),
                     ("d_model", config.d_model), ("heads", config.n_heads),
                     ("max_seq_len", config.max_seq_len), ("vocab_size", config.vocab_size)])
    lines += ["", "## Training data and run", ""]
    keys = ("dataset", "data_path", "vocab_size", "steps", "batch_size", "seq_len", "lr", "warmup_steps",
            "weight_decay", "seed")
    lines += _table([(k, cfg[k]) for k in keys if k in cfg])
    lines += ["", "The tokenizer is a byte-level BPE trained on the training split only.", "",
              "## Metrics", ""]
    if summary:
        lines += _table([(k, summary[k]) for k in _SUMMARY_KEYS if k in summary])
    else:
        lines.append("The run has no summary.json.")
    if evaluation:
        lines += ["", "Evaluation (`sparsedepth evaluate`, eval.json; loss in nats/token, bpb in bits/byte):",
                  "",
                  "| mode | split | " + " | ".join(_EVAL_KEYS) + " |", "|---" * (2 + len(_EVAL_KEYS)) + "|"]
        for mode, entry in evaluation.get("modes", {}).items():
            for split in ("validation", "test"):
                if split in entry:
                    values = " | ".join(_fmt(entry[split].get(k)) for k in _EVAL_KEYS)
                    lines.append(f"| {mode} | {split} | {values} |")
    else:
        lines += ["", "The run was not evaluated (no eval.json): see `val_loss` above."]
    lines += ["", "## Learned routing", ""]
    if routing:
        lines += [f"Measured at export on {routing['tokens']} validation tokens (windows of "
                  f"{config.max_seq_len}): {routing['layers_per_token']:.3f} of {config.n_layers} blocks per "
                  "token on average. Fraction of tokens that run each block:", ""]
        lines += _table(list(enumerate(routing["fraction_run_per_block"])),
                        ("block", "fraction run"))
    else:
        lines.append("The validation split is too short to measure routing at export.")
    return "\n".join(lines) + "\n"
