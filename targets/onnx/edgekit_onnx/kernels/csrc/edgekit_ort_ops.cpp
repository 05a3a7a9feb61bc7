// ONNX Runtime custom-op library of edgekit's int4 kernels (domain "edgekit", CPU execution provider):
//
//   LinearQ4(X, packed, scales, rowsum[, bias]) -> Y   attributes K, N, group_size, swiglu (0|1), act_per_group (0|1)
//     the int4 linear of edgekit/kernels/q4.py: int4 weights in 16-row tiles with bf16 group scales, int8 activations
//     per group of group_size, symmetric (act_per_group = 1, the default: MatMulNBits' accuracy level 4) or per token,
//     asymmetric (0: torchao's 8da4w); with swiglu = 1, X is [..., 2K] and the op first computes
//     silu(X[..., :K]) * X[..., K:].
//   GatherQ4(packed, scales, indices) -> Y                 attributes K, N, group_size
//     rows of the same packed table dequantized (codes * scale): the token embedding that shares the output layer's
//     int4 weights.
//
// Loaded with SessionOptions.register_custom_ops_library (or genai_config's session_options.custom_ops_library). The
// library compiles against ONNX Runtime's C/C++ API headers only and links nothing of ONNX Runtime: RegisterCustomOps
// receives the API table. Work is spread over the session's intra-op thread pool (KernelContext_ParallelFor).
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>
#include <onnxruntime_lite_custom_op.h>

#include <mutex>
#include <string>
#include <vector>

#include "linear_q4.h"

namespace {

// The ONNX Runtime API version asked for: 1.18 is the oldest release the rest of an edgekit graph runs on
// (GroupQueryAttention with fused rotary, MatMulNBits accuracy level 4) and has everything used here.
constexpr uint32_t kApiVersion = 18;

// parallel(n, f) over the session's intra-op pool: [0, n) cut into at most 64 chunks, f(begin, end) per chunk.
struct OrtParallel {
  OrtKernelContext* ctx;
  template <class F>
  void operator()(int64_t n, F&& f) const {
    if (n <= 0) return;
    using Fn = typename std::remove_reference<F>::type;
    struct Job {
      Fn* f;
      int64_t n, chunks;
    };
    Job job{&f, n, std::min<int64_t>(n, 64)};
    auto run = [](void* p, size_t i) {
      auto* j = static_cast<Job*>(p);
      const int64_t b = j->n * static_cast<int64_t>(i) / j->chunks;
      const int64_t e = j->n * (static_cast<int64_t>(i) + 1) / j->chunks;
      if (b < e) (*j->f)(b, e);
    };
    Ort::ThrowOnError(Ort::GetApi().KernelContext_ParallelFor(ctx, run, static_cast<size_t>(job.chunks), 0, &job));
  }
};

int64_t attr(const OrtKernelInfo* info, const char* name, int64_t fallback) {
  int64_t v = fallback;
  if (OrtStatus* st = Ort::GetApi().KernelInfoGetAttribute_int64(info, name, &v)) {
    Ort::GetApi().ReleaseStatus(st);
    return fallback;
  }
  return v;
}

Ort::Status invalid(const std::string& msg) { return Ort::Status(msg.c_str(), ORT_INVALID_ARGUMENT); }

// The packed table of N rows, K inputs, groups of G: sizes the inputs must have.
Ort::Status check_table(const char* op, int64_t K, int64_t N, int64_t G, int64_t packed, int64_t scales,
                        int64_t rowsum) {
  if (K <= 0 || N <= 0 || G <= 0 || G % 8 != 0 || G > 256 || K % G != 0) {
    return invalid(std::string(op) + ": attributes need K > 0, N > 0 and group_size in 8..256, a multiple of 8 "
                   "dividing K; got K=" + std::to_string(K) + " N=" + std::to_string(N) + " group_size=" +
                   std::to_string(G));
  }
  const int64_t npad = edgekit::q4::padded_rows(N);
  if (packed != npad * K / 2 || scales != npad * (K / G) || (rowsum >= 0 && rowsum != npad)) {
    return invalid(std::string(op) + ": packed / scales / rowsum hold " + std::to_string(packed) + " / " +
                   std::to_string(scales) + " / " + std::to_string(rowsum) + " elements; the tiled layout of N=" +
                   std::to_string(N) + " K=" + std::to_string(K) + " needs " + std::to_string(npad * K / 2) + " / " +
                   std::to_string(npad * (K / G)) + " / " + std::to_string(npad));
  }
  return Ort::Status{nullptr};
}

struct LinearQ4 {
  int64_t K, N, G, swiglu, per_group;
  LinearQ4(const OrtApi*, const OrtKernelInfo* info)
      : K(attr(info, "K", 0)),
        N(attr(info, "N", 0)),
        G(attr(info, "group_size", 0)),
        swiglu(attr(info, "swiglu", 0)),
        per_group(attr(info, "act_per_group", 1)) {}

