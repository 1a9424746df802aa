#!/usr/bin/env bash
# One device call: build the standalone FA2 forward harness (sm_90a), check correctness, time
# the sm90 (wgmma) and sm80 (mma.sync) families and SDPA flash. Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out"
flags="-std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc -DFLASHMIN_HAS_SM90A=1 -gencode arch=compute_90a,code=sm_90a"
t0=$(date +%s)
mkdir -p /tmp/fwdobj
for f in tests/cuda/fa2_fwd_check.cu src/cuda/fa2_fwd.cu src/cuda/fa2_fwd_sm90.cu src/cuda/cuda_error.cpp; do
  nvcc $flags -x cu -c "$f" -o "/tmp/fwdobj/$(basename "$f").o" &
done
wait
nvcc $flags /tmp/fwdobj/*.o -o /tmp/fa2_fwd_check || exit 1
echo "build: $(( $(date +%s) - t0 )) s"
/tmp/fa2_fwd_check --no-bench > "$out/fwd_check.txt" 2>&1
rc=$?
grep -v "^PASS" "$out/fwd_check.txt" | tail -20
/tmp/fa2_fwd_check > "$out/fwd_sm90.txt" 2>&1
FLASHMIN_FORCE_SM80=1 /tmp/fa2_fwd_check > "$out/fwd_sm80.txt" 2>&1
paste <(grep TIME "$out/fwd_sm80.txt") <(grep TIME "$out/fwd_sm90.txt" | awk '{print $8, $9}')
python3 tests/cuda/fa2_fwd_sdpa.py "$out/fwd_sm90.txt" --md "$out/fwd_table_sm90.md" 2>&1 | tail -40
exit "$rc"
