// ONNX Runtime custom-op library of edgekit's int4 kernels (domain "edgekit", CPU execution provider):
//
//   LinearQ4(X, packed, scales[, rowsum][, bias][, mins]) -> Y attributes K, N, group_size, swiglu (0|1),
//                                                               act_per_group (0|1)
//     the int4 linear of edgekit/kernels/q4.py: int4 weights in 16-row tiles with bf16 or fp16 group scales,
//     symmetric, or with per-group minimums `mins` (the scales' dtype and layout; codes 0..15, w = s * code + m:
//     GGUF's Q4_1 grid); int8 activations per group of group_size, symmetric (act_per_group = 1, the default:
//     MatMulNBits' accuracy level 4) or per token, asymmetric (0: torchao's 8da4w); with swiglu = 1, X is [..., 2K]
//     and the op first computes silu(X[..., :K]) * X[..., K:]. An absent input before a present one is an empty
//     name. rowsum (the zero-point term of per-token activations) is read only with act_per_group = 0: per-group
//     activations are symmetric, so a graph that runs them leaves it out.
//   GatherQ4(packed, scales, indices[, mins]) -> Y             attributes K, N, group_size
//     rows of the same packed table dequantized (codes * scale (+ min)): the token embedding that shares the output
//     layer's int4 weights.
//   LinearQ8(X, packed, scales) -> Y                           attributes K, N, group_size
//   GatherQ8(packed, scales, indices) -> Y                     attributes K, N, group_size
//     the 8-bit linear (int8 activations per group) and row gather on one table in MatMulNBits' 8-bit layout with
//     fp16 scales (linear_q8.h): a GGUF's Q8_0 token embedding that is also its output layer, stored once.
//
// Loaded with SessionOptions.register_custom_ops_library (or genai_config's session_options.custom_ops_library). The
// library compiles against ONNX Runtime's C/C++ API headers only and links nothing of ONNX Runtime: RegisterCustomOps
// receives the API table. Work is spread over the session's intra-op thread pool (KernelContext_ParallelFor).
// The ops are plain OrtCustomOps (not the "lite" API): scales and mins accept two element types, and an optional
// input may be absent before a present one (bias before mins), neither of which the lite API expresses.
#define ORT_API_MANUAL_INIT
#include <onnxruntime_cxx_api.h>

#include <exception>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "linear_q4.h"
#include "linear_q8.h"

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

Ort::Status ok() { return Ort::Status{nullptr}; }

// An input that may be absent (an optional one left out, or given as an empty name).
std::optional<Ort::ConstValue> optional_input(const Ort::KernelContext& ctx, size_t index) {
  if (index >= ctx.GetInputCount()) return std::nullopt;
  Ort::ConstValue v = ctx.GetInput(index);
  if (static_cast<const OrtValue*>(v) == nullptr) return std::nullopt;
  return v;
}

ONNXTensorElementDataType element_type(const Ort::ConstValue& v) {
  return v.GetTensorTypeAndShapeInfo().GetElementType();
}

int64_t element_count(const Ort::ConstValue& v) {
  return static_cast<int64_t>(v.GetTensorTypeAndShapeInfo().GetElementCount());
}

const char* type_name(ONNXTensorElementDataType t) {
  switch (t) {
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT: return "float";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8: return "uint8";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64: return "int64";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16: return "float16";
    case ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16: return "bfloat16";
    default: return "another type";
  }
}

