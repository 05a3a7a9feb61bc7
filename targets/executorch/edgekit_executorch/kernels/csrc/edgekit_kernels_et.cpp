// ExecuTorch wrapper of the edgekit kernels: registers edgekit::attention.out, edgekit::qkv_cache_attention.out,
// edgekit::update_int8_cache.out, the int4 linears (linear_q4.out and its fused forms) and the Q8_0 table's head and
// lookup (linear_q8.out, embedding_q8.out: one constant for a tied embedding) with the runtime
// (EXECUTORCH_LIBRARY) and exposes plain C entry points for ctypes (tests, benchmarks).
// Multi-threaded through ExecuTorch's thread pool (parallel_for) when built with ET_USE_THREADPOOL.
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <optional>

#include "attention_core.h"
#include "guided_split.h"
#include "linear_q4.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

// parallel(n, f) on ExecuTorch's pool. Its parallel_for cuts [0, n) into one fixed chunk per thread, so a thread
// that is slowed (a busy core on a shared machine, a little core of a big.LITTLE phone, the caller's own work) holds
// the others at the join. Here every thread of the pool drains one GuidedSplit instead (guided_split.h: long chunks
// first, single tiles last).
struct PoolParallel {
  template <class F>
  void operator()(int64_t n, F&& f) const {
    if (n <= 0) return;
    const int64_t threads = executorch::extension::get_thread_count();
    if (threads <= 1 || n < 2 * threads) {
      executorch::extension::parallel_for(0, n, 1, [&](int64_t b, int64_t e) { f(b, e); });
      return;
    }
    edgekit::GuidedSplit split(n, threads);
    executorch::extension::parallel_for(0, threads, 1, [&](int64_t, int64_t) { split.drain(f); });
  }
};

int64_t pool_threads() { return executorch::extension::get_thread_count(); }

// One ETDump event per call, named after the op (what Inspector / session.op_profile() report). ExecuTorch's own
// wrapper only records kernels built with its profiling macros, so without this the time lands in OPERATOR_CALL.
class OpEvent {
 public:
  OpEvent(KernelRuntimeContext& ctx, const char* name) : tracer_(ctx.internal_event_tracer()) {
    if (tracer_ != nullptr && tracer_->event_tracer_profiling_level() >
                                  executorch::runtime::EventTracerProfilingLevel::kProfileMethodOnly) {
      entry_ = tracer_->start_profiling(name);
    } else {
      tracer_ = nullptr;
    }
  }
  ~OpEvent() {
    if (tracer_ != nullptr) tracer_->end_profiling(entry_);
  }
  OpEvent(const OpEvent&) = delete;
  OpEvent& operator=(const OpEvent&) = delete;

 private:
  executorch::runtime::EventTracer* tracer_;
  executorch::runtime::EventTracerEntry entry_{};
};

// int8 caches with f32 scales, or f32 caches with no scales (both None)
bool attention_args_ok(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& ks,
                       const std::optional<Tensor>& vs, const Tensor& pos) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || pos.dim() != 1) return false;
  if (q.scalar_type() != ScalarType::Float || pos.scalar_type() != ScalarType::Long ||
      k.scalar_type() != v.scalar_type()) {
    return false;
  }
  const bool f32 = k.scalar_type() == ScalarType::Float;
  if (!f32 && k.scalar_type() != ScalarType::Char) return false;
  if (f32 && (ks.has_value() || vs.has_value())) return false;
  if (!f32 && (!ks.has_value() || !vs.has_value() || ks->scalar_type() != ScalarType::Float ||
               vs->scalar_type() != ScalarType::Float)) {
    return false;
  }
  if (q.size(0) != 1 || k.size(0) != 1 || q.size(3) != k.size(3) || k.size(2) == 0 || q.size(2) % k.size(2) != 0) {
    return false;
  }
  for (int i = 0; i < 4; ++i) {
    if (k.size(i) != v.size(i)) return false;
  }
  if (!f32 && (ks->numel() != k.size(1) * k.size(2) || vs->numel() != k.size(1) * k.size(2))) return false;
  if (pos.size(0) != q.size(1)) return false;
  const int64_t* p = pos.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < pos.size(0); ++t) {
    if (p[t] < 0 || p[t] >= k.size(1)) return false;
  }
  return true;
}

