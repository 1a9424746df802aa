#include "launch.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "cpu/cpu_api.h"
#include "flashmin/check.h"
#include "flashmin/dispatch.h"

#ifdef FLASHMIN_WITH_CUDA
#include "cuda/cuda_api.h"
#include "cuda/device_query.h"
#endif

namespace flashmin {
namespace {

int64_t element_size(DType t) { return t == DType::kFloat32 ? 4 : 2; }

std::string dims(int64_t a, int64_t b, int64_t c, int64_t d) {
  return "(" + std::to_string(a) + ", " + std::to_string(b) + ", " + std::to_string(c) + ", " +
         std::to_string(d) + ")";
}

void check_dtype(DType t) {
  const int v = static_cast<int>(t);
  check_arg(v >= 0 && v <= 2, "dtype", "float32, float16 or bfloat16 (code 0, 1, 2)", v);
}

void check_head_dim(int64_t d) {
  check_arg(d >= 8 && d <= 256 && d % 8 == 0, "head_dim", "a multiple of 8 in [8, 256]", d);
}

// Kernels move 16-byte vectors: every base pointer 16-byte aligned, every stride a whole
// number of vectors. Python copies tensors that miss this (or rejects in-place caches).
void check_vector_aligned(const char* arg, const void* ptr, const Strides& s, DType t) {
  const int64_t vec = 16 / element_size(t);
  check_arg(reinterpret_cast<uintptr_t>(ptr) % 16 == 0, arg, "a 16-byte aligned data pointer", ptr);
  if (s.batch % vec != 0 || s.head % vec != 0 || s.seq % vec != 0)
    fail_arg(arg, "strides that are multiples of 16 bytes",
             dims(s.batch, s.head, s.seq, 1) + " elements");
}

void check_positive_strides(const char* arg, const Strides& s) {
  if (s.batch < 0 || s.head < 0 || s.seq < 0)
    fail_arg(arg, "non-negative strides", dims(s.batch, s.head, s.seq, 1));
}

void check_heads(int64_t hq, int64_t hk) {
  check_arg(hk >= 1, "key", "at least one head", hk);
  check_arg(hq >= 1, "query", "at least one head", hq);
  if (hq % hk != 0)
    fail_arg("key", "a number of heads that divides the query's (" + std::to_string(hq) + ")", hk);
}

#ifdef FLASHMIN_WITH_CUDA
// Launch on `device`, restoring the caller's current device afterwards.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    FM_CUDA_CHECK(cudaGetDevice(&previous_));
    if (previous_ != device) FM_CUDA_CHECK(cudaSetDevice(device));
  }
  ~DeviceGuard() { cudaSetDevice(previous_); }

 private:
  int previous_ = 0;
};

#endif

[[noreturn, maybe_unused]] void no_cuda() {
  throw std::invalid_argument(
      "device: expected a CPU tensor (this flashmin build has no CUDA kernels: "
      "reinstall with FLASHMIN_CUDA=ON), got a CUDA device");
}

[[maybe_unused]] bool uses_mma(const AttnParams& p) {
  return p.dtype != DType::kFloat32 && p.algorithm == Algorithm::kFA2;
}

}  // namespace

bool built_with_cuda() {
#ifdef FLASHMIN_WITH_CUDA
  return true;
#else
  return false;
#endif
}

bool simt_fwd_tile_sizes(int64_t head_dim, int* block_r, int* block_c) {
  check_head_dim(head_dim);
#ifdef FLASHMIN_WITH_CUDA
  cuda::simt_fwd_tile_sizes(head_dim, block_r, block_c);
  return true;
#else
  (void)block_r;
  (void)block_c;
  return false;
#endif
}