// The scales' dtype (bf16 or fp16) and mins of the same dtype and size: sets fp16 and the mins pointer.
Ort::Status check_scales(const char* op, const Ort::ConstValue& scales, const std::optional<Ort::ConstValue>& mins,
                         bool* fp16, const uint16_t** mins_ptr) {
  const ONNXTensorElementDataType st = element_type(scales);
  if (st != ONNX_TENSOR_ELEMENT_DATA_TYPE_BFLOAT16 && st != ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16) {
    return invalid(std::string(op) + ": scales must be bfloat16 or float16, got " + type_name(st));
  }
  *fp16 = st == ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16;
  *mins_ptr = nullptr;
  if (mins.has_value()) {
    if (element_type(*mins) != st || element_count(*mins) != element_count(scales)) {
      return invalid(std::string(op) + ": mins must have the scales' type (" + type_name(st) + ") and size (" +
                     std::to_string(element_count(scales)) + "), got " + type_name(element_type(*mins)) + " of " +
                     std::to_string(element_count(*mins)));
    }
    *mins_ptr = static_cast<const uint16_t*>(mins->GetTensorRawData());
  }
  return ok();
}

Ort::Status check_type(const char* op, const char* name, const Ort::ConstValue& v, ONNXTensorElementDataType want) {
  if (element_type(v) == want) return ok();
  return invalid(std::string(op) + ": " + name + " must be " + type_name(want) + ", got " + type_name(element_type(v)));
}

// Runs f() and turns an ONNX Runtime exception into a status (exceptions must not cross the C API).
template <class F>
OrtStatusPtr guarded(F&& f) {
  try {
    return f().release();
  } catch (const Ort::Exception& e) {
    return Ort::GetApi().CreateStatus(e.GetOrtErrorCode(), e.what());
  } catch (const std::exception& e) {
    return Ort::GetApi().CreateStatus(ORT_FAIL, e.what());
  }
}

struct LinearQ4Kernel {
  int64_t K, N, G, swiglu, per_group;
  explicit LinearQ4Kernel(const OrtKernelInfo* info)
      : K(attr(info, "K", 0)),
        N(attr(info, "N", 0)),
        G(attr(info, "group_size", 0)),
        swiglu(attr(info, "swiglu", 0)),
        per_group(attr(info, "act_per_group", 1)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return guarded([&] { return Compute(context); }); }

  Ort::Status Compute(OrtKernelContext* context) {
    const char* op = "edgekit.LinearQ4";
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0), packed = ctx.GetInput(1), scales = ctx.GetInput(2);
    const std::optional<Ort::ConstValue> rowsum = optional_input(ctx, 3), bias = optional_input(ctx, 4),
                                         mins = optional_input(ctx, 5);
    for (const auto& [name, v, t] : {std::tuple{"X", &x, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT},
                                     std::tuple{"packed", &packed, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8}}) {
      Ort::Status st = check_type(op, name, *v, t);
      if (!st.IsOK()) return st;
    }
    if (rowsum.has_value()) {
      Ort::Status st = check_type(op, "rowsum", *rowsum, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      if (!st.IsOK()) return st;
    } else if (per_group == 0) {
      return invalid(std::string(op) + ": act_per_group=0 (asymmetric per-token activations) needs the rowsum input");
    }
    bool fp16 = false;
    const uint16_t* mins_ptr = nullptr;
    Ort::Status st = check_scales(op, scales, mins, &fp16, &mins_ptr);
    if (!st.IsOK()) return st;
    st = check_table(op, K, N, G, element_count(packed), element_count(scales),
                     rowsum.has_value() ? element_count(*rowsum) : -1);
    if (!st.IsOK()) return st;
    std::vector<int64_t> shape = x.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t width = swiglu ? 2 * K : K;
    if (shape.empty() || shape.back() != width) {
      return invalid(std::string(op) + ": X's last dimension must be " + std::to_string(width) +
                     (swiglu ? " (2K)" : "") + ", got " +
                     (shape.empty() ? std::string("a scalar") : std::to_string(shape.back())));
    }
    const float* b = nullptr;
    if (bias.has_value()) {
      st = check_type(op, "bias", *bias, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
      if (!st.IsOK()) return st;
      if (element_count(*bias) != N) return invalid(std::string(op) + ": bias needs N=" + std::to_string(N) + " elements");
      b = bias->GetTensorData<float>();
    }
    const int64_t m = element_count(x) / width;
    shape.back() = N;
    float* out = ctx.GetOutput(0, shape).GetTensorMutableData<float>();
    if (m == 0) return ok();
    edgekit::q4::LinearArgs a{x.GetTensorData<float>(), packed.GetTensorData<uint8_t>(),
                              static_cast<const uint16_t*>(scales.GetTensorRawData()),
                              rowsum.has_value() ? rowsum->GetTensorData<float>() : nullptr,
                              b, out, m, K, N, G};
    a.swiglu = swiglu != 0;
    a.act_per_group = per_group != 0;
    a.mins = mins_ptr;
    a.fp16 = fp16;
    edgekit::q4::linear(a, OrtParallel{context});
    return ok();
  }
};

struct GatherQ4Kernel {
  int64_t K, N, G;
  explicit GatherQ4Kernel(const OrtKernelInfo* info)
      : K(attr(info, "K", 0)), N(attr(info, "N", 0)), G(attr(info, "group_size", 0)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return guarded([&] { return Compute(context); }); }