Tensor& attention_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k_cache, const Tensor& v_cache,
                      const std::optional<Tensor>& k_scale, const std::optional<Tensor>& v_scale,
                      const Tensor& input_pos, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, attention_args_ok(q, k_cache, v_cache, k_scale, v_scale, input_pos), InvalidArgument,
                      out, "edgekit::attention: expects q f32 [1,T,Hq,D], int8 caches [1,S,Hkv,D] with f32 scales "
                      "[1,S,Hkv] or f32 caches without scales, int64 input_pos [T] within [0,S)");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, out.scalar_type() == ScalarType::Float, InvalidArgument, out);
  OpEvent event(ctx, "edgekit::attention.out");
  edgekit::AttentionArgs a;
  a.q = q.const_data_ptr<float>();
  const bool f32 = k_cache.scalar_type() == ScalarType::Float;
  edgekit::set_caches(a, k_cache.const_data_ptr(), v_cache.const_data_ptr(),
                      f32 ? nullptr : k_scale->const_data_ptr<float>(), f32 ? nullptr : v_scale->const_data_ptr<float>(),
                      f32);
  a.pos = input_pos.const_data_ptr<int64_t>();
  a.out = out.mutable_data_ptr<float>();
  a.T = q.size(1);
  a.Hq = q.size(2);
  a.D = q.size(3);
  a.S = k_cache.size(1);
  a.Hkv = k_cache.size(2);
  edgekit::attention(a, pool_threads(), PoolParallel{});
  return out;
}

// qkv [1, T, (Hq + 2 Hkv) * D] (qkv_rope_q4's output), fp32 caches [1, S, Hkv, D], int64 input_pos [T] within [0, S)
bool qkv_cache_attention_args_ok(const Tensor& qkv, const Tensor& k, const Tensor& v, const Tensor& pos, int64_t hq,
                                 int64_t hkv) {
  if (qkv.dim() != 3 || k.dim() != 4 || v.dim() != 4 || pos.dim() != 1) return false;
  if (qkv.scalar_type() != ScalarType::Float || k.scalar_type() != ScalarType::Float ||
      v.scalar_type() != ScalarType::Float || pos.scalar_type() != ScalarType::Long) {
    return false;
  }
  if (hq <= 0 || hkv <= 0 || hq % hkv != 0 || qkv.size(0) != 1 || k.size(0) != 1 || k.size(2) != hkv) return false;
  for (int i = 0; i < 4; ++i) {
    if (k.size(i) != v.size(i)) return false;
  }
  const int64_t d = k.size(3);
  if (d <= 0 || qkv.size(2) != (hq + 2 * hkv) * d || pos.size(0) != qkv.size(1)) return false;
  const int64_t* p = pos.const_data_ptr<int64_t>();
  for (int64_t t = 0; t < pos.size(0); ++t) {
    if (p[t] < 0 || p[t] >= k.size(1)) return false;
  }
  return true;
}

