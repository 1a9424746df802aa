# shellcheck shell=bash
# Sourced by the device scripts (bwd_sm90_check.sh, fwd_sm90_check.sh, bwd_profile.sh,
# sm90_variants.sh, decode_variants.sh, decode_ncu.sh): the nvcc flags of the standalone harnesses
# (tests/cuda), a parallel compile, and ncu of the decode split kernel. Builds for sm_90a, the lent GPUs' arch.
HARNESS_FLAGS="-std=c++17 -O3 --expt-relaxed-constexpr -Iinclude -Isrc -DFLASHMIN_HAS_SM90A=1 -gencode arch=compute_90a,code=sm_90a"

# harness_compile OBJ_DIR "EXTRA_FLAGS" FILE...: each FILE -> OBJ_DIR/<basename>.o, in parallel;
# fails if any compile fails.
harness_compile() {
  local dir=$1 extra=$2
  shift 2
  mkdir -p "$dir"
  local pids=() f rc=0
  for f in "$@"; do
    # shellcheck disable=SC2086
    nvcc $HARNESS_FLAGS $extra -x cu -c "$f" -o "$dir/$(basename "$f").o" &
    pids+=($!)
  done
  for f in "${pids[@]}"; do wait "$f" || rc=1; done
  return $rc
}

# harness_link BINARY "EXTRA_FLAGS" OBJ...
harness_link() {
  local bin=$1 extra=$2
  shift 2
  # shellcheck disable=SC2086
  nvcc $HARNESS_FLAGS $extra "$@" -o "$bin"
}

# harness_variants OBJ_DIR DEFAULT_SRC "name=FLAGS" ...: compile DEFAULT_SRC with each variant's
# flags ("name=@path FLAGS": that file instead) into OBJ_DIR/v_<name>.o, in parallel, ptxas -v
# output in OBJ_DIR/ptxas_<name>.txt (printed if the compile fails); the names, in order, land
# in HARNESS_VARIANTS. Fails if any compile fails.
harness_variants() {
  local dir=$1 default=$2
  shift 2
  mkdir -p "$dir"
  HARNESS_VARIANTS=()
  local spec name args src i rc=0 pids=()
  for spec in "$@"; do
    name=${spec%%=*}
    args=${spec#*=}
    src=$default
    if [ "${args#@}" != "$args" ]; then
      src=${args%% *}
      src=${src#@}
      args=${args#"@$src"}
    fi
    HARNESS_VARIANTS+=("$name")
    # shellcheck disable=SC2086
    nvcc $HARNESS_FLAGS $args -Xptxas -v -x cu -c "$src" -o "$dir/v_$name.o" \
      2> "$dir/ptxas_$name.txt" &
    pids+=($!)
  done
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      cat "$dir/ptxas_${HARNESS_VARIANTS[$i]}.txt"
      rc=1
    fi
  done
  return $rc
}

# decode_ncu_split BINARY "B L" ncu-args...: ncu (clocks left as they are) of one launch of the
# decode split kernel in tests/cuda/decode_check.cu BINARY --bench-only --shape B L (the sixth,
# after the harness's warm-up calls).
decode_ncu_split() {
  local bin=$1 shape=$2
  shift 2
  # shellcheck disable=SC2086
  timeout 120 ncu --clock-control none "$@" -k regex:decode_split --launch-skip 5 --launch-count 1 \
    "$bin" --bench-only --shape $shape
}
