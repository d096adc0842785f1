#!/usr/bin/env bash
# The main job on a fresh machine: set up, then reproduce every poster result at the quick
# scale on the embedded dataset (no download; Table 1 with 5 seeds per cell in one worker
# process per core; about 45 s of reproduction on an idle 2-core machine, see README).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/qtrain reproduce --scale quick --out "${1:-runs/quick}"
