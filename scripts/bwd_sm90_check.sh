#!/usr/bin/env bash
# One device call: build the standalone FA2 backward harness (sm_90a), check correctness, time
# the sm90 (wgmma) and sm80 (mma.sync) families and SDPA flash. Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
mkdir -p "$out"
. scripts/harness_lib.sh
t0=$(date +%s)
obj=/tmp/fa2_bwd_obj
harness_compile $obj "" tests/cuda/fa2_bwd_check.cu src/cuda/fa2_bwd.cu src/cuda/fa2_bwd_sm90.cu \
  src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp || exit 1
harness_link /tmp/fa2_bwd_check "" $obj/*.o || exit 1
echo "build: $(( $(date +%s) - t0 )) s"
/tmp/fa2_bwd_check --no-bench 2>&1 | tee "$out/check.txt"
rc=${PIPESTATUS[0]}
/tmp/fa2_bwd_check --bench-only > "$out/sm90.txt" 2>&1
FLASHMIN_FORCE_SM80=1 /tmp/fa2_bwd_check --bench-only > "$out/sm80.txt" 2>&1
paste <(grep TIME "$out/sm80.txt") <(grep TIME "$out/sm90.txt" | awk '{print $9, $10}')
python3 tests/cuda/fa2_bwd_sdpa.py "$out/sm90.txt" "$out/table_sm90.md" 2>&1 | tail -40
exit "$rc"
