"""The baseline: every token runs every block."""

from .base import Decision, Router


class DenseRouter(Router):
    name = "dense"
    shared_options = ()
    training_plan = "exact"
    learned = False
    routes_blocks = False

    def decide(self, h, layer) -> Decision:  # never called: a dense model has no routed layers
        raise RuntimeError("the dense router routes no layer")
