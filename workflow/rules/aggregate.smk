rule aggregate:
    """One tidy row per run × inference mode (docs/CONTRACT.md)."""
    input:
        run_paths("eval.json"),
    output:
        "results/runs.csv",
    params:
        runs=lambda w, input: [os.path.dirname(p) for p in input],
    log:
        "results/logs/aggregate.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.aggregate --out {output} {params.runs} > {log} 2>&1"


rule stats:
    """Each arm vs the baseline per (model, dataset): paired t / Wilcoxon, BCa CIs, corrected p-values."""
    input:
        "results/runs.csv",
    output:
        "results/stats.csv",
    params:
        metrics=" ".join(f"--metric {m}" for m in config["stats"]["metrics"]),
        correction=config["stats"]["correction"],
        baseline=config["baseline"],
    log:
        "results/logs/stats.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.stats --runs {input} --out {output} {params.metrics} "
        "--correction {params.correction} --baseline {params.baseline} > {log} 2>&1"
