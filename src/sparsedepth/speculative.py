"""STAND-IN, replaced at merge: the real greedy self-speculative decoding is written on another branch.

Only the API is fixed here (`speculative_generate`, `SpeculativeStats`) so that the speculative benchmark
(`sparsedepth.bench.speculative`) can be built and tested against it; this version decodes ordinarily
(greedy `generate`) and drafts nothing, so its rows report no acceptance. Nothing may rely on its internals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .generate import Generation, generate
from .model import SparseDepthModel


@dataclass
class SpeculativeStats:
    rounds: int
    drafted: int
    accepted: int

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else float("nan")


def speculative_generate(model: SparseDepthModel, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                         exit_layer: int, draft_tokens: int, eos_id: int | None = None,
                         ) -> tuple[Generation, SpeculativeStats]:
    """STAND-IN: ordinary greedy decoding; `exit_layer` and `draft_tokens` are ignored."""
    return generate(model, prompts, max_new_tokens, temperature=0, eos_id=eos_id), SpeculativeStats(0, 0, 0)
