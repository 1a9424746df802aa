// Shared pieces of the CPU kernels: tile sizes (the one place they are chosen), per-thread scratch,
// typed row loads/stores, and the FA2 inner step shared by the forward pass and decode.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <stdexcept>

#include "cpu/dtype_convert.h"
#include "cpu/kernels.h"
#include "flashmin/params.h"

namespace flashmin::cpu {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int64_t kNoLimit = std::numeric_limits<int64_t>::max();

// ---- tile sizes: B_r query rows x B_c key rows per block ---------------------------------------
// 64 x 64 keeps Q_i^T, K_j, V_j, S_ij and O_i (about 80 KB at D = 64) in L1/L2. Both are also a
// GEMM's N dimension somewhere (S_ij^T is B_c x B_r), which must be a multiple of the 16-float
// vector width: short sequences (decode, S_q = 1) shrink the tile to the next multiple of 16
// instead of computing 64 mostly empty columns.
struct CpuTiles {
  int64_t Br;
  int64_t Bc;
};
inline CpuTiles cpu_tiles(int64_t /*padded_head_dim*/, int64_t rows_q, int64_t rows_k) {
  auto fit = [](int64_t full, int64_t n) {
    return std::min(full, std::max<int64_t>(kColumnPad, pad_columns(n)));
  };
  return {fit(64, rows_q), fit(64, rows_k)};
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Tiling of one attention call: head dim D (padded to Dp), B_r x B_c tiles, T_r x T_c blocks.
struct AttnGeometry {
  int64_t D, Dp, Br, Bc, Tr, Tc, group;
  explicit AttnGeometry(const AttnParams& p) {
    D = p.head_dim;
    Dp = pad_columns(D);
    const CpuTiles t = cpu_tiles(Dp, p.seqlen_q, p.seqlen_k);
    Br = t.Br;
    Bc = t.Bc;
    Tr = ceil_div(p.seqlen_q, Br);
    Tc = ceil_div(p.seqlen_k, Bc);
    group = p.group_size();
  }
};

// Floats Scratch::take() hands out for n elements (rounded up to a 64-byte line).
inline int64_t grain(int64_t floats) { return (floats + 15) / 16 * 16; }

// ---- per-thread scratch: one growing 64-byte aligned buffer, carved per work item -------------
class Scratch {
 public:
  // Pointers from earlier take() calls stay valid until reset(): call reserve() with the item's
  // total first.
  void reserve(int64_t floats) {
    if (floats <= capacity_) return;
    std::free(data_);
    capacity_ = grain(floats) + 1024;  // whole 64-byte lines, as aligned_alloc requires
    data_ = static_cast<float*>(std::aligned_alloc(64, static_cast<size_t>(capacity_) * 4));
    if (!data_) {
      capacity_ = 0;
      throw std::bad_alloc();
    }
  }
  void reset() { used_ = 0; }
  float* take(int64_t floats) {
    float* p = data_ + used_;
    used_ += grain(floats);
    if (used_ > capacity_) throw std::logic_error("flashmin cpu: scratch under-reserved");
    return p;
  }
  int64_t* take_int64(int64_t n) { return reinterpret_cast<int64_t*>(take(2 * n)); }
  ~Scratch() { std::free(data_); }

 private:
  float* data_ = nullptr;
  int64_t capacity_ = 0;
  int64_t used_ = 0;
};

// Scratch for the calling thread, reserved for `floats` and reset.
inline Scratch& thread_scratch(int64_t floats) {
  thread_local Scratch s;
  s.reserve(floats);
  s.reset();
  return s;
}

// ---- typed addressing and row conversion -------------------------------------------------------
template <typename T>
inline const T* at(const void* base, const Strides& s, int64_t b, int64_t h, int64_t t) {
  return static_cast<const T*>(base) + b * s.batch + h * s.head + t * s.seq;
}
template <typename T>
inline T* at_mut(void* base, const Strides& s, int64_t b, int64_t h, int64_t t) {
  return static_cast<T*>(base) + b * s.batch + h * s.head + t * s.seq;
}

inline void load_row(const Kernels&, const float* src, float* dst, int64_t n) {
  std::memcpy(dst, src, static_cast<size_t>(n) * 4);
}
inline void load_row(const Kernels& k, const Half* src, float* dst, int64_t n) {
  k.half_to_float_row(reinterpret_cast<const uint16_t*>(src), dst, n);
}
inline void load_row(const Kernels& k, const BFloat16* src, float* dst, int64_t n) {
  k.bf16_to_float_row(reinterpret_cast<const uint16_t*>(src), dst, n);
}

template <typename T>
inline void store_row(const float* src, float mul, T* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = from_float<T>(src[i] * mul);
}

// Load `rows` rows of width D into a transposed tile dst (D x ld), multiplied by `mul`; columns
// rows..ld-1 are zero-filled. `row(r)` returns the source row pointer. `tmp` holds D floats.
template <typename T, typename RowFn>
inline void load_transposed(const Kernels& k, RowFn row, int64_t rows, int64_t D, float mul,
                            float* dst, int64_t ld, float* tmp) {
  for (int64_t r = 0; r < rows; ++r) {
    load_row(k, row(r), tmp, D);
    for (int64_t d = 0; d < D; ++d) dst[d * ld + r] = tmp[d] * mul;
  }
  if (rows < ld)
    for (int64_t d = 0; d < D; ++d) std::fill(dst + d * ld + rows, dst + (d + 1) * ld, 0.0f);
}

// Zero columns [D, Dp) of a (rows x Dp) tile (the head-dim padding the GEMM reads).
inline void zero_pad_columns(float* t, int64_t rows, int64_t D, int64_t Dp) {
  if (D == Dp) return;
  for (int64_t r = 0; r < rows; ++r) std::fill(t + r * Dp + D, t + (r + 1) * Dp, 0.0f);
}

// ---- the FA2 inner step: one key block against one query block held "on chip" ------------------
// Q_i^T is pre-scaled by scale * log2(e), so S_ij is in the log2 domain and exp2 is the softmax.
struct QueryTile {
  int64_t Br, nr, D, Dp;
  const float* QiT;      // (D x Br)   scaled Q_i^T, zero columns for rows >= nr
  float* O;              // (Br x Dp)  unnormalised O_i
  float* m;              // (Br)       running max (log2 domain)
  float* l;              // (Br)       running sum
  float* alpha;          // (Br)       rescale factor of the last step
  const int64_t* limit;  // (Br)       last visible key index per row (kNoLimit: none)
  int64_t min_limit;     // min over the tile's real rows
};

// K_j, V_j: (nc x Dp) rows of keys j0 .. j0 + nc - 1 (V_j's padding columns zero). St: Bc x Br.
inline void fa2_step(const Kernels& k, QueryTile& q, const float* Kj, const float* Vj, int64_t j0,
                     int64_t nc, float* St) {
  const int64_t Br = q.Br;
  // S_ij^T = K_j Q_i^T                                           (nc x Br)
  k.gemm({nc, Br, q.D, Kj, q.Dp, 1, q.QiT, Br, St, Br, false});
  // causal mask: key j visible to row r iff j <= limit[r]
  if (j0 + nc - 1 > q.min_limit) {
    for (int64_t c = 0; c < nc; ++c)
      for (int64_t r = 0; r < q.nr; ++r)
        if (j0 + c > q.limit[r]) St[c * Br + r] = -INFINITY;
  }
  // m_i = max(m_i, rowmax S_ij); P_ij = exp2(S_ij - m_i); l_i = alpha l_i + rowsum P_ij
  k.softmax_step(St, nc, Br, q.m, q.l, q.alpha);
  // O_i = diag(alpha) O_i + P_ij V_j                             (nr x Dp)
  for (int64_t r = 0; r < q.nr; ++r) {
    const float a = q.alpha[r];
    if (a != 1.0f)
      for (int64_t d = 0; d < q.Dp; ++d) q.O[r * q.Dp + d] *= a;
  }
  k.gemm({q.nr, q.Dp, nc, St, 1, Br, Vj, q.Dp, q.O, q.Dp, true});
}

}  // namespace flashmin::cpu