// The k / v rows of a fused projection into the caches, then the attention of its q heads over them: one op per
// layer where the unfused form ran three slice copies, two llama::update_cache calls and edgekit::attention.
Tensor& qkv_cache_attention_out(KernelRuntimeContext& ctx, const Tensor& qkv, Tensor& k_cache, Tensor& v_cache,
                                const Tensor& input_pos, int64_t q_heads, int64_t kv_heads, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, qkv_cache_attention_args_ok(qkv, k_cache, v_cache, input_pos, q_heads, kv_heads),
                      InvalidArgument, out, "edgekit::qkv_cache_attention: expects f32 qkv [1,T,(Hq+2Hkv)*D], f32 "
                      "caches [1,S,Hkv,D], int64 input_pos [T] within [0,S), Hq a multiple of Hkv");
  const int64_t T = qkv.size(1), D = k_cache.size(3);
  const executorch::aten::SizesType sizes[3] = {1, static_cast<executorch::aten::SizesType>(T),
                                                static_cast<executorch::aten::SizesType>(q_heads * D)};
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, {sizes, 3}) == Error::Ok, InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, out.scalar_type() == ScalarType::Float, InvalidArgument, out);
  OpEvent event(ctx, "edgekit::qkv_cache_attention.out");
  const int64_t* pos = input_pos.const_data_ptr<int64_t>();
  edgekit::write_qkv_rows(qkv.const_data_ptr<float>(), T, q_heads, kv_heads, D, pos, k_cache.mutable_data_ptr<float>(),
                          v_cache.mutable_data_ptr<float>());
  edgekit::AttentionArgs a;
  a.q = qkv.const_data_ptr<float>();
  a.q_stride = qkv.size(2);
  edgekit::set_caches(a, k_cache.const_data_ptr(), v_cache.const_data_ptr(), nullptr, nullptr, true);
  a.pos = pos;
  a.out = out.mutable_data_ptr<float>();
  a.T = T;
  a.Hq = q_heads;
  a.D = D;
  a.S = k_cache.size(1);
  a.Hkv = kv_heads;
  edgekit::attention(a, pool_threads(), PoolParallel{});
  return out;
}

Tensor& update_int8_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, Tensor& scale,
                              const Tensor& input_pos, Tensor& out) {
  bool ok = value.dim() == 4 && cache.dim() == 4 && scale.dim() == 3 && input_pos.dim() == 1 &&
            value.scalar_type() == ScalarType::Float && cache.scalar_type() == ScalarType::Char &&
            scale.scalar_type() == ScalarType::Float && input_pos.scalar_type() == ScalarType::Long &&
            value.size(2) == cache.size(2) && value.size(3) == cache.size(3) && input_pos.size(0) == value.size(1) &&
            scale.size(1) == cache.size(1) && scale.size(2) == cache.size(2);
  const int64_t* p = ok ? input_pos.const_data_ptr<int64_t>() : nullptr;
  for (int64_t t = 0; ok && t < input_pos.size(0); ++t) ok = p[t] >= 0 && p[t] < cache.size(1);
  ET_KERNEL_CHECK_MSG(ctx, ok, InvalidArgument, out, "edgekit::update_int8_cache: expects f32 value [1,T,Hkv,D], "
                      "int8 cache [1,S,Hkv,D], f32 scale [1,S,Hkv], int64 input_pos [T] within [0,S)");
  OpEvent event(ctx, "edgekit::update_int8_cache.out");
  edgekit::update_int8_cache(value.const_data_ptr<float>(), cache.mutable_data_ptr<int8_t>(),
                             scale.mutable_data_ptr<float>(), p, value.size(1), value.size(2), value.size(3));
  if (out.numel() > 0 && out.scalar_type() == ScalarType::Float) out.mutable_data_ptr<float>()[0] = 0.f;
  return out;
}

// scales bf16 or fp16 [N_pad*K/G]; mins (optional) of the scales' dtype and size
bool scales_ok(const Tensor& scales, const std::optional<Tensor>& mins, int64_t numel) {
  const ScalarType st = scales.scalar_type();
  if ((st != ScalarType::BFloat16 && st != ScalarType::Half) || scales.numel() != numel) return false;
  return !mins.has_value() || (mins->scalar_type() == st && mins->numel() == numel);
}

bool linear_q4_args_ok(const Tensor& x, const Tensor& packed, const Tensor& scales, const Tensor& rowsum,
                       const std::optional<Tensor>& bias, int64_t group, int64_t n,
                       const std::optional<Tensor>& mins) {
  if (x.dim() < 1 || x.scalar_type() != ScalarType::Float || packed.scalar_type() != ScalarType::Byte ||
      rowsum.scalar_type() != ScalarType::Float) {
    return false;
  }
  const int64_t k = x.size(x.dim() - 1), npad = edgekit::q4::padded_rows(n);
  if (n <= 0 || group <= 0 || group % 8 != 0 || group > 256 || k % group != 0) return false;
  if (packed.numel() != npad * k / 2 || !scales_ok(scales, mins, npad * (k / group)) || rowsum.numel() != npad) {
    return false;
  }
  if (bias.has_value() && (bias->scalar_type() != ScalarType::Float || bias->numel() != n)) return false;
  return true;
}

