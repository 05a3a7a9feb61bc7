// ExecuTorch wrapper of the edgekit kernels: registers edgekit::attention.out and edgekit::update_int8_cache.out
// with the runtime (EXECUTORCH_LIBRARY) and exposes plain C entry points for ctypes (tests, benchmarks).
// Multi-threaded through ExecuTorch's thread pool (parallel_for) when built with ET_USE_THREADPOOL.
#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/util/tensor_util.h>
#include <executorch/runtime/kernel/kernel_includes.h>
#include <executorch/runtime/kernel/thread_parallel_interface.h>

#include <optional>

#include "attention_core.h"

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;

struct PoolParallel {
  template <class F>
  void operator()(int64_t n, F&& f) const {
    if (n <= 0) return;
    executorch::extension::parallel_for(0, n, 1, [&](int64_t b, int64_t e) { f(b, e); });
  }
};

int64_t pool_threads() { return executorch::extension::get_thread_count(); }

bool attention_args_ok(const Tensor& q, const Tensor& k, const Tensor& v, const std::optional<Tensor>& ks,
                       const std::optional<Tensor>& vs, const Tensor& pos) {
  if (q.dim() != 4 || k.dim() != 4 || v.dim() != 4 || pos.dim() != 1) return false;
  if (q.scalar_type() != ScalarType::Float || k.scalar_type() != ScalarType::Char ||
      v.scalar_type() != ScalarType::Char || pos.scalar_type() != ScalarType::Long) {
    return false;  // float caches are served by the PyTorch reference only
  }
  if (!ks.has_value() || !vs.has_value() || ks->scalar_type() != ScalarType::Float ||
      vs->scalar_type() != ScalarType::Float) {
    return false;
  }
  if (q.size(0) != 1 || k.size(0) != 1 || q.size(3) != k.size(3) || k.size(2) == 0 || q.size(2) % k.size(2) != 0) {
    return false;
  }
  for (int i = 0; i < 4; ++i) {
    if (k.size(i) != v.size(i)) return false;
  }
  if (ks->numel() != k.size(1) * k.size(2) || vs->numel() != k.size(1) * k.size(2)) return false;
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
                      out, "edgekit::attention: expects q f32 [1,T,Hq,D], int8 caches [1,S,Hkv,D], f32 scales "
                      "[1,S,Hkv], int64 input_pos [T] within [0,S)");
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  ET_KERNEL_CHECK(ctx, out.scalar_type() == ScalarType::Float, InvalidArgument, out);
  edgekit::AttentionArgs a;
  a.q = q.const_data_ptr<float>();
  a.k = k_cache.const_data_ptr<int8_t>();
  a.v = v_cache.const_data_ptr<int8_t>();
  a.k_scale = k_scale->const_data_ptr<float>();
  a.v_scale = v_scale->const_data_ptr<float>();
  a.pos = input_pos.const_data_ptr<int64_t>();
  a.out = out.mutable_data_ptr<float>();
  a.T = q.size(1);
  a.Hq = q.size(2);
  a.D = q.size(3);
  a.S = k_cache.size(1);
  a.Hkv = k_cache.size(2);
  edgekit::attention_int8(a, pool_threads(), PoolParallel{});
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
  edgekit::update_int8_cache(value.const_data_ptr<float>(), cache.mutable_data_ptr<int8_t>(),
                             scale.mutable_data_ptr<float>(), p, value.size(1), value.size(2), value.size(3));
  if (out.numel() > 0 && out.scalar_type() == ScalarType::Float) out.mutable_data_ptr<float>()[0] = 0.f;
  return out;
}

}  // namespace

EXECUTORCH_LIBRARY(edgekit, "attention.out", attention_out);
EXECUTORCH_LIBRARY(edgekit, "update_int8_cache.out", update_int8_cache_out);

extern "C" {

// Plain entry points (ctypes): same kernels, raw contiguous buffers. Return 0 on success.
__attribute__((visibility("default"))) int edgekit_attention_int8(
    const float* q, const int8_t* k, const int8_t* v, const float* ks, const float* vs, const int64_t* pos,
    float* out, int64_t T, int64_t Hq, int64_t Hkv, int64_t D, int64_t S, int64_t splits, int use_pool) {
  if (Hkv <= 0 || Hq % Hkv != 0 || D <= 0) return 1;
  for (int64_t t = 0; t < T; ++t) {
    if (pos[t] < 0 || pos[t] >= S) return 2;
  }
  edgekit::AttentionArgs a{q, k, v, ks, vs, pos, out, T, Hq, Hkv, D, S, splits};
  if (use_pool) {
    edgekit::attention_int8(a, pool_threads(), PoolParallel{});
  } else {
    edgekit::attention_int8(a, 1, edgekit::SerialParallel{});
  }
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

__attribute__((visibility("default"))) const char* edgekit_kernels_isa() { return edgekit::isa_name(); }

__attribute__((visibility("default"))) int64_t edgekit_kernels_threads() { return pool_threads(); }

}  // extern "C"
