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
  const float* rowsum;
  const float* bias;      // [N] or nullptr
  float* y;               // [M, N]
  int64_t M, K, N, G;
  bool act_per_group = false;  // activations per group of G, symmetric (see above), instead of per token asymmetric
  const uint16_t* mins = nullptr;  // per-group minimums in the scales' layout and dtype: codes 0..15, w = s code + m
  bool fp16 = false;               // scales (and mins) are fp16, else bf16
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

// ---------------------------------------------------------------- one tile, `mt` tokens (1..kTokens)
// Symmetric: acc[m][j] (float, 16 rows) += s_b[j] * g_b[m] * (dot_b[m][j] - 8 qsum_b[m]) over every group b.
// With minimums (nib = code): acc[m][j] += s_b[j] g_b[m] dot_b[m][j] + m_b[j] qf_b[m], with qf_b[m] = g_b[m] qsum_b[m]
// (in float, computed once per token: linear()), since sum_{k in b} q_k (s_b code_k + m_b) = s_b dot_b + m_b qsum_b.
// g_b[m] is the token's per-group activation scale (act_per_group) or 1 (gs == nullptr). s and mn point at the tile's
// scales / minimums ([K/G][16], bf16 or fp16); qf is nullptr without minimums.
inline float group_scale(const float* const* gs, int64_t m, int64_t b) { return gs == nullptr ? 1.f : gs[m][b]; }

inline void tile_portable(const uint8_t* w, const uint16_t* s, const uint16_t* mn, bool fp16,
                          const int8_t* const* q, const int32_t* const* qsum, const float* const* gs,
                          const float* const* qf, int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  const int64_t V = G / 8;
  for (int64_t b = 0; b < K / G; ++b) {
    int32_t dot[kTokens][kTile] = {};
    for (int64_t v = 0; v < V; ++v) {
      const uint8_t* vec = w + (b * V + v) * 64;
      const int64_t k0 = b * G + 8 * v;
      for (int64_t j = 0; j < kTile; ++j) {
        for (int64_t c = 0; c < 4; ++c) {
          const int32_t lo = vec[4 * j + c] & 0x0F, hi = vec[4 * j + c] >> 4;
          for (int64_t m = 0; m < mt; ++m) dot[m][j] += lo * q[m][k0 + c] + hi * q[m][k0 + 4 + c];
        }
      }
    }
    for (int64_t m = 0; m < mt; ++m) {
      const float g = group_scale(gs, m, b);
      for (int64_t j = 0; j < kTile; ++j) {
        const float sc = scale_to_f32(s[b * kTile + j], fp16);
        if (mn == nullptr) {
          acc[m][j] += (sc * g) * static_cast<float>(dot[m][j] - 8 * qsum[m][b]);
        } else {
          const float mv = scale_to_f32(mn[b * kTile + j], fp16);
          acc[m][j] += (sc * g) * static_cast<float>(dot[m][j]) + mv * qf[m][b];
        }
      }
    }
  }
}

#if defined(EDGEKIT_Q4_AVX512)
// 16 scales (or minimums) of a group as fp32: bf16 by a shift, fp16 by vcvtph2ps (AVX-512F)
template <bool kF16>
inline __m512 load_scales16(const uint16_t* p) {
  const __m256i raw = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  if (kF16) return _mm512_cvtph_ps(raw);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(raw), 16));
}

