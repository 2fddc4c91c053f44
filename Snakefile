# SparseDepth: the whole study, from corpora to paper/main.pdf. `snakemake --cores all` (see README).
# Thin by design: the grid logic lives in sparsedepth.study.grid, the rules in workflow/rules/*.smk.
import sys
from pathlib import Path

from snakemake.utils import min_version

min_version("9.0")

sys.path.insert(0, str(Path(workflow.basedir) / "src"))  # the library, even without `pip install -e .`
from sparsedepth.study import cost, grid  # noqa: E402


# The default grid, unless a study is given with --configfile (which then replaces it instead of being
# deep-merged into it: a merged grid would silently run the union of both studies' models and variants).
if not workflow.config_settings.configfiles:

    configfile: "config/config.yaml"



# the packaged schema: one line naming the file and a bad key, then the defaults filled in
grid.validate(config, ", ".join(map(str, workflow.config_settings.configfiles)) or "config/config.yaml")
grid.prepare(config)  # the isoflop sweep expanded into models; names checked


report: "workflow/report/workflow.rst"

RUNS = grid.run_keys(config)
for _key in RUNS:  # every run's TrainConfig must resolve before any job starts
    grid.train_config(config, _key)
if cost.on_gpu(config) and not (workflow.remote_exec or workflow.subprocess_exec):  # planned here, once
    print(cost.summary(config, RUNS), file=sys.stderr)  # (a job's own parse stays quiet): GPU-hours


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/lm_eval.smk"
include: "workflow/rules/benchmark.smk"
include: "workflow/rules/aggregate.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/paper.smk"


rule all:
    input:
        final_outputs(),
    default_target: True
