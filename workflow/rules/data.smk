rule prepare_data:
    """Clean and split a corpus, train its BPE on the train split, cache the tokens."""
    output:
        meta=f"{config['data_dir']}/{{dataset}}-v{config['vocab_size']}/meta.json",
    params:
        out=lambda w, output: os.path.dirname(output.meta),
        data_path=lambda w: (
            f"--data-path {q(config['data_paths'][w.dataset])}" if w.dataset in config["data_paths"] else ""
        ),
        vocab=config["vocab_size"],
    priority: 1  # the chain to the runs first: a benchmark job takes every core, and nothing waits for it
    resources:
        **job_resources("prepare_data"),
    log:
        "results/logs/prepare_data/{dataset}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth prepare --dataset {wildcards.dataset:q} --out {params.out:q} "
        "--vocab-size {params.vocab:q} {params.data_path} > {log:q} 2>&1"
