// The int4 linear's inner loops: one 16-row tile against up to kTokens tokens, as the scalar definition
// (tile_portable) and the SIMD path of the ISA linear_q4.h selected (AVX-512 VNNI, AVX2, NEON dot products). Included
// by linear_q4.h after its types and helpers; not a header to include on its own.
#pragma once

namespace edgekit {
namespace q4 {

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

}  // namespace q4
}  // namespace edgekit
