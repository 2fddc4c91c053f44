"""Training data for the device check without `datasets` (absent on the GPU machine): a synthetic text,
written as the prepared token files `train` reads, with the manifest `prepare` would write for it.

Why synthetic: nothing can be fetched there and the working tree travels in 64 MiB; a few hundred kB of
generated text with a Zipf-like vocabulary gives a loss that falls, which is all the check compares.
"""

from __future__ import annotations

import json
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..data.base import EOT, SPLITS, split_contiguous
from ..data.local import tinyshakespeare_source
from ..data.preparation import FORMAT_VERSION, encode_documents, train_tokenizer
from ..data.source import manifest, write_manifest

DATASET = "tinyshakespeare"  # a single-file corpus: any local text file can stand in for it


def synthetic_text(n_chars: int, seed: int = 0) -> str:
    """Lines of words drawn from a fixed Zipf-like vocabulary: deterministic for a seed."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ten", "ra", "su", "vo", "pe", "dan", "ri", "tho", "ne", "bu", "sa"]
    words = ["".join(rng.choice(syllables) for _ in range(rng.randint(1, 3))) for _ in range(600)]
    weights = [1 / (rank + 1) for rank in range(len(words))]
    lines, size = [], 0
    while size < n_chars:
        line = " ".join(rng.choices(words, weights, k=rng.randint(4, 12))).capitalize() + ".\n"
        lines.append(line)
        size += len(line)
    return "".join(lines)


def prepare_synthetic(root: str | Path, vocab_size: int, n_chars: int = 300_000) -> tuple[Path, Path]:
    """Write `root/corpus.txt` and its prepared token files under `root/data` (what `train` with
    dataset=tinyshakespeare, data_path=corpus.txt, data_dir=root/data finds ready); returns both paths."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    corpus = root / "corpus.txt"
    text = synthetic_text(n_chars)
    corpus.write_text(text)
    out = root / "data" / f"{DATASET}-v{vocab_size}"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        parts = split_contiguous(text)
        tokenizer = train_tokenizer([parts["train"]], vocab_size)
        tokenizer.save(str(tmp / "tokenizer.json"))
        eot_id = tokenizer.token_to_id(EOT)
        n_tokens = {}
        for split in SPLITS:
            tokens = encode_documents(tokenizer, [[parts[split]]], eot_id)
            np.save(tmp / f"{split}.npy", tokens)
            n_tokens[split] = int(tokens.size)
        record = manifest(tinyshakespeare_source(str(corpus)))
        meta = {"dataset": DATASET, "vocab_size": vocab_size,
                "tokenizer_vocab_size": tokenizer.get_vocab_size(), "eot_id": eot_id, "dtype": "uint16",
                "n_tokens": n_tokens,
                "n_documents": dict.fromkeys(SPLITS, 1), "source": "synthetic (sparsedepth.gpucheck.data)",
                "source_sha256": record["sha256"], "licence": "generated", "format_version": FORMAT_VERSION}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        write_manifest(tmp, record)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return corpus, root / "data"
