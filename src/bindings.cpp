// flashmin._C: the parameter structs and launcher entry points, exposed with plain integers.
// No torch here: Python passes data pointers, sizes, strides, the dtype code, the device index and
// the cudaStream_t as integers. std::invalid_argument becomes ValueError, std::runtime_error
// RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <tuple>

#include "flashmin/params.h"
#include "launch.h"

namespace py = pybind11;
using namespace flashmin;

namespace {

using StrideTuple = std::tuple<int64_t, int64_t, int64_t>;

StrideTuple to_tuple(const Strides& s) { return {s.batch, s.head, s.seq}; }
Strides from_tuple(const StrideTuple& t) {
  return {std::get<0>(t), std::get<1>(t), std::get<2>(t)};
}

// Pointer fields as integer properties (an address of 0 is a null pointer).
#define FM_PTR(Cls, field, Type)                                                 \
  def_property(                                                                  \
      #field, [](const Cls& p) { return reinterpret_cast<uintptr_t>(p.field); }, \
      [](Cls& p, uintptr_t v) { p.field = reinterpret_cast<Type>(v); })
#define FM_STRIDES(Cls, field)                                \
  def_property(                                               \
      #field, [](const Cls& p) { return to_tuple(p.field); }, \
      [](Cls& p, const StrideTuple& t) { p.field = from_tuple(t); })
#define FM_FIELD(Cls, field) def_readwrite(#field, &Cls::field)

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "flashmin native kernels (torch-free launcher)";

  py::enum_<DType>(m, "DType")
      .value("float32", DType::kFloat32)
      .value("float16", DType::kFloat16)
      .value("bfloat16", DType::kBFloat16);
  py::enum_<Algorithm>(m, "Algorithm").value("fa2", Algorithm::kFA2).value("fa1", Algorithm::kFA1);

  py::class_<AttnParams>(m, "AttnParams")
      .def(py::init<>())
      .FM_PTR(AttnParams, q, const void*)
      .FM_PTR(AttnParams, k, const void*)
      .FM_PTR(AttnParams, v, const void*)
      .FM_PTR(AttnParams, o, void*)
      .FM_PTR(AttnParams, lse, float*)
      .FM_PTR(AttnParams, workspace, void*)
      .FM_STRIDES(AttnParams, q_strides)
      .FM_STRIDES(AttnParams, k_strides)
      .FM_STRIDES(AttnParams, v_strides)
      .FM_STRIDES(AttnParams, o_strides)
      .FM_FIELD(AttnParams, batch)
      .FM_FIELD(AttnParams, heads_q)
      .FM_FIELD(AttnParams, heads_kv)
      .FM_FIELD(AttnParams, seqlen_q)
      .FM_FIELD(AttnParams, seqlen_k)
      .FM_FIELD(AttnParams, head_dim)
      .FM_FIELD(AttnParams, scale)
      .FM_FIELD(AttnParams, is_causal)
      .FM_FIELD(AttnParams, causal_offset)
      .FM_FIELD(AttnParams, dtype)
      .FM_FIELD(AttnParams, algorithm)
      .FM_FIELD(AttnParams, workspace_bytes);

  py::class_<AttnBwdParams, AttnParams>(m, "AttnBwdParams")
      .def(py::init<>())
      .FM_PTR(AttnBwdParams, dout, const void*)
      .FM_PTR(AttnBwdParams, dq, void*)
      .FM_PTR(AttnBwdParams, dk, void*)
      .FM_PTR(AttnBwdParams, dv, void*)
      .FM_STRIDES(AttnBwdParams, dout_strides)
      .FM_STRIDES(AttnBwdParams, dq_strides)
      .FM_STRIDES(AttnBwdParams, dk_strides)
      .FM_STRIDES(AttnBwdParams, dv_strides)
      .FM_FIELD(AttnBwdParams, deterministic);