// acc += u8 lanes of w . the int8 quad at p broadcast to every lane: the broadcast is the instruction's own memory
// operand ({1to16}), not a separate uop (compilers do not fold it from the intrinsics)
inline __m512i dpbusd_quad(__m512i acc, __m512i w, const int8_t* p) {
#if defined(__GNUC__)
  asm("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*reinterpret_cast<const quad_t*>(p)));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(load_quad(p)));
#endif
}

// MT tokens at once; lo and hi nibbles (and, for one token, even and odd vectors) accumulate into separate registers
// so that no dpbusd waits for the previous one (its latency, not the memory, would bound a decode step otherwise).
template <int MT, bool kF16, bool kMins>
inline void tile_avx512(const uint8_t* w, const uint16_t* s, const uint16_t* mn, const int8_t* const* q,
                        const int32_t* const* qsum, const float* const* gs,
                        const float* const* qf, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  const int64_t V = G / 8;
  const __m512i mask = _mm512_set1_epi8(0x0F);
  __m512 facc[MT], fmin[kMins ? MT : 1];  // the min term in its own accumulators: no longer dependency chain
  for (int m = 0; m < MT; ++m) facc[m] = _mm512_setzero_ps();
  for (auto& r : fmin) r = _mm512_setzero_ps();
  for (int64_t b = 0; b < K / G; ++b) {
    // one token: four accumulators (lo/hi x even/odd vector) so consecutive dpbusd never wait on each other;
    // several tokens: one accumulator each, the tokens interleave (and registers stay within 32 zmm)
    __m512i d[MT], e[MT == 1 ? 3 : 1];
    for (int m = 0; m < MT; ++m) d[m] = _mm512_setzero_si512();
    for (auto& r : e) r = _mm512_setzero_si512();
    const uint8_t* wb = w + b * V * 64;
    int64_t v = 0;
    if (MT == 1) {
      for (; v + 2 <= V; v += 2) {
        prefetch_ahead(wb + v * 64);
        prefetch_ahead(wb + v * 64 + 64);
        const __m512i r0 = _mm512_loadu_si512(wb + v * 64), r1 = _mm512_loadu_si512(wb + v * 64 + 64);
        const int8_t* xq = q[0] + b * G + 8 * v;
        d[0] = dpbusd_quad(d[0], _mm512_and_si512(r0, mask), xq);
        e[0] = dpbusd_quad(e[0], _mm512_and_si512(_mm512_srli_epi16(r0, 4), mask), xq + 4);
        e[1] = dpbusd_quad(e[1], _mm512_and_si512(r1, mask), xq + 8);
        e[MT == 1 ? 2 : 0] = dpbusd_quad(e[MT == 1 ? 2 : 0], _mm512_and_si512(_mm512_srli_epi16(r1, 4), mask), xq + 12);
      }
      d[0] = _mm512_add_epi32(_mm512_add_epi32(d[0], e[0]), _mm512_add_epi32(e[1], e[MT == 1 ? 2 : 0]));
    }
    for (; v < V; ++v) {
      prefetch_ahead(wb + v * 64);
      const __m512i raw = _mm512_loadu_si512(wb + v * 64);
      const __m512i lo = _mm512_and_si512(raw, mask), hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), mask);
      const int64_t k0 = b * G + 8 * v;
      for (int m = 0; m < MT; ++m) {
        d[m] = dpbusd_quad(d[m], lo, q[m] + k0);
        d[m] = dpbusd_quad(d[m], hi, q[m] + k0 + 4);
      }
    }
    const __m512 sc = load_scales16<kF16>(s + b * kTile);
    if (kMins) {
      const __m512 mv = load_scales16<kF16>(mn + b * kTile);
      for (int m = 0; m < MT; ++m) {
        const __m512 scm = gs == nullptr ? sc : _mm512_mul_ps(sc, _mm512_set1_ps(gs[m][b]));
        facc[m] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(d[m]), scm, facc[m]);
        fmin[m] = _mm512_fmadd_ps(mv, _mm512_set1_ps(qf[m][b]), fmin[m]);
      }
    } else {
      for (int m = 0; m < MT; ++m) {
        const __m512 dot = _mm512_cvtepi32_ps(_mm512_sub_epi32(d[m], _mm512_set1_epi32(8 * qsum[m][b])));
        facc[m] = _mm512_fmadd_ps(dot, gs == nullptr ? sc : _mm512_mul_ps(sc, _mm512_set1_ps(gs[m][b])), facc[m]);
      }
    }
  }
  if (kMins) {
    for (int m = 0; m < MT; ++m) facc[m] = _mm512_add_ps(facc[m], fmin[m]);
  }
  for (int m = 0; m < MT; ++m) _mm512_storeu_ps(acc[m], _mm512_add_ps(_mm512_loadu_ps(acc[m]), facc[m]));
}

