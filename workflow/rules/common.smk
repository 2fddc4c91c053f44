# Helpers shared by the rules: paths of the grid's runs, of the final outputs, and what each command reads.
import importlib.util
import json
import os
import shlex
import sys

from sparsedepth.study import slurm, sweeps
from sparsedepth.study.layout import RUN_TEMPLATE, RunKey, run_dir, run_dir_pattern
from sparsedepth.study.paper import paper_inputs

ENV = "../../environment.yml"
RUN_DIR = run_dir_pattern("results")
EXPORT_DIR = f"results/exports/{RUN_TEMPLATE}"  # Hugging Face exports of the runs (lm_eval)
PAPER = "paper/main.tex"


def q(value):
    """A config value as one shell word: study configs are data, never shell (issue 13)."""
    return shlex.quote(str(value))


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
    return [f"{run_dir('results', key)}/{name}" for key in RUNS]


# --- the isoFLOP frontier (workflow/rules/aggregate.smk): only for a study with an `isoflop:` sweep ---
FRONTIER = sweeps.frontier_spec(config)  # {} without a sweep
FRONTIER_CSV = ["results/isoflop.csv", "results/frontier.csv"] if FRONTIER else []


def frontier_units():
    """units.csv of exactly the sweep's runs (the frontier reads nothing else per run)."""
    return [f"{run_dir('results', key)}/units.csv" for key in RUNS if sweeps.is_sweep_model(config, key.model)]


# --- lm-evaluation-harness: the optional second measurement (workflow/rules/lm_eval.smk) ---
LM_EVAL = config["lm_eval"]


def aggregate_inputs():
    """eval.json of every run, and lm_eval.json too when the grid asks for the harness's measurement."""
    return run_paths("eval.json") + (run_paths("lm_eval.json") if LM_EVAL["enabled"] else [])


def lm_eval_options():
    """`python -m sparsedepth.harness` flags from the config (each quoted)."""
    limit = LM_EVAL.get("limit")
    return (f"--batch-size {q(LM_EVAL['batch_size'])} --device {q(LM_EVAL['device'])}"
            + (f" --limit {q(limit)}" if limit else ""))


# --- the speculative-decoding benchmark (workflow/rules/benchmark.smk): off unless `speculative.enabled` ---
SPEC = config["speculative"]
SPEC_CELLS = grid.speculative_cells(config)  # main (and decode): settings and the runs read; {} when off
SPEC_CSV = ["results/bench/speculative.csv"] if SPEC_CELLS else []  # without it: "not measured"


def speculative_inputs(name):
    """Input function: `name` (summary.json, model.safetensors) of exactly the runs cell `w.cell` reads."""
    return lambda w: [f"{run_dir('results', key)}/{name}" for key in SPEC_CELLS[w.cell]["runs"]]


def speculative_args(cell):
    """`python -m sparsedepth.bench speculative` flags of one cell, from the config (each quoted)."""
    c = SPEC_CELLS[cell]
    flags = {"cell": q(cell), "reference": q(c["reference"]), "arms": csv_list(c["arms"]),
             "exit-layers": csv_list(c["exit_layers"]), "draft-tokens": csv_list(c["draft_tokens"])}
    if c["baselines"]:
        flags["baselines"] = csv_list(c["baselines"])
    flags.update({k.replace("_", "-"): q(c[k]) for k in ("prompts", "prompt_len", "new_tokens", "repeats",
                                                           "warmup", "device", "threads", "processes")})
    return " ".join(f"--{k} {v}" for k, v in flags.items())


# --- figures and tables: which inputs each one reads ---
FIGURE_INPUTS = {
    "pareto": ["results/runs.csv"],
    "train_flops": ["results/runs.csv"],
    "learning_curve": ["results/curves.csv"],
    "layers_hist": ["results/runs.csv"],
    "routing_map": ["results/runs.csv"],
    "attention": ["results/runs.csv"],
    "speed": ["results/bench/bench.csv"],
    "isoflop": FRONTIER_CSV,  # without a sweep: no inputs, and the figure says "not measured"
    "frontier": FRONTIER_CSV,
}
TABLE_INPUTS = {
    "hypotheses": ["results/stats.csv"],
    "main": ["results/runs.csv", "results/stats.csv"],
    "equal_steps": ["results/curves.csv"],
    "bench": ["results/bench/bench.csv"],
    "bench_origin": ["results/bench/bench.csv"],
    "speculative": SPEC_CSV,
    "frontier": FRONTIER_CSV[1:],
    "numbers": ["results/runs.csv", "results/stats.csv", "results/bench/bench.csv", "results/curves.csv",
                *SPEC_CSV, *FRONTIER_CSV[1:]],
}
FIGURES = list(FIGURE_INPUTS)
TABLES = list(TABLE_INPUTS)


