# The README's two commands: `make reproduce` (set up + the whole study) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
JOBS ?= 2
SLURM_SETUP ?= ../shared/slurm/single-node.sh
LATEX_PACKAGES := latexmk texlive-latex-recommended texlive-latex-extra texlive-fonts-recommended
# Workflow jobs call `python -m sparsedepth ...`: that must be this venv's python.
export PATH := $(abspath $(VENV))/bin:$(PATH)

.PHONY: venv latex test lint reproduce smoke benchmark cluster-test clean-results gpu-wheels gpu-check

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# LaTeX for the paper: installed with apt when missing and we may (root or passwordless sudo).
latex:
	@if command -v latexmk >/dev/null; then echo "latexmk present"; \
	elif [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends $(LATEX_PACKAGES) >/dev/null; \
	elif sudo -n true 2>/dev/null; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive \
	  apt-get install -y -qq --no-install-recommends $(LATEX_PACKAGES) >/dev/null; \
	else echo "latexmk missing and no root: install $(LATEX_PACKAGES) to build the paper"; fi

lint: venv
	$(VENV)/bin/ruff check .

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(JOBS) -q

# A slice of the smoke grid through `--profile profiles/slurm` on a real Slurm, compared with a local run.
# As root (or with passwordless sudo) it first stands up a one-node cluster with $(SLURM_SETUP) (idempotent;
# SLURM_ACCOUNTING=1 adds slurmdbd) and stops it again afterwards if it was not running before; otherwise
# it uses the Slurm that answers `sinfo`. Fails, rather than skips, when there is none.
cluster-test: venv
	@up=0; sinfo -h -o %t 2>/dev/null | grep -qE 'idle|mix|alloc' && up=1; \
	if [ "$$(id -u)" = 0 ]; then $(SLURM_SETUP) || exit 1; \
	elif sudo -n true 2>/dev/null; then sudo $(SLURM_SETUP) || exit 1; \
	elif [ $$up = 0 ]; then echo "cluster-test: no Slurm answers and no root to start $(SLURM_SETUP)"; exit 1; fi; \
	SPARSEDEPTH_REQUIRE_SLURM=1 $(PY) -m pytest -p no:cacheprovider -q -s -rs -m slurm tests/study/test_slurm.py; \
	rc=$$?; if [ $$up = 0 ]; then if [ "$$(id -u)" = 0 ]; then $(SLURM_SETUP) stop; \
	else sudo -n $(SLURM_SETUP) stop; fi; fi; exit $$rc

reproduce: venv latex
	$(VENV)/bin/snakemake --profile profiles/default --cores all

smoke: venv
	$(VENV)/bin/snakemake --profile profiles/default --cores all --configfile config/smoke.yaml

benchmark: venv
	$(VENV)/bin/snakemake --profile profiles/default --cores all benchmark

# Checking a GPU in one call (README): `make gpu-wheels` here (network), then on the GPU machine, with its own
# python3 and torch, `make gpu-check` (or scripts/gpu_check.sh); DEVICE=cpu runs the same check at tiny shapes.
# The wheels: what the check imports that the GPU machine lacks (jsonschema and its dependencies).
DEVICE ?= auto
GPU_WHEELS := jsonschema attrs referencing rpds-py jsonschema-specifications
gpu-wheels:
	$(PYTHON) -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --platform manylinux2014_x86_64 -d .whl $(GPU_WHEELS)

gpu-check:
	scripts/gpu_check.sh $(DEVICE) results/gpu

clean-results:
	rm -rf results/runs results/bench results/figures results/tables results/runs.csv results/stats.csv
