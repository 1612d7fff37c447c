#!/usr/bin/env bash
# One device call: build as the README says, GPU tests, compute-sanitizer on a small selection, the
# benchmark suite. Logs go to $OUT; a short summary prints last.
#   usage (device): PERSISTENT_TOPK_CSRC_TREE=<git rev-parse HEAD:csrc> bash scripts/device_check.sh [pytest -k expr]
set -uo pipefail
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1
start=$(date +%s)
# SKIP_BUILD=1 SKIP_TESTS=1: a second call on the same warm machine (the build kept), e.g. the
# sanitizer alone when everything together would not fit one call's time limit.
if [ -z "${SKIP_BUILD:-}" ]; then
  ./setup.sh > "$OUT/setup.log" 2>&1 || { tail -40 "$OUT/setup.log"; exit 1; }
  grep -E "ptxas info *: Used|spill|bytes smem" "$OUT/setup.log" | sort -u | head -12
  echo "build: $(( $(date +%s) - start )) s"
fi
VPY=.venv/bin/python
if [ -z "${SKIP_TESTS:-}" ]; then
  timeout 420 $VPY -m pytest -q -rf --maxfail=20 tests ${1:+-k "$1"} 2>&1 | tee "$OUT/pytest.log" | tail -40
fi
if [ -z "${SKIP_SANITIZER:-}" ]; then
  # Every path: short, solo, team (shared and global memory), clusters split into teams, stale plans (memcheck only: racecheck is
  # slow on the global-memory passes of the solo rows a stale plan makes).
  # The fused transforms: a page table with row_to_table and start entries, ragged offsets with raw indices.
  # The register path over one batch of 4,099 rows (the plan kernel with more than 32 rows per warp).
  # Streamed rows (test_team_rows_among_many_solo_rows is a streamed batch now) and their fallback
  # (ascending rows overflow the list). Register-rows launches (every dtype, windows, both transforms,
  # CTAs with several rows, few rows on the 512 x 16 and 1024 x 16 CTAs) and cluster launches of short rows
  # (static rows, a stale plan's streamed rows). Plain launches that look each CTA's next row up ahead.
  selection="test_register_rows_windows_and_transforms or test_rows_looked_up_ahead or test_few_rows_register_rows_every_edge and 2048 and float32 or test_register_rows_distributions_and_odd_strides and ties and bfloat16 or test_cluster_launch_of_short_rows and float32 or test_streamed_rows and ascending and float32 or test_every_length_through_the_register_path and 2048 or test_k_values and 2048 and float32 or test_odd_strides and 30001 and float32 or test_team_rows_among_many_solo_rows and normal or test_work_queue_counters and scattered or test_rows_past_a_team_of_eight and 512 and float32 or test_plan_sizes_every_team and 163840 or test_page_table_with_row_to_table and 64 or test_ragged_offsets and False"
  for tool in memcheck racecheck; do
    k="$selection"; [ $tool = memcheck ] && k="$selection or test_stale_plans and 1"
    timeout 300 compute-sanitizer --tool $tool --error-exitcode 9 $VPY -m pytest -q -x tests/test_gpu.py tests/test_gpu_transforms.py -k "$k" \
      > "$OUT/sanitizer-$tool.log" 2>&1
    echo "compute-sanitizer $tool: exit $? ($(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY|passed|failed' "$OUT/sanitizer-$tool.log" | tr '\n' ' '))"
  done
fi
if [ -z "${SKIP_BENCH:-}" ]; then
  $VPY -m persistent_topk.bench --out-dir "$OUT" 2>&1 | tee "$OUT/bench.log" | tail -32
fi
echo "total: $(( $(date +%s) - start )) s"
if [ -f "$OUT/pytest.log" ]; then grep -E "passed|failed" "$OUT/pytest.log" | tail -1; fi
