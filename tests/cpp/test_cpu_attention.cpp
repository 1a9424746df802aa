// CPU backend vs float64 references: forward (O, lse) and backward (dQ, dK, dV) for both loop
// orders and all dtypes, on odd shapes, S_q != S_k, GQA/MQA, causal top-left / bottom-right
// (including rows that see no key and S_k = 0), strided layouts; decode over contiguous and
// paged caches with in-place append, split counts, empty and invalid sequences.
// Calls go through the launcher (src/launch.h) with device = -1.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <random>
#include <vector>

#include "cpu/kernels.h"
#include "cpu/thread_pool.h"
#include "launch.h"
#include "test_util.h"

using namespace fmtest;
using flashmin::Algorithm;
using flashmin::AttnBwdParams;
using flashmin::DecodeParams;

namespace {

struct Case {
  int64_t B, Hq, Hk, Sq, Sk, D;
  bool causal;
  int64_t offset;  // causal_offset
  bool strided;
};

// Tolerances on max |x - ref| / max |ref|: fp32 accumulation + the output dtype's rounding.
double fwd_tol(DType t) {
  return t == DType::kFloat32 ? 2e-5 : t == DType::kFloat16 ? 2e-3 : 1.6e-2;
}
double bwd_tol(DType t) { return t == DType::kFloat32 ? 1e-4 : t == DType::kFloat16 ? 4e-3 : 3e-2; }

struct RefFwd {
  Ref O, P;  // P: (B, Hq, Sq, Sk) probabilities
  std::vector<double> lse;
  RefFwd(const Case& c) : O(c.B, c.Hq, c.Sq, c.D), P(c.B, c.Hq, c.Sq, std::max<int64_t>(c.Sk, 1)) {
    lse.assign(static_cast<size_t>(std::max<int64_t>(c.B * c.Hq * c.Sq, 1)), 0.0);
  }
};

bool visible(const Case& c, int64_t i, int64_t j) { return !c.causal || j <= i + c.offset; }

RefFwd reference_fwd(const Case& c, const Tensor& q, const Tensor& k, const Tensor& v,
                     float scale) {
  RefFwd r(c);
  const int64_t g = c.Hq / c.Hk;
  std::vector<double> s(static_cast<size_t>(std::max<int64_t>(c.Sk, 1)));
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Sq; ++i) {
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.Sk; ++j) {
          s[j] = -INFINITY;
          if (!visible(c, i, j)) continue;
          double acc = 0.0;
          for (int64_t d = 0; d < c.D; ++d)
            acc += double(q.get(b, h, i, d)) * k.get(b, h / g, j, d);
          s[j] = acc * scale;
          mx = std::max(mx, s[j]);
        }
        double sum = 0.0;
        for (int64_t j = 0; j < c.Sk; ++j) sum += s[j] == -INFINITY ? 0.0 : std::exp(s[j] - mx);
        r.lse[(b * c.Hq + h) * c.Sq + i] = sum > 0 ? mx + std::log(sum) : -INFINITY;
        for (int64_t j = 0; j < c.Sk; ++j)
          r.P(b, h, i, j) = sum > 0 && s[j] != -INFINITY ? std::exp(s[j] - mx) / sum : 0.0;
        for (int64_t d = 0; d < c.D; ++d) {
          double acc = 0.0;
          for (int64_t j = 0; j < c.Sk; ++j) acc += r.P(b, h, i, j) * v.get(b, h / g, j, d);
          r.O(b, h, i, d) = acc;
        }
      }
  return r;
}

