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


rule frontier:
    """The isoFLOP frontier (primaries of an isoflop study): per arm and budget the minimum of test bits per
    byte over model size (a parabola in log N) with its optimal size, bracketing checked, and frontier(arm) −
    frontier(reference) per budget by the paired hierarchical bootstrap over seeds and documents, refitted in
    every resample, Holm over all of them (sparsedepth.study.frontier)."""
    input:
        runs="results/runs.csv",
        units=frontier_units(),
    output:
        profiles="results/isoflop.csv",
        frontier="results/frontier.csv",
    params:
        sweep=json.dumps(sweeps.models(config)),
        dataset=FRONTIER.get("dataset"),
        reference=FRONTIER.get("reference"),
        arms=",".join(FRONTIER.get("arms", [])),
        resamples=FRONTIER.get("resamples"),
        split=config["stats"]["split"],
        alpha=config["stats"]["alpha"],
    resources:
        **job_resources("stats"),
    log:
        "results/logs/frontier.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.study.frontier --runs {input.runs:q} --units {input.units:q} "
        "--sweep {params.sweep:q} --dataset {params.dataset:q} --reference {params.reference:q} "
        "--arms {params.arms:q} --resamples {params.resamples:q} --split {params.split:q} "
        "--alpha {params.alpha:q} --profiles-out {output.profiles:q} --out {output.frontier:q} > {log:q} 2>&1"
