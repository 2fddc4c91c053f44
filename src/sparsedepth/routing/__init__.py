"""Router registry: one name, one small class (see base.Router for the interface)."""

from .base import Decision, Router
from .dense import DenseRouter
from .early_exit import EarlyExitRouter
from .layerdrop import LayerDropRouter
from .mod import MoDRouter
from .mor import MoRRouter
from .random import RandomRouter
from .seed import FrozenSeedRouter, SeedRouter
from .threshold import ThresholdRouter

ROUTERS: dict[str, type[Router]] = {
    cls.name: cls
    for cls in (DenseRouter, SeedRouter, FrozenSeedRouter, MoDRouter, ThresholdRouter, RandomRouter,
                EarlyExitRouter, MoRRouter, LayerDropRouter)
}

__all__ = ["ROUTERS", "Decision", "Router"]
