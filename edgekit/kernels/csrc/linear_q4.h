// edgekit 8da4w linear: int8 dynamic per-token activations x int4 group-wise weights, the kernel core (no ExecuTorch).
//
// Semantics (edgekit/kernels/q4.py is the definition, torchao's 8da4w the origin):
//   per token m: scale sx = max((max(x,0) - min(x,0)) / 255, FLT_MIN), zp = clamp(-128 - round(min(x,0) / sx), -128, 127),
//                q = clamp(round(x * (1 / sx)) + zp, -128, 127)                       (round half to even)
//   y[m, n] = sx * sum_k (q[m, k] - zp) * code[n, k] * s[n, k / G]  (+ bias[n])       code in [-8, 7]
//
// Packed layout ("tiled16"): rows in tiles of 16 (N padded with zero rows to a multiple of 16). For tile t, group b
// and vector v (0 <= v < G / 8) one 64-byte vector holds 16 lanes of 4 bytes, lane j = row 16t + j; byte c of lane j
// has code(row, bG + 8v + c) + 8 in its low nibble and code(row, bG + 8v + 4 + c) + 8 in its high nibble.
// So a decode step streams each tile front to back, and one broadcast 4-byte quad of activations meets 16 rows.
//   packed  uint8  [N_pad / 16][K / G][G / 8][64]
//   scales  bf16   [N_pad / 16][K / G][16]       (raw uint16 bits, or fp16; padding rows 0)
//   mins    (opt.) [N_pad / 16][K / G][16]       the scales' dtype; padding rows 0
//   rowsum  fp32   [N_pad]                       sum_k code * s (the dequantized row sum: the zero-point term)
// With nib = code + 8: sum_k (q - zp) code s = sum_b s_b (sum_k nib q - 8 sum_k q) - zp * rowsum, all integer dots
// exact in int32 (|nib q| <= 15 * 128, G <= 256).
//
// Minimums (mins != nullptr, GGUF's Q4_1 grid): the nibble is the code itself (0..15) and w = s_b nib + m_b, with m_b in
// the scales' layout and dtype; rowsum is sum_k w. Then sum_k (q - zp) w = sum_b (s_b sum_k nib q + m_b sum_k q)
// - zp * rowsum, the min term m_b * qsum_b costing one multiply-add per group from the group sums of q.
// Scales and minimums are bf16 or (fp16 = true) IEEE half bits: fp16 keeps a GGUF file's d and m as stored.
//
// Per-group activations (act_per_group, MatMulNBits' accuracy level 4, what the ONNX Runtime op runs): each group of
// G inputs of a token is quantized on its own, symmetric: a_b = max|x| / 127, q = clamp(round(x * (1 / a_b)), -128,
// 127) (round half to even; q = 0 where a_b = 0); y[m, n] = sum_b a_b s_b sum_{k in b} q[m, k] code[n, k] (+ bias),
// with minimums sum_b a_b (s_b sum_{k in b} q nib + m_b qsum_b): m_b times the group's sum of dequantized x.
//
// int8 weights (int8 = true, GGUF's Q8_0): the same per-group activations times int8 codes with one scale per group,
// in linear_q8_tiles.h's layout (a tied table's head reads the embedding's own constant).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX512VNNI__) && defined(__AVX512BW__) && !defined(EDGEKIT_FORCE_PORTABLE)
#include <immintrin.h>
#define EDGEKIT_Q4_ISA "avx512vnni"
#define EDGEKIT_Q4_AVX512 1
#elif defined(__AVX2__) && !defined(EDGEKIT_FORCE_PORTABLE)
#include <immintrin.h>
#define EDGEKIT_Q4_ISA "avx2"
#define EDGEKIT_Q4_AVX2 1
#elif defined(__aarch64__) && defined(__ARM_FEATURE_DOTPROD) && !defined(EDGEKIT_FORCE_PORTABLE)
#include <arm_neon.h>
#define EDGEKIT_Q4_ISA "neon-dotprod"
#define EDGEKIT_Q4_NEON 1
#else
#define EDGEKIT_Q4_ISA "portable"
#endif

