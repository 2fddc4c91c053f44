rule aggregate:
    """One tidy row per run × inference mode, and every run's learning curve (docs/CONTRACT.md)."""
    input:
        aggregate_inputs(),
    output:
        runs="results/runs.csv",
        curves="results/curves.csv",
    params:
        runs=lambda w, input: list(dict.fromkeys(os.path.dirname(p) for p in input)),
    resources:
        **job_resources("aggregate"),
    log:
        "results/logs/aggregate.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.study.aggregate --out {output.runs:q} --curves {output.curves:q} {params.runs:q} "
        "> {log:q} 2>&1"


rule stats:
    """The declared primaries (Holm) and every other arm vs the baseline (BH), in bits per byte: a paired
    hierarchical bootstrap over seeds and documents, the seed-level t-test beside it, MDE and verdict."""
    input:
        runs="results/runs.csv",
        units=run_paths("units.csv"),
    output:
        "results/stats.csv",
    params:
        primaries=json.dumps(config["primaries"]),
        split=config["stats"]["split"],
        unit=config["stats"]["unit"],
        alpha=config["stats"]["alpha"],
        baseline=config["baseline"],
    resources:
        **job_resources("stats"),
    log:
        "results/logs/stats.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.study.stats --runs {input.runs:q} --units {input.units:q} --out {output:q} "
        "--primaries {params.primaries:q} --baseline {params.baseline:q} --split {params.split:q} "
        "--unit {params.unit:q} --alpha {params.alpha:q} > {log:q} 2>&1"
