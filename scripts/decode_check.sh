#!/usr/bin/env bash
# One-call GPU check of the Flash-Decoding kernels (src/cuda/decode.cu): build the standalone
# harness, run each correctness suite in its own process under a time limit (a hang costs at
# most that limit and is localised by the line-buffered log), then the static-vs-dynamic
# benchmark and the SDPA / copy peers. Full logs go to $OUT (default /tmp/decode_out); stdout
# gets the summaries, FAIL lines and benchmark lines.
#   scripts/decode_check.sh            everything
#   SUITES="dynamic bulk" LATE_SUITES= scripts/decode_check.sh
# Order: the dynamic and static TMA suites, the benchmark, the peers, then the cp.async suite.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/decode_out}
mkdir -p "$OUT"
SUITES=${SUITES-"dynamic bulk"}
LATE_SUITES=${LATE_SUITES-"cpasync"}
BIN=/tmp/decode_check
status=0

echo "== build $(date +%T)"
if ! nvcc -std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc \
    -gencode arch=compute_90a,code=sm_90a -Xptxas -v \
    tests/cuda/decode_check.cu src/cuda/decode.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp \
    -o "$BIN" >"$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader || true

run() {  # name, limit seconds, command...
  local name=$1 limit=$2
  shift 2
  echo "== $name $(date +%T)"
  timeout -k 5 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  grep -E "^(FAIL|correctness|bench-dynamic|device|---|===|BENCH|CONSIST|SWEEP|SDPA)" \
    "$OUT/$name.log" | grep -v "^PASS" | cut -c1-260
  if [ $rc -ne 0 ]; then
    echo "!! $name exited with $rc (124 = time limit); last lines:"
    tail -3 "$OUT/$name.log" | cut -c1-260
    status=1
  fi
}

for s in $SUITES; do
  run "check_$s" "${CHECK_LIMIT:-110}" "$BIN" --check "$s" --quiet
done
run bench_dynamic "${BENCH_LIMIT:-110}" "$BIN" --bench-dynamic
run sdpa "${SDPA_LIMIT:-100}" python3 tests/cuda/decode_sdpa_bench.py
for s in $LATE_SUITES; do
  run "check_$s" "${CHECK_LIMIT:-110}" "$BIN" --check "$s" --quiet
done
echo "== done $(date +%T) status $status"
exit $status
