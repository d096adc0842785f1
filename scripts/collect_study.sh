#!/usr/bin/env bash
# Copy the finished runs of the CPU study (scripts/cpu_study.sh ... OUT) into docs/results/ (config.json,
# metrics.jsonl, summary.json; no checkpoints) and rebuild their reports from them. Unfinished runs are
# left out and listed as missing in table1.md. Usage: bash scripts/collect_study.sh OUT
set -eu
out=${1:?OUT of scripts/cpu_study.sh}
q="${PYTHON:-python} -m qtrain"
for part in cpu width; do
  dest=docs/results/$part; [ $part = cpu ] && dest=docs/results/cpu/table1
  for summary in "$out/$part"*/runs/*/seed*/summary.json; do  # width-a, width-b: lanes of one study
    [ -f "$summary" ] || continue
    run=$(dirname "$summary"); to="$dest/runs/$(basename "$(dirname "$run")")/$(basename "$run")"
    mkdir -p "$to"; cp "$run/config.json" "$run/metrics.jsonl" "$run/summary.json" "$to/"
  done
done
# 5 seeds per cell, and the power plan's counts where it asked more (scripts/cpu_study.sh plan)
$q table1 --scale cpu --seeds 5 --cell-seeds $(bash scripts/cpu_study.sh plan) --report-only --no-progress \
  --out docs/results/cpu/table1 > /dev/null || true
$q width-trend --seeds 3 --report-only --no-progress --out docs/results/width > /dev/null || true
