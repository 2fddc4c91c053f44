"""The sizes a check runs at: the paper's on a GPU (its S training model, its benchmark model), tiny ones on
the CPU, where the same code runs in CI in about two minutes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Shapes:
    name: str
    # training slice (d512 × 8 blocks, a size of config/paper.yaml's sweep, and its batch; fixed steps)
    model: dict = field(default_factory=dict)
    batch_size: int = 32
    seq_len: int = 1024
    steps: int = 30
    log_every: int = 10  # tokens/s: the last log interval's, after compilation and warm-up
    vocab_size: int = 4096
    corpus_chars: int = 2_000_000
    # benchmark (config/paper.yaml's benchmark model; one point per kind)
    bench: dict = field(default_factory=dict)
    # speculative decoding of the fp32 training slice's run
    spec_repeats: int = 3
    exit_layer: int = 4
    prompt_len: int = 64
    new_tokens: int = 64
    # pytest -k for the gpu-marked tests (None: all of them)
    tests: str | None = None


PAPER = Shapes(
    name="paper",
    model={"d_model": 512, "n_layers": 8, "n_heads": 8, "max_seq_len": 1024},
    bench={"d_model": 1024, "n_layers": 12, "n_heads": 16, "batch": [8], "seq": [1024],
           "decode_prompt": [128], "decode_new": [128], "decode_batch": [1, 8], "repeats": 10, "warmup": 3},
)
# every router of the gpu-marked tests costs seconds on a shared CPU: the CPU form runs one routed router's
# (the tests' code is the same for each); one timed repeat everywhere (times are not what it checks)
TINY = Shapes(
    name="tiny", model={"d_model": 32, "n_layers": 4, "n_heads": 4, "max_seq_len": 64}, batch_size=4,
    seq_len=32, steps=4, log_every=2, vocab_size=300, corpus_chars=60_000,
    bench={"d_model": 32, "n_layers": 4, "n_heads": 4, "batch": [2], "seq": [32], "decode_prompt": [8],
           "decode_new": [8], "decode_batch": [1, 2], "repeats": 1, "warmup": 0},
    spec_repeats=1, exit_layer=2, prompt_len=8, new_tokens=8, tests="mod")
