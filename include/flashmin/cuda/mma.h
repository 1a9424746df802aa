// Tensor-core matrix multiply-accumulate (mma.sync m16n8k16, fp32 accumulators) and the
// register packing that goes with it. Fragment layouts follow the PTX ISA:
//   A (16x16, row-major) : 4 x b32 regs, B (16x8, "col") : 2 x b32, C/D (16x8) : 4 x f32
//   C/D element (row, col): reg i holds row = lane/4 + 8*(i/2), col = 2*(lane%4) + (i%2).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace flashmin::cuda {

template <typename T>
struct MmaType;  // T = __half or __nv_bfloat16

template <>
struct MmaType<__half> {
  __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __half2 h = __floats2half2_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

template <>
struct MmaType<__nv_bfloat16> {
  __device__ __forceinline__ static void mma(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
  __device__ __forceinline__ static uint32_t pack(float lo, float hi) {
    __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
    return *reinterpret_cast<uint32_t*>(&h);
  }
};

// 2^x on the special-function unit (the log2(e) factor is folded into the softmax scale).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

// Two adjacent 16x8 accumulator tiles -> one 16x16 A fragment of the next product (the FA2
// register trick: P or dS never goes through shared memory).
template <typename T>
__device__ __forceinline__ void acc_to_a(uint32_t (&a)[4], const float* c0, const float* c1) {
  a[0] = MmaType<T>::pack(c0[0], c0[1]);
  a[1] = MmaType<T>::pack(c0[2], c0[3]);
  a[2] = MmaType<T>::pack(c1[0], c1[1]);
  a[3] = MmaType<T>::pack(c1[2], c1[3]);
}

// Reductions over the 4 lanes of a quad, which together hold one accumulator row.
__device__ __forceinline__ float quad_max(float x) {
  x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
  return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
__device__ __forceinline__ float quad_sum(float x) {
  x += __shfl_xor_sync(0xffffffffu, x, 1);
  return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

}  // namespace flashmin::cuda