template <bool kF16, bool kMins>
inline void tile_simd_t(const uint8_t* w, const uint16_t* s, const uint16_t* mn, const int8_t* const* q,
                        const int32_t* const* qsum, const float* const* gs,
                        const float* const* qf, int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  switch (mt) {
    case 1: tile_avx512<1, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    case 2: tile_avx512<2, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    case 3: tile_avx512<3, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    case 4: tile_avx512<4, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    case 5: tile_avx512<5, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    case 6: tile_avx512<6, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    case 7: tile_avx512<7, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
    default: tile_avx512<8, kF16, kMins>(w, s, mn, q, qsum, gs, qf, K, G, acc); break;
  }
}
#elif defined(EDGEKIT_Q4_AVX2)
// 8 scales (or minimums) as fp32: bf16 by a shift; fp16 by vcvtph2ps where the compiler may use F16C, else exactly
// in scalar code (a host without F16C)
template <bool kF16>
inline __m256 load_scales8(const uint16_t* p) {
  if (!kF16) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))), 16));
  }
#if defined(__F16C__)
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
#else
  float f[8];
  for (int i = 0; i < 8; ++i) f[i] = fp16_to_f32(p[i]);
  return _mm256_loadu_ps(f);
#endif
}

// A 64-byte vector is two 256-bit halves: rows 0-7 and rows 8-15. maddubs (u8 nib x s8 q, pairs into int16:
// |2 * 15 * 128| fits, and so does the sum of the lo and hi products) then madd with ones into int32. MT tokens
// (1..4) at once, every accumulator in a register (AVX2 has 16): the runtime-count loop this replaces kept them on the
// stack and ran a decode step at a quarter of the memory's speed.
template <int MT, bool kF16, bool kMins>
inline void tile_avx2(const uint8_t* w, const uint16_t* s, const uint16_t* mn, const int8_t* const* q,
                      const int32_t* const* qsum, const float* const* gs,
                      const float* const* qf, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  const int64_t V = G / 8;
  const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
  for (int64_t b = 0; b < K / G; ++b) {
    __m256i d0[MT], d1[MT];
    for (int m = 0; m < MT; ++m) d0[m] = d1[m] = _mm256_setzero_si256();
    const uint8_t* wb = w + b * V * 64;
    const int64_t kb = b * G;
    for (int64_t v = 0; v < V; ++v) {
      prefetch_ahead(wb + v * 64);
      const __m256i r0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + v * 64));
      const __m256i r1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + v * 64 + 32));
      const __m256i lo0 = _mm256_and_si256(r0, mask), hi0 = _mm256_and_si256(_mm256_srli_epi16(r0, 4), mask);
      const __m256i lo1 = _mm256_and_si256(r1, mask), hi1 = _mm256_and_si256(_mm256_srli_epi16(r1, 4), mask);
      for (int m = 0; m < MT; ++m) {
        const __m256i xa = _mm256_set1_epi32(load_quad(q[m] + kb + 8 * v));
        const __m256i xb = _mm256_set1_epi32(load_quad(q[m] + kb + 8 * v + 4));
        d0[m] = _mm256_add_epi32(d0[m], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo0, xa),
                                                                           _mm256_maddubs_epi16(hi0, xb)), ones));
        d1[m] = _mm256_add_epi32(d1[m], _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(lo1, xa),
                                                                           _mm256_maddubs_epi16(hi1, xb)), ones));
      }
    }
    const __m256 sc0 = load_scales8<kF16>(s + b * kTile), sc1 = load_scales8<kF16>(s + b * kTile + 8);
    if (kMins) {
      const __m256 mv0 = load_scales8<kF16>(mn + b * kTile), mv1 = load_scales8<kF16>(mn + b * kTile + 8);
      for (int m = 0; m < MT; ++m) {
        const __m256 qs = _mm256_set1_ps(qf[m][b]);
        const __m256 g = _mm256_set1_ps(gs == nullptr ? 1.f : gs[m][b]);
        const __m256 a0 = _mm256_fmadd_ps(mv0, qs, _mm256_loadu_ps(acc[m]));
        const __m256 a1 = _mm256_fmadd_ps(mv1, qs, _mm256_loadu_ps(acc[m] + 8));
        _mm256_storeu_ps(acc[m], _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0[m]), _mm256_mul_ps(sc0, g), a0));
        _mm256_storeu_ps(acc[m] + 8, _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1[m]), _mm256_mul_ps(sc1, g), a1));
      }
      continue;
    }
    for (int m = 0; m < MT; ++m) {
      const __m256i off = _mm256_set1_epi32(8 * qsum[m][b]);
      const __m256 g = _mm256_set1_ps(gs == nullptr ? 1.f : gs[m][b]);
      const __m256 dot0 = _mm256_cvtepi32_ps(_mm256_sub_epi32(d0[m], off));
      const __m256 dot1 = _mm256_cvtepi32_ps(_mm256_sub_epi32(d1[m], off));
      _mm256_storeu_ps(acc[m], _mm256_fmadd_ps(dot0, _mm256_mul_ps(sc0, g), _mm256_loadu_ps(acc[m])));
      _mm256_storeu_ps(acc[m] + 8, _mm256_fmadd_ps(dot1, _mm256_mul_ps(sc1, g), _mm256_loadu_ps(acc[m] + 8)));
    }
  }
}

