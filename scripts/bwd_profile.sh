#!/usr/bin/env bash
# One device call: Nsight Compute on the sm90 FA2 backward main kernel (standalone harness), one
# launch per shape: speed of light, warp stall reasons, pipe utilisation. Text reports in $OUT.
# Usage: scripts/bwd_profile.sh ["D S B H causal" ...] (default: d64/d128/d256 at S = 16k).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
obj=/tmp/bwd_profile
mkdir -p "$out" "$obj"
. scripts/harness_lib.sh
harness_compile "$obj" -lineinfo tests/cuda/fa2_bwd_check.cu src/cuda/fa2_bwd.cu \
  src/cuda/fa2_bwd_sm90.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp || exit 1
harness_link "$obj/check" -lineinfo "$obj"/*.o || exit 1
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=("64 16384 1 32 0" "128 16384 1 16 0" "256 16384 1 8 0")
for s in "${shapes[@]}"; do
  read -r D S B H C <<< "$s"
  name="ncu_d${D}_s${S}_c${C}"
  sections="--section SpeedOfLight --section WarpStateStats --section ComputeWorkloadAnalysis"
  sections+=" --section MemoryWorkloadAnalysis --section Occupancy --section LaunchStats"
  metrics="regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio"
  metrics+=",regex:sm__pipe_tensor.*pct_of_peak_sustained_active"
  metrics+=",regex:sm__inst_executed_pipe_.*pct_of_peak_sustained_active"
  run_ncu() {
    # shellcheck disable=SC2086
    timeout 240 ncu --clock-control none --kernel-name regex:dkdv_sm90 --launch-skip 1 \
      --launch-count 1 $sections "$@" "$obj/check" --one bf16 "$D" "$S" "$B" "$H" "$C" \
      > "$out/$name.txt" 2>&1
  }
  run_ncu --metrics "$metrics" || run_ncu  # without the extra metrics if they are refused
  echo "== $name"
  grep -E "stalled|pipe_tensor|inst_executed_pipe|Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Executed Ipc A|Issue Slots Busy|Stall|Warp Cycles Per Issued|Registers Per|Shared Memory Configuration Size|One or More|No Eligible|Active Warps Per" "$out/$name.txt" | head -80
done
