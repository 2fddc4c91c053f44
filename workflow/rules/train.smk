rule train:
    """One training run; a killed job resumes from its checkpoint when rerun with the same config."""
    input:
        data=lambda w: f"{data_dir(w.dataset)}/meta.json",
    output:
        summary=f"{RUN_DIR}/summary.json",
        weights=f"{RUN_DIR}/model.safetensors",
    params:
        out=lambda w, output: os.path.dirname(output.summary),
        config=lambda w: grid.config_json(config, run_key(w)),
    threads: max(1, config["threads"])
    log:
        "results/logs/train/{model}/{variant}/{dataset}/seed{seed}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth train --out {params.out} --config {params.config:q} --auto-resume --quiet "
        "> {log} 2>&1"


rule evaluate:
    """Validation/test loss, layers/token, FLOPs/token and the causality probes, per inference mode."""
    input:
        summary=f"{RUN_DIR}/summary.json",
        weights=f"{RUN_DIR}/model.safetensors",
    output:
        f"{RUN_DIR}/eval.json",
    params:
        run=lambda w, input: os.path.dirname(input.summary),
        max_batches=config["evaluate"]["max_batches"],
    threads: max(1, config["threads"])
    log:
        "results/logs/evaluate/{model}/{variant}/{dataset}/seed{seed}.log",
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} python -m sparsedepth evaluate --run {params.run} --out {output} "
        "--max-batches {params.max_batches} > {log} 2>&1"
