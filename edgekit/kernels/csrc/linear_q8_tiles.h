// The int8 linear's inner loops (LinearArgs::int8, GGUF's Q8_0 grid: w = s_b * code, code in -128..127, one scale per
// group of G inputs), activations quantized per group (q in -127..127, scale a_b): y = sum_b a_b s_b sum_{k in b} q code,
// llama.cpp's Q8_0 x Q8_0 product. Included by linear_q4.h after its types and helpers; not a header to include on
// its own.
//
// Layout ("tiled16", 8-bit): rows in tiles of 16 (N padded with zero rows); for tile t, group b and vector v
// (0 <= v < G / 4) one 64-byte vector holds 16 lanes of 4 bytes, lane j = row 16t + j, byte c = code(row, bG + 4v + c)
// as int8. Scales as for the int4 layout ([N_pad / 16][K / G][16], bf16 or fp16 bits).
//   packed  int8  [N_pad / 16][K / G][G / 4][64]
// A row of the table stays addressable (embedding_row below), so one constant serves a tied embedding and the head.
#pragma once

namespace edgekit {
namespace q4 {

// Symmetric: acc[m][j] += s_b[j] * g_b[m] * dot_b[m][j] over every group b (g_b: the token's per-group scale).
inline void tile8_portable(const int8_t* w, const uint16_t* s, bool fp16, const int8_t* const* q,
                           const float* const* gs, int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  const int64_t V = G / 4;
  for (int64_t b = 0; b < K / G; ++b) {
    int32_t dot[kTokens][kTile] = {};
    for (int64_t v = 0; v < V; ++v) {
      const int8_t* vec = w + (b * V + v) * 64;
      const int64_t k0 = b * G + 4 * v;
      for (int64_t j = 0; j < kTile; ++j) {
        for (int64_t c = 0; c < 4; ++c) {
          for (int64_t m = 0; m < mt; ++m) dot[m][j] += static_cast<int32_t>(vec[4 * j + c]) * q[m][k0 + c];
        }
      }
    }
    for (int64_t m = 0; m < mt; ++m) {
      for (int64_t j = 0; j < kTile; ++j) {
        acc[m][j] += (scale_to_f32(s[b * kTile + j], fp16) * gs[m][b]) * static_cast<float>(dot[m][j]);
      }
    }
  }
}

#if (defined(EDGEKIT_Q4_AVX512) || defined(EDGEKIT_Q4_AVX2)) && defined(__AVX2__)
// 8 scales as fp32 (bf16 by a shift; fp16 by vcvtph2ps with F16C, else exactly in scalar code)
template <bool kF16>
inline __m256 load8_scales(const uint16_t* p) {
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

// s8 x s8 with AVX2's u8 x s8 maddubs, llama.cpp's sign trick: |w| (0..128 as u8) times q * sign(w). A pair sums to at
// most 2 * 128 * 127 = 32512, inside int16 (per-group activations never reach -128: |q| = round(127 |x| / max|x|)).
// MT tokens (1..4) at once, the fp32 accumulators in registers for the whole tile. (AVX-512 builds run this too; a
// VNNI form would need the same sign trick or a +128 offset with a 128 * sum(q) correction.)
template <int MT, bool kF16>
inline void tile8_avx2(const int8_t* w, const uint16_t* s, const int8_t* const* q, const float* const* gs, int64_t K,
                       int64_t G, float acc[kTokens][kTile]) {
  const int64_t V = G / 4;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256 f0[MT], f1[MT];
  for (int m = 0; m < MT; ++m) f0[m] = f1[m] = _mm256_setzero_ps();
  for (int64_t b = 0; b < K / G; ++b) {
    __m256i d0[MT], d1[MT];
    for (int m = 0; m < MT; ++m) d0[m] = d1[m] = _mm256_setzero_si256();
    const int8_t* wb = w + b * V * 64;
    const int64_t kb = b * G;
    for (int64_t v = 0; v < V; ++v) {
      prefetch_ahead(reinterpret_cast<const uint8_t*>(wb + v * 64));
      const __m256i r0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + v * 64));
      const __m256i r1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + v * 64 + 32));
      const __m256i a0 = _mm256_sign_epi8(r0, r0), a1 = _mm256_sign_epi8(r1, r1);
      for (int m = 0; m < MT; ++m) {
        const __m256i x = _mm256_set1_epi32(load_quad(q[m] + kb + 4 * v));
        d0[m] = _mm256_add_epi32(d0[m], _mm256_madd_epi16(_mm256_maddubs_epi16(a0, _mm256_sign_epi8(x, r0)), ones));
        d1[m] = _mm256_add_epi32(d1[m], _mm256_madd_epi16(_mm256_maddubs_epi16(a1, _mm256_sign_epi8(x, r1)), ones));
      }
    }
    const __m256 sc0 = load8_scales<kF16>(s + b * kTile), sc1 = load8_scales<kF16>(s + b * kTile + 8);
    for (int m = 0; m < MT; ++m) {
      const __m256 g = _mm256_set1_ps(gs[m][b]);
      f0[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0[m]), _mm256_mul_ps(sc0, g), f0[m]);
      f1[m] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1[m]), _mm256_mul_ps(sc1, g), f1[m]);
    }
  }
  for (int m = 0; m < MT; ++m) {
    _mm256_storeu_ps(acc[m], _mm256_add_ps(_mm256_loadu_ps(acc[m]), f0[m]));
    _mm256_storeu_ps(acc[m] + 8, _mm256_add_ps(_mm256_loadu_ps(acc[m] + 8), f1[m]));
  }
}

