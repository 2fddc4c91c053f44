# Figures and tables: plotting is separate from computing, so a style change never re-trains.
rule figure:
    """One figure as PDF + PNG (sparsedepth.figures NAME)."""
    input:
        figure_inputs,
    output:
        pdf="results/figures/{name}.pdf",
        png="results/figures/{name}.png",
    wildcard_constraints:
        name="|".join(FIGURE_INPUTS),
    params:
        inputs=input_flags,
        variants=",".join(config["figures"]["routing_map_variants"]),
        tokens=config["figures"]["tokens"],
    resources:
        **job_resources("figure"),
    log:
        "results/logs/figures/{name}.log",
    conda:
        ENV
    shell:
        "MPLBACKEND=Agg python -m sparsedepth.figures {wildcards.name} {params.inputs} --out {output.pdf} "
        "--variants {params.variants:q} --tokens {params.tokens} > {log} 2>&1"


rule table:
    """One LaTeX table (pandas Styler, booktabs) or the numbers.tex macros (sparsedepth.tables NAME)."""
    input:
        lambda w: TABLE_INPUTS[w.name],
    output:
        "results/tables/{name}.tex",
    wildcard_constraints:
        name="|".join(TABLE_INPUTS),
    params:
        args=lambda w: {"bench_seed": "bench --grid seed"}.get(w.name, w.name),
        study=config["name"],
        inputs=input_flags,
    resources:
        **job_resources("table"),
    log:
        "results/logs/tables/{name}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.tables {params.args} {params.inputs} --study {params.study:q} --out {output} "
        "> {log} 2>&1"
