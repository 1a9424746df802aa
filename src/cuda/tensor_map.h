// Host side of the Hopper copy engine: TMA tensor maps for (d, rows, heads, batch)-shaped
// operands. cuTensorMapEncodeTiled is fetched from the driver through the runtime, so nothing
// links libcuda.
#pragma once

#include <cuda.h>  // CUtensorMap (types only)

#include <cstdint>

#include "flashmin/params.h"

namespace flashmin::cuda {

// Encode a tiled tensor map of rank 4 or 5 of 16- or 32-bit elements (innermost dimension
// first): `dims` in elements, `strides_bytes` of dimensions 1..rank-1, 128-byte swizzle,
// out-of-bounds elements zero-filled. Rank 4: box = 128 bytes of dimension 0 x box_rows of
// dimension 1. Rank 5: dimension 0 is 128 bytes of a row and dimension 1 the row's 128-byte
// pieces (dims[1] of them, stride 128 bytes), so one box (all of dimensions 0-1 x box_rows of
// dimension 2) copies whole rows in memory order; in shared memory piece h of row r is 128-byte
// line r * dims[1] + h. False when the layout cannot be described (a stride not a positive
// multiple of 16, a dimension >= 2^31, no driver entry point); the caller then takes another
// path.
bool make_tensor_map_rows(CUtensorMap* map, CUtensorMapDataType type, int elem_bytes,
                          const void* base, int rank, const int64_t* dims,
                          const int64_t* strides_bytes, int box_rows,
                          CUtensorMapL2promotion promotion);

// An attention operand, (batch, heads, rows, head_dim) fp16 / bf16 with element strides `st`
// (last dimension contiguous), as the map (head_dim, rows, heads, batch): boxes of 64 columns x
// box_rows rows, L2 promotion 128 B. An empty row axis gets a one-row map (never read).
bool make_attention_map(CUtensorMap* map, DType dtype, const void* base, const Strides& st,
                        int64_t batch, int64_t heads, int64_t rows, int64_t head_dim, int box_rows);

}  // namespace flashmin::cuda
