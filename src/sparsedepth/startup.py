"""Job start-up without `torch._dynamo`: 2–3 s saved in every process that never compiles.

torch wraps a few of its own functions in `torch._disable_dynamo` (the optimizer's `add_param_group`,
`zero_grad`, `state_dict`, `load_state_dict`; every `TorchDispatchMode`'s `__torch_dispatch__`, so
`FlopCounterMode`'s), a mark that the compiler must not trace them. The wrapper imports `torch._dynamo` the
first time it is called, ≈ 2.4 s on a 2-core machine: more than a smoke run's whole evaluation, and paid
again by every evaluate and benchmark job of a study. (Training pays it anyway: `Optimizer.step` imports
torch._dynamo itself, for a graph break.) A process that never calls `torch.compile` has no use
for the mark, so `skip_dynamo_import()` resolves those wrappers to their plain functions up front, through
the cache slot torch's wrapper itself reads (`fn.__dynamo_disable`). Where torch's wrapper differs from the
one this expects, nothing is changed and the import happens as before.

Call it only in a process that will not compile (the CLI does, for `evaluate` and for benchmarks without
`+compile` cases): were torch.compile used later, dynamo could trace into those
functions."""

from __future__ import annotations

import sys
import types


def _resolve(wrapper: object) -> bool:
    """Point one `_disable_dynamo` wrapper at its plain function; whether it was one."""
    if not isinstance(wrapper, types.FunctionType):
        return False
    fn, code = wrapper.__dict__.get("__wrapped__"), wrapper.__code__
    if not isinstance(fn, types.FunctionType) or code.co_name != "inner" \
            or not code.co_filename.endswith("_compile.py"):
        return False
    fn.__dict__.setdefault("__dynamo_disable", fn)
    return True


def skip_dynamo_import() -> int:
    """Resolve torch's `_disable_dynamo` wrappers on the optimizer and on every dispatch mode defined so far
    (FlopCounterMode is imported first), unless dynamo is already imported; how many were resolved."""
    if "torch._dynamo" in sys.modules:
        return 0
    import torch.utils.flop_counter  # noqa: F401  (defines FlopCounterMode, the mode our jobs use)
    from torch.optim import Optimizer
    from torch.utils._python_dispatch import TorchDispatchMode

    targets = [*vars(Optimizer).values()]
    modes, seen = [TorchDispatchMode], set()
    while modes:
        mode = modes.pop()
        if mode not in seen:
            seen.add(mode)
            targets.append(vars(mode).get("__torch_dispatch__"))
            modes.extend(mode.__subclasses__())
    return sum(_resolve(t) for t in targets if t is not None)