namespace edgekit {
namespace q4 {

constexpr int64_t kTile = 16;
constexpr int64_t kTokens = 8;  // tokens per weight pass in prefill (each unpacked vector meets 8 tokens)
// Weight bytes requested ahead of the one being read. A decode step streams the weights once; the hardware prefetcher
// alone kept a 2-core Zen 3 at ~11 of its ~16.6 GB/s (a 17 MB matrix, 2 threads), 4 KB ahead at 15-16 (the same run,
// alternating builds). Prefetches never fault, so running past the end of the weights is harmless.
constexpr int64_t kPrefetch = 4096;

inline void prefetch_ahead(const uint8_t* p) {
#if defined(__GNUC__)
  __builtin_prefetch(p + kPrefetch, 0, 3);
#else
  (void)p;
#endif
}

struct LinearArgs {
  const float* x;         // [M, K] ([M, 2K] with swiglu)
  const uint8_t* packed;  // see the layout above
  const uint16_t* scales;  // bf16 bits, or fp16 bits when fp16
  const float* rowsum;    // [N_pad]; may be nullptr with act_per_group (its zero point is 0)
  const float* bias;      // [N] or nullptr
  float* y;               // [M, N]
  int64_t M, K, N, G;
  bool act_per_group = false;  // activations per group of G, symmetric (see above), instead of per token asymmetric
  const uint16_t* mins = nullptr;  // per-group minimums in the scales' layout and dtype: codes 0..15, w = s code + m
  bool fp16 = false;               // scales (and mins) are fp16, else bf16
  // int8 codes (GGUF Q8_0, linear_q8_tiles.h's layout) instead of int4: needs act_per_group, no mins; rowsum unused
  bool int8 = false;
  // fused prologue, applied to each token's row before it is quantized (in this order):
  bool swiglu = false;            // row = silu(x[:K]) * x[K:2K]
  const float* norm_w = nullptr;  // RMSNorm: row = norm_w * (row * rsqrt(mean(row^2) + eps))
  float norm_eps = 0.f;
  // fused epilogue:
  const float* residual = nullptr;  // [M, N]: y += residual
  // attention input projection: y = [q | k | v] heads of head_dim; per-head RMSNorm of q and k (q_norm_w / k_norm_w,
  // [head_dim], eps norm_eps) then rotary on q and k with cos/sin rows [M, head_dim]: y*cos + rotate_half(y)*sin
  const float* cos = nullptr;
  const float* sin = nullptr;
  const float* q_norm_w = nullptr;
  const float* k_norm_w = nullptr;
  int64_t q_heads = 0, kv_heads = 0, head_dim = 0;
};

inline const char* isa_name() { return EDGEKIT_Q4_ISA; }
inline int64_t padded_rows(int64_t n) { return (n + kTile - 1) / kTile * kTile; }

typedef int32_t __attribute__((may_alias, aligned(1))) quad_t;  // reading int8 data as int32 is then defined

// 4 activation bytes as one int32; read through a may_alias type so a SIMD set1 of it folds into an embedded
// broadcast ({1to16}) of the dot-product instruction instead of a separate broadcast uop
inline int32_t load_quad(const int8_t* p) { return *reinterpret_cast<const quad_t*>(p); }

inline float bf16_to_f32(uint16_t v) {
  const uint32_t u = static_cast<uint32_t>(v) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// IEEE half -> float, exact for every value (subnormals, infinities and NaNs included); no F16C needed
inline float fp16_to_f32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16, exp = (h >> 10) & 0x1Fu, mant = h & 0x3FFu;
  if (exp == 0) {  // zero or subnormal: mant * 2^-24
    const float f = static_cast<float>(mant) * 5.9604644775390625e-08f;
    return sign ? -f : f;
  }
  const uint32_t u = sign | (exp == 0x1Fu ? 0x7F800000u | (mant << 13) : ((exp + 112u) << 23) | (mant << 13));
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

inline float scale_to_f32(uint16_t v, bool fp16) { return fp16 ? fp16_to_f32(v) : bf16_to_f32(v); }

// One token's activations, quantized as torchao's int8_asym_per_token, plus the per-group sums of q.
struct QuantRow {
  float sx;
  int32_t zp;
};

inline QuantRow quantize_row(const float* x, int64_t K, int64_t G, int8_t* q, int32_t* qsum) {
  float lo = 0.f, hi = 0.f;
  int64_t k0 = 0;
#if defined(EDGEKIT_Q4_AVX512)
  __m512 vlo = _mm512_setzero_ps(), vhi = _mm512_setzero_ps();
  for (; k0 + 16 <= K; k0 += 16) {
    const __m512 v = _mm512_loadu_ps(x + k0);
    vlo = _mm512_min_ps(vlo, v);
    vhi = _mm512_max_ps(vhi, v);
  }
  lo = _mm512_reduce_min_ps(vlo);
  hi = _mm512_reduce_max_ps(vhi);
#endif
  for (int64_t k = k0; k < K; ++k) {
    lo = std::min(lo, x[k]);
    hi = std::max(hi, x[k]);
  }
  float sx = (hi - lo) / 255.f;
  sx = std::max(sx, 1.17549435e-38f);  // torch.finfo(float32).smallest_normal
  const float zpf = -128.f - std::nearbyint(lo / sx);
  const int32_t zp = static_cast<int32_t>(std::min(127.f, std::max(-128.f, zpf)));
  const float inv = 1.0f / sx;
  for (int64_t b = 0; b < K / G; ++b) {
    int32_t s = 0;
    int64_t k = b * G;
#if defined(EDGEKIT_Q4_AVX512)
    __m512i vs = _mm512_setzero_si512();
    for (; k + 16 <= (b + 1) * G; k += 16) {  // cvtps rounds half to even (MXCSR default), as nearbyint does
      __m512i v = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), _mm512_set1_ps(inv)));
      v = _mm512_min_epi32(_mm512_max_epi32(_mm512_add_epi32(v, _mm512_set1_epi32(zp)), _mm512_set1_epi32(-128)),
                           _mm512_set1_epi32(127));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k), _mm512_cvtepi32_epi8(v));
      vs = _mm512_add_epi32(vs, v);
    }
    s = _mm512_reduce_add_epi32(vs);
