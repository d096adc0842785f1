#!/usr/bin/env bash
# Create .venv (once) and install qtrain with its test and plotting extras; more extras with
# QTRAIN_EXTRAS, e.g. QTRAIN_EXTRAS=tensorboard bash scripts/setup.sh (for train --tensorboard).
# torch: a CPU build (2.13.0) unless a torch is already there -- GPU users install their own
# build first (any torch in the range pyproject.toml declares).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
fi
.venv/bin/pip install --quiet --disable-pip-version-check -e ".[full,test${QTRAIN_EXTRAS:+,$QTRAIN_EXTRAS}]"
