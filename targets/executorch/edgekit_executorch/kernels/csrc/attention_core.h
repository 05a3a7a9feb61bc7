// edgekit KV-cache attention: the kernel core, free of ExecuTorch so it also builds into test programs.
//
// Semantics (edgekit/kernels/ops.py is the definition): q [T, Hq, D] fp32, caches [S, Hkv, D] int8 with fp32
// scales [S, Hkv], or fp32 caches without scales (k_f32 / v_f32 set, k / v and the scales null); query row t sees
// cache positions j <= pos[t]; query head h reads kv head h / (Hq / Hkv).
//
// Flash-decoding layout: a work item is (kv head, block of query rows, split of the context). Its rows are
// every query head of that kv head's group for a few consecutive tokens, so one pass over the cache serves
// them all: each tile of K and V is dequantized once (int8 -> fp32, scales folded into scores and weights)
// into an L1-sized scratch and read by every row. Softmax is online (running max, running sum, rescaled
// accumulator). When kv heads x query blocks are too few to fill the threads (decode), the context is split
// and the partial (max, sum, acc) of each split are merged at the end.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "isa_portable.h"
#if defined(__AVX2__) && defined(__FMA__) && !defined(EDGEKIT_FORCE_PORTABLE)
#include "isa_avx2.h"
#define EDGEKIT_ISA avx2
#define EDGEKIT_ISA_NAME "avx2"
#elif defined(__ARM_NEON) && defined(__aarch64__) && !defined(EDGEKIT_FORCE_PORTABLE)
#include "isa_neon.h"
#define EDGEKIT_ISA neon
#define EDGEKIT_ISA_NAME "neon"
#else
#define EDGEKIT_ISA portable
#define EDGEKIT_ISA_NAME "portable"
#endif