#endif
    for (; k < (b + 1) * G; ++k) {
      const float r = std::nearbyint(x[k] * inv) + static_cast<float>(zp);
      const int32_t v = static_cast<int32_t>(std::min(127.f, std::max(-128.f, r)));
      q[k] = static_cast<int8_t>(v);
      s += v;
    }
    qsum[b] = s;
  }
  return {sx, zp};
}

// One token's activations quantized per group (act_per_group): q, the per-group sums of q, the per-group scales.
inline void quantize_row_groups(const float* x, int64_t K, int64_t G, int8_t* q, int32_t* qsum, float* gscale) {
  for (int64_t b = 0; b < K / G; ++b) {
    const float* xb = x + b * G;
    float amax = 0.f;
    for (int64_t k = 0; k < G; ++k) amax = std::max(amax, std::fabs(xb[k]));
    const float scale = amax / 127.f;
    const float inv = scale != 0.f ? 1.0f / scale : 0.f;
    int32_t s = 0;
    for (int64_t k = 0; k < G; ++k) {
      const float r = std::nearbyint(xb[k] * inv);
      const int32_t v = static_cast<int32_t>(std::min(127.f, std::max(-128.f, r)));
      q[b * G + k] = static_cast<int8_t>(v);
      s += v;
    }
    qsum[b] = s;
    gscale[b] = scale;
  }
}

}  // namespace q4
}  // namespace edgekit

#include "linear_q4_tiles.h"  // the tile loops: scalar definition and the AVX-512 / AVX2 / NEON paths
#include "linear_q8_tiles.h"  // the int8 (Q8_0) tile loops

