"""Router registry: one name, one small class (see base.Router for the interface)."""

from .base import Decision, Router
from .dense import DenseRouter
from .early_exit import EarlyExitRouter
from .layerdrop import LayerDropRouter
from .mod import MoDRouter
from .mor import MoRRouter
from .probe import FrozenProbeRouter, ProbeRouter
from .random import RandomRouter
from .threshold import ThresholdRouter

ROUTERS: dict[str, type[Router]] = {
    cls.name: cls
    for cls in (DenseRouter, ProbeRouter, FrozenProbeRouter, MoDRouter, ThresholdRouter, RandomRouter,
                EarlyExitRouter, MoRRouter, LayerDropRouter)
}

__all__ = ["ROUTERS", "Decision", "Router"]