namespace edgekit {

struct AttentionArgs {
  const float* q;      // [T, Hq, D] (token t's heads start at q + t * q_stride)
  const int8_t* k;     // [S, Hkv, D] (int8 caches)
  const int8_t* v;     // [S, Hkv, D]
  const float* k_scale;  // [S, Hkv]
  const float* v_scale;  // [S, Hkv]
  const int64_t* pos;  // [T]
  float* out;          // [T, Hq, D]
  int64_t T, Hq, Hkv, D, S;
  int64_t splits = 0;  // 0: choose from the thread count; > 0: force (tests cover the merge path with it)
  const float* k_f32 = nullptr;  // [S, Hkv, D] fp32 caches instead of k / v and their scales
  const float* v_f32 = nullptr;
  int64_t q_stride = 0;  // floats from one token's query heads to the next; 0: Hq * D (q is [T, Hq, D] itself)
};

inline int64_t q_token_stride(const AttentionArgs& a) { return a.q_stride > 0 ? a.q_stride : a.Hq * a.D; }

// Points `a` at its caches: int8 (k, v with scales ks, vs) or, with f32, fp32 caches (ks, vs unused and cleared).
inline void set_caches(AttentionArgs& a, const void* k, const void* v, const float* ks, const float* vs, bool f32) {
  a.k = f32 ? nullptr : static_cast<const int8_t*>(k);
  a.v = f32 ? nullptr : static_cast<const int8_t*>(v);
  a.k_scale = f32 ? nullptr : ks;
  a.v_scale = f32 ? nullptr : vs;
  a.k_f32 = f32 ? static_cast<const float*>(k) : nullptr;
  a.v_f32 = f32 ? static_cast<const float*>(v) : nullptr;
}

inline const char* isa_name() { return EDGEKIT_ISA_NAME; }

namespace detail {

// SIMD primitives need d % 8 == 0 (every real head dim); anything else takes the portable loops.
inline void cvt(const int8_t* s, float* d, int64_t n) {
  if (n % 8 == 0) EDGEKIT_ISA::cvt_i8_f32(s, d, n); else portable::cvt_i8_f32(s, d, n);
}
inline void scores(const float* q, const float* kf, int64_t n, int64_t d, float* s) {
  if (d % 8 == 0) EDGEKIT_ISA::scores(q, kf, n, d, s); else portable::scores(q, kf, n, d, s);
}
inline void axpy(const float* p, const float* vf, int64_t n, int64_t d, float alpha, float* acc) {
  if (d % 8 == 0) EDGEKIT_ISA::axpy_rows(p, vf, n, d, alpha, acc); else portable::axpy_rows(p, vf, n, d, alpha, acc);
}

struct Plan {
  int64_t group, rows_per_token, tokens_per_block, blocks, splits, tile, split_len;
};

inline Plan make_plan(const AttentionArgs& a, int64_t threads, int64_t ctx) {
  Plan p;
  p.group = a.Hq / a.Hkv;
  p.rows_per_token = p.group;
  p.tokens_per_block = std::max<int64_t>(1, std::min<int64_t>(a.T, 16 / p.group));
  p.blocks = (a.T + p.tokens_per_block - 1) / p.tokens_per_block;
  p.tile = std::max<int64_t>(16, 4096 / a.D);  // K and V tiles of tile x D floats stay in L1/L2
  const int64_t base = a.Hkv * p.blocks;
  int64_t splits = a.splits;
  if (splits <= 0) {
    const int64_t want = threads > 1 ? (2 * threads + base - 1) / base : 1;
    splits = std::min<int64_t>(want, std::max<int64_t>(1, ctx / 256));
  }
  const int64_t tiles = (ctx + p.tile - 1) / p.tile;
  p.splits = std::max<int64_t>(1, std::min<int64_t>(splits, tiles));
  p.split_len = ((tiles + p.splits - 1) / p.splits) * p.tile;
  return p;
}

struct Scratch {
  std::vector<float> kf, vf, s, kss, vss;
};

// One work item: rows [row0, row0 + nrows) of kv head h over positions [p0, p1). Row r is token
// t0 + r / group, query head h * group + r % group. Writes m, l, acc (unnormalized) per row.
inline void attend_range(const AttentionArgs& a, const Plan& pl, int64_t h, int64_t t0, int64_t ntok, int64_t p0,
                         int64_t p1, float* m, float* l, float* acc, Scratch& sc) {
  const int64_t D = a.D, G = pl.group, nrows = ntok * G;
  const float sm_scale = 1.0f / std::sqrt(static_cast<float>(D));
  sc.kf.resize(pl.tile * D);
  sc.vf.resize(pl.tile * D);
  sc.s.resize(pl.tile);
  sc.kss.resize(pl.tile);
  sc.vss.resize(pl.tile);
  for (int64_t r = 0; r < nrows; ++r) {
    m[r] = -std::numeric_limits<float>::infinity();
    l[r] = 0.f;
    std::fill(acc + r * D, acc + (r + 1) * D, 0.f);
  }
  int64_t lim_max = 0;
  for (int64_t t = t0; t < t0 + ntok; ++t) lim_max = std::max(lim_max, std::min(a.pos[t] + 1, a.S));
  p1 = std::min(p1, lim_max);
  const int64_t stride = a.Hkv * D;
  for (int64_t j0 = p0; j0 < p1; j0 += pl.tile) {
    const int64_t n = std::min(pl.tile, p1 - j0);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t off = (j0 + j) * stride + h * D;
      if (a.k_f32 != nullptr) {  // fp32 cache: the tile is gathered contiguous (the rows of one kv head are strided)
        std::copy(a.k_f32 + off, a.k_f32 + off + D, sc.kf.data() + j * D);
        std::copy(a.v_f32 + off, a.v_f32 + off + D, sc.vf.data() + j * D);
        sc.kss[j] = sm_scale;
        sc.vss[j] = 1.f;
        continue;
      }
      cvt(a.k + off, sc.kf.data() + j * D, D);
      cvt(a.v + off, sc.vf.data() + j * D, D);
      sc.kss[j] = a.k_scale[(j0 + j) * a.Hkv + h] * sm_scale;
      sc.vss[j] = a.v_scale[(j0 + j) * a.Hkv + h];
    }
    for (int64_t r = 0; r < nrows; ++r) {
      const int64_t t = t0 + r / G, qh = h * G + r % G;
      const int64_t nr = std::min(n, std::min(a.pos[t] + 1, a.S) - j0);
      if (nr <= 0) continue;
      float* s = sc.s.data();
      scores(a.q + t * q_token_stride(a) + qh * D, sc.kf.data(), nr, D, s);
      const float mt = EDGEKIT_ISA::scale_max(s, sc.kss.data(), nr);
      const float m_new = std::max(m[r], mt);
      const float alpha = std::exp(m[r] - m_new);  // exp(-inf) = 0 on the first visible tile
      const float tile_sum = EDGEKIT_ISA::exp_shift_sum(s, nr, m_new);
      for (int64_t j = 0; j < nr; ++j) s[j] *= sc.vss[j];
      axpy(s, sc.vf.data(), nr, D, alpha, acc + r * D);
      l[r] = l[r] * alpha + tile_sum;
      m[r] = m_new;
    }
  }
}

// Merges the splits of (kv head, block) hb from their partial (m, l, acc) and writes its normalized rows to out.
inline void merge_splits(const AttentionArgs& a, const Plan& pl, int64_t hb, const float* part, int64_t item_floats,
                         int64_t rows) {
  const int64_t D = a.D, h = hb % a.Hkv, b = hb / a.Hkv;
  const int64_t t0 = b * pl.tokens_per_block, ntok = std::min(pl.tokens_per_block, a.T - t0);
  for (int64_t r = 0; r < ntok * pl.group; ++r) {
    const int64_t t = t0 + r / pl.group, qh = h * pl.group + r % pl.group;
    float* o = a.out + (t * a.Hq + qh) * D;
    float mx = -std::numeric_limits<float>::infinity();
    for (int64_t sp = 0; sp < pl.splits; ++sp) mx = std::max(mx, part[(hb * pl.splits + sp) * item_floats + r]);
    float denom = 0.f;
    std::fill(o, o + D, 0.f);
    for (int64_t sp = 0; sp < pl.splits; ++sp) {
      const float* base = part + (hb * pl.splits + sp) * item_floats;
      if (base[rows + r] == 0.f) continue;  // this split saw no visible position of row r
      const float w = std::exp(base[r] - mx);
      denom += w * base[rows + r];
      const float* acc = base + 2 * rows + r * D;
      for (int64_t c = 0; c < D; ++c) o[c] += w * acc[c];
    }
    const float inv = 1.0f / denom;
    for (int64_t c = 0; c < D; ++c) o[c] *= inv;
  }
}

}  // namespace detail