void validate(const AttnParams& p) {
  check_dtype(p.dtype);
  check_arg(p.algorithm == Algorithm::kFA1 || p.algorithm == Algorithm::kFA2, "algorithm",
            "'fa2' or 'fa1' (code 0 or 1)", static_cast<int>(p.algorithm));
  check_arg(p.batch >= 0, "query", "a batch size >= 0", p.batch);
  check_heads(p.heads_q, p.heads_kv);
  check_arg(p.seqlen_q >= 0, "query", "a sequence length >= 0", p.seqlen_q);
  check_arg(p.seqlen_k >= 0, "key", "a sequence length >= 0", p.seqlen_k);
  check_head_dim(p.head_dim);
  check_arg(std::isfinite(p.scale), "scale", "a finite number", p.scale);
  check_positive_strides("query", p.q_strides);
  check_positive_strides("key", p.k_strides);
  check_positive_strides("value", p.v_strides);
  check_positive_strides("out", p.o_strides);
  const bool empty = p.batch == 0 || p.seqlen_q == 0;
  if (empty) return;
  check_arg(p.q && p.o && p.lse, "query", "non-null query, out and lse pointers", "a null pointer");
  if (p.seqlen_k > 0) {
    check_arg(p.k && p.v, "key", "non-null key and value pointers", "a null pointer");
    check_vector_aligned("key", p.k, p.k_strides, p.dtype);
    check_vector_aligned("value", p.v, p.v_strides, p.dtype);
  }
  check_vector_aligned("query", p.q, p.q_strides, p.dtype);
  check_vector_aligned("out", p.o, p.o_strides, p.dtype);
}

void validate(const AttnBwdParams& p) {
  validate(static_cast<const AttnParams&>(p));
  check_positive_strides("grad_out", p.dout_strides);
  if (p.batch == 0) return;
  if (p.seqlen_q > 0) {
    check_arg(p.dout && p.dq, "grad_out", "non-null grad_out and dq pointers", "a null pointer");
    check_vector_aligned("grad_out", p.dout, p.dout_strides, p.dtype);
    check_vector_aligned("dq", p.dq, p.dq_strides, p.dtype);
  }
  if (p.seqlen_k > 0) {
    check_arg(p.dk && p.dv, "dk", "non-null dk and dv pointers", "a null pointer");
    check_vector_aligned("dk", p.dk, p.dk_strides, p.dtype);
    check_vector_aligned("dv", p.dv, p.dv_strides, p.dtype);
  }
}

void validate(const DecodeParams& p) {
  check_dtype(p.dtype);
  check_arg(p.batch >= 0, "query", "a batch size >= 0", p.batch);
  check_heads(p.heads_q, p.heads_kv);
  check_arg(p.seqlen_q >= 1 && p.seqlen_q <= 16, "query", "a sequence length in [1, 16]",
            p.seqlen_q);
  check_head_dim(p.head_dim);
  check_arg(std::isfinite(p.scale), "scale", "a finite number", p.scale);
  check_arg(p.num_splits >= 0 && p.num_splits <= 256, "num_splits", "a value in [1, 256] or None",
            p.num_splits);
  check_arg(p.seqlen_new >= 0, "k_new", "a sequence length >= 0", p.seqlen_new);
  check_arg((p.k_new == nullptr) == (p.v_new == nullptr), "v_new",
            "to be given together with k_new", p.v_new ? "v_new without k_new" : "k_new alone");
  if (p.block_table) {
    const int64_t ps = p.page_size;
    check_arg(ps >= 16 && (ps & (ps - 1)) == 0, "page_size", "a power of two >= 16", ps);
    check_arg(p.max_pages_per_seq >= 1, "block_table", "at least one page per sequence",
              p.max_pages_per_seq);
    check_arg(p.max_seqlen_k == p.max_pages_per_seq * ps, "block_table",
              "max_seqlen_k == max_pages_per_seq * page_size", p.max_seqlen_k);
  }
  check_arg(p.max_seqlen_k >= 0, "k_cache", "a cache length >= 0", p.max_seqlen_k);
  if (p.batch == 0) return;
  check_arg(p.q && p.o && p.k_cache && p.v_cache, "query",
            "non-null query, out, k_cache and v_cache pointers", "a null pointer");
  check_vector_aligned("query", p.q, p.q_strides, p.dtype);
  check_vector_aligned("out", p.o, p.o_strides, p.dtype);
  check_vector_aligned("k_cache", p.k_cache, p.k_cache_strides, p.dtype);
  check_vector_aligned("v_cache", p.v_cache, p.v_cache_strides, p.dtype);
  if (p.k_new && p.seqlen_new > 0) {
    check_vector_aligned("k_new", p.k_new, p.k_new_strides, p.dtype);
    check_vector_aligned("v_new", p.v_new, p.v_new_strides, p.dtype);
  }
}

