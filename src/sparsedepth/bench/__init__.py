"""Speed benchmarks: every router against dense, in the same process, for a training step, prefill and
cached decoding.

Why in one process and interleaved: CPU clocks and co-tenants drift; timing dense and routed alternately in
each repeat (in reversed order every other repeat) makes the ratio robust even when absolute times are not.
Each row reports the measured speedup over dense, the ideal speedup (dense FLOPs / routed FLOPs, from the
tokens that actually ran each block) and their ratio, the efficiency.

Models are randomly initialised: speed depends on how many tokens run, not on what the weights learned.
An untrained router does not sit at its capacity, so by default each router is *calibrated* first (its
decision bias shifted so it keeps `capacity` of the tokens on a calibration batch, as a trained router's
budget loss would make it); every row reports the layers/token it actually ran.

Implementations: `gather` (ours: per-sample hard skipping), `masked` (the reference: full-length compute,
skipped tokens masked; no savings by construction) and `origin-flat` (the origin project's flattened batch,
see origin_reference.py). Suffixes: `+bf16` (autocast), `+compile` (torch.compile); each suffixed row is
compared with dense under the same suffix.
"""

from .cases import Case, calibrate, decode_case, forward_case, make_model
from .cli import main, parser
from .config import COLUMNS, IMPLS, KINDS, BenchConfig, check, origin_grid
from .grid import measure_point, merge, run_grid, write_rows

__all__ = ["COLUMNS", "IMPLS", "KINDS", "BenchConfig", "Case", "calibrate", "check", "decode_case",
           "forward_case", "main", "make_model", "measure_point", "merge", "origin_grid", "parser",
           "run_grid", "write_rows"]
