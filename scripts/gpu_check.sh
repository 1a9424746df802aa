#!/usr/bin/env bash
# One call on the lent GPU: build for sm_90a, run the whole test suite (GPU tests included),
# then the benchmark. Usage: scripts/gpu_check.sh [all|tests|bench|quick] [extra bench args]
# Results land in $OUT (or ./gpu_out when run by hand).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
mode=${1:-all}
shift || true
out=${OUT:-gpu_out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-16}
export FLASHMIN_CUDA=ON FLASHMIN_CUDA_ARCHS=${FLASHMIN_CUDA_ARCHS:-90a-real}

nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv,noheader
t0=$(date +%s)
python3 -m pip install --no-build-isolation --no-deps -q . 2>&1 | tail -20
python3 -c "import flashmin, json; print(json.dumps(flashmin.build_info()))" || exit 1
echo "build: $(( $(date +%s) - t0 )) s"

rc=0
if [ "$mode" = all ] || [ "$mode" = tests ] || [ "$mode" = quick ]; then
  python3 -m pytest tests/python -q --maxfail=40 --timeout=600 -p no:cacheprovider \
    --junitxml="$out/pytest.xml" 2>&1 | tee "$out/pytest.log" | tail -40
  rc=${PIPESTATUS[0]}
fi
if [ "$mode" = all ] || [ "$mode" = bench ]; then
  python3 -m flashmin --suite all --record "$out" --plot "$out/attention.png" "$@" 2>&1 \
    | tee "$out/bench.log"
elif [ "$mode" = quick ]; then
  python3 -m flashmin --suite all --quick --record "$out" --plot "$out/attention.png" "$@" 2>&1 \
    | tee "$out/bench.log"
fi
exit "$rc"
