# shellcheck shell=bash
# Sourced by the device scripts (bwd_sm90_check.sh, fwd_sm90_check.sh, bwd_profile.sh,
# sm90_variants.sh, decode_variants.sh): the nvcc flags of the standalone harnesses (tests/cuda)
# and a parallel compile. Builds for sm_90a, the lent GPUs' arch.
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
