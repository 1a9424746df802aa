#!/usr/bin/env bash
# The test command: pytest against the installed flashmin, then the C++ tests (ctest).
# GPU tests run when a CUDA GPU is visible and skip otherwise.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

python -m pytest -q tests/python "$@"
rc=$?
if [ "$rc" -eq 5 ]; then  # pytest: no tests collected is not a failure of the suite itself
  echo "pytest collected no tests"
  rc=0
fi

build=build/ctest
cmake -S . -B "$build" -DFLASHMIN_CUDA=OFF -DFLASHMIN_BUILD_TESTS=ON \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" >"$build.log" 2>&1 \
  && cmake --build "$build" -j "$(nproc)" >>"$build.log" 2>&1 \
  && ctest --test-dir "$build" --output-on-failure
crc=$?
[ "$crc" -ne 0 ] && { echo "ctest (or its build) failed; see $build.log"; tail -30 "$build.log"; }

[ "$rc" -eq 0 ] && [ "$crc" -eq 0 ]
