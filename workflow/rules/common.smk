# Helpers shared by the rules: paths of the grid's runs and of the final outputs.
import json
import os

from sparsedepth.grid import RunKey

ENV = "../../environment.yml"
RUN_DIR = "results/runs/{model}/{variant}/{dataset}/seed{seed}"
FIGURES = ["pareto", "train_flops", "learning_curve", "layers_hist", "routing_map", "speed", "attention"]
TABLES = ["hypotheses", "main", "equal_steps", "bench", "bench_origin", "numbers"]


def data_dir(dataset):
    return f"{config['data_dir']}/{dataset}-v{config['vocab_size']}"


def run_key(wildcards):
    return RunKey(wildcards.model, wildcards.variant, wildcards.dataset, int(wildcards.seed))


def evaluate_limit():
    """`--max-batches N` when the grid caps evaluation (a quick look); by default the whole split."""
    limit = config["evaluate"].get("max_batches")
    return f"--max-batches {int(limit)}" if limit else ""


def run_paths(name):
    return [f"results/{key.path}/{name}" for key in RUNS]


def final_outputs():
    outputs = ["results/runs.csv", "results/stats.csv", "results/bench/bench.csv"]
    outputs += expand("results/figures/{name}.pdf", name=FIGURES)
    outputs += expand("results/tables/{name}.tex", name=TABLES)
    if config["paper"]:
        outputs.append("paper/main.pdf")
    return outputs


# --- figures and tables: which inputs each one reads ---
FIGURE_INPUTS = {
    "pareto": ["results/runs.csv"],
    "train_flops": ["results/runs.csv"],
    "learning_curve": ["results/curves.csv"],
    "layers_hist": ["results/runs.csv"],
    "routing_map": ["results/runs.csv"],
    "attention": ["results/runs.csv"],
    "speed": ["results/bench/bench.csv"],
}
TABLE_INPUTS = {
    "hypotheses": ["results/stats.csv"],
    "main": ["results/runs.csv", "results/stats.csv"],
    "equal_steps": ["results/curves.csv"],
    "bench": ["results/bench/bench.csv"],
    "bench_origin": ["results/bench/bench.csv"],
    "numbers": ["results/runs.csv", "results/stats.csv", "results/bench/bench.csv", "results/curves.csv"],
}


INPUT_FLAGS = {"runs.csv": "--runs", "stats.csv": "--stats", "bench.csv": "--bench", "curves.csv": "--curves"}


def input_flags(wildcards, input):
    """Each table/figure command is handed exactly the tidy files its rule declares (nothing by default)."""
    flags = [(INPUT_FLAGS.get(os.path.basename(p)), p) for p in input]
    return " ".join(f"{flag} {path}" for flag, path in flags if flag)


def figure_inputs(wildcards):
    inputs = list(FIGURE_INPUTS[wildcards.name])
    if wildcards.name in ("layers_hist", "routing_map", "attention"):  # they read trained weights
        inputs += run_paths("model.safetensors")
    return inputs


# --- benchmarks ---
BENCH = config["benchmark"]


def csv_list(values):
    return ",".join(str(v) for v in values)


def bench_args(grid_name):
    """Command-line flags of `python -m sparsedepth.bench` for one grid, from the config."""
    common = (f"--device {BENCH['device']} --threads {BENCH['threads']} --repeats {BENCH['repeats']} "
              f"--warmup {BENCH['warmup']} --max-seconds {BENCH['max_seconds']}")
    if grid_name == "origin":
        return f"--grid origin {common}"
    return (f"{common} --routers {csv_list(BENCH['routers'])} --kinds {csv_list(BENCH['kinds'])} "
            f"--capacity {BENCH['capacity']} --batch {csv_list(BENCH['batch'])} --seq {csv_list(BENCH['seq'])} "
            f"--d-model {BENCH['d_model']} --n-layers {BENCH['n_layers']} --n-heads {BENCH['n_heads']} "
            f"--decode-prompt {csv_list(BENCH['decode_prompt'])} --decode-new {csv_list(BENCH['decode_new'])} "
            f"--decode-batch {csv_list(BENCH['decode_batch'])}")
