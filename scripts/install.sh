#!/usr/bin/env bash
# Install lftml (editable) with optional extras: `bash scripts/install.sh [test]`.
#
# PyTorch: an existing torch (e.g. your own CUDA build) is kept, since lftml only asks for
# torch>=2.1. Where no torch is installed, the CPU build torch==2.13.0 is installed first; an
# unpinned `pip install torch` would pull a multi-GB CUDA build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  echo "lftml install: no torch found; installing the CPU build torch==2.13.0"
  "$PY" -m pip install --quiet "torch==2.13.0"
fi
extras=${1:-}
"$PY" -m pip install --quiet -e ".${extras:+[$extras]}"
echo "lftml install: done ($("$PY" -c 'import lftml, torch; print("lftml", lftml.__version__, "torch", torch.__version__)'))"
