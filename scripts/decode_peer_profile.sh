#!/usr/bin/env bash
# One device call: how the SDPA peers run the decode shapes (launch shapes from torch.profiler)
# and how the GPU places clusters (tests/cuda/cluster_probe.cu). Diagnostic for
# docs/kernels_decode.md (ncu of the cuDNN kernel next to ours: scripts/decode_ncu.sh). Output in
# $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
mkdir -p "$out"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a tests/cuda/cluster_probe.cu \
  -o /tmp/cluster_probe && /tmp/cluster_probe > "$out/cluster_probe.txt" 2>&1
python3 tests/cuda/decode_peer_profile.py > "$out/peer_profile.txt" 2>&1
grep -h "PEER" "$out/peer_profile.txt" | cut -c1-260
cat "$out/cluster_probe.txt"