bool f32_of(const std::optional<Tensor>& t, int64_t numel) {
  return !t.has_value() || (t->scalar_type() == ScalarType::Float && t->numel() == numel);
}

// out = x's shape with the last dim set to `last`
bool resize_last(const Tensor& x, int64_t last, Tensor& out) {
  executorch::aten::SizesType sizes[executorch::runtime::kTensorDimensionLimit];
  for (int64_t i = 0; i < x.dim(); ++i) sizes[i] = x.size(i);
  sizes[x.dim() - 1] = static_cast<executorch::aten::SizesType>(last);
  return executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(x.dim())}) == Error::Ok &&
         out.scalar_type() == ScalarType::Float;
}

edgekit::q4::LinearArgs make_args(const Tensor& x, int64_t k, const Tensor& packed, const Tensor& scales,
                                  const Tensor& rowsum, const std::optional<Tensor>& bias, int64_t group,
                                  int64_t n, const std::optional<Tensor>& mins, Tensor& out) {
  const int64_t m = k > 0 ? out.numel() / n : 0;
  edgekit::q4::LinearArgs a{x.const_data_ptr<float>(), packed.const_data_ptr<uint8_t>(),
                            static_cast<const uint16_t*>(scales.const_data_ptr()), rowsum.const_data_ptr<float>(),
                            bias.has_value() ? bias->const_data_ptr<float>() : nullptr, out.mutable_data_ptr<float>(),
                            m, k, n, group};
  a.mins = mins.has_value() ? static_cast<const uint16_t*>(mins->const_data_ptr()) : nullptr;
  a.fp16 = scales.scalar_type() == ScalarType::Half;
  return a;
}

Tensor& linear_q4_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& packed, const Tensor& scales,
                      const Tensor& rowsum, const std::optional<Tensor>& bias, int64_t group_size,
                      int64_t out_features, const std::optional<Tensor>& mins, bool act_per_group, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, linear_q4_args_ok(x, packed, scales, rowsum, bias, group_size, out_features, mins),
                      InvalidArgument, out, "edgekit::linear_q4: expects f32 x [..., K], uint8 packed [N_pad*K/2], "
                      "bf16 or fp16 scales [N_pad*K/G], f32 rowsum [N_pad], optional f32 bias [N], optional mins of "
                      "the scales' dtype and size; G in 8..256 dividing K");
  ET_KERNEL_CHECK(ctx, resize_last(x, out_features, out), InvalidArgument, out);
  OpEvent event(ctx, "edgekit::linear_q4.out");
  auto a = make_args(x, x.size(x.dim() - 1), packed, scales, rowsum, bias, group_size, out_features, mins, out);
  a.act_per_group = act_per_group;
  edgekit::q4::linear(a, PoolParallel{});
  return out;
}

// norm (RMSNorm prologue), swiglu (x [..., 2K] -> silu(x[:K]) * x[K:] before the norm), residual (added after)
Tensor& fused_linear_q4_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& packed, const Tensor& scales,
                            const Tensor& rowsum, const std::optional<Tensor>& bias, int64_t group_size,
                            int64_t out_features, const std::optional<Tensor>& norm_weight, double norm_eps,
                            bool swiglu, const std::optional<Tensor>& residual,
                            const std::optional<Tensor>& mins, bool act_per_group, Tensor& out) {
  const int64_t xk = x.dim() >= 1 ? x.size(x.dim() - 1) : 0;
  const int64_t k = swiglu ? xk / 2 : xk;
  bool ok = x.dim() >= 1 && (!swiglu || xk % 2 == 0) && k > 0 && f32_of(norm_weight, k) &&
            f32_of(residual, x.numel() / xk * out_features);
  if (ok) {  // the shape checks of the plain op, on the prologue's width
    ok = packed.scalar_type() == ScalarType::Byte && rowsum.scalar_type() == ScalarType::Float &&
         x.scalar_type() == ScalarType::Float && group_size > 0 &&
         group_size % 8 == 0 && group_size <= 256 && k % group_size == 0 && out_features > 0 &&
         packed.numel() == edgekit::q4::padded_rows(out_features) * k / 2 &&
         scales_ok(scales, mins, edgekit::q4::padded_rows(out_features) * (k / group_size)) &&
         rowsum.numel() == edgekit::q4::padded_rows(out_features) && f32_of(bias, out_features);
  }
  ET_KERNEL_CHECK_MSG(ctx, ok, InvalidArgument, out, "edgekit::fused_linear_q4: bad arguments (see linear_q4; "
                      "norm_weight f32 [K], residual f32 [..., N], swiglu needs x [..., 2K])");
  ET_KERNEL_CHECK(ctx, resize_last(x, out_features, out), InvalidArgument, out);
  OpEvent event(ctx, "edgekit::fused_linear_q4.out");
  auto a = make_args(x, k, packed, scales, rowsum, bias, group_size, out_features, mins, out);
  a.act_per_group = act_per_group;
  a.swiglu = swiglu;
  a.norm_w = norm_weight.has_value() ? norm_weight->const_data_ptr<float>() : nullptr;
  a.norm_eps = static_cast<float>(norm_eps);
  a.residual = residual.has_value() ? residual->const_data_ptr<float>() : nullptr;
  edgekit::q4::linear(a, PoolParallel{});
  return out;
}

