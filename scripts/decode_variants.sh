#!/usr/bin/env bash
# One device call: A/B timing of compile-time variants of the decode kernels (src/cuda/decode.cu)
# in tests/cuda/decode_check.cu. Usage: scripts/decode_variants.sh "name=-DFLAG=1 ..." ...
# (the first variant is the baseline; "name=@path/decode.cu -DFLAG" compiles another version of
# the file). Env: CHECK="name ..." runs the correctness suite of those variants first;
# FLUSH="read fill" adds passes with a read flush (clean L2) / a fill kernel (as do_bench's
# zero_()); SHAPES="B:L:splits[:w|c|t],..." times those configurations (decode_check --shapes,
# rows per split count) instead of --quick, FM_BENCH_D=n with head dim n; SDPA=1 times SDPA
# flash/cuDNN on the same shapes; NCU="name ..." prints ncu's speed-of-light lines of those
# variants, TIMELINE="name ..." their per-CTA timeline (both below); FLOOR=1 times read-only
# kernels over the same bytes. Output in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
out=${OUT:-gpu_out}
obj=/tmp/variants_decode
mkdir -p "$out" "$obj"
. scripts/harness_lib.sh
shared="tests/cuda/decode_check.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp"
nvidia-smi --query-gpu=name,clocks.max.sm --format=csv,noheader
t0=$(date +%s)
# shellcheck disable=SC2086
harness_compile "$obj/shared" "" $shared &
harness_variants "$obj" src/cuda/decode.cu "$@" || exit 1
names=("${HARNESS_VARIANTS[@]}")
wait
for name in "${names[@]}"; do
  grep -A2 "decode_split_kernelI13__nv_bfloat16Li128ELb1E" "$obj/ptxas_$name.txt" \
    | grep -E "registers|spill" | sed "s/^/[$name] bf16 D128 TMA kernel: /"
  harness_link "$obj/check_$name" "" "$obj"/shared/*.o "$obj/v_$name.o" || exit 1
done
echo "build: $(( $(date +%s) - t0 )) s"
rc=0
if [ -n "${CHECK:-}" ]; then
  for name in ${CHECK}; do
    echo "== check $name"
    timeout 200 "$obj/check_$name" --no-bench > "$out/check_$name.txt" 2>&1 || rc=1
    grep -E "FAIL" "$out/check_$name.txt" | head -5
    grep -E "^correctness" "$out/check_$name.txt"
  done
fi
for pass in memset ${FLUSH:-}; do
  for name in "${names[@]}"; do
    if [ -n "${SHAPES:-}" ]; then bench=(--shapes "$SHAPES"); else bench=(--quick); fi
    FM_FLUSH=$pass timeout 200 "$obj/check_$name" --bench-only "${bench[@]}" \
      > "$out/bench_${pass}_$name.txt" 2>&1 || rc=1
  done
done
python3 - "$out" "${FLUSH:-}" "${SHAPES:+1}" "${names[@]}" <<'PY'
import os, re, statistics, sys
out, extra, by_splits, names = sys.argv[1], sys.argv[2], sys.argv[3] == "1", sys.argv[4:]
for flush in ["memset"] + extra.split():
    rows, copy = {}, None
    for n in names:
        for line in open(f"{out}/bench_{flush}_{n}.txt"):
            if line.startswith("BENCH copy"):
                copy = float(re.search(r"([\d.]+) GB/s", line).group(1))
            m = re.match(r"BENCH \S+\s+(B=\s*\d+\s+L=\d+\s+Sq=\d+ \S+)\s+splits=(\d+).*queued=\s*([\d.]+) us", line)
            if m:
                key = " ".join(m.group(1).split()) + (f" s={m.group(2)}" if by_splits else "")
                rows.setdefault(key, {}).setdefault(n, []).append((float(m.group(3)), m.group(2)))
    print(f"\n{flush} flush, copy {copy} GB/s: best of 2 rounds, us (splits) [% of copy]")
    print("shape | " + " | ".join(names) + " | base/variant")
    for key, v in rows.items():
        b, L = int(re.search(r"B=(\d+)", key).group(1)), int(re.search(r"L=(\d+)", key).group(1))
        gb = 2 * b * 8 * L * int(os.environ.get("FM_BENCH_D", "128")) * 2 / 1e9
        best = {n: min(v[n]) for n in names if n in v}
        cells = [f"{best[n][0]:.1f} ({best[n][1]}) [{100 * gb / (best[n][0] * 1e-6) / copy:.1f}%]" for n in names if n in best]
        base = best[names[0]][0]
        print(key, "|", " | ".join(cells), "|", " ".join(f"{base / best[n][0]:.3f}" for n in names[1:] if n in best))
PY
# NCU="name ..." (with NCU_SHAPE="B L", default "32 8192"): ncu speed-of-light and memory lines
# of those variants' split kernel on one shape.
for name in ${NCU:-}; do
  echo "== ncu $name (${NCU_SHAPE:-32 8192})"
  decode_ncu_split "$obj/check_$name" "${NCU_SHAPE:-32 8192}" --section SpeedOfLight \
    --section MemoryWorkloadAnalysis 2>&1 | grep -E "^\s+(Duration|DRAM Throughput|L2 Cache Throughput|L2 Hit Rate|Memory Throughput +T|SM Frequency)"
done
# TIMELINE="name ..." (variants built with -DFM_DECODE_TIMELINE=1; TL_SHAPES="B L;B L", default
# "32 8192;8 8192"): per-CTA durations, tail and per-SM-group busy time of one call per shape.
for name in ${TIMELINE:-}; do
  IFS=';' read -ra tl_shapes <<< "${TL_SHAPES:-32 8192;8 8192}"
  for shape in "${tl_shapes[@]}"; do
    echo "== timeline $name ($shape)"
    # shellcheck disable=SC2086
    FM_TIMELINE=1 timeout 120 "$obj/check_$name" --bench-only --shape $shape 2>&1 | grep TIMELINE
  done
done
# FLOOR=1 (or FLOOR="B:L,...", FLOOR_ARGS=--sweep): read-only kernels over the same K + V bytes
# (tests/cuda/stream_floor.cu) under each flush of the run: the floor any decode kernel has.
if [ -n "${FLOOR:-}" ]; then
  [ "$FLOOR" = 1 ] && FLOOR="1:16384,1:65536,8:8192,16:4096,64:1024,64:2048,32:8192,64:4096,128:2048"
  # shellcheck disable=SC2086
  nvcc $HARNESS_FLAGS tests/cuda/stream_floor.cu src/cuda/tensor_map.cpp src/cuda/cuda_error.cpp \
    -o "$obj/stream_floor" || rc=1
  for pass in memset ${FLUSH:-}; do
    # shellcheck disable=SC2086
    FM_FLUSH=$pass timeout 200 "$obj/stream_floor" "$FLOOR" ${FLOOR_ARGS:-} 2>&1 \
      | tee "$out/floor_$pass.txt"
  done
fi
if [ "${SDPA:-0}" = 1 ]; then
  python3 tests/cuda/decode_sdpa_bench.py 2>&1 | grep -E "SDPA-BENCH|device" | tee "$out/sdpa.txt"
fi
exit "$rc"