  py::class_<DecodeParams>(m, "DecodeParams")
      .def(py::init<>())
      // Every field a decode call sets, in one call: 25 property setters cost ~6 us of host
      // time per decode call, this ~1 us. Paging, the append, lse and the workspace stay setters.
      .def(py::init([](uintptr_t q, const StrideTuple& q_strides, uintptr_t k_cache,
                       const StrideTuple& k_cache_strides, uintptr_t v_cache,
                       const StrideTuple& v_cache_strides, uintptr_t o,
                       const StrideTuple& o_strides, uintptr_t cache_seqlens, int64_t batch,
                       int64_t heads_q, int64_t heads_kv, int64_t seqlen_q, int64_t head_dim,
                       int64_t max_seqlen_k, float scale, DType dtype, int64_t num_splits) {
             DecodeParams p;
             p.q = reinterpret_cast<const void*>(q);
             p.q_strides = from_tuple(q_strides);
             p.k_cache = reinterpret_cast<void*>(k_cache);
             p.k_cache_strides = from_tuple(k_cache_strides);
             p.v_cache = reinterpret_cast<void*>(v_cache);
             p.v_cache_strides = from_tuple(v_cache_strides);
             p.o = reinterpret_cast<void*>(o);
             p.o_strides = from_tuple(o_strides);
             p.cache_seqlens = reinterpret_cast<const int32_t*>(cache_seqlens);
             p.batch = batch;
             p.heads_q = heads_q;
             p.heads_kv = heads_kv;
             p.seqlen_q = seqlen_q;
             p.head_dim = head_dim;
             p.max_seqlen_k = max_seqlen_k;
             p.scale = scale;
             p.dtype = dtype;
             p.num_splits = num_splits;
             return p;
           }),
           py::arg("q"), py::arg("q_strides"), py::arg("k_cache"), py::arg("k_cache_strides"),
           py::arg("v_cache"), py::arg("v_cache_strides"), py::arg("o"), py::arg("o_strides"),
           py::arg("cache_seqlens"), py::arg("batch"), py::arg("heads_q"), py::arg("heads_kv"),
           py::arg("seqlen_q"), py::arg("head_dim"), py::arg("max_seqlen_k"), py::arg("scale"),
           py::arg("dtype"), py::arg("num_splits"))
      .FM_PTR(DecodeParams, q, const void*)
      .FM_PTR(DecodeParams, k_cache, void*)
      .FM_PTR(DecodeParams, v_cache, void*)
      .FM_PTR(DecodeParams, cache_seqlens, const int32_t*)
      .FM_PTR(DecodeParams, block_table, const int32_t*)
      .FM_PTR(DecodeParams, k_new, const void*)
      .FM_PTR(DecodeParams, v_new, const void*)
      .FM_PTR(DecodeParams, o, void*)
      .FM_PTR(DecodeParams, lse, float*)
      .FM_PTR(DecodeParams, workspace, void*)
      .FM_STRIDES(DecodeParams, q_strides)
      .FM_STRIDES(DecodeParams, k_cache_strides)
      .FM_STRIDES(DecodeParams, v_cache_strides)
      .FM_STRIDES(DecodeParams, k_new_strides)
      .FM_STRIDES(DecodeParams, v_new_strides)
      .FM_STRIDES(DecodeParams, o_strides)
      .FM_FIELD(DecodeParams, block_table_stride)
      .FM_FIELD(DecodeParams, max_pages_per_seq)
      .FM_FIELD(DecodeParams, num_pages)
      .FM_FIELD(DecodeParams, page_size)
      .FM_FIELD(DecodeParams, seqlen_new)
      .FM_FIELD(DecodeParams, batch)
      .FM_FIELD(DecodeParams, heads_q)
      .FM_FIELD(DecodeParams, heads_kv)
      .FM_FIELD(DecodeParams, seqlen_q)
      .FM_FIELD(DecodeParams, max_seqlen_k)
      .FM_FIELD(DecodeParams, head_dim)
      .FM_FIELD(DecodeParams, scale)
      .FM_FIELD(DecodeParams, dtype)
      .FM_FIELD(DecodeParams, num_splits)
      .FM_FIELD(DecodeParams, workspace_bytes);

  const auto release = py::call_guard<py::gil_scoped_release>();
  m.def("fwd_workspace_bytes", &fwd_workspace_bytes, py::arg("params"), py::arg("device"));
  m.def("fwd", &fwd, py::arg("params"), py::arg("device"), py::arg("stream"), release);
  m.def("bwd_workspace_bytes", &bwd_workspace_bytes, py::arg("params"), py::arg("device"));
  m.def("bwd", &bwd, py::arg("params"), py::arg("device"), py::arg("stream"), release);
  m.def("decode_plan", &decode_plan, py::arg("params"), py::arg("device"),
        "Resolve params.num_splits (0 = heuristic) and return the workspace bytes decode needs.");
  m.def("decode", &decode, py::arg("params"), py::arg("device"), py::arg("stream"), release);

  m.def(
      "simt_fwd_tile_sizes",
      [](int64_t head_dim) -> py::object {
        int br = 0, bc = 0;
        if (!simt_fwd_tile_sizes(head_dim, &br, &bc)) return py::none();
        return py::make_tuple(br, bc);
      },
      py::arg("head_dim"), "(B_r, B_c) of the CUDA-core forward tile, or None without CUDA.");

  m.def("build_info", [] {
    py::dict d;
    d["version"] = FLASHMIN_VERSION;
    d["with_cuda"] = built_with_cuda();
    d["cuda_version"] =
        built_with_cuda() ? py::object(py::str(FLASHMIN_CUDA_VERSION)) : py::object(py::none());
    d["cuda_archs"] = py::str(FLASHMIN_CUDA_ARCHS);
    d["cuda_runtime"] = built_with_cuda() ? "static" : "none";
    return d;
  });
}