// Gradients given dO and the O the kernel produced (D_i = rowsum(dO * O) uses that O).
void reference_bwd(const Case& c, const Tensor& q, const Tensor& k, const Tensor& v,
                   const Tensor& o, const Tensor& dout, const RefFwd& f, float scale, Ref& dq,
                   Ref& dk, Ref& dv) {
  const int64_t g = c.Hq / c.Hk;
  std::fill(dq.v.begin(), dq.v.end(), 0.0);
  std::fill(dk.v.begin(), dk.v.end(), 0.0);
  std::fill(dv.v.begin(), dv.v.end(), 0.0);
  for (int64_t b = 0; b < c.B; ++b)
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Sq; ++i) {
        double Di = 0.0;
        for (int64_t d = 0; d < c.D; ++d) Di += double(dout.get(b, h, i, d)) * o.get(b, h, i, d);
        for (int64_t j = 0; j < c.Sk; ++j) {
          const double P = f.P(b, h, i, j);
          if (P == 0.0) continue;
          double dP = 0.0;
          for (int64_t d = 0; d < c.D; ++d)
            dP += double(dout.get(b, h, i, d)) * v.get(b, h / g, j, d);
          const double dS = P * (dP - Di);
          for (int64_t d = 0; d < c.D; ++d) {
            dv(b, h / g, j, d) += P * dout.get(b, h, i, d);
            dq(b, h, i, d) += scale * dS * k.get(b, h / g, j, d);
            dk(b, h / g, j, d) += scale * dS * q.get(b, h, i, d);
          }
        }
      }
}

float nan_value() { return std::numeric_limits<float>::quiet_NaN(); }

