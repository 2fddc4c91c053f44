# An independent second measurement of every run (config `lm_eval: {enabled: true}`): the run exported as a
# self-contained Hugging Face directory, scored by lm-evaluation-harness's stock `hf` model on the run's test
# documents (sparsedepth.harness); aggregate puts its bits per byte beside ours (runs.csv `lm_eval_bpb`).


rule export_hf:
    """A finished run as a Hub-style directory that plain transformers loads (trust_remote_code=True)."""
    input:
        summary=f"{RUN_DIR}/summary.json",
        weights=f"{RUN_DIR}/model.safetensors",
    output:
        temp(directory(EXPORT_DIR)),  # beside the run (export refuses inside); deleted once lm_eval has read it
    params:
        run=lambda w, input: os.path.dirname(input.summary),
    resources:
        **job_resources("export_hf"),
    log:
        f"results/logs/export_hf/{RUN_TEMPLATE}.log",
    conda:
        ENV
    shell:
        "python -m sparsedepth.hf export --run {params.run:q} --out {output:q} > {log:q} 2>&1"


rule lm_eval:
    """lm-evaluation-harness (`python -m lm_eval --model hf`) on the export: the run's test documents as a
    local loglikelihood_rolling task; bits per byte, byte and word perplexity (lm_eval.json)."""
    input:
        model=EXPORT_DIR,
        summary=f"{RUN_DIR}/summary.json",
        data=lambda w: f"{data_dir(w.dataset)}/meta.json",
    output:
        f"{RUN_DIR}/lm_eval.json",
    params:
        run=lambda w, input: os.path.dirname(input.summary),
        options=lm_eval_options(),
    threads: max(1, config["threads"])
    resources:
        **job_resources("lm_eval"),
    log:
        f"results/logs/lm_eval/{RUN_TEMPLATE}.log",
    conda:
        ENV
    shell:
        "OMP_NUM_THREADS={threads} python -m sparsedepth.harness --run {params.run:q} --model {input.model:q} "
        "--out {output:q} {params.options} > {log:q} 2>&1"
