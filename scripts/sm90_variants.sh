#!/usr/bin/env bash
# One device call: A/B timing of compile-time variants of an sm90 FA2 kernel in its standalone
# harness. Usage: scripts/sm90_variants.sh fwd|bwd "name=-DFLAG=1 ..." ... (the first variant
# is the baseline; "name=@path/file.cu -DFLAG" compiles that file instead of the current one). Each variant is checked (correctness cases), then timed on the harness grid;
# prints ms (TFLOP/s) per variant and baseline time / variant time. Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
kind=$1
shift
out=${OUT:-gpu_out}
obj=/tmp/variants_$kind
mkdir -p "$out" "$obj"
. scripts/harness_lib.sh
if [ "$kind" = fwd ]; then
  shared="tests/cuda/fa2_fwd_check.cu src/cuda/fa2_fwd.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp"
else
  shared="tests/cuda/fa2_bwd_check.cu src/cuda/fa2_bwd.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp"
fi
t0=$(date +%s)
# shellcheck disable=SC2086
harness_compile "$obj/shared" "" $shared &
harness_variants "$obj" "src/cuda/fa2_${kind}_sm90.cu" "$@" || exit 1
names=("${HARNESS_VARIANTS[@]}")
wait
for name in "${names[@]}"; do
  harness_link "$obj/check_$name" "" "$obj"/shared/*.o "$obj/v_$name.o" || exit 1
done
echo "build: $(( $(date +%s) - t0 )) s"
rc=0
for name in "${names[@]}"; do
  echo "== $kind $name"
  if [ "$kind" = fwd ]; then  # one call: correctness, then the timing grid
    timeout 180 "$obj/check_$name" > "$out/${kind}_$name.txt" 2>&1 || rc=1
    grep -E "correctness" "$out/${kind}_$name.txt"
  else
    timeout 120 "$obj/check_$name" --no-bench 2>&1 | grep -E "FAIL|PASSED" | tail -3
    [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    timeout 120 "$obj/check_$name" --bench-only > "$out/${kind}_$name.txt" 2>&1 || rc=1
  fi
done
python3 - "$out" "$kind" "${names[@]}" <<'PY'
import sys
out, kind, names = sys.argv[1], sys.argv[2], sys.argv[3:]
rows = {}
for n in names:
    for line in open(f"{out}/{kind}_{n}.txt"):
        f = line.split()
        if f and f[0] == "TIME":
            rows.setdefault(tuple(f[1:-2]), {})[n] = (float(f[-2]), float(f[-1]))
head = "dtype B H S D causal" + (" det" if kind == "bwd" else "")
print(head, "|", " | ".join(f"{n} ms (TF)" for n in names), "| ratios")
for key, v in rows.items():
    base = v.get(names[0], (float("nan"),))[0]
    cells = [f"{v[n][0]:.3f} ({v[n][1]:.0f})" if n in v else "-" for n in names]
    ratios = [f"{base / v[n][0]:.3f}" if n in v else "-" for n in names[1:]]
    print(" ".join(key), "|", " | ".join(cells), "|", " ".join(ratios))
PY
exit "$rc"