template <bool kF16, bool kMins>
inline void tile_simd_t(const uint8_t* w, const uint16_t* s, const uint16_t* mn, const int8_t* const* q,
                        const int32_t* const* qsum, const float* const* gs,
                        const float* const* qf, int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  // at most 4 tokens per pass (registers); a second pass re-reads the tile from L1
  for (int64_t m0 = 0; m0 < mt; m0 += 4) {
    const int64_t n = std::min<int64_t>(4, mt - m0);
    const float* const* g = gs == nullptr ? nullptr : gs + m0;
    const float* const* f = qf == nullptr ? nullptr : qf + m0;
    float(*a)[kTile] = acc + m0;
    switch (n) {
      case 1: tile_avx2<1, kF16, kMins>(w, s, mn, q + m0, qsum + m0, g, f, K, G, a); break;
      case 2: tile_avx2<2, kF16, kMins>(w, s, mn, q + m0, qsum + m0, g, f, K, G, a); break;
      case 3: tile_avx2<3, kF16, kMins>(w, s, mn, q + m0, qsum + m0, g, f, K, G, a); break;
      default: tile_avx2<4, kF16, kMins>(w, s, mn, q + m0, qsum + m0, g, f, K, G, a); break;
    }
  }
}
#elif defined(EDGEKIT_Q4_NEON)
// 4 scales (or minimums) as fp32: bf16 by a widening shift, fp16 by fcvtl (baseline AArch64)
template <bool kF16>
inline float32x4_t load_scales4(const uint16_t* p) {
  if (kF16) return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
  return vreinterpretq_f32_u32(vshll_n_u16(vld1_u16(p), 16));
}

