#!/usr/bin/env bash
# One device call (scripts/fwd_sm90_check.sh [quick]): build the standalone FA2 forward harness
# (sm_90a), check correctness, time the sm90 family (wgmma + TMA, warp-specialised), the sm80
# family (mma.sync) and SDPA flash. `quick`: only the sm90 family against SDPA flash. Output in
# $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
mkdir -p "$out"
. scripts/harness_lib.sh
t0=$(date +%s)
harness_compile /tmp/fwdobj "" tests/cuda/fa2_fwd_check.cu src/cuda/fa2_fwd.cu \
  src/cuda/fa2_fwd_sm90.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp || exit 1
harness_link /tmp/fa2_fwd_check "" /tmp/fwdobj/*.o || exit 1
echo "build: $(( $(date +%s) - t0 )) s"
timeout 120 /tmp/fa2_fwd_check --no-bench > "$out/fwd_check.txt" 2>&1
rc=$?
grep -v "^PASS" "$out/fwd_check.txt" | tail -20
timeout 120 /tmp/fa2_fwd_check | sed 's/^TIME .*/& sm90/' > "$out/fwd_sm90.txt" 2>&1
if [ "${1:-}" = quick ]; then  # only the current sm90 kernel against SDPA flash
  python3 tests/cuda/fa2_fwd_sdpa.py "$out/fwd_sm90.txt" --md "$out/fwd_table.md" 2>&1 \
    | grep -E "^\| sm90" | awk -F'|' '{print $3,$4,$5,$8,"|",$10,"|",$12,"|",$13}'
  exit "$rc"
fi
FLASHMIN_FORCE_SM80=1 timeout 120 /tmp/fa2_fwd_check | sed 's/^TIME .*/& sm80/' > "$out/fwd_sm80.txt" 2>&1
echo "dtype B H S D causal | sm80 ms TF | sm90 ms TF"
paste <(grep TIME "$out/fwd_sm80.txt" | awk '{print $2,$3,$4,$5,$6,$7,"|",$8,$9}') \
  <(grep TIME "$out/fwd_sm90.txt" | awk '{print "|",$8,$9}')
echo "vs SDPA flash: dtype D S causal | sm90 TF | SDPA TF | ratio"
python3 tests/cuda/fa2_fwd_sdpa.py "$out/fwd_sm90.txt" "$out/fwd_sm80.txt" \
  --md "$out/fwd_table.md" 2>&1 | grep -E "^\| sm90" | awk -F'|' '{print $3,$4,$5,$8,"|",$10,"|",$12,"|",$13}'
exit "$rc"
