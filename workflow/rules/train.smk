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
    threads: max(1, config["threads"]) * slurm.nproc(config)  # train.nproc > 1: torchrun, from the config
    priority: 1  # before the benchmarks, which take every core (prepare_data)
    resources:
        **job_resources("train"),
    log:
        f"results/logs/train/{RUN_TEMPLATE}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth train --out {params.out:q} --config {params.config:q} --auto-resume --quiet "
        "> {log:q} 2>&1"


rule evaluate:
    """The whole validation and test splits per inference mode: loss, bits/byte, layers & FLOPs/token, the
    causality probes (eval.json), and summed nats/tokens/bytes per document × segment (units.csv)."""
    input:
        summary=f"{RUN_DIR}/summary.json",
        weights=f"{RUN_DIR}/model.safetensors",
    output:
        eval=f"{RUN_DIR}/eval.json",
        units=f"{RUN_DIR}/units.csv",
    params:
        run=lambda w, input: os.path.dirname(input.summary),
        limit=evaluate_limit(),
        segment=config["evaluate"]["segment_tokens"],
        device=lambda w: grid.train_config(config, run_key(w)).device,  # the run's device, as training
    threads: max(1, config["threads"])
    priority: 1
    resources:
        **job_resources("evaluate"),
    log:
        f"results/logs/evaluate/{RUN_TEMPLATE}.log",
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} python -m sparsedepth evaluate --run {params.run:q} --out {output.eval:q} "
        "--units {output.units:q} --segment-tokens {params.segment:q} --device {params.device:q} {params.limit} "
        "> {log:q} 2>&1"
