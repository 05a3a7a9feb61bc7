// edgekit's 8-bit linear and gather on one table in MatMulNBits' 8-bit layout (a GGUF Q8_0 tensor as stored), so a
// tied embedding and output layer read the same bytes with fp16 scales (GGUF's own d), where ONNX Runtime's
// MatMulNBits insists on scales of the activations' type (fp32: twice the bytes).
//
//   packed  uint8  [N][K / G][G]   code + 128 (MatMulNBits' B with its default zero point 128)
//   scales  fp16   [N][K / G]      raw IEEE half bits
//
// Linear: activations quantized per group of G, symmetric, as LinearQ4's act_per_group and MatMulNBits' accuracy
// level 4 do (q4::quantize_row_groups: a_b = max|x| / 127, q = round(x / a_b));
//   y[m, n] = sum_b a_b d_b sum_{k in b} q[m, k] (c[n, k] - 128)
// the integer dot exact in int32 (|q (c - 128)| <= 128 * 127, G <= 256); the portable loop computes it as
// sum q c - 128 sum q, the AVX2 one on signed codes (rows_avx2).
// Gather: row n dequantized, (c - 128) * d in fp32, exact (an 8-bit integer times an fp16 value fits fp32's mantissa).
#pragma once
#include <cstdint>
#include <vector>

#include "linear_q4.h"

namespace edgekit {
namespace q8 {

struct LinearArgs {
  const float* x;          // [M, K]
  const uint8_t* packed;   // [N, K / G, G]
  const uint16_t* scales;  // fp16 bits [N, K / G]
  float* y;                // [M, N]
  int64_t M, K, N, G;
};

// The quantized activations of every token: codes, per-group sums of the codes, per-group scales.
struct QuantTokens {
  std::vector<int8_t> q;
  std::vector<int32_t> qsum;
  std::vector<float> scale;
};

inline void rows_portable(const LinearArgs& a, const QuantTokens& t, int64_t n0, int64_t n1) {
  const int64_t KB = a.K / a.G;
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* w = a.packed + n * a.K;
    const uint16_t* s = a.scales + n * KB;
    for (int64_t m = 0; m < a.M; ++m) {
      const int8_t* q = t.q.data() + m * a.K;
      float acc = 0.f;
      for (int64_t b = 0; b < KB; ++b) {
        int32_t dot = 0;
        for (int64_t k = b * a.G; k < (b + 1) * a.G; ++k) dot += static_cast<int32_t>(w[k]) * q[k];
        dot -= 128 * t.qsum[m * KB + b];
        acc += (t.scale[m * KB + b] * q4::fp16_to_f32(s[b])) * static_cast<float>(dot);
      }
      a.y[m * a.N + n] = acc;
    }
  }
}

#if defined(__AVX2__) && !defined(EDGEKIT_FORCE_PORTABLE)
#define EDGEKIT_Q8_SIMD 1
// G a multiple of 32, 32 codes per 256-bit vector. AVX2 has no unsigned x signed byte dot that cannot saturate on
// these values (vpmaddubsw's pair sums reach 2 * 255 * 127), so the codes are made signed (c - 128, an xor) and the
// signs moved onto the activations, as llama.cpp's Q8_0 dot does: |c| * (q sign(c)), each pair at most
// 2 * 128 * 127 < 2^15 (|q| <= 127: symmetric activations). The same integers as rows_portable.
inline void rows_avx2(const LinearArgs& a, const QuantTokens& t, int64_t n0, int64_t n1) {
  const int64_t KB = a.K / a.G;
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80)), ones = _mm256_set1_epi16(1);
  std::vector<float> d(static_cast<size_t>(KB));
  for (int64_t n = n0; n < n1; ++n) {
    const uint8_t* w = a.packed + n * a.K;
    const uint16_t* s = a.scales + n * KB;
    for (int64_t b = 0; b < KB; ++b) d[b] = q4::fp16_to_f32(s[b]);
    for (int64_t m = 0; m < a.M; ++m) {
      const int8_t* q = t.q.data() + m * a.K;
      const float* g = t.scale.data() + m * KB;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < KB; ++b) {
        __m256i dot = _mm256_setzero_si256();
        for (int64_t k = b * a.G; k < (b + 1) * a.G; k += 32) {
          if (m == 0) q4::prefetch_ahead(w + k);
          const __m256i c = _mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k)), flip);
          const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q + k));
          const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(c, c), _mm256_sign_epi8(x, c));
          dot = _mm256_add_epi32(dot, _mm256_madd_epi16(p, ones));
        }
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dot), _mm256_set1_ps(g[b] * d[b]), acc);
      }
      const __m128 h = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
      const __m128 h2 = _mm_add_ps(h, _mm_movehl_ps(h, h));
      a.y[m * a.N + n] = _mm_cvtss_f32(_mm_add_ss(h2, _mm_shuffle_ps(h2, h2, 1)));
    }
  }
}
#endif

inline const char* isa_name(int64_t G) {
#if defined(EDGEKIT_Q8_SIMD)
  if (G % 32 == 0) return "avx2";
#endif
  (void)G;
  return "portable";
}

// parallel(n, f) calls f(begin, end) over [0, n) in chunks.
template <class Parallel>
void linear(const LinearArgs& a, Parallel&& parallel, bool portable = false) {
  const int64_t KB = a.K / a.G;
  QuantTokens t{std::vector<int8_t>(static_cast<size_t>(a.M * a.K)), std::vector<int32_t>(static_cast<size_t>(a.M * KB)),
                std::vector<float>(static_cast<size_t>(a.M * KB))};
  const auto quantize = [&](int64_t m0, int64_t m1) {
    for (int64_t m = m0; m < m1; ++m) {
      q4::quantize_row_groups(a.x + m * a.K, a.K, a.G, t.q.data() + m * a.K, t.qsum.data() + m * KB,
                              t.scale.data() + m * KB);
    }
  };
  if (a.M > 1) parallel(a.M, quantize);
  else quantize(0, a.M);
  parallel(a.N, [&](int64_t n0, int64_t n1) {
#if defined(EDGEKIT_Q8_SIMD)
    if (!portable && a.G % 32 == 0) {
      rows_avx2(a, t, n0, n1);
      return;
    }
#endif
    (void)portable;
    rows_portable(a, t, n0, n1);
  });
}

// Rows `ids` of the table, dequantized: out[i, k] = (c[ids[i], k] - 128) * d[ids[i], k / G].
inline void gather(const uint8_t* packed, const uint16_t* scales, const int64_t* ids, int64_t count, int64_t K,
                   int64_t G, float* out) {
  const int64_t KB = K / G;
  for (int64_t i = 0; i < count; ++i) {
    const uint8_t* w = packed + ids[i] * K;
    const uint16_t* s = scales + ids[i] * KB;
    float* row = out + i * K;
    for (int64_t b = 0; b < KB; ++b) {
      const float d = q4::fp16_to_f32(s[b]);
      for (int64_t k = b * G; k < (b + 1) * G; ++k) row[k] = static_cast<float>(static_cast<int32_t>(w[k]) - 128) * d;
    }
  }
}

}  // namespace q8
}  // namespace edgekit