// Runs the attention (int8 or fp32 caches, see AttentionArgs). `parallel(n, body)` must call body(begin, end) over a
// partition of [0, n); `threads` is how many run at once (it only sizes the context splits).
template <class Parallel>
void attention(const AttentionArgs& a, int64_t threads, Parallel&& parallel) {
  int64_t ctx = 0;
  for (int64_t t = 0; t < a.T; ++t) ctx = std::max(ctx, std::min(a.pos[t] + 1, a.S));
  const detail::Plan pl = detail::make_plan(a, threads, ctx);
  const int64_t D = a.D, rows = pl.tokens_per_block * pl.group, items = a.Hkv * pl.blocks * pl.splits;
  // partial results per item: m[rows], l[rows], acc[rows * D]
  const int64_t item_floats = rows * (D + 2);
  std::vector<float> part(static_cast<size_t>(items * item_floats));
  // splits == 1 (decode at short contexts, and prefill): every item is a whole (kv head, block) and normalizes its
  // own rows, so the merge pass (a second round on the pool) is skipped
  const bool single = pl.splits == 1;
  parallel(items, [&](int64_t begin, int64_t end) {
    detail::Scratch sc;
    for (int64_t it = begin; it < end; ++it) {
      const int64_t split = it % pl.splits, hb = it / pl.splits, h = hb % a.Hkv, b = hb / a.Hkv;
      const int64_t t0 = b * pl.tokens_per_block, ntok = std::min(pl.tokens_per_block, a.T - t0);
      float* m = part.data() + it * item_floats;
      detail::attend_range(a, pl, h, t0, ntok, split * pl.split_len, (split + 1) * pl.split_len, m, m + rows,
                           m + 2 * rows, sc);
      if (single) detail::merge_splits(a, pl, hb, part.data(), item_floats, rows);
    }
  });
  if (single) return;
  parallel(a.Hkv * pl.blocks, [&](int64_t begin, int64_t end) {
    for (int64_t hb = begin; hb < end; ++hb) detail::merge_splits(a, pl, hb, part.data(), item_floats, rows);
  });
}

// The k and v heads of a fused projection row written into fp32 caches: qkv [T, (Hq + 2 Hkv) * D] holds each token's
// q heads, then its Hkv k heads, then its Hkv v heads; row t goes to cache position pos[t] ([S, Hkv, D] caches).
inline void write_qkv_rows(const float* qkv, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, const int64_t* pos,
                           float* k_cache, float* v_cache) {
  const int64_t n = (Hq + 2 * Hkv) * D, kv = Hkv * D;
  for (int64_t t = 0; t < T; ++t) {
    const float* row = qkv + t * n;
    std::copy(row + Hq * D, row + Hq * D + kv, k_cache + pos[t] * kv);
    std::copy(row + Hq * D + kv, row + n, v_cache + pos[t] * kv);
  }
}

// Symmetric per-row int8 quantization written at pos[t]: value [T, Hkv, D] -> cache [S, Hkv, D], scale [S, Hkv].
// Same arithmetic as edgekit.kernels.ops.quantize_rows (scale = amax / 127, 1 if amax == 0, round half even).
inline void update_int8_cache(const float* value, int8_t* cache, float* scale, const int64_t* pos, int64_t T,
                              int64_t Hkv, int64_t D) {
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t h = 0; h < Hkv; ++h) {
      const float* x = value + (t * Hkv + h) * D;
      float amax = 0.f;
      for (int64_t c = 0; c < D; ++c) amax = std::max(amax, std::fabs(x[c]));
      float sc = amax / 127.0f;
      if (sc == 0.f) sc = 1.0f;
      int8_t* dst = cache + (pos[t] * Hkv + h) * D;
      for (int64_t c = 0; c < D; ++c) {
        const float qv = std::nearbyint(x[c] / sc);  // default rounding mode: half to even, like torch.round
        dst[c] = static_cast<int8_t>(std::min(127.0f, std::max(-127.0f, qv)));
      }
      scale[pos[t] * Hkv + h] = sc;
    }
  }
}

// Serial runner for programs without a thread pool.
struct SerialParallel {
  template <class F>
  void operator()(int64_t n, F&& f) const {
    if (n > 0) f(0, n);
  }
};

}  // namespace edgekit
