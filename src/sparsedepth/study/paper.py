"""The files the paper includes, read from its LaTeX source, so the paper rule depends on what it uses.

Why parse: a hand-kept list of tables and figures drifts from `main.tex` (a new `\\input` the rule does not
know is built from a stale file, or not at all). Paths are resolved as LaTeX does from the source's own
directory: `\\input{x}` (`.tex` added), `\\includegraphics{x}` through `\\graphicspath`, `\\bibliography{x}`
(`.bib`). An include that is neither an existing source file nor an output some rule makes is an error
naming its line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Collection
from pathlib import Path

COMMAND = re.compile(r"\\(input|include|includegraphics|bibliography)\s*(?:\[[^\]]*\])?\s*\{([^}]*)\}")
GRAPHICSPATH = re.compile(r"\\graphicspath\s*\{((?:\s*\{[^}]*\})+)\s*\}")
COMMENT = re.compile(r"(?<!\\)%.*")
SUFFIX = {"input": ".tex", "include": ".tex", "includegraphics": ".pdf", "bibliography": ".bib"}


class PaperError(ValueError):
    """An include the workflow cannot provide; the message names the source line."""


def _resolve(base: Path, name: str, command: str, graphics: list[str]) -> list[str]:
    """Candidate paths (relative to the working directory, normalised) of one included name."""
    path = name if Path(name).suffix else name + SUFFIX[command]
    dirs = graphics if command == "includegraphics" and graphics else [""]
    return [os.path.normpath(base / d / path) for d in dirs]


def paper_inputs(tex: str | Path, producible: Collection[str] = ()) -> list[str]:
    """Every file `tex` includes, in order of appearance (each once), the source itself first. Each must
    exist or be in `producible` (outputs of the workflow's rules)."""
    tex = Path(tex)
    base = tex.parent
    lines = [COMMENT.sub("", line) for line in tex.read_text().splitlines()]
    graphics = [d for m in GRAPHICSPATH.finditer("\n".join(lines)) for d in re.findall(r"\{([^}]*)\}", m[1])]
    made = {os.path.normpath(p) for p in producible}
    found = [os.path.normpath(tex)]
    for number, line in enumerate(lines, 1):
        for command, names in COMMAND.findall(line):
            for name in names.split(",") if command == "bibliography" else [names]:
                candidates = _resolve(base, name.strip(), command, graphics)
                hit = next((c for c in candidates if c in made or Path(c).is_file()), None)
                if hit is None:
                    raise PaperError(f"{tex}:{number}: \\{command}{{{name}}} is {' or '.join(candidates)}, "
                                     "which no rule makes and which does not exist")
                if hit not in found:
                    found.append(hit)
    return found
