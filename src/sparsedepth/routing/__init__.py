"""Router registry: one name, one small class (see base.Router for the interface).

Built from the classes, not a hand-kept table: every `Router` subclass defined in a module of this package
with its own `name` is registered. The modules are imported statically, one line each, because the Hugging
Face export (ours and transformers' loader alike) copies only modules reached by static imports; a test
fails when a module of this package is not imported here.
"""

from .act import ACTRouter  # noqa: F401
from .base import Decision, Router
from .dense import DenseRouter  # noqa: F401
from .early_exit import EarlyExitRouter  # noqa: F401
from .layerdrop import LayerDropRouter  # noqa: F401
from .mod import MoDRouter  # noqa: F401
from .mor import MoRRouter  # noqa: F401
from .probe import FrozenProbeRouter, ProbeRouter  # noqa: F401
from .random import RandomRouter  # noqa: F401
from .threshold import ThresholdRouter  # noqa: F401


def registered_classes(root: type[Router] = Router) -> list[type[Router]]:
    """Subclasses of `root` (all depths) that this package defines and that name themselves."""
    found = []
    for cls in root.__subclasses__():  # `_`: the flat module names of an export (sparsedepth_routing_mod)
        if cls.__module__.startswith((f"{__name__}.", f"{__name__}_")) and "name" in vars(cls):
            found.append(cls)
        found.extend(registered_classes(cls))
    return found


ROUTERS: dict[str, type[Router]] = {}
for _cls in sorted(registered_classes(), key=lambda c: (c.routes_blocks, c.__module__, c.name)):
    if _cls.name in ROUTERS:
        raise RuntimeError(f"router name {_cls.name!r} is taken by both {ROUTERS[_cls.name]} and {_cls}")
    ROUTERS[_cls.name] = _cls

__all__ = ["ROUTERS", "Decision", "Router", "registered_classes"]