template <bool kF16>
inline void tile8_simd_t(const int8_t* w, const uint16_t* s, const int8_t* const* q, const float* const* gs,
                         int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  for (int64_t m0 = 0; m0 < mt; m0 += 4) {   // at most 4 tokens per pass (registers); the tile stays in L1
    const int64_t n = std::min<int64_t>(4, mt - m0);
    switch (n) {
      case 1: tile8_avx2<1, kF16>(w, s, q + m0, gs + m0, K, G, acc + m0); break;
      case 2: tile8_avx2<2, kF16>(w, s, q + m0, gs + m0, K, G, acc + m0); break;
      case 3: tile8_avx2<3, kF16>(w, s, q + m0, gs + m0, K, G, acc + m0); break;
      default: tile8_avx2<4, kF16>(w, s, q + m0, gs + m0, K, G, acc + m0); break;
    }
  }
}
#define EDGEKIT_Q8_SIMD 1
#elif defined(EDGEKIT_Q4_NEON)
// sdot takes s8 x s8 directly: each 64-byte vector is four quarters of 4 rows x 4 bytes
template <bool kF16>
inline void tile8_simd_t(const int8_t* w, const uint16_t* s, const int8_t* const* q, const float* const* gs,
                         int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
  const int64_t V = G / 4;
  for (int64_t b = 0; b < K / G; ++b) {
    int32x4_t d[kTokens][4];
    for (int64_t m = 0; m < kTokens; ++m)
      for (int i = 0; i < 4; ++i) d[m][i] = vdupq_n_s32(0);
    for (int64_t v = 0; v < V; ++v) {
      const int8_t* vec = w + (b * V + v) * 64;
      prefetch_ahead(reinterpret_cast<const uint8_t*>(vec));
      int8x16_t xq[kTokens];
      for (int64_t m = 0; m < mt; ++m) xq[m] = vreinterpretq_s8_s32(vdupq_n_s32(load_quad(q[m] + b * G + 4 * v)));
      for (int i = 0; i < 4; ++i) {
        const int8x16_t r = vld1q_s8(vec + 16 * i);
        for (int64_t m = 0; m < mt; ++m) d[m][i] = vdotq_s32(d[m][i], r, xq[m]);
      }
    }
    for (int i = 0; i < 4; ++i) {
      const float32x4_t sc = load_scales4<kF16>(s + b * kTile + 4 * i);
      for (int64_t m = 0; m < mt; ++m) {
        vst1q_f32(acc[m] + 4 * i, vfmaq_f32(vld1q_f32(acc[m] + 4 * i), vcvtq_f32_s32(d[m][i]),
                                             vmulq_n_f32(sc, gs[m][b])));
      }
    }
  }
}
#define EDGEKIT_Q8_SIMD 1
#endif

inline void tile8_simd(const int8_t* w, const uint16_t* s, bool fp16, const int8_t* const* q, const float* const* gs,
                       int64_t mt, int64_t K, int64_t G, float acc[kTokens][kTile]) {
#if defined(EDGEKIT_Q8_SIMD)
  if (fp16) tile8_simd_t<true>(w, s, q, gs, mt, K, G, acc);
  else tile8_simd_t<false>(w, s, q, gs, mt, K, G, acc);
#else
  tile8_portable(w, s, fp16, q, gs, mt, K, G, acc);
#endif
}

// Row r of an 8-bit tiled table, dequantized: out[k] = s(r, k / G) * code(r, k) (the embedding lookup of a tied table)
inline void embedding_row(const int8_t* packed, const uint16_t* scales, bool fp16, int64_t r, int64_t K, int64_t G,
                          float* out) {
  const int64_t KB = K / G, V = G / 4, t = r / kTile, j = r % kTile;
  for (int64_t b = 0; b < KB; ++b) {
    const float sc = scale_to_f32(scales[(t * KB + b) * kTile + j], fp16);
    const int8_t* vec = packed + ((t * KB + b) * V) * 64 + 4 * j;
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t c = 0; c < 4; ++c) out[b * G + 4 * v + c] = sc * static_cast<float>(vec[v * 64 + c]);
    }
  }
}

}  // namespace q4
}  // namespace edgekit