void run_case(const Case& c, DType dt, std::mt19937& rng) {
  const float scale = 1.0f / std::sqrt(float(c.D));
  Tensor q(dt, c.B, c.Hq, c.Sq, c.D, c.strided), k(dt, c.B, c.Hk, c.Sk, c.D, c.strided),
      v(dt, c.B, c.Hk, c.Sk, c.D, c.strided), dout(dt, c.B, c.Hq, c.Sq, c.D, c.strided);
  q.fill_random(rng);
  k.fill_random(rng);
  v.fill_random(rng);
  dout.fill_random(rng);
  const RefFwd ref = reference_fwd(c, q, k, v, scale);

  Tensor o_algo[2];
  for (int a = 0; a < 2; ++a) {
    const Algorithm algo = a == 0 ? Algorithm::kFA2 : Algorithm::kFA1;
    const char* an = a == 0 ? "fa2" : "fa1";
    Tensor o(dt, c.B, c.Hq, c.Sq, c.D, c.strided);
    o.fill(nan_value());  // poison: every element must be written
    std::vector<float> lse(static_cast<size_t>(std::max<int64_t>(c.B * c.Hq * c.Sq, 1)),
                           nan_value());
    AttnBwdParams p;
    p.q = q.data();
    p.k = k.data();
    p.v = v.data();
    p.o = o.data();
    p.lse = lse.data();
    p.q_strides = q.st;
    p.k_strides = k.st;
    p.v_strides = v.st;
    p.o_strides = o.st;
    p.batch = c.B;
    p.heads_q = c.Hq;
    p.heads_kv = c.Hk;
    p.seqlen_q = c.Sq;
    p.seqlen_k = c.Sk;
    p.head_dim = c.D;
    p.scale = scale;
    p.is_causal = c.causal;
    p.causal_offset = c.offset;
    p.dtype = dt;
    p.algorithm = algo;
    flashmin::fwd(p, -1, 0);

    char name[256];
    std::snprintf(name, sizeof name,
                  "B=%lld Hq=%lld Hk=%lld Sq=%lld Sk=%lld D=%lld causal=%d off=%lld %s %s %s",
                  (long long)c.B, (long long)c.Hq, (long long)c.Hk, (long long)c.Sq,
                  (long long)c.Sk, (long long)c.D, c.causal ? 1 : 0, (long long)c.offset,
                  c.strided ? "strided" : "contig", dtype_str(dt), an);
    const Err eo = compare(o, ref.O);
    double lse_err = 0.0;
    bool lse_ok = true;
    for (int64_t x = 0; x < c.B * c.Hq * c.Sq; ++x) {
      if (std::isinf(ref.lse[x])) {
        lse_ok = lse_ok && lse[x] == -INFINITY;
      } else {
        lse_ok = lse_ok && std::isfinite(lse[x]);
        lse_err = std::max(lse_err, std::fabs(lse[x] - ref.lse[x]));
      }
    }
    // Rows that see no key: O exactly 0.
    bool empty_ok = true;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.Hq; ++h)
        for (int64_t i = 0; i < c.Sq; ++i)
          if (std::isinf(ref.lse[(b * c.Hq + h) * c.Sq + i]))
            for (int64_t d = 0; d < c.D; ++d) empty_ok = empty_ok && o.get(b, h, i, d) == 0.0f;
    const bool fwd_ok = !eo.nan && eo.rel() <= fwd_tol(dt) && lse_ok && lse_err <= 1e-4 && empty_ok;
    FM_EXPECT(fwd_ok, "fwd %s: O err %.3g (rel %.3g, nan %d), lse err %.3g ok %d, empty rows ok %d",
              name, eo.max_abs, eo.rel(), eo.nan ? 1 : 0, lse_err, lse_ok ? 1 : 0,
              empty_ok ? 1 : 0);

    // Backward from the kernel's own O and lse.
    Tensor dq(dt, c.B, c.Hq, c.Sq, c.D, c.strided), dk(dt, c.B, c.Hk, c.Sk, c.D, c.strided),
        dv(dt, c.B, c.Hk, c.Sk, c.D, c.strided);
    dq.fill(nan_value());
    dk.fill(nan_value());
    dv.fill(nan_value());
    p.dout = dout.data();
    p.dout_strides = dout.st;
    p.dq = dq.data();
    p.dk = dk.data();
    p.dv = dv.data();
    p.dq_strides = dq.st;
    p.dk_strides = dk.st;
    p.dv_strides = dv.st;
    p.deterministic = true;
    flashmin::bwd(p, -1, 0);
    Ref rdq(c.B, c.Hq, c.Sq, c.D), rdk(c.B, c.Hk, c.Sk, c.D), rdv(c.B, c.Hk, c.Sk, c.D);
    reference_bwd(c, q, k, v, o, dout, ref, scale, rdq, rdk, rdv);
    Err eq = compare(dq, rdq), ek = compare(dk, rdk), ev = compare(dv, rdv);
    // dS = P (dP - D_i) cancels; its rounding error scales with |dO| |V| ~ 1, not with dS.
    eq.floor = ek.floor = ev.floor = 1.0;
    const double tol = bwd_tol(dt);
    FM_EXPECT(
        !eq.nan && !ek.nan && !ev.nan && eq.rel() <= tol && ek.rel() <= tol && ev.rel() <= tol,
        "bwd %s: dQ %.3g dK %.3g dV %.3g (rel; nan %d%d%d)", name, eq.rel(), ek.rel(), ev.rel(),
        eq.nan, ek.nan, ev.nan);

    // Deterministic: a second run is bitwise identical.
    Tensor dq2 = dq, dk2 = dk, dv2 = dv;
    p.dq = dq2.data();
    p.dk = dk2.data();
    p.dv = dv2.data();
    flashmin::bwd(p, -1, 0);
    FM_EXPECT(dq.mem == dq2.mem && dk.mem == dk2.mem && dv.mem == dv2.mem,
              "bwd %s: not bitwise deterministic", name);
    o_algo[a] = o;
  }
  // FA1 and FA2 agree up to rounding.
  Ref o2(c.B, c.Hq, c.Sq, c.D);
  o_algo[0].for_each([&](int64_t a, int64_t b, int64_t i, int64_t d) {
    o2(a, b, i, d) = o_algo[0].get(a, b, i, d);
  });
  const Err e12 = compare(o_algo[1], o2);
  FM_EXPECT(!e12.nan && e12.rel() <= fwd_tol(dt), "FA1 vs FA2 differ by %.3g (%s)", e12.rel(),
            dtype_str(dt));
}

