// The launcher rejects bad parameters with std::invalid_argument naming the argument
// (flashmin::fwd / bwd / decode_plan / decode with device = -1).
#include <cmath>
#include <cstdio>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

#include "launch.h"
#include "test_util.h"

using namespace flashmin;

namespace {

// Expect fn() to throw std::invalid_argument whose message contains `arg`.
void expect_invalid(const char* what, const char* arg, const std::function<void()>& fn) {
  std::string msg;
  bool threw = false;
  try {
    fn();
  } catch (const std::invalid_argument& e) {
    threw = true;
    msg = e.what();
  } catch (const std::exception& e) {
    msg = std::string("wrong exception type: ") + e.what();
  }
  const bool ok = threw && msg.find(arg) != std::string::npos;
  FM_EXPECT(ok, "%s: expected invalid_argument naming '%s', got '%s'", what, arg,
            threw || !msg.empty() ? msg.c_str() : "no exception");
  if (ok) std::printf("  ok  %-34s -> %s\n", what, msg.c_str());
}

struct Buffers {
  std::vector<float> q, k, v, o, lse, dout, dq, dk, dv;
  Buffers()
      : q(4096), k(4096), v(4096), o(4096), lse(64), dout(4096), dq(4096), dk(4096), dv(4096) {}
};

// A valid small problem: B=1, H=2, S=8, D=32, fp32 contiguous.
AttnBwdParams good_params(Buffers& m) {
  AttnBwdParams p;
  const Strides s{2 * 8 * 32, 8 * 32, 32};
  p.q = m.q.data();
  p.k = m.k.data();
  p.v = m.v.data();
  p.o = m.o.data();
  p.lse = m.lse.data();
  p.q_strides = p.k_strides = p.v_strides = p.o_strides = s;
  p.batch = 1;
  p.heads_q = p.heads_kv = 2;
  p.seqlen_q = p.seqlen_k = 8;
  p.head_dim = 32;
  p.scale = 0.125f;
  p.dout = m.dout.data();
  p.dq = m.dq.data();
  p.dk = m.dk.data();
  p.dv = m.dv.data();
  p.dout_strides = p.dq_strides = p.dk_strides = p.dv_strides = s;
  return p;
}

DecodeParams good_decode(Buffers& m, std::vector<int32_t>& lens, std::vector<int32_t>& table) {
  DecodeParams p;
  p.q = m.q.data();
  p.q_strides = {2 * 32, 32, 32};
  p.k_cache = m.k.data();
  p.v_cache = m.v.data();
  p.k_cache_strides = p.v_cache_strides = {2 * 16 * 32, 16 * 32, 32};  // (pages, H, 16, D)
  lens = {10};
  table = {0, 1};
  p.cache_seqlens = lens.data();
  p.block_table = table.data();
  p.block_table_stride = 2;
  p.max_pages_per_seq = 2;
  p.num_pages = 3;
  p.page_size = 16;
  p.o = m.o.data();
  p.o_strides = {2 * 32, 32, 32};
  p.batch = 1;
  p.heads_q = p.heads_kv = 2;
  p.seqlen_q = 1;
  p.max_seqlen_k = 32;
  p.head_dim = 32;
  p.scale = 0.2f;
  return p;
}

}  // namespace

