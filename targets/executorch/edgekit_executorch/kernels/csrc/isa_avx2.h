// AVX2 + FMA primitives of the int8 attention core (x86-64). Require d % 8 == 0; the core falls back otherwise.
#pragma once
#include <immintrin.h>
#include <cstdint>

#include "isa_portable.h"

namespace edgekit {
namespace avx2 {

inline __m256 exp_nonpos(__m256 x) {
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.0f));
  const __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fmadd_ps(n, _mm256_set1_ps(2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(_mm256_mul_ps(p, r), r, _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

inline void cvt_i8_f32(const int8_t* src, float* dst, int64_t d) {
  for (int64_t c = 0; c < d; c += 8) {
    const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + c));
    _mm256_storeu_ps(dst + c, _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b)));
  }
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// the 8 horizontal sums of a[0..7] as one vector (lane i = sum of a[i])
inline __m256 hsum8(const __m256* a) {
  const __m256 t0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3]));
  const __m256 t1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
  return _mm256_add_ps(_mm256_permute2f128_ps(t0, t1, 0x20), _mm256_permute2f128_ps(t0, t1, 0x31));
}

inline void scores(const float* q, const float* kf, int64_t n, int64_t d, float* s) {
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {  // 8 positions per step: one q load feeds 8 FMAs
    __m256 acc[8];
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) acc[i] = _mm256_setzero_ps();
    const float* k = kf + j * d;
    for (int64_t c = 0; c < d; c += 8) {
      const __m256 qv = _mm256_loadu_ps(q + c);
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) acc[i] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + i * d + c), acc[i]);
    }
    _mm256_storeu_ps(s + j, hsum8(acc));
  }
  for (; j < n; ++j) {
    __m256 acc = _mm256_setzero_ps();
    for (int64_t c = 0; c < d; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(q + c), _mm256_loadu_ps(kf + j * d + c), acc);
    s[j] = hsum(acc);
  }
}

inline float scale_max(float* s, const float* scale, int64_t n) {
  __m256 mv = _mm256_set1_ps(-__builtin_inff());
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 x = _mm256_mul_ps(_mm256_loadu_ps(s + j), _mm256_loadu_ps(scale + j));
    _mm256_storeu_ps(s + j, x);
    mv = _mm256_max_ps(mv, x);
  }
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mv), _mm256_extractf128_ps(mv, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float m = _mm_cvtss_f32(m4);
  for (; j < n; ++j) {
    s[j] *= scale[j];
    m = m > s[j] ? m : s[j];
  }
  return m;
}

inline float exp_shift_sum(float* s, int64_t n, float m) {
  const __m256 mv = _mm256_set1_ps(m);
  __m256 sum = _mm256_setzero_ps();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    const __m256 e = exp_nonpos(_mm256_sub_ps(_mm256_loadu_ps(s + j), mv));
    _mm256_storeu_ps(s + j, e);
    sum = _mm256_add_ps(sum, e);
  }
  float total = hsum(sum);
  for (; j < n; ++j) {
    s[j] = portable::exp_nonpos(s[j] - m);
    total += s[j];
  }
  return total;
}

// NV accumulators (NV * 8 columns) held in registers across the whole tile; NV is a compile-time constant so
// the array is fully register-allocated (a runtime bound made GCC spill it on every position).
template <int NV>
inline void axpy_block(const float* p, const float* vf, int64_t n, int64_t d, __m256 alpha, float* acc) {
  __m256 a[NV];
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) a[i] = _mm256_mul_ps(_mm256_loadu_ps(acc + 8 * i), alpha);
  for (int64_t j = 0; j < n; ++j) {
    const __m256 pj = _mm256_broadcast_ss(p + j);
    const float* v = vf + j * d;
#pragma GCC unroll 8
    for (int i = 0; i < NV; ++i) a[i] = _mm256_fmadd_ps(pj, _mm256_loadu_ps(v + 8 * i), a[i]);
  }
#pragma GCC unroll 8
  for (int i = 0; i < NV; ++i) _mm256_storeu_ps(acc + 8 * i, a[i]);
}

// acc (d floats) = acc * alpha + sum_j p[j] * vf[j]; 64 columns (8 registers) per pass
inline void axpy_rows(const float* p, const float* vf, int64_t n, int64_t d, float alpha, float* acc) {
  const __m256 av = _mm256_set1_ps(alpha);
  int64_t c0 = 0;
  for (; c0 + 64 <= d; c0 += 64) axpy_block<8>(p, vf + c0, n, d, av, acc + c0);
  for (; c0 + 32 <= d; c0 += 32) axpy_block<4>(p, vf + c0, n, d, av, acc + c0);
  for (; c0 < d; c0 += 8) axpy_block<1>(p, vf + c0, n, d, av, acc + c0);
}

}  // namespace avx2
}  // namespace edgekit
