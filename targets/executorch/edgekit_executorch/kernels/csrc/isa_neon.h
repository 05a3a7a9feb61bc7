// ARM64 NEON primitives of the int8 attention core. Require d % 8 == 0; the core falls back otherwise.
#pragma once
#include <arm_neon.h>
#include <cstdint>

#include "isa_portable.h"

namespace edgekit {
namespace neon {

inline float32x4_t exp_nonpos(float32x4_t x) {
  x = vmaxq_f32(x, vdupq_n_f32(-87.0f));
  const float32x4_t n = vrndmq_f32(vfmaq_f32(vdupq_n_f32(0.5f), x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmaq_f32(r, n, vdupq_n_f32(2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
  p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
  p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
  p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
  p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), vmulq_f32(p, r), r);
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

inline void cvt_i8_f32(const int8_t* src, float* dst, int64_t d) {
  for (int64_t c = 0; c < d; c += 8) {
    const int16x8_t h = vmovl_s8(vld1_s8(src + c));
    vst1q_f32(dst + c, vcvtq_f32_s32(vmovl_s16(vget_low_s16(h))));
    vst1q_f32(dst + c + 4, vcvtq_f32_s32(vmovl_s16(vget_high_s16(h))));
  }
}

inline void scores(const float* q, const float* kf, int64_t n, int64_t d, float* s) {
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {  // 4 positions per step share each q load
    float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0, a2 = a0, a3 = a0;
    const float* k = kf + j * d;
    for (int64_t c = 0; c < d; c += 4) {
      const float32x4_t qv = vld1q_f32(q + c);
      a0 = vfmaq_f32(a0, qv, vld1q_f32(k + c));
      a1 = vfmaq_f32(a1, qv, vld1q_f32(k + d + c));
      a2 = vfmaq_f32(a2, qv, vld1q_f32(k + 2 * d + c));
      a3 = vfmaq_f32(a3, qv, vld1q_f32(k + 3 * d + c));
    }
    const float32x4_t r = vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3));
    vst1q_f32(s + j, r);
  }
  for (; j < n; ++j) {
    float32x4_t a = vdupq_n_f32(0.f);
    for (int64_t c = 0; c < d; c += 4) a = vfmaq_f32(a, vld1q_f32(q + c), vld1q_f32(kf + j * d + c));
    s[j] = vaddvq_f32(a);
  }
}

inline float scale_max(float* s, const float* scale, int64_t n) {
  float32x4_t mv = vdupq_n_f32(-__builtin_inff());
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float32x4_t x = vmulq_f32(vld1q_f32(s + j), vld1q_f32(scale + j));
    vst1q_f32(s + j, x);
    mv = vmaxq_f32(mv, x);
  }
  float m = vmaxvq_f32(mv);
  for (; j < n; ++j) {
    s[j] *= scale[j];
    m = m > s[j] ? m : s[j];
  }
  return m;
}

inline float exp_shift_sum(float* s, int64_t n, float m) {
  const float32x4_t mv = vdupq_n_f32(m);
  float32x4_t sum = vdupq_n_f32(0.f);
  int64_t j = 0;
  for (; j + 4 <= n; j += 4) {
    const float32x4_t e = exp_nonpos(vsubq_f32(vld1q_f32(s + j), mv));
    vst1q_f32(s + j, e);
    sum = vaddq_f32(sum, e);
  }
  float total = vaddvq_f32(sum);
  for (; j < n; ++j) {
    s[j] = portable::exp_nonpos(s[j] - m);
    total += s[j];
  }
  return total;
}

// NV accumulators (NV * 4 columns) in registers across the tile (compile-time NV: no spills)
template <int NV>
inline void axpy_block(const float* p, const float* vf, int64_t n, int64_t d, float alpha, float* acc) {
  float32x4_t a[NV];
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) a[i] = vmulq_n_f32(vld1q_f32(acc + 4 * i), alpha);
  for (int64_t j = 0; j < n; ++j) {
    const float32x4_t pj = vdupq_n_f32(p[j]);
    const float* v = vf + j * d;
#pragma GCC unroll 16
    for (int i = 0; i < NV; ++i) a[i] = vfmaq_f32(a[i], pj, vld1q_f32(v + 4 * i));
  }
#pragma GCC unroll 16
  for (int i = 0; i < NV; ++i) vst1q_f32(acc + 4 * i, a[i]);
}

// acc (d floats) = acc * alpha + sum_j p[j] * vf[j]; 64 columns (16 registers) per pass
inline void axpy_rows(const float* p, const float* vf, int64_t n, int64_t d, float alpha, float* acc) {
  int64_t c0 = 0;
  for (; c0 + 64 <= d; c0 += 64) axpy_block<16>(p, vf + c0, n, d, alpha, acc + c0);
  for (; c0 + 32 <= d; c0 += 32) axpy_block<8>(p, vf + c0, n, d, alpha, acc + c0);
  for (; c0 < d; c0 += 8) axpy_block<2>(p, vf + c0, n, d, alpha, acc + c0);
}

}  // namespace neon
}  // namespace edgekit