  Ort::Status Compute(OrtKernelContext* context) {
    const char* op = "edgekit.GatherQ4";
    Ort::KernelContext ctx(context);
    const Ort::ConstValue packed = ctx.GetInput(0), scales = ctx.GetInput(1), indices = ctx.GetInput(2);
    const std::optional<Ort::ConstValue> mins = optional_input(ctx, 3);
    Ort::Status st = check_type(op, "packed", packed, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
    if (st.IsOK()) st = check_type(op, "indices", indices, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    bool fp16 = false;
    const uint16_t* mn = nullptr;
    if (st.IsOK()) st = check_scales(op, scales, mins, &fp16, &mn);
    if (st.IsOK()) st = check_table(op, K, N, G, element_count(packed), element_count(scales), -1);
    if (!st.IsOK()) return st;
    std::vector<int64_t> shape = indices.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t count = element_count(indices);
    const int64_t* ids = indices.GetTensorData<int64_t>();
    for (int64_t i = 0; i < count; ++i) {
      if (ids[i] < 0 || ids[i] >= N) {
        return invalid(std::string(op) + ": index " + std::to_string(ids[i]) + " is outside the table's " +
                       std::to_string(N) + " rows");
      }
    }
    shape.push_back(K);
    float* out = ctx.GetOutput(0, shape).GetTensorMutableData<float>();
    const uint8_t* p = packed.GetTensorData<uint8_t>();
    const uint16_t* s = static_cast<const uint16_t*>(scales.GetTensorRawData());
    const int64_t KB = K / G, V = G / 8, T = edgekit::q4::kTile, offset = mn == nullptr ? 8 : 0;
    for (int64_t i = 0; i < count; ++i) {
      const int64_t t = ids[i] / T, j = ids[i] % T;
      float* row = out + i * K;
      for (int64_t b = 0; b < KB; ++b) {
        const int64_t at = (t * KB + b) * T + j;
        const float sc = edgekit::q4::scale_to_f32(s[at], fp16);
        const float mv = mn == nullptr ? 0.f : edgekit::q4::scale_to_f32(mn[at], fp16);
        for (int64_t v = 0; v < V; ++v) {
          const uint8_t* quad = p + (((t * KB + b) * V + v) * 64) + 4 * j;
          for (int64_t c = 0; c < 4; ++c) {  // w = code * s (+ m): the product rounded first, as the reference does
            row[b * G + 8 * v + c] = static_cast<float>((quad[c] & 0x0F) - offset) * sc + mv;
            row[b * G + 8 * v + 4 + c] = static_cast<float>((quad[c] >> 4) - offset) * sc + mv;
          }
        }
      }
    }
    return ok();
  }
};

// The 8-bit table of N rows, K inputs, groups of G (linear_q8.h): attribute and size checks.
Ort::Status check_table8(const char* op, int64_t K, int64_t N, int64_t G, const Ort::ConstValue& packed,
                         const Ort::ConstValue& scales) {
  if (K <= 0 || N <= 0 || G <= 0 || G % 4 != 0 || G > 256 || K % G != 0) {
    return invalid(std::string(op) + ": attributes need K > 0, N > 0 and group_size in 4..256, a multiple of 4 "
                   "dividing K; got K=" + std::to_string(K) + " N=" + std::to_string(N) + " group_size=" +
                   std::to_string(G));
  }
  Ort::Status st = check_type(op, "packed", packed, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8);
  if (st.IsOK()) st = check_type(op, "scales", scales, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT16);
  if (!st.IsOK()) return st;
  if (element_count(packed) != N * K || element_count(scales) != N * (K / G)) {
    return invalid(std::string(op) + ": packed / scales hold " + std::to_string(element_count(packed)) + " / " +
                   std::to_string(element_count(scales)) + " elements; N=" + std::to_string(N) + " K=" +
                   std::to_string(K) + " group_size=" + std::to_string(G) + " needs " + std::to_string(N * K) +
                   " / " + std::to_string(N * (K / G)));
  }
  return ok();
}

struct LinearQ8Kernel {
  int64_t K, N, G;
  explicit LinearQ8Kernel(const OrtKernelInfo* info)
      : K(attr(info, "K", 0)), N(attr(info, "N", 0)), G(attr(info, "group_size", 0)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return guarded([&] { return Compute(context); }); }

  Ort::Status Compute(OrtKernelContext* context) {
    const char* op = "edgekit.LinearQ8";
    Ort::KernelContext ctx(context);
    const Ort::ConstValue x = ctx.GetInput(0), packed = ctx.GetInput(1), scales = ctx.GetInput(2);
    Ort::Status st = check_type(op, "X", x, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT);
    if (st.IsOK()) st = check_table8(op, K, N, G, packed, scales);
    if (!st.IsOK()) return st;
    std::vector<int64_t> shape = x.GetTensorTypeAndShapeInfo().GetShape();
    if (shape.empty() || shape.back() != K) {
      return invalid(std::string(op) + ": X's last dimension must be K=" + std::to_string(K) + ", got " +
                     (shape.empty() ? std::string("a scalar") : std::to_string(shape.back())));
    }
    const int64_t m = element_count(x) / K;
    shape.back() = N;
    float* out = ctx.GetOutput(0, shape).GetTensorMutableData<float>();
    if (m == 0) return ok();
    edgekit::q8::LinearArgs a{x.GetTensorData<float>(), packed.GetTensorData<uint8_t>(),
                              static_cast<const uint16_t*>(scales.GetTensorRawData()), out, m, K, N, G};
    edgekit::q8::linear(a, OrtParallel{context});
    return ok();
  }
};

struct GatherQ8Kernel {
  int64_t K, N, G;
  explicit GatherQ8Kernel(const OrtKernelInfo* info)
      : K(attr(info, "K", 0)), N(attr(info, "N", 0)), G(attr(info, "group_size", 0)) {}

  OrtStatusPtr ComputeV2(OrtKernelContext* context) { return guarded([&] { return Compute(context); }); }

  Ort::Status Compute(OrtKernelContext* context) {
    const char* op = "edgekit.GatherQ8";
    Ort::KernelContext ctx(context);
    const Ort::ConstValue packed = ctx.GetInput(0), scales = ctx.GetInput(1), indices = ctx.GetInput(2);
    Ort::Status st = check_table8(op, K, N, G, packed, scales);
    if (st.IsOK()) st = check_type(op, "indices", indices, ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64);
    if (!st.IsOK()) return st;
    std::vector<int64_t> shape = indices.GetTensorTypeAndShapeInfo().GetShape();
    const int64_t count = element_count(indices);
    const int64_t* ids = indices.GetTensorData<int64_t>();
    for (int64_t i = 0; i < count; ++i) {
      if (ids[i] < 0 || ids[i] >= N) {
        return invalid(std::string(op) + ": index " + std::to_string(ids[i]) + " is outside the table's " +
                       std::to_string(N) + " rows");
      }
    }
    shape.push_back(K);
    float* out = ctx.GetOutput(0, shape).GetTensorMutableData<float>();
    edgekit::q8::gather(packed.GetTensorData<uint8_t>(), static_cast<const uint16_t*>(scales.GetTensorRawData()), ids,
                        count, K, G, out);
    return ok();
  }
};

// Inputs whose element type is checked in Compute (bf16 or fp16) are declared UNDEFINED: any tensor type.
struct LinearQ4Op : Ort::CustomOpBase<LinearQ4Op, LinearQ4Kernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    *kernel = new LinearQ4Kernel(info);
    return nullptr;
  }
  const char* GetName() const { return "LinearQ4"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 6; }  // X, packed, scales, rowsum?, bias?, mins?
  ONNXTensorElementDataType GetInputType(size_t i) const {
    static const ONNXTensorElementDataType types[] = {
        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED};
    return types[i];
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i >= 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

struct GatherQ4Op : Ort::CustomOpBase<GatherQ4Op, GatherQ4Kernel, true> {
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    *kernel = new GatherQ4Kernel(info);
    return nullptr;
  }
  const char* GetName() const { return "GatherQ4"; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 4; }  // packed, scales, indices, mins?
  ONNXTensorElementDataType GetInputType(size_t i) const {
    static const ONNXTensorElementDataType types[] = {
        ONNX_TENSOR_ELEMENT_DATA_TYPE_UINT8, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED,
        ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64, ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED};
    return types[i];
  }
  OrtCustomOpInputOutputCharacteristic GetInputCharacteristic(size_t i) const {
    return i == 3 ? INPUT_OUTPUT_OPTIONAL : INPUT_OUTPUT_REQUIRED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
};

// X, packed, scales / packed, scales, indices: every input required, types checked in Compute (clear messages).
template <class Kernel>
struct Q8Op : Ort::CustomOpBase<Q8Op<Kernel>, Kernel, true> {
  const char* name;
  bool gather;
  Q8Op(const char* n, bool g) : name(n), gather(g) {}
  OrtStatusPtr CreateKernelV2(const OrtApi&, const OrtKernelInfo* info, void** kernel) const {
    *kernel = new Kernel(info);
    return nullptr;
  }
  const char* GetName() const { return name; }
  const char* GetExecutionProviderType() const { return "CPUExecutionProvider"; }
  size_t GetInputTypeCount() const { return 3; }
  ONNXTensorElementDataType GetInputType(size_t i) const {
    if (gather) return i == 2 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_INT64 : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
    return i == 0 ? ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT : ONNX_TENSOR_ELEMENT_DATA_TYPE_UNDEFINED;
  }
  size_t GetOutputTypeCount() const { return 1; }
  ONNXTensorElementDataType GetOutputType(size_t) const { return ONNX_TENSOR_ELEMENT_DATA_TYPE_FLOAT; }
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
  static LinearQ4Op linear_op;
  static GatherQ4Op gather_op;
  static Q8Op<LinearQ8Kernel> linear8_op("LinearQ8", false);
  static Q8Op<GatherQ8Kernel> gather8_op("GatherQ8", true);
  try {
    std::call_once(once, [] {
      domain = new Ort::CustomOpDomain("edgekit");
      for (OrtCustomOp* op : {static_cast<OrtCustomOp*>(&linear_op), static_cast<OrtCustomOp*>(&gather_op),
                              static_cast<OrtCustomOp*>(&linear8_op), static_cast<OrtCustomOp*>(&gather8_op)}) {
        // The headers stamp each op with their own API version (21); an older ORT rejects an op newer than itself,
        // so declare the version asked for above. No OrtCustomOp member added after it is used.
        op->version = kApiVersion;
        domain->Add(op);
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

// Which path the 8-bit linear takes for groups of 32 (GGUF's Q8_0): "avx2" or "portable".
__attribute__((visibility("default"))) const char* edgekit_ort_q8_isa() { return edgekit::q8::isa_name(32); }

}  // extern "C"
