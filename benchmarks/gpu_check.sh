#!/usr/bin/env bash
# The GPU checks (benchmarks/gpu_check.py) on the lent GPU machine: one table, under 8 minutes on one GPU, no network.
# Run from the repository root after `make venv` (or with the venv's python on PATH).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
test -x "$PY" || PY=python3
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
exec "$PY" benchmarks/gpu_check.py --device "${DEVICE:-cuda:0}" "$@"
