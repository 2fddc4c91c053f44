"""SparseDepth: per-token dynamic depth with hard skipping, and the routers it is compared against.

The names below are imported on first use (PEP 562), so that the analysis side (`sparsedepth.study`:
statistics, figures, tables) starts without importing torch: a Snakemake job per figure or table would
otherwise spend most of its time loading it.
"""

from importlib import import_module

_WHERE = {
    "ConfigError": ".config", "ModelConfig": ".config",
    "ModelOutput": ".model", "SparseDepthModel": ".model", "build_model": ".model",
    "ROUTERS": ".routing", "Decision": ".routing", "Router": ".routing",
}
__all__ = sorted(_WHERE)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'sparsedepth' has no attribute {name!r}")
    module = import_module(_WHERE[name], __name__)
    value = getattr(module, name)
    globals()[name] = value
    return value
