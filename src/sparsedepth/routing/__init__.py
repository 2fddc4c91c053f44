"""Router registry: one name, one small class (see base.Router for the interface).

Built from the classes, not a hand-kept list: every module of this package is imported, and every `Router`
subclass defined in one with its own `name` is registered, so a new router is one new file.
"""

import importlib
import pkgutil

from .base import Decision, Router

for _module in pkgutil.iter_modules(__path__):
    if _module.name != "contract":  # the documentation generator, run as a script (`python -m`)
        importlib.import_module(f"{__name__}.{_module.name}")


def registered_classes(root: type[Router] = Router) -> list[type[Router]]:
    """Subclasses of `root` (all depths) that this package defines and that name themselves."""
    found = []
    for cls in root.__subclasses__():
        if cls.__module__.startswith(f"{__name__}.") and "name" in vars(cls):
            found.append(cls)
        found.extend(registered_classes(cls))
    return found


ROUTERS: dict[str, type[Router]] = {}
for _cls in sorted(registered_classes(), key=lambda c: (c.routes_blocks, c.__module__, c.name)):
    if _cls.name in ROUTERS:
        raise RuntimeError(f"router name {_cls.name!r} is taken by both {ROUTERS[_cls.name]} and {_cls}")
    ROUTERS[_cls.name] = _cls

__all__ = ["ROUTERS", "Decision", "Router", "registered_classes"]
