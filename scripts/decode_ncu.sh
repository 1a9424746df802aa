#!/usr/bin/env bash
# One device call: ncu sections of the decode split kernel (tests/cuda/decode_check.cu --shape)
# and of SDPA's cuDNN decode kernel on the same shapes, plus the SASS of the cuDNN kernel.
# Diagnostic for docs/kernels_decode.md. Usage: scripts/decode_ncu.sh "B L" ... ; output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
obj=/tmp/ncu_decode
mkdir -p "$out" "$obj"
. scripts/harness_lib.sh
# shellcheck disable=SC2086
harness_compile "$obj" "" tests/cuda/decode_check.cu src/cuda/decode.cu src/cuda/tensor_map.cpp \
  src/cuda/cuda_error.cpp || exit 1
harness_link "$obj/decode_check" "" "$obj"/*.o || exit 1
sections="--section LaunchStats --section Occupancy --section SpeedOfLight --section MemoryWorkloadAnalysis --section MemoryWorkloadAnalysis_Tables --section SchedulerStats --section WarpStateStats --section InstructionStats"
for shape in "$@"; do
  tag=${shape// /x}
  # shellcheck disable=SC2086
  decode_ncu_split "$obj/decode_check" "$shape" $sections > "$out/ncu_ours_$tag.txt" 2>&1
  # shellcheck disable=SC2086
  timeout 120 ncu --clock-control none $sections -k regex:cudnn_generated --launch-skip 1 \
    --launch-count 1 python3 tests/cuda/decode_peer_profile.py --ncu-target $shape cudnn \
    > "$out/ncu_cudnn_$tag.txt" 2>&1
done
# SASS of the cuDNN kernel (per-instruction counts), first shape.
# shellcheck disable=SC2086
timeout 150 ncu --clock-control none --section SourceCounters -k regex:cudnn_generated \
  --launch-count 1 --page source --print-source sass \
  python3 tests/cuda/decode_peer_profile.py --ncu-target $1 cudnn > "$out/cudnn_sass.txt" 2>&1
wc -l "$out"/*.txt
for f in "$out"/ncu_*.txt; do
  echo "== $f"
  grep -E "^\s+(Duration|DRAM Throughput|Memory Throughput|L2 Hit Rate|Registers Per|Achieved Active Warps|Issued Warp|Warp Cycles Per Issued|Executed Ipc A)" "$f"
done