// ---- decode ---------------------------------------------------------------------------------
struct DecodeCase {
  int64_t B, Hq, Hk, Sq, D, S_new, page_size;  // page_size 0: contiguous cache
  int64_t S_max;
  std::vector<int32_t> seqlens;  // empty: nullptr
};

struct DecodeRun {
  Tensor o;
  std::vector<float> lse;
};

void run_decode_case(const DecodeCase& c, DType dt, std::mt19937& rng, bool corrupt) {
  const bool paged = c.page_size > 0;
  const int64_t pages_per_seq = paged ? c.S_max / c.page_size : 0;
  const int64_t num_pages = paged ? c.B * pages_per_seq + 3 : 0;
  const float scale = 0.7f / std::sqrt(float(c.D));
  Tensor q(dt, c.B, c.Hq, c.Sq, c.D);
  Tensor kc(dt, paged ? num_pages : c.B, c.Hk, paged ? c.page_size : c.S_max, c.D,
            /*strided=*/true);
  Tensor vc(dt, paged ? num_pages : c.B, c.Hk, paged ? c.page_size : c.S_max, c.D);
  Tensor kn(dt, c.B, c.Hk, std::max<int64_t>(c.S_new, 1), c.D),
      vn(dt, c.B, c.Hk, std::max<int64_t>(c.S_new, 1), c.D);
  q.fill_random(rng);
  kc.fill_random(rng);
  vc.fill_random(rng);
  kn.fill_random(rng);
  vn.fill_random(rng);
  std::vector<int32_t> table;
  if (paged) {  // a random permutation of pages
    table.resize(static_cast<size_t>(c.B * pages_per_seq));
    std::vector<int32_t> perm(static_cast<size_t>(num_pages));
    for (int64_t i = 0; i < num_pages; ++i) perm[i] = int32_t(i);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (size_t i = 0; i < table.size(); ++i) table[i] = perm[i];
  }
  std::vector<int32_t> seqlens = c.seqlens;
  // Corruption: sequence 1's length beyond the cache; with paging also sequence 2's first page.
  std::vector<bool> bad(static_cast<size_t>(c.B), false);
  if (corrupt) {
    seqlens[1] = int32_t(c.S_max + 3);
    bad[1] = true;
    if (paged && c.B > 2) {
      table[2 * pages_per_seq] = int32_t(num_pages + 5);
      bad[2] = true;
    }
  }
  const Tensor kc0 = kc, vc0 = vc;  // caches before the append

  auto cache_pos = [&](int64_t b, int64_t t, int64_t* page, int64_t* slot) {
    if (paged) {
      *page = table[b * pages_per_seq + t / c.page_size];
      *slot = t % c.page_size;
    } else {
      *page = b;
      *slot = t;
    }
  };

  // float64 reference over the logical sequence (old cache + appended rows)
  const int64_t g = c.Hq / c.Hk;
  Ref ro(c.B, c.Hq, c.Sq, c.D);
  std::vector<double> rlse(static_cast<size_t>(c.B * c.Hq * c.Sq), 0.0);
  for (int64_t b = 0; b < c.B; ++b) {
    if (bad[b]) continue;
    const int64_t len0 = seqlens.empty() ? c.S_max : seqlens[b];
    const int64_t L = len0 + c.S_new;
    auto key = [&](const Tensor& cache, const Tensor& nw, int64_t h, int64_t t, int64_t d) {
      if (t >= len0) return double(nw.get(b, h, t - len0, d));
      int64_t page, slot;
      cache_pos(b, t, &page, &slot);
      return double(cache.get(page, h, slot, d));
    };
    for (int64_t h = 0; h < c.Hq; ++h)
      for (int64_t i = 0; i < c.Sq; ++i) {
        std::vector<double> s(static_cast<size_t>(std::max<int64_t>(L, 1)), -INFINITY);
        double mx = -INFINITY;
        for (int64_t t = 0; t < L && t <= L - c.Sq + i; ++t) {
          double acc = 0;
          for (int64_t d = 0; d < c.D; ++d)
            acc += double(q.get(b, h, i, d)) * key(kc0, kn, h / g, t, d);
          s[t] = acc * scale;
          mx = std::max(mx, s[t]);
        }
        double sum = 0;
        for (int64_t t = 0; t < L; ++t) sum += s[t] == -INFINITY ? 0.0 : std::exp(s[t] - mx);
        rlse[(b * c.Hq + h) * c.Sq + i] = sum > 0 ? mx + std::log(sum) : -INFINITY;
        for (int64_t d = 0; d < c.D; ++d) {
          double acc = 0;
          for (int64_t t = 0; t < L; ++t)
            if (s[t] != -INFINITY) acc += std::exp(s[t] - mx) / sum * key(vc0, vn, h / g, t, d);
          ro(b, h, i, d) = acc;
        }
      }
  }

  std::vector<DecodeRun> runs;
  const int64_t splits[] = {1, 2, 3, 8, 200};
  for (int64_t ns : splits) {
    DecodeRun r{Tensor(dt, c.B, c.Hq, c.Sq, c.D, true), {}};
    r.o.fill(nan_value());
    r.lse.assign(static_cast<size_t>(c.B * c.Hq * c.Sq), 12345.0f);
    DecodeParams p;
    p.q = q.data();
    p.q_strides = q.st;
    p.k_cache = kc.data();
    p.v_cache = vc.data();
    p.k_cache_strides = kc.st;
    p.v_cache_strides = vc.st;
    p.cache_seqlens = seqlens.empty() ? nullptr : seqlens.data();
    if (paged) {
      p.block_table = table.data();
      p.block_table_stride = pages_per_seq;
      p.max_pages_per_seq = pages_per_seq;
      p.num_pages = num_pages;
      p.page_size = c.page_size;
    }
    if (c.S_new > 0) {
      p.k_new = kn.data();
      p.v_new = vn.data();
      p.k_new_strides = kn.st;
      p.v_new_strides = vn.st;
      p.seqlen_new = c.S_new;
    }
    p.o = r.o.data();
    p.o_strides = r.o.st;
    p.lse = r.lse.data();
    p.batch = c.B;
    p.heads_q = c.Hq;
    p.heads_kv = c.Hk;
    p.seqlen_q = c.Sq;
    p.max_seqlen_k = c.S_max;
    p.head_dim = c.D;
    p.scale = scale;
    p.dtype = dt;
    p.num_splits = ns;
    flashmin::decode_plan(p, -1);
    flashmin::decode(p, -1, 0);  // appending twice writes the same rows again: idempotent
    runs.push_back(std::move(r));
  }

  char name[200];
  std::snprintf(name, sizeof name, "decode B=%lld Hq=%lld Hk=%lld Sq=%lld D=%lld new=%lld %s%s %s",
                (long long)c.B, (long long)c.Hq, (long long)c.Hk, (long long)c.Sq, (long long)c.D,
                (long long)c.S_new, paged ? "paged" : "contig", corrupt ? " corrupt" : "",
                dtype_str(dt));
  for (size_t s = 0; s < runs.size(); ++s) {
    const DecodeRun& r = runs[s];
    double err = 0, ref_max = 0, lse_err = 0;
    bool ok = true;
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.Hq; ++h)
        for (int64_t i = 0; i < c.Sq; ++i) {
          const float l = r.lse[(b * c.Hq + h) * c.Sq + i];
          const double rl = rlse[(b * c.Hq + h) * c.Sq + i];
          for (int64_t d = 0; d < c.D; ++d) {
            const float x = r.o.get(b, h, i, d);
            if (bad[b]) {
              ok = ok && std::isnan(x);
            } else {
              ok = ok && !std::isnan(x);
              err = std::max(err, std::fabs(x - ro(b, h, i, d)));
              ref_max = std::max(ref_max, std::fabs(ro(b, h, i, d)));
              if (std::isinf(rl)) ok = ok && x == 0.0f;
            }
          }
          if (bad[b])
            ok = ok && std::isnan(l);
          else if (std::isinf(rl))
            ok = ok && l == -INFINITY;
          else
            lse_err = std::max(lse_err, std::fabs(l - rl));
        }
    const double rel = err / std::max(ref_max, 1e-3);
    FM_EXPECT(ok && rel <= fwd_tol(dt) && lse_err <= 1e-4,
              "%s splits=%lld: rel err %.3g, lse err %.3g, nan/empty pattern ok %d", name,
              (long long)splits[s], rel, lse_err, ok ? 1 : 0);
  }
  // The cache afterwards: appended rows in place for valid sequences, nothing else touched.
  bool cache_ok = true;
  Tensor kx = kc0, vx = vc0;
  for (int64_t b = 0; b < c.B; ++b) {
    if (bad[b] || c.S_new == 0) continue;
    const int64_t len0 = seqlens.empty() ? c.S_max : seqlens[b];
    for (int64_t h = 0; h < c.Hk; ++h)
      for (int64_t t = 0; t < c.S_new; ++t) {
        int64_t page, slot;
        cache_pos(b, len0 + t, &page, &slot);
        for (int64_t d = 0; d < c.D; ++d) {
          kx.set(page, h, slot, d, kn.get(b, h, t, d));
          vx.set(page, h, slot, d, vn.get(b, h, t, d));
        }
      }
  }
  cache_ok = kx.mem == kc.mem && vx.mem == vc.mem;
  FM_EXPECT(cache_ok, "%s: cache contents after append", name);
}

}  // namespace

