#!/usr/bin/env bash
# The main job on a fresh machine: set up, then reproduce every poster result at the quick
# scale on the embedded dataset (no download; a few minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/qtrain reproduce --scale quick --out "${1:-runs/quick}"