  Ort::Status Compute(OrtKernelContext* ctx, const Ort::Custom::Tensor<float>& x,
                      const Ort::Custom::Tensor<uint8_t>& packed, const Ort::Custom::Tensor<Ort::BFloat16_t>& scales,
                      const Ort::Custom::Tensor<float>& rowsum, std::optional<const Ort::Custom::Tensor<float>*> bias,
                      Ort::Custom::Tensor<float>& y) {
    Ort::Status st = check_table("edgekit.LinearQ4", K, N, G, packed.NumberOfElement(), scales.NumberOfElement(),
                                 rowsum.NumberOfElement());
    if (!st.IsOK()) return st;
    std::vector<int64_t> shape = x.Shape();
    const int64_t width = swiglu ? 2 * K : K;
    if (shape.empty() || shape.back() != width) {
      return invalid("edgekit.LinearQ4: X's last dimension must be " + std::to_string(width) + (swiglu ? " (2K)" : "") +
                     ", got " + (shape.empty() ? std::string("a scalar") : std::to_string(shape.back())));
    }
    const float* b = bias.has_value() && *bias != nullptr ? (*bias)->Data() : nullptr;
    if (b != nullptr && (*bias)->NumberOfElement() != N) {
      return invalid("edgekit.LinearQ4: bias needs N=" + std::to_string(N) + " elements");
    }
    const int64_t m = x.NumberOfElement() / width;
    shape.back() = N;
    float* out = y.Allocate(shape);
    if (m == 0) return Ort::Status{nullptr};
    edgekit::q4::LinearArgs a{x.Data(), packed.Data(), reinterpret_cast<const uint16_t*>(scales.Data()), rowsum.Data(),
                              b, out, m, K, N, G};
    a.swiglu = swiglu != 0;
    a.act_per_group = per_group != 0;
    edgekit::q4::linear(a, OrtParallel{ctx});
    return Ort::Status{nullptr};
  }
};

struct GatherQ4 {
  int64_t K, N, G;
  GatherQ4(const OrtApi*, const OrtKernelInfo* info)
      : K(attr(info, "K", 0)), N(attr(info, "N", 0)), G(attr(info, "group_size", 0)) {}

  Ort::Status Compute(const Ort::Custom::Tensor<uint8_t>& packed, const Ort::Custom::Tensor<Ort::BFloat16_t>& scales,
                      const Ort::Custom::Tensor<int64_t>& indices, Ort::Custom::Tensor<float>& y) {
    Ort::Status st = check_table("edgekit.GatherQ4", K, N, G, packed.NumberOfElement(), scales.NumberOfElement(), -1);
    if (!st.IsOK()) return st;
    std::vector<int64_t> shape = indices.Shape();
    const int64_t count = indices.NumberOfElement();
    const int64_t* ids = indices.Data();
    for (int64_t i = 0; i < count; ++i) {
      if (ids[i] < 0 || ids[i] >= N) {
        return invalid("edgekit.GatherQ4: index " + std::to_string(ids[i]) + " is outside the table's " +
                       std::to_string(N) + " rows");
      }
    }
    shape.push_back(K);
    float* out = y.Allocate(shape);
    const uint8_t* p = packed.Data();
    const uint16_t* s = reinterpret_cast<const uint16_t*>(scales.Data());
    const int64_t KB = K / G, V = G / 8, T = edgekit::q4::kTile;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t t = ids[i] / T, j = ids[i] % T;
      float* row = out + i * K;
      for (int64_t b = 0; b < KB; ++b) {
        const float sc = edgekit::q4::bf16_to_f32(s[(t * KB + b) * T + j]);
        for (int64_t v = 0; v < V; ++v) {
          const uint8_t* quad = p + (((t * KB + b) * V + v) * 64) + 4 * j;
          for (int64_t c = 0; c < 4; ++c) {
            row[b * G + 8 * v + c] = static_cast<float>((quad[c] & 0x0F) - 8) * sc;
            row[b * G + 8 * v + 4 + c] = static_cast<float>((quad[c] >> 4) - 8) * sc;
          }
        }
      }
    }
    return Ort::Status{nullptr};
  }
};

}  // namespace

extern "C" {

// ONNX Runtime calls this when the library is registered with a session's options.
__attribute__((visibility("default"))) OrtStatus* ORT_API_CALL RegisterCustomOps(OrtSessionOptions* options,
                                                                                const OrtApiBase* api_base) {
  const OrtApi* api = api_base->GetApi(kApiVersion);
  if (api == nullptr) {  // an ONNX Runtime older than 1.18: report it through the first API version, which all have
    const OrtApi* v1 = api_base->GetApi(1);
    const std::string msg = std::string("edgekit's kernel library needs ONNX Runtime >= 1.18 (API ") +
                            std::to_string(kApiVersion) + "); this is " + api_base->GetVersionString();
    return v1 != nullptr ? v1->CreateStatus(ORT_FAIL, msg.c_str()) : nullptr;
  }
  Ort::InitApi(api);
  static std::once_flag once;
  static Ort::CustomOpDomain* domain = nullptr;  // lives as long as the process: sessions keep pointers into it
  static std::vector<std::unique_ptr<Ort::Custom::OrtLiteCustomOp>> ops;
  try {
    std::call_once(once, [] {
      domain = new Ort::CustomOpDomain("edgekit");
      ops.emplace_back(Ort::Custom::CreateLiteCustomOp<LinearQ4>("LinearQ4", "CPUExecutionProvider"));
      ops.emplace_back(Ort::Custom::CreateLiteCustomOp<GatherQ4>("GatherQ4", "CPUExecutionProvider"));
      for (auto& op : ops) {
        // The headers stamp each op with their own API version (21); an older ORT rejects an op newer than itself,
        // so declare the version asked for above. No OrtCustomOp member added after it is used.
        op->version = kApiVersion;
        domain->Add(op.get());
      }
    });
    Ort::UnownedSessionOptions(options).Add(*domain);
  } catch (const Ort::Exception& e) {
    return api->CreateStatus(e.GetOrtErrorCode(), e.what());
  }
  return nullptr;
}

// For tests and benchmarks: which SIMD path the int4 linear was built with.
__attribute__((visibility("default"))) const char* edgekit_ort_q4_isa() { return edgekit::q4::isa_name(); }

}  // extern "C"
