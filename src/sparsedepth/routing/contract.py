"""The router contract as a table, generated from `Router` itself, so the documentation cannot drift.

`python -m sparsedepth.routing.contract` prints the table; `--write` puts it into docs/CONTRACT.md between
the markers. Signatures and defaults come from the code; who calls each member, and when, is the one thing
written here by hand (`WHEN`), and a test fails when a public member of `Router` has no entry, when an entry
names no member, or when the document differs from what this generates.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

from .base import Router

BEGIN, END = "<!-- router-contract:begin -->", "<!-- router-contract:end -->"
DOC = Path(__file__).resolve().parents[3] / "docs" / "CONTRACT.md"

# member → (kind, who calls it and when). Kinds: must (no default), hook (a default a router may override),
# fact (a class attribute callers read), helper (the base class gives it to router authors; not overridden)
WHEN: dict[str, tuple[str, str]] = {
    "name": ("must", "registry key (`ROUTERS`), configs, run directories"),
    "decide": ("must", "model, per routed block, in depth order, on the state entering it"),
    "causal_in_training": ("fact", "causality tests: training-mode decisions read only the token's past"),
    "default_route_every": ("fact", "`make_router` when `route_every` is not given"),
    "routes_blocks": ("fact", "`make_router` (no routed layers when False: dense), benchmark"),
    "learned": ("fact", "training and tests: whether it has weights the loss trains"),
    "inference_modes": ("fact", "`set_inference`, evaluation (a row per mode), HF wrapper; causal first"),
    "training_plan": ("fact", "FLOP tests, their tolerance for plan / real step: `exact` (top-k, fixed "
                      "rules), `expected` (random drops), `budget` (gates at their target once trained)"),
    "shared_options": ("fact", "option tests (parametrized over it): which of `gating`, `temperature`, "
                       "`curriculum` its constructor takes"),
    "uniform_routing": ("fact", "generic tests: modes whose rule routes a sample's tokens alike by design"),
    "reset_parameters": ("hook", "model construction, once, after the trunk is initialised"),
    "attach": ("hook", "model construction, once: the shared read-out"),
    "begin": ("hook", "model.forward, once per pass, before the first block"),
    "finish": ("hook", "model.forward, once per pass, after the last block, before `aux_loss`"),
    "carry": ("hook", "self-speculative decoding, after the draft's blocks"),
    "restore": ("hook", "self-speculative decoding, after `begin` of the verification pass"),
    "set_inference": ("hook", "evaluation, benchmark, HF wrapper: select the eval-mode rule"),
    "propagates_state": ("hook", "FLOP accounting (inference and the training plan, in the mode it is in)"),
    "target_loss": ("hook", "model.forward with targets, after the head"),
    "calibrate": ("hook", "training, after the last step, on validation batches"),
    "fit_capacity": ("hook", "benchmark (`bench.calibrate`), on an untrained model in eval mode"),
    "set_progress": ("hook", "training loop, before each step"),
    "aux_loss": ("hook", "model.forward, after `finish`: summed into the training loss"),
    "weight_flops_per_token": ("hook", "FLOP accounting (via `flops_per_token`, `training_flops_per_token`)"),
    "flops_per_token": ("hook", "inference FLOP accounting (`flops.output_flops`)"),
    "training_counts": ("hook", "training FLOP plan (`flops.train_flops_per_step`)"),
    "training_readouts": ("hook", "training FLOPs of a step and the plan"),
    "training_flops_per_token": ("hook", "training FLOPs of a step and the plan"),
    "effective_capacity": ("helper", "read by routers: the capacity now (curriculum)"),
    "hard_gate": ("helper", "called by routers: run/skip from a margin (deterministic or sampled)"),
    "ranking_scores": ("helper", "called by routers: top-k scores (Gumbel noise when probabilistic)"),
    "add_aux": ("helper", "called by routers: record an auxiliary loss term of this pass"),
}


def members() -> list[str]:
    """Public members `Router` itself declares (methods, properties, class facts), in source order."""
    return [name for name in vars(Router) if not name.startswith("_")]


def _signature(name: str) -> str:
    value = inspect.getattr_static(Router, name)
    if isinstance(value, property):
        return f"`{name}` (property)"
    if callable(value):
        sig = str(inspect.signature(value)).replace("(self, ", "(").replace("(self)", "()").replace("'", "")
        return f"`{name}{sig}`"
    return f"`{name} = {value!r}`"


def _default(name: str) -> str:
    value = inspect.getattr_static(Router, name)
    doc = inspect.getdoc(value.fget if isinstance(value, property) else value) if callable(value) or \
        isinstance(value, property) else None
    if not doc:
        return "—"
    first = " ".join(doc.split("\n\n")[0].split())
    return first.split(". ")[0].rstrip(".") + "."


def table() -> str:
    missing = [m for m in members() if m not in WHEN]
    if missing:
        raise KeyError(f"routing/contract.py WHEN: no entry for Router member(s) {missing}")
    rows = ["| member | kind | signature | default (what it does) | called by, when |",
            "|---|---|---|---|---|"]
    order = {"must": 0, "fact": 1, "hook": 2, "helper": 3}
    for name in sorted(members(), key=lambda m: order[WHEN[m][0]]):
        kind, when = WHEN[name]
        default, signature = (text.replace("|", "\\|") for text in (_default(name), _signature(name)))
        rows.append(f"| `{name}` | {kind} | {signature} | {default} | {when} |")
    return "\n".join(rows) + "\n"


def documented(text: str) -> str:
    """The table between the markers of `text` (docs/CONTRACT.md)."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"{DOC}: markers {BEGIN} / {END} not found")
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def write(path: Path = DOC) -> None:
    text = path.read_text()
    documented(text)
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text(f"{head}{BEGIN}\n{table()}{END}{tail}")
    tmp.replace(path)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(table())