// attention input projection: RMSNorm prologue, y = [q | k | v], per-head q/k norms and rotary on q and k
Tensor& qkv_rope_q4_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& packed, const Tensor& scales,
                        const Tensor& rowsum, const std::optional<Tensor>& bias, int64_t group_size,
                        const Tensor& norm_weight, double norm_eps, const Tensor& cos, const Tensor& sin,
                        int64_t q_heads, int64_t kv_heads, int64_t head_dim,
                        const std::optional<Tensor>& q_norm_weight, const std::optional<Tensor>& k_norm_weight,
                        const std::optional<Tensor>& mins, bool act_per_group, Tensor& out) {
  const int64_t n = (q_heads + 2 * kv_heads) * head_dim;
  bool ok = q_heads > 0 && kv_heads > 0 && head_dim > 0 && head_dim % 2 == 0 &&
            linear_q4_args_ok(x, packed, scales, rowsum, bias, group_size, n, mins);
  const int64_t k = ok ? x.size(x.dim() - 1) : 1, m = ok ? x.numel() / k : 0;
  ok = ok && norm_weight.scalar_type() == ScalarType::Float && norm_weight.numel() == k &&
       cos.scalar_type() == ScalarType::Float && sin.scalar_type() == ScalarType::Float &&
       cos.numel() == m * head_dim && sin.numel() == m * head_dim && f32_of(q_norm_weight, head_dim) &&
       f32_of(k_norm_weight, head_dim) && q_norm_weight.has_value() == k_norm_weight.has_value();
  ET_KERNEL_CHECK_MSG(ctx, ok, InvalidArgument, out, "edgekit::qkv_rope_q4: bad arguments (see linear_q4; N = (Hq + "
                      "2 Hkv) * D, norm_weight f32 [K], cos/sin f32 [T * D], q/k norm weights f32 [D] or both None)");
  ET_KERNEL_CHECK(ctx, resize_last(x, n, out), InvalidArgument, out);
  OpEvent event(ctx, "edgekit::qkv_rope_q4.out");
  auto a = make_args(x, k, packed, scales, rowsum, bias, group_size, n, mins, out);
  a.act_per_group = act_per_group;
  a.norm_w = norm_weight.const_data_ptr<float>();
  a.norm_eps = static_cast<float>(norm_eps);
  a.cos = cos.const_data_ptr<float>();
  a.sin = sin.const_data_ptr<float>();
  a.q_norm_w = q_norm_weight.has_value() ? q_norm_weight->const_data_ptr<float>() : nullptr;
  a.k_norm_w = k_norm_weight.has_value() ? k_norm_weight->const_data_ptr<float>() : nullptr;
  a.q_heads = q_heads;
  a.kv_heads = kv_heads;
  a.head_dim = head_dim;
  edgekit::q4::linear(a, PoolParallel{});
  return out;
}