template <bool kF16, bool kMins>
inline void tile_simd_t(const uint8_t* w, const uint16_t* s, const uint16_t* mn, const int8_t* const* q,
                        const int32_t* const* qsum, const float* const* gs,
                        const float* const* qf, int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  // a 64-byte vector is four 128-bit quarters (rows 4i..4i+3); sdot: nib (0..15, as s8) x q quad.
  const int64_t V = G / 8;
  const uint8x16_t mask = vdupq_n_u8(0x0F);
  for (int64_t b = 0; b < K / G; ++b) {
    int32x4_t d[kTokens][4];
    for (int64_t m = 0; m < kTokens; ++m)
      for (int i = 0; i < 4; ++i) d[m][i] = vdupq_n_s32(0);
    for (int64_t v = 0; v < V; ++v) {
      prefetch_ahead(w + (b * V + v) * 64);
      const int64_t k0 = b * G + 8 * v;
      int8x16_t xq[kTokens];
      for (int64_t m = 0; m < mt; ++m) {
        const int32_t x0 = load_quad(q[m] + k0), x1 = load_quad(q[m] + k0 + 4);
        xq[m] = vreinterpretq_s8_s32(vcombine_s32(vdup_n_s32(x0), vdup_n_s32(x1)));
      }
      for (int i = 0; i < 4; ++i) {
        const uint8x16_t raw = vld1q_u8(w + (b * V + v) * 64 + 16 * i);
        const int8x16_t lo = vreinterpretq_s8_u8(vandq_u8(raw, mask)), hi = vreinterpretq_s8_u8(vshrq_n_u8(raw, 4));
        for (int64_t m = 0; m < mt; ++m) {
          d[m][i] = vdotq_laneq_s32(d[m][i], lo, xq[m], 0);
          d[m][i] = vdotq_laneq_s32(d[m][i], hi, xq[m], 2);
        }
      }
    }
    for (int i = 0; i < 4; ++i) {
      const float32x4_t sc = load_scales4<kF16>(s + b * kTile + 4 * i);
      if (kMins) {
        const float32x4_t mv = load_scales4<kF16>(mn + b * kTile + 4 * i);
        for (int64_t m = 0; m < mt; ++m) {
          const float32x4_t scm = gs == nullptr ? sc : vmulq_n_f32(sc, gs[m][b]);
          const float32x4_t a = vfmaq_n_f32(vld1q_f32(acc[m] + 4 * i), mv, qf[m][b]);
          vst1q_f32(acc[m] + 4 * i, vfmaq_f32(a, vcvtq_f32_s32(d[m][i]), scm));
        }
        continue;
      }
      for (int64_t m = 0; m < mt; ++m) {
        const float32x4_t dot = vcvtq_f32_s32(vsubq_s32(d[m][i], vdupq_n_s32(8 * qsum[m][b])));
        const float32x4_t scm = gs == nullptr ? sc : vmulq_n_f32(sc, gs[m][b]);
        vst1q_f32(acc[m] + 4 * i, vfmaq_f32(vld1q_f32(acc[m] + 4 * i), dot, scm));
      }
    }
  }
}
#endif

inline void tile_simd(const uint8_t* w, const uint16_t* s, const uint16_t* mn, bool fp16, const int8_t* const* q,
                      const int32_t* const* qsum, const float* const* gs,
                      const float* const* qf, int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
#if defined(EDGEKIT_Q4_AVX512) || defined(EDGEKIT_Q4_AVX2) || defined(EDGEKIT_Q4_NEON)
  if (fp16) {
    if (mn != nullptr) tile_simd_t<true, true>(w, s, mn, q, qsum, gs, qf, mt, K, G, acc);
    else tile_simd_t<true, false>(w, s, mn, q, qsum, gs, qf, mt, K, G, acc);
  } else {
    if (mn != nullptr) tile_simd_t<false, true>(w, s, mn, q, qsum, gs, qf, mt, K, G, acc);
    else tile_simd_t<false, false>(w, s, mn, q, qsum, gs, qf, mt, K, G, acc);
  }
#else
  tile_portable(w, s, mn, fp16, q, qsum, gs, qf, mt, K, G, acc);
#endif
}

// Tiles [t0, t1) for every token: y = sx (acc - zp rowsum) + bias.
template <bool kPortable>
void run_tiles(const LinearArgs& a, const int8_t* q, const int32_t* qsum, const float* gscale, const float* qmin,
               const QuantRow* rows, int64_t t0, int64_t t1) {
  const int64_t KB = a.K / a.G, tile_bytes = kTile * a.K / 2;
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
      if (kPortable) tile_portable(w, s, mn, a.fp16, qp, sp, gs, qf, mt, a.K, a.G, acc);
      else tile_simd(w, s, mn, a.fp16, qp, sp, gs, qf, mt, a.K, a.G, acc);
      for (int64_t m = 0; m < mt; ++m) {
        const QuantRow r = rows[m0 + m];
        float* y = a.y + (m0 + m) * a.N;
        for (int64_t j = 0; j < kTile && t * kTile + j < a.N; ++j) {
          const int64_t n = t * kTile + j;
          float v = r.sx * (acc[m][j] - static_cast<float>(r.zp) * a.rowsum[n]);
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