namespace edgekit {
namespace q4 {

// Tiles [t0, t1) for every token: y = sx (acc - zp rowsum) + bias.
template <bool kPortable>
void run_tiles(const LinearArgs& a, const int8_t* q, const int32_t* qsum, const float* gscale, const float* qmin,
               const QuantRow* rows, int64_t t0, int64_t t1) {
  const int64_t KB = a.K / a.G, tile_bytes = a.int8 ? kTile * a.K : kTile * a.K / 2;
  for (int64_t t = t0; t < t1; ++t) {
    const uint8_t* w = a.packed + t * tile_bytes;
    const uint16_t* s = a.scales + t * KB * kTile;
    const uint16_t* mn = a.mins == nullptr ? nullptr : a.mins + t * KB * kTile;
    for (int64_t m0 = 0; m0 < a.M; m0 += kTokens) {
      const int64_t mt = std::min(kTokens, a.M - m0);
      const int8_t* qp[kTokens];
      const int32_t* sp[kTokens];
      const float* gp[kTokens];
      const float* fp[kTokens];
      for (int64_t m = 0; m < kTokens; ++m) {
        const int64_t mm = m0 + std::min(m, mt - 1);
        qp[m] = q + mm * a.K;
        sp[m] = qsum + mm * KB;
        gp[m] = gscale == nullptr ? nullptr : gscale + mm * KB;
        fp[m] = qmin == nullptr ? nullptr : qmin + mm * KB;
      }
      const float* const* gs = gscale == nullptr ? nullptr : gp;
      const float* const* qf = qmin == nullptr ? nullptr : fp;
      float acc[kTokens][kTile] = {};
      if (a.int8) {
        const int8_t* w8 = reinterpret_cast<const int8_t*>(w);
        if (kPortable) tile8_portable(w8, s, a.fp16, qp, gs, mt, a.K, a.G, acc);
        else tile8_simd(w8, s, a.fp16, qp, gs, mt, a.K, a.G, acc);
      } else if (kPortable) {
        tile_portable(w, s, mn, a.fp16, qp, sp, gs, qf, mt, a.K, a.G, acc);
      } else {
        tile_simd(w, s, mn, a.fp16, qp, sp, gs, qf, mt, a.K, a.G, acc);
      }
      for (int64_t m = 0; m < mt; ++m) {
        const QuantRow r = rows[m0 + m];
        float* y = a.y + (m0 + m) * a.N;
        for (int64_t j = 0; j < kTile && t * kTile + j < a.N; ++j) {
          const int64_t n = t * kTile + j;
          // no rowsum: per-group (symmetric) activations, whose zero point is 0
          float v = r.sx * (a.rowsum != nullptr ? acc[m][j] - static_cast<float>(r.zp) * a.rowsum[n] : acc[m][j]);
          if (a.bias) v += a.bias[n];
          if (a.residual) v += a.residual[(m0 + m) * a.N + n];
          y[n] = v;
        }
      }
    }
  }
}

// silu(g) * u over n values: g / (1 + exp(-g)) * u
inline void silu_mul(const float* g, const float* u, float* out, int64_t n) {
  int64_t k = 0;
#if defined(EDGEKIT_Q4_AVX512)
  for (; k + 16 <= n; k += 16) {
    const __m512 gv = _mm512_loadu_ps(g + k);
    // exp(-g) = 2^i * p(r), -g = i ln2 + r (Cephes' polynomial), the argument clamped to where fp32 exp is finite
    __m512 x = _mm512_min_ps(_mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv), _mm512_set1_ps(-87.0f)),
                             _mm512_set1_ps(88.0f));
    const __m512 n2 = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                           _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n2, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n2, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(_mm512_mul_ps(p, r), r, _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    const __m512 e = _mm512_scalef_ps(p, n2);
    const __m512 sig = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
    _mm512_storeu_ps(out + k, _mm512_mul_ps(sig, _mm512_loadu_ps(u + k)));
  }
#endif
  for (; k < n; ++k) out[k] = g[k] / (1.f + std::exp(-g[k])) * u[k];
}

// The prologue's row for token m (the input itself when there is no prologue).
inline const float* prologue_row(const LinearArgs& a, int64_t m, float* scratch) {
  if (!a.swiglu && a.norm_w == nullptr) return a.x + m * a.K;
  const float* x = a.x + m * (a.swiglu ? 2 * a.K : a.K);
  if (a.swiglu) {
    silu_mul(x, x + a.K, scratch, a.K);
  } else {
    std::memcpy(scratch, x, static_cast<size_t>(a.K) * sizeof(float));
  }
  if (a.norm_w != nullptr) {
    double ss = 0.0;
    for (int64_t k = 0; k < a.K; ++k) ss += static_cast<double>(scratch[k]) * scratch[k];
    const float r = 1.f / std::sqrt(static_cast<float>(ss / static_cast<double>(a.K)) + a.norm_eps);
    for (int64_t k = 0; k < a.K; ++k) scratch[k] = a.norm_w[k] * (scratch[k] * r);
  }
  return scratch;
}

// In place on one head vector h[D]: optional RMSNorm (weight w), then rotary with this token's cos/sin.
inline void norm_rope_head(float* h, int64_t D, const float* w, float eps, const float* cos, const float* sin,
                           float* tmp) {
  if (w != nullptr) {
    double ss = 0.0;
    for (int64_t d = 0; d < D; ++d) ss += static_cast<double>(h[d]) * h[d];
    const float r = 1.f / std::sqrt(static_cast<float>(ss / static_cast<double>(D)) + eps);
    for (int64_t d = 0; d < D; ++d) h[d] = w[d] * (h[d] * r);
  }
  const int64_t half = D / 2;
  for (int64_t d = 0; d < D; ++d) tmp[d] = d < half ? -h[d + half] : h[d - half];
  for (int64_t d = 0; d < D; ++d) h[d] = h[d] * cos[d] + tmp[d] * sin[d];
}

inline void epilogue_rope(const LinearArgs& a) {
  if (a.cos == nullptr) return;
  std::vector<float> tmp(static_cast<size_t>(a.head_dim));
  for (int64_t m = 0; m < a.M; ++m) {
    float* y = a.y + m * a.N;
    const float* c = a.cos + m * a.head_dim;
    const float* s = a.sin + m * a.head_dim;
    for (int64_t h = 0; h < a.q_heads + a.kv_heads; ++h) {
      norm_rope_head(y + h * a.head_dim, a.head_dim, h < a.q_heads ? a.q_norm_w : a.k_norm_w, a.norm_eps, c, s,
                     tmp.data());
    }
  }
}

// parallel(n, f) calls f(begin, end) over [0, n) in chunks (ExecuTorch's parallel_for, or serial).
template <class Parallel>
void linear(const LinearArgs& a, Parallel&& parallel, bool portable = false) {
  const int64_t KB = a.K / a.G;
  std::vector<int8_t> q(static_cast<size_t>(a.M * a.K));
  std::vector<int32_t> qsum(static_cast<size_t>(a.M * KB));
  std::vector<QuantRow> rows(static_cast<size_t>(a.M));
  std::vector<float> gscale(a.act_per_group ? static_cast<size_t>(a.M * KB) : 0);
  // with minimums, the min term's factor per token and group: g_b qsum_b (per-group activations) or qsum_b, in float
  std::vector<float> qmin(a.mins != nullptr ? static_cast<size_t>(a.M * KB) : 0);
  const auto quantize_tokens = [&](int64_t m0, int64_t m1) {
    std::vector<float> scratch(a.swiglu || a.norm_w != nullptr ? static_cast<size_t>(a.K) : 0);
    for (int64_t m = m0; m < m1; ++m) {
      const float* row = prologue_row(a, m, scratch.data());
      if (a.act_per_group) {
        quantize_row_groups(row, a.K, a.G, q.data() + m * a.K, qsum.data() + m * KB, gscale.data() + m * KB);
        rows[m] = {1.f, 0};   // the scales are per group (in the tiles); no zero point
      } else {
        rows[m] = quantize_row(row, a.K, a.G, q.data() + m * a.K, qsum.data() + m * KB);
      }
      for (int64_t b = 0; a.mins != nullptr && b < KB; ++b) {
        const float qs = static_cast<float>(qsum[m * KB + b]);
        qmin[m * KB + b] = a.act_per_group ? gscale[m * KB + b] * qs : qs;
      }
    }
  };
  if (a.M > 1) {
    parallel(a.M, quantize_tokens);  // prefill: the prologue (exp for swiglu) and quantization per token are not free
  } else {
    quantize_tokens(0, a.M);
  }
  const int64_t tiles = padded_rows(a.N) / kTile;
  parallel(tiles, [&](int64_t t0, int64_t t1) {
    const float* gs = a.act_per_group ? gscale.data() : nullptr;
    const float* qm = a.mins != nullptr ? qmin.data() : nullptr;
    if (portable) run_tiles<true>(a, q.data(), qsum.data(), gs, qm, rows.data(), t0, t1);
    else run_tiles<false>(a, q.data(), qsum.data(), gs, qm, rows.data(), t0, t1);
  });
  epilogue_rope(a);
}

}  // namespace q4
}  // namespace edgekit