// int8 table [N_pad*K] (linear_q8_tiles.h's layout) with bf16 or fp16 scales [N_pad*K/G]
bool q8_table_ok(const Tensor& packed, const Tensor& scales, int64_t n, int64_t k, int64_t group) {
  if (n <= 0 || k <= 0 || group <= 0 || group % 4 != 0 || group > 256 || k % group != 0) return false;
  const int64_t npad = edgekit::q4::padded_rows(n);
  const ScalarType st = scales.scalar_type();
  return packed.scalar_type() == ScalarType::Char && packed.numel() == npad * k &&
         (st == ScalarType::Half || st == ScalarType::BFloat16) && scales.numel() == npad * (k / group);
}

// Q8_0 head: optional RMSNorm prologue, activations per group of G (symmetric int8), y = x_fq @ w.T
Tensor& linear_q8_out(KernelRuntimeContext& ctx, const Tensor& x, const Tensor& packed, const Tensor& scales,
                      int64_t group_size, int64_t out_features, const std::optional<Tensor>& norm_weight,
                      double norm_eps, Tensor& out) {
  const int64_t k = x.dim() >= 1 ? x.size(x.dim() - 1) : 0;
  const bool ok = x.dim() >= 1 && x.scalar_type() == ScalarType::Float && group_size % 8 == 0 &&
                  q8_table_ok(packed, scales, out_features, k, group_size) && f32_of(norm_weight, k);
  ET_KERNEL_CHECK_MSG(ctx, ok, InvalidArgument, out, "edgekit::linear_q8: expects f32 x [..., K], int8 packed "
                      "[N_pad*K], bf16 or fp16 scales [N_pad*K/G], optional f32 norm_weight [K]; G in 8..256 dividing K");
  ET_KERNEL_CHECK(ctx, resize_last(x, out_features, out), InvalidArgument, out);
  OpEvent event(ctx, "edgekit::linear_q8.out");
  edgekit::q4::LinearArgs a{x.const_data_ptr<float>(), reinterpret_cast<const uint8_t*>(packed.const_data_ptr()),
                            static_cast<const uint16_t*>(scales.const_data_ptr()), nullptr, nullptr,
                            out.mutable_data_ptr<float>(), x.numel() / k, k, out_features, group_size};
  a.int8 = true;
  a.act_per_group = true;
  a.fp16 = scales.scalar_type() == ScalarType::Half;
  a.norm_w = norm_weight.has_value() ? norm_weight->const_data_ptr<float>() : nullptr;
  a.norm_eps = static_cast<float>(norm_eps);
  edgekit::q4::linear(a, PoolParallel{});
  return out;
}

// rows of the same table, dequantized: out [..., K] = s * code of row indices[...]
Tensor& embedding_q8_out(KernelRuntimeContext& ctx, const Tensor& packed, const Tensor& scales, const Tensor& indices,
                         int64_t num_embeddings, int64_t embedding_dim, int64_t group_size, Tensor& out) {
  bool ok = indices.scalar_type() == ScalarType::Long &&
            q8_table_ok(packed, scales, num_embeddings, embedding_dim, group_size);
  const int64_t* idx = ok ? indices.const_data_ptr<int64_t>() : nullptr;
  for (int64_t i = 0; ok && i < indices.numel(); ++i) ok = idx[i] >= 0 && idx[i] < num_embeddings;
  ET_KERNEL_CHECK_MSG(ctx, ok, InvalidArgument, out, "edgekit::embedding_q8: expects int8 packed [N_pad*K], bf16 or "
                      "fp16 scales [N_pad*K/G], int64 indices within [0, N)");
  executorch::aten::SizesType sizes[executorch::runtime::kTensorDimensionLimit];
  for (int64_t i = 0; i < indices.dim(); ++i) sizes[i] = indices.size(i);
  sizes[indices.dim()] = static_cast<executorch::aten::SizesType>(embedding_dim);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, {sizes, static_cast<size_t>(indices.dim() + 1)}) ==
                  Error::Ok && out.scalar_type() == ScalarType::Float, InvalidArgument, out);
  OpEvent event(ctx, "edgekit::embedding_q8.out");
  const bool fp16 = scales.scalar_type() == ScalarType::Half;
  for (int64_t i = 0; i < indices.numel(); ++i) {
    edgekit::q4::embedding_row(packed.const_data_ptr<int8_t>(), static_cast<const uint16_t*>(scales.const_data_ptr()),
                               fp16, idx[i], embedding_dim, group_size, out.mutable_data_ptr<float>() + i * embedding_dim);
  }
  return out;
}

}  // namespace

