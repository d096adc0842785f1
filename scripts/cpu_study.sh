#!/usr/bin/env bash
# The committed CPU study (docs/results/cpu/ and docs/results/width/) in priority order, as two lanes of one
# process each (1 torch thread per run). Everything is resumable: rerun the same line to continue; finished
# runs are read back, an interrupted one resumes from its checkpoint.
#
#   nice -n 10 bash scripts/cpu_study.sh study DATA_DIR OUT   # Table 1, both protocols, seed by seed
#   nice -n 10 bash scripts/cpu_study.sh study-bc DATA_DIR OUT & nice -n 10 bash scripts/cpu_study.sh study-poster DATA_DIR OUT
#                                                             # the same as two lanes, one column (protocol) each
#   nice -n 10 bash scripts/cpu_study.sh width-a DATA_DIR OUT # the width trend, cheap widths first (and width-b)
#   bash scripts/cpu_study.sh plan                            # the power plan's seed counts, as --cell-seeds CELL=N
#
# The plain one-command forms (no priority order) are
#   qtrain table1 --scale cpu --seeds 5 --data-dir DATA_DIR --out OUT/cpu
#   qtrain width-trend --seeds 3 --data-dir DATA_DIR --out OUT/width
set -u
lane=${1:?lane: study | study-bc | study-poster | width-a | width-b | runs | plan}
[ "$lane" = plan ] || { data=${2:?DATA_DIR}; out=${3:?OUT}; }
q="${PYTHON:-python} -m qtrain"
P=c10-smallcnn-poster; B=c10-smallcnn-bc
train_runs() {  # SCALE OUT CELL:SEED ...: train each run unless finished; an interrupted one resumes. A run
  # another lane is training (its lock OUT/locks/CELL.seedK is held) is skipped; the lock dies with its holder.
  local scale=$1 root=$2 job cell seed run lock=; shift 2
  command -v flock > /dev/null && { lock=1; mkdir -p "$root/locks"; }
  for job in "$@"; do
    cell=${job%%:*}; seed=${job##*:}; run="$root/runs/$cell/seed$seed"
    if [ -n "$lock" ]; then  # reopening fd 9 releases the previous run's lock
      exec 9> "$root/locks/$cell.seed$seed"
      flock -n 9 || { echo "skipping $cell seed $seed: another lane is training it"; continue; }
    fi
    [ -f "$run/summary.json" ] && continue  # checked under the lock: a lane may have just finished it
    if [ -f "$run/checkpoint.pt" ]; then $q train --resume "$run" --no-progress
    else $q train --config "src/qtrain/experiments/presets/$scale/$cell.yaml" --seed "$seed" --data-dir "$data" \
      --out "$run" --no-progress; fi
  done
  exec 9>&-
}
column_jobs() {  # COLUMN: the seed rounds of the five 15-epoch rows (each round finishes a seed of every row);
  # then the extra seeds the power plan asked at the 5-seed point (docs/results/cpu/RUN.md): the poster's BC-ADAM
  # seeds 5-9 (sd 1.87), BinaryConnect's Big SR-ADAM (equal epochs) seeds 5-6 (sd 1.52); then Big SR-ADAM at
  # equal steps (8x the epochs of a row), seed by seed; then what the plan asked at the equal-steps 5-seed point
  # (the cheapest allocation for 80% power, `--plan-seeds`): the poster's SR-ADAM seeds 5-10 (~14 min each),
  # then its equal-steps seeds 5-6 (~95 min each). BinaryConnect's column needed none (88% at 5 seeds).
  local c=$1 k row
  for k in 0 1 2 3 4; do for row in adam bc-adam sr-adam big-sr-adam r-adam; do echo "$c.$row:$k"; done; done
  if [ "$c" = $P ]; then for k in 5 6 7 8 9; do echo "$P.bc-adam:$k"; done; fi
  if [ "$c" = $B ]; then for k in 5 6; do echo "$B.big-sr-adam:$k"; done; fi
  for k in 0 1 2 3 4; do echo "$c.big-sr-adam-steps:$k"; done
  if [ "$c" = $P ]; then
    for k in 5 6 7 8 9 10; do echo "$P.sr-adam:$k"; done
    for k in 5 6; do echo "$P.big-sr-adam-steps:$k"; done
  fi
}
case "$lane" in
plan)
  # The cells whose queue (column_jobs) asks other than 5 seeds, as `qtrain table1 --cell-seeds` arguments, so
  # that the report lists the planned extra seeds as missing until they finish.
  { column_jobs $B; column_jobs $P; } | awk -F: '{ if ($2 + 1 > n[$1]) n[$1] = $2 + 1 }
    END { for (c in n) if (n[c] != 5) print c "=" n[c] }' | LC_ALL=C sort ;;