int64_t fwd_workspace_bytes(const AttnParams& p, int device) {
  validate(p);
  if (device < 0) return 0;
#ifdef FLASHMIN_WITH_CUDA
  return uses_mma(p) ? 0 : cuda::simt_fwd_workspace_bytes(p);
#else
  no_cuda();
#endif
}

void fwd(const AttnParams& p, int device, intptr_t stream) {
  validate(p);
  if (p.batch == 0 || p.heads_q == 0 || p.seqlen_q == 0) return;
  if (device < 0) return cpu::fwd(p);
#ifdef FLASHMIN_WITH_CUDA
  check_arg(p.workspace_bytes >= fwd_workspace_bytes(p, device), "workspace",
            "at least fwd_workspace_bytes()", p.workspace_bytes);
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (uses_mma(p)) return cuda::fa2_fwd_mma(p, s);
  return cuda::simt_fwd(p, s);
#else
  (void)stream;
  no_cuda();
#endif
}

int64_t bwd_workspace_bytes(const AttnBwdParams& p, int device) {
  validate(p);
  if (device < 0) return 0;
#ifdef FLASHMIN_WITH_CUDA
  return uses_mma(p) ? cuda::fa2_bwd_mma_workspace_bytes(p) : cuda::simt_bwd_workspace_bytes(p);
#else
  no_cuda();
#endif
}

void bwd(const AttnBwdParams& p, int device, intptr_t stream) {
  validate(p);
  if (p.batch == 0 || (p.seqlen_q == 0 && p.seqlen_k == 0)) return;
  if (device < 0) return cpu::bwd(p);
#ifdef FLASHMIN_WITH_CUDA
  check_arg(p.workspace_bytes >= bwd_workspace_bytes(p, device), "workspace",
            "at least bwd_workspace_bytes()", p.workspace_bytes);
  DeviceGuard guard(device);
  auto s = reinterpret_cast<cudaStream_t>(stream);
  if (uses_mma(p)) return cuda::fa2_bwd_mma(p, s);
  return cuda::simt_bwd(p, s);
#else
  (void)stream;
  no_cuda();
#endif
}

int64_t decode_plan(DecodeParams& p, int device) {
  validate(p);
  if (device < 0) {
    if (p.num_splits == 0) p.num_splits = 1;
    return 0;
  }
#ifdef FLASHMIN_WITH_CUDA
  return cuda::decode_plan(p, cuda::sm_count(device));
#else
  no_cuda();
#endif
}

void decode(const DecodeParams& p, int device, intptr_t stream) {
  validate(p);
  check_arg(p.num_splits >= 1, "num_splits", "a value resolved by decode_plan() (>= 1)",
            p.num_splits);
  if (p.batch == 0) return;
  if (device < 0) return cpu::decode(p);
#ifdef FLASHMIN_WITH_CUDA
  check_arg(p.workspace_bytes >= cuda::decode_workspace_bytes(p), "workspace",
            "at least decode_plan()'s bytes", p.workspace_bytes);
  DeviceGuard guard(device);
  return cuda::decode(p, reinterpret_cast<cudaStream_t>(stream));
#else
  (void)stream;
  no_cuda();
#endif
}

}  // namespace flashmin
