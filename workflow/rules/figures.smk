# Figures and tables: plotting is separate from computing, so a style change never re-trains.
rule figure:
    """One figure as PDF + PNG (sparsedepth.study.figures NAME)."""
    input:
        figure_inputs,
    output:
        pdf="results/figures/{name}.pdf",
        png=report(
            "results/figures/{name}.png", caption="../report/figure.rst", category="Figures", subcategory="{name}"
        ),
    wildcard_constraints:
        name="|".join(FIGURE_INPUTS),
    params:
        inputs=input_flags,
        variants=",".join(config["figures"]["routing_map_variants"]),
        tokens=config["figures"]["tokens"],
        baseline=config["baseline"],
    resources:
        **job_resources("figure"),
    log:
        "results/logs/figures/{name}.log",
    conda:
        ENV
    shell:
        "MPLBACKEND=Agg python -m sparsedepth.study.figures {wildcards.name:q} {params.inputs} --out {output.pdf:q} "
        "--baseline {params.baseline:q} --variants {params.variants:q} --tokens {params.tokens:q} > {log:q} 2>&1"


rule table:
    """One LaTeX table (pandas Styler, booktabs) or the numbers.tex macros (sparsedepth.study.tables NAME)."""
    input:
        lambda w: TABLE_INPUTS[w.name],
    output:
        report("results/tables/{name}.tex", caption="../report/table.rst", category="Tables", subcategory="{name}"),
    wildcard_constraints:
        name="|".join(TABLE_INPUTS),
    params:
        args=lambda w: {"bench_origin": "bench --grid origin"}.get(w.name, w.name),
        study=config["name"],
        baseline=config["baseline"],
        inputs=input_flags,
    resources:
        **job_resources("table"),
    log:
        "results/logs/tables/{name}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.study.tables {params.args} {params.inputs} --baseline {params.baseline:q} "
        "--study {params.study:q} --out {output:q} > {log:q} 2>&1"
