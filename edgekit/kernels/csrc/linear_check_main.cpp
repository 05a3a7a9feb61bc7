// Standalone checker of the int4 linear (no runtime): for each case it builds random codes, scales, activations
// (a fixed LCG, so every build sees the same numbers), runs the compiled SIMD path and the scalar loops that define
// it (tile_portable, itself compared with the PyTorch references by tests/kernels/test_linear_q4.py and
// tests/onnx/test_ort_kernels.py) and compares, with per-token (torchao 8da4w) and per-group (MatMulNBits level 4)
// activations, and every weight form: symmetric or with per-group minimums (GGUF Q4_1), bf16 or fp16 scales.
// Built natively (AVX-512 VNNI, AVX2, portable) and cross-compiled for aarch64 (NEON dot products, run under qemu).
//
// Usage: linear_check [--corrupt]   (--corrupt flips one packed nibble for the SIMD run only: the check must fail)
// Prints one line per case and "isa=<name> passed P of N cases"; exit 1 if any case is beyond tolerance.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <vector>

#include "linear_q4.h"

namespace {

struct SerialParallel {
  template <class F>
  void operator()(int64_t n, F&& f) const {
    if (n > 0) f(0, n);
  }
};

struct Lcg {
  uint64_t s;
  uint32_t next() {
    s = s * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(s >> 33);
  }
  float uniform() { return static_cast<float>(next()) / 2147483648.f - 1.f; }  // [-1, 1)
};

// f (a normal value of fp16's range) as bf16 or fp16 bits, truncated: any bit pattern of the dtype will do here
uint16_t to_bits(float f, bool fp16) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (!fp16) return static_cast<uint16_t>(u >> 16);
  const uint32_t exp = (u >> 23) & 0xFF;
  return static_cast<uint16_t>(((u >> 16) & 0x8000) | ((exp - 112) << 10) | ((u >> 13) & 0x3FF));
}

// weight forms: symmetric bf16 (the original), minimums bf16, minimums fp16, symmetric fp16
constexpr const char* kForms[] = {"sym bf16", "mins bf16", "mins fp16", "sym fp16"};