study)
  # Per seed round: ADAM, BC-ADAM, SR-ADAM, Big SR-ADAM (equal epochs), R-ADAM, each protocol in turn;
  # then Big SR-ADAM at equal steps (8x the epochs of a batch-128 run), seed by seed.
  main="$B.adam $P.adam $B.bc-adam $P.bc-adam $B.sr-adam $P.sr-adam $B.big-sr-adam $P.big-sr-adam $B.r-adam $P.r-adam"
  for k in 1 2 3 4 5; do $q table1 --scale cpu --seeds $k --workers 1 --cells $main --data-dir "$data" --out "$out/cpu" --no-progress; done
  for k in 1 2 3 4 5; do $q table1 --scale cpu --seeds $k --workers 1 --cells $main $B.big-sr-adam-steps $P.big-sr-adam-steps \
    --data-dir "$data" --out "$out/cpu" --no-progress; done ;;
study-bc|study-poster)
  # One column per lane, then the other column's queue from its end, so the lane that finishes first takes
  # the other's last runs (they meet in the middle; a run being trained by the other lane is skipped). The
  # lanes train run by run (as `runs` does), not through `qtrain table1`, which holds OUT/cpu for one
  # process; collect_study.sh builds the report.
  mine=$B other=$P; [ "$lane" = study-poster ] && { mine=$P; other=$B; }
  train_runs cpu "$out/cpu" $(column_jobs $mine) $(column_jobs $other | tac) ;;
width-a|width-b)
  # The width trend in two lanes (separate folders, gathered by scripts/collect_study.sh): cheap widths first;
  # width 16 comes from the mini study (docs/results/mini/, identical settings). Then the poster protocol's
  # ADAM at the cpu size on the 5,000-image validation split (configuration H of docs/results/README.md is
  # BinaryConnect's), and the rest.
  W=c10-smallcnn-w
  if [ "$lane" = width-a ]; then first="${W}8.adam ${W}8.bc-adam ${W}32.adam"; rest="${W}32.sr-adam ${W}64.adam ${W}64.bc-adam"
  else first="${W}8.sr-adam ${W}32.bc-adam"; rest="${W}64.sr-adam"; fi
  $q width-trend --seeds 3 --workers 1 --cells $first --data-dir "$data" --out "$out/$lane" --no-progress
  if [ "$lane" = width-b ]; then
    run="$out/pilot/poster-adam-val"
    if [ ! -f "$run/summary.json" ]; then
      if [ -f "$run/checkpoint.pt" ]; then $q train --resume "$run" --no-progress
      else $q train --config src/qtrain/experiments/presets/cpu/$P.adam.yaml --val-size 5000 --data-dir "$data" --out "$run" --no-progress; fi
    fi
  fi
  $q width-trend --seeds 3 --workers 1 --cells $first $rest --data-dir "$data" --out "$out/$lane" --no-progress ;;
runs)
  # Given runs in the given order: bash scripts/cpu_study.sh runs DATA_DIR OUT SCALE CELL:SEED ... (the same run
  # folders OUT/runs/<cell>/seed<k> and settings as `qtrain table1 --scale SCALE`, so its report reads them back)
  scale=${4:?SCALE}; shift 4; train_runs "$scale" "$out" "$@" ;;
*) echo "lane must be study, study-bc, study-poster, width-a, width-b, runs or plan, not $lane" >&2; exit 2 ;;
esac
