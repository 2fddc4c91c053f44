rule paper:
    """paper/main.pdf: the text, the generated tables/numbers and the figures (latexmk, halts on error)."""
    input:
        tex=["paper/main.tex", "paper/refs.bib"],
        tables=expand("results/tables/{name}.tex", name=TABLES),
        figures=expand("results/figures/{name}.pdf", name=FIGURES),
    output:
        "paper/main.pdf",
    resources:
        **job_resources("paper"),
    log:
        "results/logs/paper.log",
    conda:
        ENV
    shell:
        "cd paper && latexmk -pdf -halt-on-error -interaction=nonstopmode main.tex > ../{log} 2>&1"
