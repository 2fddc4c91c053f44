# Speed: every benchmarked router against dense in the same process. Runs on CUDA when the job sees a GPU
# (`resources: gpu=1`), else on the CPU; the device is named in every row. A benchmark job takes all cores
# so training jobs never share the CPU with a timing.
rule benchmark_grid:
    """The configured model size and grid (`main`: train step, prefill, cached decode) or the origin project's
    own benchmark (`origin`: 6 layers, d=64, batch 2/8/16 × seq 20–256, its flattened batch beside ours)."""
    output:
        "results/bench/{grid}.csv",
    wildcard_constraints:
        grid="main|origin_grid",
    params:
        args=lambda w: bench_args("origin" if w.grid == "origin_grid" else "main"),
    threads: workflow.cores
    resources:
        **job_resources("benchmark_grid", gpu_token=1),
    log:
        "results/logs/benchmark/{grid}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.bench {params.args} --out {output:q} > {log:q} 2>&1"


rule merge_benchmarks:
    """One tidy benchmark table for tables, figures and the paper."""
    input:
        ["results/bench/main.csv"] + (["results/bench/origin_grid.csv"] if BENCH["origin_grid"] else []),
    output:
        "results/bench/bench.csv",
    resources:
        **job_resources("merge_benchmarks"),
    log:
        "results/logs/benchmark/merge.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.bench merge --out {output:q} {input:q} > {log:q} 2>&1"


rule benchmark:
    """`snakemake benchmark`: just the speed tables and figure (no training)."""
    input:
        "results/bench/bench.csv",
        "results/tables/bench.tex",
        "results/tables/bench_origin.tex",
        "results/figures/speed.pdf",


if SPEC_CELLS:  # `speculative.enabled`: without it nothing here exists and the paper says "not measured"

    rule benchmark_speculative:
        """Self-speculative against ordinary greedy decoding of one cell's trained runs (batch 1; `main`, the
        grid's cell, or `decode`, a deeper model trained to exit early): tokens/s, speedups over the
        reference's and the arm's own decoding, acceptance, tokens per verification round, FLOPs per token,
        and per exit the draft alone's speed (speculation's ceiling); it fails if a speculative output is not
        the greedy output."""
        input:
            summaries=speculative_inputs("summary.json"),
            weights=speculative_inputs("model.safetensors"),
            evals=speculative_inputs("eval.json"),  # each row carries its run's test bits per byte
        output:
            "results/bench/speculative/{cell}.csv",
        wildcard_constraints:
            cell="|".join(SPEC_CELLS),
        params:
            runs=lambda w, input: [os.path.dirname(p) for p in input.summaries],
            args=lambda w: speculative_args(w.cell),
        threads: workflow.cores
        resources:
            **job_resources("benchmark_speculative", gpu_token=1),
        log:
            "results/logs/benchmark/speculative-{cell}.log",
        conda:
            ENV
        shell:
            "python -m sparsedepth.bench speculative {params.args} --out {output:q} --runs {params.runs:q} "
            "> {log:q} 2>&1"

    rule merge_speculative:
        """One speculative table (its `cell` column tells the cells apart) for tables, numbers and the paper."""
        input:
            expand("results/bench/speculative/{cell}.csv", cell=list(SPEC_CELLS)),
        output:
            "results/bench/speculative.csv",
        resources:
            **job_resources("merge_speculative"),
        log:
            "results/logs/benchmark/merge_speculative.log",
        conda:
            ENV
        shell:
            "python -m sparsedepth.bench merge --speculative --out {output:q} {input:q} > {log:q} 2>&1"
