# Helpers shared by the rules: paths of the grid's runs and of the final outputs.
import importlib.util
import json
import os
import sys

from sparsedepth import slurm
from sparsedepth.grid import RunKey

ENV = "../../environment.yml"
RUN_DIR = "results/runs/{model}/{variant}/{dataset}/seed{seed}"
FIGURES = ["pareto", "train_flops", "learning_curve", "layers_hist", "routing_map", "speed", "attention"]
TABLES = ["hypotheses", "main", "equal_steps", "bench", "bench_seed", "numbers"]


# Rules run `python -m sparsedepth ...`. When the interpreter running Snakemake is the project's environment
# (it has torch), it goes first on PATH: local jobs and Slurm jobs (sbatch --export=ALL) then use it without
# an activated venv. A Snakemake from elsewhere (pipx, a conda env) leaves PATH as the user set it.
_BIN = os.path.dirname(sys.executable)
if importlib.util.find_spec("torch") and os.environ.get("PATH", "").split(os.pathsep)[0] != _BIN:
    os.environ.update(PATH=_BIN + os.pathsep + os.environ.get("PATH", ""))


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
    "bench_seed": ["results/bench/bench.csv"],
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
    if grid_name == "seed":
        return f"--grid seed {common}"
    return (f"{common} --routers {csv_list(BENCH['routers'])} --kinds {csv_list(BENCH['kinds'])} "
            f"--capacity {BENCH['capacity']} --batch {csv_list(BENCH['batch'])} --seq {csv_list(BENCH['seq'])} "
            f"--d-model {BENCH['d_model']} --n-layers {BENCH['n_layers']} --n-heads {BENCH['n_heads']} "
            f"--decode-prompt {csv_list(BENCH['decode_prompt'])} --decode-new {csv_list(BENCH['decode_new'])} "
            f"--decode-batch {csv_list(BENCH['decode_batch'])}")


# --- resources ---
def job_resources(name, gpu_token=0):
    """Rule `name`'s `resources:`, sized from the grid by sparsedepth.slurm: wall time (doubled per retry) and
    memory; on a `device: cuda` grid a GPU as GRES (`gres`); account and partition from SPARSEDEPTH_SLURM_*
    in the environment. Local runs ignore all of these but `gpu`: a token that profiles/default caps at one
    so that one benchmark at a time holds the GPU. The token is 0 under any other executor (decided when
    the job runs: the executor is not known while the workflow is parsed), so the cap, which Snakemake also
    applies to cluster runs (profiles/default is the workflow profile), never serialises cluster jobs."""
    resources = slurm.site(slurm.gpus(config, name))
    if gpu_token:
        resources["gpu"] = lambda w: gpu_token if workflow.local_exec else 0
    if name in ("train", "evaluate"):
        resources["runtime"] = lambda w, attempt: slurm.runtime(config, name, run_key(w), attempt)
        resources["mem_mb"] = lambda w: slurm.mem_mb(config, name, run_key(w))
    else:
        resources["runtime"] = lambda w, attempt: slurm.runtime(config, name, attempt=attempt)
        resources["mem_mb"] = slurm.mem_mb(config, name)
    if name == "benchmark_grid":  # its threads are the submitting host's cores; ask for what it times with
        resources["cpus_per_task"] = BENCH["threads"] or 8
    return resources
