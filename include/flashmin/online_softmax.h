// The running softmax state (m, l) shared by every algorithm and by the split-KV combine.
//   m : running max of the scaled scores seen so far (-inf before any key)
//   l : running sum of exp(s - m)
// merge() is NaN-safe when either side is empty (m = -inf), and finalize_lse() gives -inf for a
// row that saw no key.
#pragma once

#include <cmath>

#if defined(__CUDACC__)
#define FM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define FM_HOST_DEVICE inline
#endif

namespace flashmin {

struct SoftmaxState {
  float m;
  float l;

  FM_HOST_DEVICE static SoftmaxState empty() { return {-INFINITY, 0.0f}; }

  // Factor that rescales quantities accumulated under `m_old` to a new max `m_new`.
  FM_HOST_DEVICE static float rescale(float m_old, float m_new) {
    return m_old == -INFINITY ? 0.0f : expf(m_old - m_new);
  }

  // Merge another state into this one; returns the factors (this_scale, other_scale) that
  // the accumulated outputs must be multiplied by.
  FM_HOST_DEVICE void merge(const SoftmaxState& other, float* this_scale, float* other_scale) {
    const float m_new = fmaxf(m, other.m);
    if (m_new == -INFINITY) {  // both empty
      *this_scale = 0.0f;
      *other_scale = 0.0f;
      return;
    }
    *this_scale = rescale(m, m_new);
    *other_scale = rescale(other.m, m_new);
    l = l * *this_scale + other.l * *other_scale;
    m = m_new;
  }

  // lse = m + log(l); -inf for an empty row.
  FM_HOST_DEVICE float lse() const { return l > 0.0f ? m + logf(l) : -INFINITY; }

  // 1 / l, or 0 for an empty row so that O_i = 0.
  FM_HOST_DEVICE float inv_l() const { return l > 0.0f ? 1.0f / l : 0.0f; }
};

}  // namespace flashmin
