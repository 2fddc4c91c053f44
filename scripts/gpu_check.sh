#!/usr/bin/env bash
# `make gpu-check` without make: install the carried wheels (.whl/, from `make gpu-wheels`) into .whl/site
# when the machine lacks them, with its own python (pip --no-index, else unzipping them: these wheels need
# nothing more), put it and src/ on PYTHONPATH, and run the check. Usage: scripts/gpu_check.sh [DEVICE] [OUT]; GPU_PYTHON=python3.
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE="${1:-auto}"
OUT="${2:-results/gpu}"
PY="${GPU_PYTHON:-python3}"
rm -rf .whl/site
mkdir -p .whl/site
shopt -s nullglob
wheels=(.whl/*.whl)
# only where the machine lacks what they provide (here, with the venv's python, nothing is installed)
if ((${#wheels[@]})) && ! "$PY" -c "import jsonschema" 2>/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --target .whl/site "${wheels[@]}" 2>/dev/null \
    || for w in "${wheels[@]}"; do "$PY" -m zipfile -e "$w" .whl/site; done
fi
PYTHONPATH="$PWD/src:$PWD/.whl/site${PYTHONPATH:+:$PYTHONPATH}" exec "$PY" -m sparsedepth.gpucheck \
  --device "$DEVICE" --out "$OUT"