int check(int index, int64_t M, int64_t K, int64_t N, int64_t G, bool fused, bool per_group, int form,
          bool corrupt) {
  using namespace edgekit::q4;
  Lcg rng{static_cast<uint64_t>(index) * 7919 + 1};
  const int64_t npad = padded_rows(N), KB = K / G;
  std::vector<uint8_t> packed(static_cast<size_t>(npad * K / 2));
  for (auto& b : packed) b = static_cast<uint8_t>(rng.next() & 0xFF);
  const bool with_mins = form == 1 || form == 2, fp16 = form == 2 || form == 3;
  std::vector<uint16_t> scales(static_cast<size_t>(npad * KB)), mins(with_mins ? scales.size() : 0);
  std::vector<float> sf(scales.size());
  for (size_t i = 0; i < scales.size(); ++i) {
    sf[i] = 0.01f + 0.05f * (rng.uniform() + 1.f);
    scales[i] = to_bits(sf[i], fp16);
  }
  for (size_t i = 0; i < mins.size(); ++i) mins[i] = to_bits(-8.f * sf[i] * (1.f + 0.5f * rng.uniform()), fp16);
  std::vector<float> rowsum(static_cast<size_t>(npad)), bias(static_cast<size_t>(N)), x;
  for (auto& r : rowsum) r = rng.uniform();
  for (auto& b : bias) b = rng.uniform();
  const int64_t hd = 16, hkv = 1, hq = N / hd - 2 * hkv;
  const bool rope = fused && N % hd == 0 && hq > 0;
  x.resize(static_cast<size_t>(M * K * (fused && !rope ? 2 : 1)));
  for (auto& v : x) v = 3.f * rng.uniform();
  std::vector<float> norm(static_cast<size_t>(K)), residual(static_cast<size_t>(M * N)), cs(M * hd), sn(M * hd),
      qn(hd), kn(hd);
  for (auto& v : norm) v = 0.5f + rng.uniform();
  for (auto& v : residual) v = rng.uniform();
  for (auto& v : cs) v = rng.uniform();
  for (auto& v : sn) v = rng.uniform();
  for (auto& v : qn) v = 0.5f + rng.uniform();
  for (auto& v : kn) v = 0.5f + rng.uniform();

  std::vector<float> want(static_cast<size_t>(M * N)), got(static_cast<size_t>(M * N), NAN);
  LinearArgs a{x.data(), packed.data(), scales.data(), rowsum.data(), bias.data(), want.data(), M, K, N, G};
  a.act_per_group = per_group;
  a.mins = with_mins ? mins.data() : nullptr;
  a.fp16 = fp16;
  if (fused) {
    a.norm_w = norm.data();
    a.norm_eps = 1e-6f;
    if (rope) {
      a.cos = cs.data();
      a.sin = sn.data();
      a.q_norm_w = qn.data();
      a.k_norm_w = kn.data();
      a.q_heads = hq;
      a.kv_heads = hkv;
      a.head_dim = hd;
    } else {
      a.swiglu = true;
      a.residual = residual.data();
    }
  }
  linear(a, SerialParallel{}, /*portable=*/true);
  if (corrupt) packed[packed.size() / 3] ^= 0x77;
  if (corrupt && with_mins) mins[mins.size() / 2] ^= 0x4000;  // a minimum's exponent: the min term must be read
  a.y = got.data();
  linear(a, SerialParallel{}, /*portable=*/false);
  double err = 0.0, scale = 1.0;
  for (size_t i = 0; i < want.size(); ++i) {
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    err = std::isnan(e) ? INFINITY : std::fmax(err, e);
    scale = std::fmax(scale, std::fabs(want[i]));
  }
  const double tol = 1e-5 * scale;  // the same integer dots; only the fp32 order of the per-group sums differs
  const bool pass = err <= tol;
  std::printf("case %d M=%lld K=%lld N=%lld G=%lld %s, %s, %s activations: max_abs_err=%.3g (tol %.3g) -> %s\n",
              index, (long long)M, (long long)K, (long long)N, (long long)G,
              fused ? (rope ? "norm+qkv rope" : "swiglu+norm+residual") : "plain", kForms[form],
              per_group ? "per-group" : "per-token", err, tol, pass ? "ok" : "FAIL");
  return pass ? 1 : 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bool corrupt = argc > 1 && std::strcmp(argv[1], "--corrupt") == 0;
  // (M, K, N, G, fused): decode and prefill token counts (1, the 8-token blocks and their tails), every group size,
  // N not a multiple of the 16-row tile, the fused prologues and epilogues
  const int64_t cases[][5] = {{1, 128, 16, 32, 0},  {1, 256, 40, 64, 0},   {3, 512, 96, 128, 0}, {8, 384, 48, 128, 0},
                              {17, 256, 33, 32, 0}, {1, 256, 96, 32, 1},   {9, 512, 80, 64, 1},  {1, 192, 100, 64, 1},
                              {5, 128, 70, 32, 1},  {64, 896, 128, 128, 0}};
  const int cases_n = sizeof(cases) / sizeof(cases[0]);
  // every case with per-token, then with per-group activations, each in every weight form
  const int n = 2 * 4 * cases_n;
  int passed = 0;
  for (int i = 0; i < n; ++i) {
    const auto& c = cases[i % cases_n];
    passed += check(i, c[0], c[1], c[2], c[3], c[4] != 0, (i / cases_n) % 2 == 1, i / (2 * cases_n), corrupt);
  }
  std::printf("isa=%s passed %d of %d cases\n", edgekit::q4::isa_name(), passed, n);
  return passed == n ? 0 : 1;
}
