"""The paper rule's inputs are what paper/main.tex includes, read from the source."""

import re
from pathlib import Path

import pytest

from sparsedepth.study.paper import PaperError, paper_inputs

REPO = Path(__file__).resolve().parents[2]
TABLES = ["hypotheses", "main", "equal_steps", "bench", "bench_origin", "speculative", "frontier", "numbers"]
FIGURES = ["pareto", "train_flops", "learning_curve", "layers_hist", "routing_map", "speed", "attention",
           "isoflop", "frontier"]


def test_the_derived_inputs_are_exactly_what_main_tex_includes(monkeypatch):
    monkeypatch.chdir(REPO)
    made = [f"results/tables/{t}.tex" for t in TABLES] + [f"results/figures/{f}.pdf" for f in FIGURES]
    derived = paper_inputs("paper/main.tex", made)
    text = (REPO / "paper" / "main.tex").read_text()
    tables = {f"results/tables/{m}" for m in re.findall(r"\\input\{\.\./results/tables/([^}]+)\}", text)}
    graphics = re.findall(r"\\includegraphics(?:\[[^\]]*\])?\{([^}]+)\}", text)
    figures = {f"results/figures/{m}" for m in graphics}
    assert set(derived) == {"paper/main.tex", "paper/refs.bib"} | tables | figures
    assert len(derived) == len(set(derived)) and tables and figures


def test_a_missing_include_fails_naming_the_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "main.tex").write_text(
        "\\graphicspath{{../results/figures/}}\n% \\input{commented_out}\n"
        "\\input{../results/tables/main.tex}\n\\includegraphics[width=1cm]{pareto}\n\\input{../results/tables/nope.tex}\n")
    made = ["results/tables/main.tex", "results/figures/pareto.pdf"]
    with pytest.raises(PaperError, match=r"main\.tex:5: .*results/tables/nope\.tex.*no rule makes"):
        paper_inputs("paper/main.tex", made)
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "tables" / "nope.tex").write_text("")  # an existing file is fine
    assert paper_inputs("paper/main.tex", made) == ["paper/main.tex", "results/tables/main.tex",
                                                      "results/figures/pareto.pdf", "results/tables/nope.tex"]