EXECUTORCH_LIBRARY(edgekit, "attention.out", attention_out);
EXECUTORCH_LIBRARY(edgekit, "linear_q8.out", linear_q8_out);
EXECUTORCH_LIBRARY(edgekit, "embedding_q8.out", embedding_q8_out);
EXECUTORCH_LIBRARY(edgekit, "linear_q4.out", linear_q4_out);
EXECUTORCH_LIBRARY(edgekit, "fused_linear_q4.out", fused_linear_q4_out);
EXECUTORCH_LIBRARY(edgekit, "qkv_rope_q4.out", qkv_rope_q4_out);
EXECUTORCH_LIBRARY(edgekit, "update_int8_cache.out", update_int8_cache_out);
EXECUTORCH_LIBRARY(edgekit, "qkv_cache_attention.out", qkv_cache_attention_out);

extern "C" {

// Plain entry points (ctypes): same kernels, raw contiguous buffers. Return 0 on success.
// k / v are int8 caches with scales ks / vs, or (f32_cache != 0) fp32 caches and ks = vs = null.
__attribute__((visibility("default"))) int edgekit_attention(
    const float* q, const void* k, const void* v, const float* ks, const float* vs, const int64_t* pos,
    float* out, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t S, int64_t splits, int use_pool,
    int f32_cache) {
  if (Hkv <= 0 || Hq % Hkv != 0 || D <= 0) return 1;
  if (!f32_cache && (ks == nullptr || vs == nullptr)) return 1;
  for (int64_t t = 0; t < T; ++t) {
    if (pos[t] < 0 || pos[t] >= S) return 2;
  }
  edgekit::AttentionArgs a{q, nullptr, nullptr, nullptr, nullptr, pos, out, T, Hq, Hkv, D, S, splits};
  edgekit::set_caches(a, k, v, ks, vs, f32_cache != 0);
  if (use_pool) {
    edgekit::attention(a, pool_threads(), PoolParallel{});
  } else {
    edgekit::attention(a, 1, edgekit::SerialParallel{});
  }
  return 0;
}

// qkv [T, (Hq + 2 Hkv) * D]: its k / v heads written into the fp32 caches [S, Hkv, D] at pos, then attention -> out
// [T, Hq * D] (edgekit::qkv_cache_attention).
__attribute__((visibility("default"))) int edgekit_qkv_cache_attention(const float* qkv, float* k, float* v,
                                                                      const int64_t* pos, float* out, int64_t T,
                                                                      int64_t Hq, int64_t Hkv, int64_t D, int64_t S) {
  if (Hkv <= 0 || Hq <= 0 || Hq % Hkv != 0 || D <= 0) return 1;
  for (int64_t t = 0; t < T; ++t) {
    if (pos[t] < 0 || pos[t] >= S) return 2;
  }
  edgekit::write_qkv_rows(qkv, T, Hq, Hkv, D, pos, k, v);
  edgekit::AttentionArgs a{qkv, nullptr, nullptr, nullptr, nullptr, pos, out, T, Hq, Hkv, D, S};
  a.q_stride = (Hq + 2 * Hkv) * D;
  edgekit::set_caches(a, k, v, nullptr, nullptr, true);
  edgekit::attention(a, pool_threads(), PoolParallel{});
  return 0;
}

__attribute__((visibility("default"))) int edgekit_update_int8_cache(const float* value, int8_t* cache, float* scale,
                                                                    const int64_t* pos, int64_t T, int64_t Hkv,
                                                                    int64_t D, int64_t S) {
  for (int64_t t = 0; t < T; ++t) {
    if (pos[t] < 0 || pos[t] >= S) return 2;
  }
  edgekit::update_int8_cache(value, cache, scale, pos, T, Hkv, D);
  return 0;
}

// x [M, K] -> y [M, N]; portable != 0 runs the scalar loops (tests compare them with the SIMD path).
__attribute__((visibility("default"))) int edgekit_linear_q4(const float* x, const uint8_t* packed, const uint16_t* scales,
                                                            const float* rowsum, const float* bias, float* y,
                                                            int64_t M, int64_t K, int64_t N, int64_t G, int use_pool,
                                                            int portable) {
  if (M <= 0 || N <= 0 || G <= 0 || G % 8 != 0 || G > 256 || K % G != 0) return 1;
  edgekit::q4::LinearArgs a{x, packed, scales, rowsum, bias, y, M, K, N, G};
  if (use_pool) {
    edgekit::q4::linear(a, PoolParallel{}, portable != 0);
  } else {
    edgekit::q4::linear(a, edgekit::SerialParallel{}, portable != 0);
  }
  return 0;
}

// The fused forms (fused_linear_q4 / qkv_rope_q4): x is [M, 2K] with swiglu; null pointers switch parts off.
// mins: per-group minimums (or null); fp16: scales and mins are fp16 (else bf16); act_per_group: activations
// quantized per group (the ONNX Runtime op's mode) instead of per token.
__attribute__((visibility("default"))) int edgekit_linear_q4_fused(
    const float* x, const uint8_t* packed, const uint16_t* scales, const float* rowsum, const float* bias, float* y,
    int64_t M, int64_t K, int64_t N, int64_t G, int swiglu, const float* norm_w, float norm_eps, const float* residual,
    const float* cos, const float* sin, const float* q_norm_w, const float* k_norm_w, int64_t q_heads,
    int64_t kv_heads, int64_t head_dim, int portable, const uint16_t* mins, int fp16, int act_per_group) {
  if (M <= 0 || N <= 0 || G <= 0 || G % 8 != 0 || G > 256 || K % G != 0) return 1;
  if (cos != nullptr && (head_dim <= 0 || head_dim % 2 != 0 || (q_heads + 2 * kv_heads) * head_dim != N)) return 3;
  edgekit::q4::LinearArgs a{x, packed, scales, rowsum, bias, y, M, K, N, G};
  a.swiglu = swiglu != 0;
  a.norm_w = norm_w;
  a.norm_eps = norm_eps;
  a.residual = residual;
  a.cos = cos;
  a.sin = sin;
  a.q_norm_w = q_norm_w;
  a.k_norm_w = k_norm_w;
  a.q_heads = q_heads;
  a.kv_heads = kv_heads;
  a.head_dim = head_dim;
  a.mins = mins;
  a.fp16 = fp16 != 0;
  a.act_per_group = act_per_group != 0;
  edgekit::q4::linear(a, PoolParallel{}, portable != 0);
  return 0;
}

// The Q8_0 head (edgekit::linear_q8): x [M, K] -> y [M, N], optional RMSNorm prologue; portable != 0: scalar loops.
__attribute__((visibility("default"))) int edgekit_linear_q8(const float* x, const int8_t* packed, const uint16_t* scales,
                                                            const float* norm_w, float norm_eps, float* y, int64_t M,
                                                            int64_t K, int64_t N, int64_t G, int fp16, int portable) {
  if (M <= 0 || N <= 0 || G <= 0 || G % 8 != 0 || G > 256 || K % G != 0) return 1;
  edgekit::q4::LinearArgs a{x, reinterpret_cast<const uint8_t*>(packed), scales, nullptr, nullptr, y, M, K, N, G};
  a.int8 = true;
  a.act_per_group = true;
  a.fp16 = fp16 != 0;
  a.norm_w = norm_w;
  a.norm_eps = norm_eps;
  edgekit::q4::linear(a, PoolParallel{}, portable != 0);
  return 0;
}

__attribute__((visibility("default"))) const char* edgekit_linear_q4_isa() { return edgekit::q4::isa_name(); }

__attribute__((visibility("default"))) const char* edgekit_kernels_isa() { return edgekit::isa_name(); }

__attribute__((visibility("default"))) int64_t edgekit_kernels_threads() { return pool_threads(); }

}  // extern "C"
