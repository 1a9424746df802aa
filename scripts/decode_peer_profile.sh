#!/usr/bin/env bash
# One device call: how the SDPA peers run the decode shapes (launch shapes from torch.profiler,
# ncu sections of the cuDNN kernel) and how the GPU places clusters (tests/cuda/cluster_probe.cu).
# Diagnostic for docs/kernels_decode.md. Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a tests/cuda/cluster_probe.cu \
  -o /tmp/cluster_probe && /tmp/cluster_probe > "$out/cluster_probe.txt" 2>&1
python3 tests/cuda/decode_peer_profile.py > "$out/peer_profile.txt" 2>&1
sections="--section LaunchStats --section Occupancy --section SpeedOfLight --section MemoryWorkloadAnalysis --section SchedulerStats --section WarpStateStats"
for shape in "32 8192" "1 65536" "8 8192"; do
  # shellcheck disable=SC2086
  timeout 150 ncu --clock-control none $sections --launch-count 12 \
    python3 tests/cuda/decode_peer_profile.py --ncu-target $shape cudnn \
    > "$out/ncu_cudnn_${shape// /x}.txt" 2>&1
done
grep -h "PEER" "$out/peer_profile.txt" | cut -c1-260
cat "$out/cluster_probe.txt"