def final_outputs():
    outputs = ["results/runs.csv", "results/stats.csv", "results/bench/bench.csv", *SPEC_CSV, *FRONTIER_CSV]
    outputs += expand("results/figures/{name}.pdf", name=FIGURES)
    outputs += expand("results/tables/{name}.tex", name=TABLES)
    if config["paper"]:
        outputs.append("paper/main.pdf")
    return outputs


def paper_sources(wildcards=None):
    """What paper/main.tex includes (tables, figures, bibliography), read from the source itself."""
    made = expand("results/figures/{name}.pdf", name=FIGURES) + expand("results/tables/{name}.tex", name=TABLES)
    return paper_inputs(PAPER, made)


INPUT_FLAGS = {"runs.csv": "--runs", "stats.csv": "--stats", "bench.csv": "--bench", "curves.csv": "--curves",
               "speculative.csv": "--speculative", "isoflop.csv": "--profiles", "frontier.csv": "--frontier"}


def input_flags(wildcards, input):
    """Each table/figure command is handed exactly the tidy files its rule declares (nothing by default)."""
    flags = [(INPUT_FLAGS.get(os.path.basename(p)), p) for p in input]
    return " ".join(f"{flag} {q(path)}" for flag, path in flags if flag)


def figure_inputs(wildcards):
    inputs = list(FIGURE_INPUTS[wildcards.name])
    if wildcards.name in ("layers_hist", "routing_map", "attention"):  # they read trained weights
        inputs += run_paths("model.safetensors")
    return inputs


# --- benchmarks ---
BENCH = config["benchmark"]


def csv_list(values):
    return q(",".join(str(v) for v in values))


def bench_args(grid_name):
    """Command-line flags of `python -m sparsedepth.bench` for one grid, from the config (each quoted)."""
    common = (f"--device {q(BENCH['device'])} --threads {q(BENCH['threads'])} --repeats {q(BENCH['repeats'])} "
              f"--warmup {q(BENCH['warmup'])} --max-seconds {q(BENCH['max_seconds'])} "
              f"--processes {q(BENCH['processes'])}")
    if grid_name == "origin":
        return f"--grid origin {common}"
    return (f"{common} --routers {csv_list(BENCH['routers'])} --kinds {csv_list(BENCH['kinds'])} "
            f"--capacity {q(BENCH['capacity'])} --batch {csv_list(BENCH['batch'])} "
            f"--seq {csv_list(BENCH['seq'])} --d-model {q(BENCH['d_model'])} --n-layers {q(BENCH['n_layers'])} "
            f"--n-heads {q(BENCH['n_heads'])} --decode-prompt {csv_list(BENCH['decode_prompt'])} "
            f"--decode-new {csv_list(BENCH['decode_new'])} --decode-batch {csv_list(BENCH['decode_batch'])}")


# --- resources ---
def job_resources(name, gpu_token=0):
    """Rule `name`'s `resources:`, sized from the grid by sparsedepth.study.slurm: wall time (doubled per retry) and
    memory; on a `device: cuda` grid a GPU as GRES (`gres`); account and partition from SPARSEDEPTH_SLURM_*
    in the environment. Local runs ignore all of these but `gpu`: a token that profiles/default caps at one
    so that one benchmark at a time holds the GPU. The token is 0 under any other executor (decided when
    the job runs: the executor is not known while the workflow is parsed), so the cap, which Snakemake also
    applies to cluster runs (profiles/default is the workflow profile), never serialises cluster jobs."""
    resources = slurm.site(slurm.gpus(config, name))
    if gpu_token:
        resources["gpu"] = lambda w: gpu_token if workflow.local_exec else 0
    if name in ("train", "evaluate", "lm_eval"):
        resources["runtime"] = lambda w, attempt: slurm.runtime(config, name, run_key(w), attempt)
        resources["mem_mb"] = lambda w: slurm.mem_mb(config, name, run_key(w))
    else:
        resources["runtime"] = lambda w, attempt: slurm.runtime(config, name, attempt=attempt)
        resources["mem_mb"] = slurm.mem_mb(config, name)
    if name == "benchmark_grid":  # its threads are the submitting host's cores; ask for what it times with
        resources["cpus_per_task"] = BENCH["threads"] or 8
    if name == "benchmark_speculative":
        resources["cpus_per_task"] = SPEC["threads"] or 8
    return resources
