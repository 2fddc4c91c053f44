rule paper:
    """paper/main.pdf from what main.tex includes (read from it: tables, numbers, figures, bibliography)."""
    input:
        paper_sources,
    output:
        report("paper/main.pdf", caption="../report/paper.rst", category="Paper"),
    resources:
        **job_resources("paper"),
    log:
        "results/logs/paper.log",
    conda:
        ENV
    shell:
        "cd paper && latexmk -pdf -halt-on-error -interaction=nonstopmode main.tex > ../{log:q} 2>&1"
