#!/usr/bin/env bash
# One device call: A/B timing of compile-time variants of the sm90 FA2 backward in the standalone
# harness. Usage: scripts/bwd_sm90_variants.sh "name=-DFLAG=1 ..." ... (the first is the baseline).
# Every variant runs the correctness cases, then the timing grid; prints ms per variant and the
# baseline/variant time ratio. Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu_out}
mkdir -p "$out" /tmp/bv
flags="-std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc -DFLASHMIN_HAS_SM90A=1 -gencode arch=compute_90a,code=sm_90a"
t0=$(date +%s)
for f in tests/cuda/fa2_bwd_check.cu src/cuda/fa2_bwd.cu src/cuda/cuda_error.cpp; do
  nvcc $flags -x cu -c "$f" -o "/tmp/bv/$(basename "$f").o" &
done
names=()
for spec in "$@"; do
  name=${spec%%=*}
  names+=("$name")
  # shellcheck disable=SC2086
  nvcc $flags ${spec#*=} -x cu -c src/cuda/fa2_bwd_sm90.cu -o "/tmp/bv/sm90_$name.o" &
done
wait
for name in "${names[@]}"; do
  nvcc $flags /tmp/bv/fa2_bwd_check.cu.o /tmp/bv/fa2_bwd.cu.o /tmp/bv/cuda_error.cpp.o \
    "/tmp/bv/sm90_$name.o" -o "/tmp/bv/check_$name" || exit 1
done
echo "build: $(( $(date +%s) - t0 )) s"
rc=0
for name in "${names[@]}"; do
  echo "== $name"
  timeout 120 "/tmp/bv/check_$name" --no-bench > "$out/check_$name.txt" 2>&1 || rc=1
  grep -E "FAIL|PASSED" "$out/check_$name.txt" | tail -3
  timeout 120 "/tmp/bv/check_$name" --bench-only > "$out/time_$name.txt" 2>&1 || rc=1
done
python3 - "$out" "${names[@]}" <<'PY'
import sys
out, names = sys.argv[1], sys.argv[2:]
rows = {}
for n in names:
    for line in open(f"{out}/time_{n}.txt"):
        f = line.split()
        if f and f[0] == "TIME":
            rows.setdefault(tuple(f[1:8]), {})[n] = (float(f[8]), float(f[9]))
print("dtype B H S D causal det | " + " | ".join(f"{n} ms (TF)" for n in names) + " | ratios")
for key, v in rows.items():
    base = v.get(names[0], (float("nan"),))[0]
    cells = [f"{v[n][0]:.3f} ({v[n][1]:.0f})" if n in v else "-" for n in names]
    ratios = [f"{base / v[n][0]:.3f}" if n in v else "-" for n in names[1:]]
    print(" ".join(key), "|", " | ".join(cells), "|", " ".join(ratios))
PY
exit "$rc"
