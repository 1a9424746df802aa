#include "cuda/tensor_map.h"

#include <cuda_runtime_api.h>

#include <climits>

namespace flashmin::cuda {
namespace {

using EncodeTiledFn = CUresult (*)(CUtensorMap*, CUtensorMapDataType, cuuint32_t, void*,
                                   const cuuint64_t*, const cuuint64_t*, const cuuint32_t*,
                                   const cuuint32_t*, CUtensorMapInterleave, CUtensorMapSwizzle,
                                   CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

// nullptr when the driver has no cuTensorMapEncodeTiled.
EncodeTiledFn encode_tiled() {
  static const EncodeTiledFn fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult status = cudaDriverEntryPointSymbolNotFound;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault,
                                         &status) != cudaSuccess ||
        status != cudaDriverEntryPointSuccess) {
      (void)cudaGetLastError();
      return EncodeTiledFn(nullptr);
    }
    return reinterpret_cast<EncodeTiledFn>(f);
  }();
  return fn;
}

}  // namespace

bool make_tensor_map_rows(CUtensorMap* map, CUtensorMapDataType type, int elem_bytes,
                          const void* base, int rank, const int64_t* dims,
                          const int64_t* strides_bytes, int box_rows,
                          CUtensorMapL2promotion promotion) {
  const EncodeTiledFn encode = encode_tiled();
  if (encode == nullptr || base == nullptr || rank < 4 || rank > 5) return false;
  cuuint64_t g_dims[5], g_strides[4];
  for (int i = 0; i < rank; ++i) {
    if (dims[i] < 1 || dims[i] > INT32_MAX) return false;  // coordinates are int32
    g_dims[i] = cuuint64_t(dims[i]);
  }
  for (int i = 0; i < rank - 1; ++i) {
    int64_t s = strides_bytes[i];
    if (s == 0 && dims[i + 1] == 1) s = 16;  // a size-1 axis: its stride is never used
    if (s <= 0 || s % 16 != 0 || s >= (int64_t(1) << 40)) return false;
    g_strides[i] = cuuint64_t(s);
  }
  // Box: 128 bytes of dimension 0 (x all of dimension 1 when rank 5) x box_rows rows.
  const int row_dim = rank - 3;
  cuuint32_t box[5] = {cuuint32_t(128 / elem_bytes), 1, 1, 1, 1};
  if (rank == 5) box[1] = cuuint32_t(dims[1]);
  box[row_dim] = cuuint32_t(box_rows);
  const cuuint32_t elem_strides[5] = {1, 1, 1, 1, 1};
  return encode(map, type, cuuint32_t(rank), const_cast<void*>(base), g_dims, g_strides, box,
                elem_strides, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, promotion,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

bool make_attention_map(CUtensorMap* map, DType dtype, const void* base, const Strides& st,
                        int64_t batch, int64_t heads, int64_t rows, int64_t head_dim,
                        int box_rows) {
  const CUtensorMapDataType type =
      dtype == DType::kFloat16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
  const int64_t dims[4] = {head_dim, rows > 1 ? rows : 1, heads, batch};
  const int64_t strides_bytes[3] = {st.seq * 2, st.head * 2, st.batch * 2};
  return make_tensor_map_rows(map, type, 2, base, 4, dims, strides_bytes, box_rows,
                              CU_TENSOR_MAP_L2_PROMOTION_L2_128B);
}

}  // namespace flashmin::cuda
