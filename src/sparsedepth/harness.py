"""An independent second measurement of a run: EleutherAI's lm-evaluation-harness on its held-out text.

Why: `evaluate`'s bits per byte is our own code end to end. Here the harness's stock `hf` model loads the
run's exported directory (`python -m sparsedepth.hf export`) through plain transformers and scores the same
test documents `evaluate` reads (the run's test token file, split at end-of-text and decoded) as a local
`loglikelihood_rolling` task, with its own tokenisation, windows and byte counts. The workflow's `lm_eval`
rule writes the result as the run's `lm_eval.json`; aggregation puts it beside `test_bpb` (`lm_eval_bpb`).

    python -m sparsedepth.harness --run RUN --model EXPORT --out RUN/lm_eval.json [--limit N]

The two differ by protocol, not by model: `evaluate` scores the split as one stream in windows of
`seq_len` that cross documents, and charges each document's closing end-of-text (0 bytes); the harness
scores each document alone, from an end-of-text prefix, in windows of `max_seq_len`, and never predicts the
end of a document. So they agree to within a few per cent, not exactly (tests/test_lm_eval_rule.py).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .atomic import write_text
from .rundir import read_json

TASK = "sparsedepth_test"
TASK_YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""
METRICS = ("bits_per_byte", "byte_perplexity", "word_perplexity")


class HarnessError(RuntimeError):
    """lm-evaluation-harness is missing or failed; the message says which and ends with its output."""


def held_out_documents(run_dir: str | Path) -> list[str]:
    """The run's test split as text, one string per document, exactly the tokens `evaluate` scores:
    documents are joined by end-of-text in the token file (`data.encode_documents`)."""
    from .train import TrainConfig, load_data  # torch and the data package: only when used

    cfg = TrainConfig.from_dict(read_json(Path(run_dir) / "config.json", "the run's config"))
    data = load_data(cfg)
    tokens = np.asarray(data.test)
    cuts = np.flatnonzero(tokens == data.eot_id)
    pieces = np.split(tokens, cuts)
    docs = [pieces[0], *(p[1:] for p in pieces[1:])]  # every piece after the first starts with its EOT
    return [data.tokenizer.decode(d.tolist(), skip_special_tokens=False) for d in docs if len(d)]


def write_task(docs: Sequence[str], task_dir: Path) -> Path:
    """A local task over `docs` (a JSON-lines file and its YAML) in `task_dir`; returns the YAML's folder."""
    task_dir.mkdir(parents=True, exist_ok=True)
    data = task_dir / "documents.jsonl"
    data.write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    (task_dir / f"{TASK}.yaml").write_text(TASK_YAML.format(task=TASK, data=json.dumps(str(data))))
    return task_dir


def run_harness(model_dir: str | Path, task_dir: Path, work: Path, batch_size: int = 4, device: str = "cpu",
                limit: int | None = None) -> dict:
    """`python -m lm_eval --model hf` on the exported directory and the local task; its results JSON.

    Offline, with the datasets and remote-code caches inside `work`, so parallel jobs never share them."""
    cmd = [sys.executable, "-m", "lm_eval", "--model", "hf", "--model_args",
           f"pretrained={Path(model_dir).resolve()},trust_remote_code=True,dtype=float32", "--tasks", TASK,
           "--include_path", str(task_dir), "--device", device, "--batch_size", str(batch_size),
           "--output_path", str(work / "results")]
    if limit is not None:
        cmd += ["--limit", str(limit)]
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                        "HF_DATASETS_CACHE": str(work / "datasets"),
                        "HF_MODULES_CACHE": str(work / "modules")}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env)
    if done.returncode != 0:
        missing = "No module named lm_eval" in done.stderr
        hint = " (pip install 'sparsedepth[eval]')" if missing else ""
        raise HarnessError(f"lm_eval exited {done.returncode}{hint}:\n{done.stderr[-4000:]}")
    (results,) = (work / "results").rglob("results_*.json")
    return json.loads(results.read_text())


def score(run_dir: str | Path, model_dir: str | Path, batch_size: int = 4, device: str = "cpu",
          limit: int | None = None) -> dict:
    """lm_eval.json's content: the harness's metrics on the run's test documents, and what was scored."""
    docs = held_out_documents(run_dir)
    exported = read_json(Path(model_dir) / "config.json", "the exported model's config")
    with tempfile.TemporaryDirectory(prefix="sparsedepth-lm-eval-") as tmp:
        work = Path(tmp)
        raw = run_harness(model_dir, write_task(docs, work / "tasks"), work, batch_size, device, limit)
    metrics = raw["results"][TASK]
    result = {name: metrics[f"{name},none"] for name in METRICS}
    bad = [name for name, value in result.items() if not math.isfinite(value)]
    if bad:
        raise HarnessError(f"lm_eval measured non-finite {', '.join(bad)}: the exported model is broken")
    return result | {
        "task": TASK, "output_type": "loglikelihood_rolling", "split": "test",
        "mode": exported.get("inference") or "causal",
        "documents": len(docs) if limit is None else min(limit, len(docs)), "limit": limit,
        "batch_size": batch_size, "device": device, "lm_eval": raw.get("lm_eval_version"),
        "transformers": raw.get("transformers_version"), "run_dir": str(run_dir), "model_dir": str(model_dir),
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sparsedepth.harness", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="the run directory (its config names the data)")
    p.add_argument("--model", required=True, help="the run's exported Hugging Face directory")
    p.add_argument("--out", required=True, help="where to write lm_eval.json")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--limit", type=int, help="score only the first N test documents (default: all)")
    args = p.parse_args(argv)
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .data import DataError
    from .rundir import RunDirError

    try:
        result = score(args.run, args.model, args.batch_size, args.device, args.limit)
    except (HarnessError, CheckpointError, ConfigError, DataError, RunDirError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, HarnessError) else 2
    write_text(json.dumps(result, indent=1) + "\n", args.out)
    print(f"wrote {args.out}: bits per byte {result['bits_per_byte']:.4f} over {result['documents']} "
          "documents")
    return 0


if __name__ == "__main__":
    sys.exit(main())
