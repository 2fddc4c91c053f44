"""LaTeX text for the generated tables and numbers: escaping, number formats and booktabs tables.

Why apart from the tables: every table, the hypotheses and the numbers.tex macros share these formats, so
a number reads the same in a table and in the running text; nothing here knows what the study measured.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

NA = r"\textit{n/a}"
NOT_MEASURED = r"\textit{not measured}"


class LatexError(ValueError):
    """Text that cannot become LaTeX (e.g. a macro name from nothing); the message says which."""


_LATEX_SPECIALS = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_SPECIALS))
_DIGITS = ("Zero", "One", "Two", "Three", "Four", "Five", "Six", "Seven", "Eight", "Nine")
MACRO_NAME = re.compile(r"^[A-Za-z]+$")


def escape_latex(text: object) -> str:
    """Text safe in LaTeX's text mode (router names like `probe-frozen`, `dense_iso`, 50 %)."""
    return _LATEX_RE.sub(lambda m: _LATEX_SPECIALS[m.group()], str(text))


def macro_name(*parts: object) -> str:
    """A TeX control-word name from free text: letters only, words capitalised, digits spelled out
    (`("best arm", "wikitext2")` → `BestArmWikitextTwo`)."""
    words = []
    for part in parts:
        for word in re.split(r"[^A-Za-z0-9]+", str(part)):
            for chunk in re.findall(r"[A-Za-z]+|[0-9]", word):
                words.append(_DIGITS[int(chunk)] if chunk.isdigit() else chunk[0].upper() + chunk[1:])
    name = "".join(words)
    if not MACRO_NAME.match(name):
        raise LatexError(f"cannot make a macro name from {parts!r}")
    return name



def finite(x) -> bool:
    return x is not None and isinstance(x, int | float | np.number) and math.isfinite(float(x))


def fmt_num(x, digits: int = 2) -> str:
    return f"{x:.{digits}f}" if finite(x) else NA


def fmt_signed(x, digits: int = 3) -> str:
    return f"${x:+.{digits}f}$" if finite(x) else NA


def fmt_pm(mean, half, digits: int = 2) -> str:
    """`$m \\pm h$`; just `$m$` when there is no interval (one seed)."""
    if not finite(mean):
        return NA
    if not finite(half):
        return f"${mean:.{digits}f}$"
    return f"${mean:.{digits}f} \\pm {half:.{digits}f}$"


def fmt_p(p) -> str:
    if not finite(p):
        return NA
    return "$<0.001$" if p < 0.001 else f"${p:.3f}$"


def p_clause(p) -> str:
    """`$p_{Holm} = 0.012$` for running text."""
    if not finite(p):
        return "no test"
    return r"$p_{\mathrm{Holm}} < 0.001$" if p < 0.001 else f"$p_{{\\mathrm{{Holm}}}} = {p:.3f}$"


def fmt_sci(x) -> str:
    """Scientific notation for tiny magnitudes (causality probes): `$3.1\\times10^{-7}$`, exact zero as 0."""
    if not finite(x):
        return NA
    if x == 0:
        return "$0$"
    mantissa, exponent = f"{x:.1e}".split("e")
    return f"${mantissa}\\times10^{{{int(exponent)}}}$"


def fmt_si(x, digits: int = 2) -> str:
    """Engineering notation with an SI prefix: 1.23\\,M."""
    if not finite(x):
        return NA
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.{digits}f}\\,{prefix}"
    return f"{x:.{digits}f}"


def fmt_int(x) -> str:
    """An integer with thin-space thousands separators."""
    return f"{int(round(x)):,}".replace(",", r"\,") if finite(x) else NA


def fmt_list(items: Sequence[object]) -> str:
    items = [escape_latex(i) for i in items]
    if not items:
        return NA
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def fmt_values(values: Sequence) -> str:
    """A single value, or the range min–max when runs disagree (e.g. steps per model)."""
    v = sorted({x for x in values if finite(x)})
    if not v:
        return NA
    show = (lambda x: fmt_int(x)) if all(float(x).is_integer() for x in v) else (lambda x: f"{x:g}")
    return show(v[0]) if len(v) == 1 else f"{show(v[0])}--{show(v[-1])}"


LONG_TABLE_ROWS = 32  # more rows than this: a longtable that breaks across pages


FIT_WIDTH = "\\resizebox{\\ifdim\\width>\\linewidth\\linewidth\\else\\width\\fi}{!}{%\n"


def to_latex(disp: pd.DataFrame, keys: int, caption: str, label: str, rule_keys: int | None = None) -> str:
    """Booktabs table from cells that are already LaTeX (text escaped). The first `keys` columns name the
    row (e.g. model, dataset, arm): repeated leading key values are blanked and a `\\midrule` separates
    groups of the first `rule_keys` keys (default `keys - 1`). Long tables become a `longtable`."""
    rule_keys = keys - 1 if rule_keys is None else rule_keys
    body = disp.astype(str).copy()
    groups = [tuple(r) for r in disp.iloc[:, :rule_keys].itertuples(index=False)]
    for j in range(keys - 1):
        col = body.columns[j]
        prefix = [tuple(r) for r in disp.iloc[:, : j + 1].itertuples(index=False)]
        body[col] = ["" if i and prefix[i] == prefix[i - 1] else v for i, v in enumerate(body[col])]
    long = len(body) > LONG_TABLE_ROWS
    styler = body.style.hide(axis="index")
    tex = styler.to_latex(
        hrules=True, caption=caption, label=label, column_format="l" * keys + "r" * (body.shape[1] - keys),
        environment="longtable" if long else "table", position=None if long else "tbp",
        position_float=None if long else "centering",
    )
    lines = tex.splitlines()
    first = lines.index("\\midrule") + 1
    if long:  # the header Styler repeats on every page ends at \endhead; data starts after \endlastfoot
        first = next(i for i, line in enumerate(lines) if line.startswith("\\endlastfoot")) + 1
    out = lines[:first]
    for i, line in enumerate(lines[first:first + len(body)]):
        if i and rule_keys and groups[i] != groups[i - 1]:
            out.append("\\midrule")
        out.append(line)
    out += lines[first + len(body):]
    tex = "\n".join(out) + "\n"
    if not long:  # small type, and shrunk to the text width only when still wider (never enlarged)
        tex = tex.replace("\\centering\n", "\\centering\n\\small\n", 1)
        tex = tex.replace("\\begin{tabular}", FIT_WIDTH + "\\begin{tabular}", 1)
        tex = tex.replace("\\end{tabular}", "\\end{tabular}}", 1)
    return tex



def empty_table(caption: str, label: str, reason: str) -> str:
    return ("\\begin{table}[tbp]\n\\centering\n"
            f"\\caption{{{caption}}}\n\\label{{{label}}}\n"
            f"\\fbox{{\\parbox{{0.8\\linewidth}}{{\\centering\\emph{{{escape_latex(reason)}}}}}}}\n"
            "\\end{table}\n")