int main() {
  Buffers m;
  std::vector<int32_t> lens, table;

  // The valid baselines run.
  {
    AttnBwdParams p = good_params(m);
    bool ok = true;
    try {
      fwd(p, -1, 0);
      bwd(p, -1, 0);
      DecodeParams d = good_decode(m, lens, table);
      decode_plan(d, -1);
      FM_EXPECT(d.num_splits == 1, "decode_plan on the CPU resolves num_splits 0 -> 1");
      decode(d, -1, 0);
    } catch (const std::exception& e) {
      ok = false;
      std::printf("  unexpected: %s\n", e.what());
    }
    FM_EXPECT(ok, "valid parameters are accepted");
  }

  auto fwd_with = [&](std::function<void(AttnBwdParams&)> edit) {
    return [&m, edit] {
      AttnBwdParams p = good_params(m);
      edit(p);
      fwd(p, -1, 0);
    };
  };
  auto bwd_with = [&](std::function<void(AttnBwdParams&)> edit) {
    return [&m, edit] {
      AttnBwdParams p = good_params(m);
      edit(p);
      bwd(p, -1, 0);
    };
  };
  auto plan_with = [&](std::function<void(DecodeParams&)> edit) {
    return [&m, &lens, &table, edit] {
      DecodeParams p = good_decode(m, lens, table);
      edit(p);
      decode_plan(p, -1);
    };
  };

  expect_invalid("head_dim not a multiple of 8", "head_dim",
                 fwd_with([](AttnBwdParams& p) { p.head_dim = 12; }));
  expect_invalid("head_dim above 256", "head_dim",
                 fwd_with([](AttnBwdParams& p) { p.head_dim = 264; }));
  expect_invalid("kv heads not dividing q heads", "key",
                 fwd_with([](AttnBwdParams& p) { p.heads_q = 3; }));
  expect_invalid("zero kv heads", "key", fwd_with([](AttnBwdParams& p) { p.heads_kv = 0; }));
  expect_invalid("NaN scale", "scale", fwd_with([](AttnBwdParams& p) { p.scale = NAN; }));
  expect_invalid("infinite scale", "scale", fwd_with([](AttnBwdParams& p) { p.scale = INFINITY; }));
  expect_invalid("unknown dtype code", "dtype",
                 fwd_with([](AttnBwdParams& p) { p.dtype = static_cast<DType>(7); }));
  expect_invalid("unknown algorithm", "algorithm",
                 fwd_with([](AttnBwdParams& p) { p.algorithm = static_cast<Algorithm>(5); }));
  expect_invalid("negative seqlen_q", "query", fwd_with([](AttnBwdParams& p) { p.seqlen_q = -1; }));
  expect_invalid("negative seqlen_k", "key", fwd_with([](AttnBwdParams& p) { p.seqlen_k = -3; }));
  expect_invalid("negative key stride", "key",
                 fwd_with([](AttnBwdParams& p) { p.k_strides.seq = -32; }));
  expect_invalid("misaligned query pointer", "query",
                 fwd_with([&m](AttnBwdParams& p) { p.q = m.q.data() + 1; }));
  expect_invalid("value stride not 16 bytes", "value",
                 fwd_with([](AttnBwdParams& p) { p.v_strides.seq = 34; }));
  expect_invalid("null key pointer", "key", fwd_with([](AttnBwdParams& p) { p.k = nullptr; }));
  expect_invalid("null out pointer", "query", fwd_with([](AttnBwdParams& p) { p.o = nullptr; }));
  expect_invalid("bwd: null grad_out", "grad_out",
                 bwd_with([](AttnBwdParams& p) { p.dout = nullptr; }));
  expect_invalid("bwd: null dk", "dk", bwd_with([](AttnBwdParams& p) { p.dk = nullptr; }));
  expect_invalid("bwd: misaligned dq stride", "dq",
                 bwd_with([](AttnBwdParams& p) { p.dq_strides.head = 6; }));
  expect_invalid("decode: page_size not a power of 2", "page_size",
                 plan_with([](DecodeParams& p) { p.page_size = 24; }));
  expect_invalid("decode: page_size below 16", "page_size", plan_with([](DecodeParams& p) {
                   p.page_size = 8;
                   p.max_seqlen_k = 16;
                 }));
  expect_invalid("decode: num_splits too large", "num_splits",
                 plan_with([](DecodeParams& p) { p.num_splits = 300; }));
  expect_invalid("decode: seqlen_q above 16", "query",
                 plan_with([](DecodeParams& p) { p.seqlen_q = 17; }));
  expect_invalid("decode: k_new without v_new", "v_new", plan_with([&m](DecodeParams& p) {
                   p.k_new = m.dq.data();
                   p.seqlen_new = 1;
                 }));
  expect_invalid("decode: S_max != pages * page_size", "block_table",
                 plan_with([](DecodeParams& p) { p.max_seqlen_k = 48; }));
  expect_invalid("decode: head_dim", "head_dim",
                 plan_with([](DecodeParams& p) { p.head_dim = 257; }));
  expect_invalid("decode: scale", "scale", plan_with([](DecodeParams& p) { p.scale = -INFINITY; }));
  expect_invalid("decode: k_cache stride", "k_cache",
                 plan_with([](DecodeParams& p) { p.k_cache_strides.seq = 30; }));
  expect_invalid("decode: unresolved num_splits", "num_splits", [&] {
    DecodeParams p = good_decode(m, lens, table);
    p.num_splits = 0;
    decode(p, -1, 0);
  });
  if (!built_with_cuda()) {
    expect_invalid("CUDA device in a CPU-only build", "device", [&] {
      AttnBwdParams p = good_params(m);
      fwd(p, 0, 0);
    });
  }
  return fmtest::finish("test_launcher_validation");
}