int main() {
  std::printf("flashmin CPU kernels: isa=%s threads=%d\n", flashmin::cpu::kernels().name,
              flashmin::cpu::num_threads());
  std::mt19937 rng(1234);
  const Case cases[] = {
      {1, 1, 1, 1, 1, 8, false, 0, false},     {2, 2, 2, 17, 17, 32, true, 0, false},
      {1, 4, 2, 97, 97, 64, false, 0, false},   // GQA
      {1, 2, 1, 17, 97, 40, true, 80, true},    // bottom-right, S_q < S_k, MQA
      {2, 3, 3, 97, 17, 72, true, -80, false},  // bottom-right, S_q > S_k: empty rows
      {1, 2, 2, 65, 130, 128, false, 0, true},  // strided
      {1, 1, 1, 17, 0, 16, false, 0, false},    // S_k = 0: all rows empty
      {1, 8, 1, 33, 70, 256, true, 0, true},    // MQA, D = 256, top-left, S_q < S_k
      {1, 2, 2, 129, 129, 96, true, 0, true},   // several blocks, diagonal masking
      {1, 2, 1, 0, 17, 24, false, 0, false},    // S_q = 0: dK = dV = 0
      {1, 2, 2, 70, 200, 8, true, 150, false},  // D = 8, partial causal blocks
  };
  const DType dtypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};
  for (const Case& c : cases)
    for (DType dt : dtypes) run_case(c, dt, rng);

  const int64_t S_max = 96;
  const DecodeCase dcases[] = {
      {4, 4, 2, 1, 64, 0, 0, S_max, {0, 5, 40, 96}},    // contiguous, empty sequence
      {4, 4, 2, 3, 64, 2, 0, S_max, {0, 7, 40, 94}},    // append, S_q = 3
      {4, 8, 1, 4, 32, 3, 16, S_max, {1, 17, 60, 93}},  // paged, MQA, L < S_q for b = 0
      {3, 2, 2, 1, 128, 1, 32, S_max, {0, 31, 95}},     // paged, page boundary appends
      {2, 4, 4, 2, 16, 0, 0, S_max, {}},                // seqlens = nullptr: S_max
  };
  for (const DecodeCase& c : dcases)
    for (DType dt : dtypes) {
      run_decode_case(c, dt, rng, false);
      if (!c.seqlens.empty()) run_decode_case(c, dt, rng, true);
    }
  return finish("test_cpu_attention");
}
