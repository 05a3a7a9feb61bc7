// Standalone checker (no ExecuTorch): runs the kernel core on cases written by the Python reference and compares.
// Built natively or cross-compiled (aarch64 NEON, run under qemu-aarch64-static) by tests/kernels.
//
// File: "EKC1", int64 n_cases, then per case: int64 T, Hq, Hkv, D, S, splits; float32 tol;
//   q f32[T*Hq*D], k i8[S*Hkv*D], v i8[S*Hkv*D], ks f32[S*Hkv], vs f32[S*Hkv], pos i64[T], expected f32[T*Hq*D],
//   value f32[T*Hkv*D], expected_q i8[T*Hkv*D], expected_scale f32[T*Hkv]   (the update op on `value`)
// Prints one line per case and exits 1 if any case is beyond tol (attention: max abs error; update: int8 codes
// may differ by 1 only where x / scale sits within 1e-4 of a rounding tie, scales within 1e-6 relative).
// Every case also runs the fp32-cache path on the dequantized caches (k * ks, v * vs), against the same expected
// output: the reference is defined on the dequantized values, so both paths meet the one tolerance.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "attention_core.h"

namespace {

template <class T>
bool read_vec(FILE* f, std::vector<T>& v, size_t n) {
  v.resize(n);
  return std::fread(v.data(), sizeof(T), n, f) == n;
}

int check_case(FILE* f, int index) {
  int64_t hdr[6];
  float tol = 0.f;
  if (std::fread(hdr, sizeof(int64_t), 6, f) != 6 || std::fread(&tol, sizeof(float), 1, f) != 1) return -1;
  const int64_t T = hdr[0], Hq = hdr[1], Hkv = hdr[2], D = hdr[3], S = hdr[4], splits = hdr[5];
  std::vector<float> q, ks, vs, expected, value, exp_scale;
  std::vector<int8_t> k, v, exp_q;
  std::vector<int64_t> pos;
  bool ok = read_vec(f, q, T * Hq * D) && read_vec(f, k, S * Hkv * D) && read_vec(f, v, S * Hkv * D) &&
            read_vec(f, ks, S * Hkv) && read_vec(f, vs, S * Hkv) && read_vec(f, pos, T) &&
            read_vec(f, expected, T * Hq * D) && read_vec(f, value, T * Hkv * D) && read_vec(f, exp_q, T * Hkv * D) &&
            read_vec(f, exp_scale, T * Hkv);
  if (!ok) return -1;
  const auto max_abs_err = [&](const std::vector<float>& out) {
    double err = 0.0;
    for (size_t i = 0; i < out.size(); ++i) {
      const double e = std::fabs(static_cast<double>(out[i]) - expected[i]);
      err = (e > err || std::isnan(e)) ? (std::isnan(e) ? INFINITY : e) : err;
    }
    return err;
  };
  std::vector<float> out(T * Hq * D, std::nanf(""));
  edgekit::AttentionArgs a{q.data(), k.data(), v.data(), ks.data(), vs.data(), pos.data(), out.data(),
                           T, Hq, Hkv, D, S, splits};
  edgekit::attention(a, 1, edgekit::SerialParallel{});
  const double max_err = max_abs_err(out);
  // the fp32-cache path over the dequantized caches
  std::vector<float> kf(k.size()), vf(v.size()), out_f32(T * Hq * D, std::nanf(""));
  for (size_t i = 0; i < k.size(); ++i) {
    kf[i] = static_cast<float>(k[i]) * ks[i / D];
    vf[i] = static_cast<float>(v[i]) * vs[i / D];
  }
  edgekit::AttentionArgs af = a;
  af.out = out_f32.data();
  edgekit::set_caches(af, kf.data(), vf.data(), nullptr, nullptr, true);
  edgekit::attention(af, 1, edgekit::SerialParallel{});
  const double max_err_f32 = max_abs_err(out_f32);
  // update op: quantize `value` into a scratch cache at positions 0..T-1
  std::vector<int8_t> cache(T * Hkv * D, 0);
  std::vector<float> scale(T * Hkv, 0.f);
  std::vector<int64_t> seq(T);
  for (int64_t t = 0; t < T; ++t) seq[t] = t;
  edgekit::update_int8_cache(value.data(), cache.data(), scale.data(), seq.data(), T, Hkv, D);
  int64_t bad_codes = 0;
  double max_scale_rel = 0.0;
  for (int64_t r = 0; r < T * Hkv; ++r) {
    max_scale_rel = std::fmax(max_scale_rel, std::fabs(scale[r] - exp_scale[r]) / std::fabs(exp_scale[r]));
    for (int64_t c = 0; c < D; ++c) {
      const int64_t i = r * D + c;
      const int diff = std::abs(static_cast<int>(cache[i]) - static_cast<int>(exp_q[i]));
      const float x = value[i] / exp_scale[r];
      const bool near_tie = std::fabs(std::fabs(x - std::floor(x)) - 0.5f) < 1e-4f;
      if (diff > 1 || (diff == 1 && !near_tie)) ++bad_codes;
    }
  }
  const bool pass = max_err <= tol && max_err_f32 <= tol && bad_codes == 0 && max_scale_rel <= 1e-6;
  std::printf("case %d T=%lld Hq=%lld Hkv=%lld D=%lld S=%lld ctx=%lld splits=%lld: attention max_abs_err=%.3g, "
              "fp32 cache %.3g (tol %.3g), update bad_codes=%lld scale_rel=%.3g -> %s\n",
              index, (long long)T, (long long)Hq, (long long)Hkv, (long long)D, (long long)S,
              (long long)(pos[T - 1] + 1), (long long)splits, max_err, max_err_f32, tol, (long long)bad_codes,
              max_scale_rel, pass ? "ok" : "FAIL");
  return pass ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s cases.bin\n", argv[0]);
    return 2;
  }
  FILE* f = std::fopen(argv[1], "rb");
  char magic[4];
  int64_t n = 0;
  if (!f || std::fread(magic, 1, 4, f) != 4 || std::memcmp(magic, "EKC1", 4) != 0 ||
      std::fread(&n, sizeof(n), 1, f) != 1 || n <= 0) {
    std::fprintf(stderr, "cannot read cases from %s\n", argv[1]);
    return 2;
  }
  int64_t passed = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int r = check_case(f, static_cast<int>(i));
    if (r < 0) {
      std::fprintf(stderr, "truncated case %lld\n", (long long)i);
      return 2;
    }
    passed += r;
  }
  std::fclose(f);
  std::printf("isa=%s passed %lld of %lld cases\n", edgekit::isa_name(), (long long)passed, (long long)n);
  return passed == n ? 0 : 1;
}
