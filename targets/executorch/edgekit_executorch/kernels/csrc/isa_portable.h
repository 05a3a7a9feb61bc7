// Portable primitives of the int8 attention core: plain loops that -O3 auto-vectorizes (no intrinsics).
#pragma once
#include <cstdint>

namespace edgekit {
namespace portable {

// exp(x) for x <= 0 (scores minus their running max): Cody-Waite range reduction + degree-6 polynomial,
// relative error < 2e-7; written branch-free so the compiler can vectorize the loops that call it.
inline float exp_nonpos(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float n = __builtin_floorf(x * 1.44269504088896341f + 0.5f);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  union { int32_t i; float f; } bits;
  bits.i = (static_cast<int32_t>(n) + 127) << 23;
  return p * bits.f;
}

inline void cvt_i8_f32(const int8_t* src, float* dst, int64_t d) {
  for (int64_t c = 0; c < d; ++c) dst[c] = static_cast<float>(src[c]);
}

// s[j] = dot(q, kf[j*d .. j*d+d)) for j < n
inline void scores(const float* q, const float* kf, int64_t n, int64_t d, float* s) {
  for (int64_t j = 0; j < n; ++j) {
    const float* k = kf + j * d;
    float acc = 0.f;
    for (int64_t c = 0; c < d; ++c) acc += q[c] * k[c];
    s[j] = acc;
  }
}

// s[j] *= scale[j]; returns max_j s[j] (8 independent maxima so the loop is not one serial dependency chain)
inline float scale_max(float* s, const float* scale, int64_t n) {
  float mx[8];
  for (int i = 0; i < 8; ++i) mx[i] = -__builtin_inff();
  int64_t j = 0;
  for (; j + 8 <= n; j += 8) {
    for (int i = 0; i < 8; ++i) {
      s[j + i] *= scale[j + i];
      mx[i] = mx[i] > s[j + i] ? mx[i] : s[j + i];
    }
  }
  for (; j < n; ++j) {
    s[j] *= scale[j];
    mx[0] = mx[0] > s[j] ? mx[0] : s[j];
  }
  float m = mx[0];
  for (int i = 1; i < 8; ++i) m = m > mx[i] ? m : mx[i];
  return m;
}

// s[j] = exp(s[j] - m); returns the sum
inline float exp_shift_sum(float* s, int64_t n, float m) {
  float sum = 0.f;
  for (int64_t j = 0; j < n; ++j) {
    s[j] = exp_nonpos(s[j] - m);
    sum += s[j];
  }
  return sum;
}

// acc = acc * alpha + sum_j p[j] * vf[j*d ..]
inline void axpy_rows(const float* p, const float* vf, int64_t n, int64_t d, float alpha, float* acc) {
  for (int64_t c = 0; c < d; ++c) acc[c] *= alpha;
  for (int64_t j = 0; j < n; ++j) {
    const float pj = p[j];
    const float* v = vf + j * d;
    for (int64_t c = 0; c < d; ++c) acc[c] += pj * v[c];
  }
}

}  // namespace portable
}  // namespace edgekit
