// Adam and AdamW in one pass over flat buffers: XLA FFI handlers for the CPU.
//
// XLA:CPU writes each output array from its own loop, so an Adam step compiled by XLA reads the
// moments back after writing them (10 memory accesses per parameter). This kernel reads the
// parameter, gradient and both moments once and writes three of them back (7 accesses), split
// over XLA's intra-op thread pool. The arithmetic is funcopt.adam's, in the same order.
//
// Arguments: params, grads, exp_avg, exp_avg_sq (1-D, one dtype) and a 1-D vector of scalars
// [lr, beta1, beta2, eps, weight_decay, 1 - beta1^t, sqrt(1 - beta2^t), maximize, decoupled].
// Results: params, exp_avg, exp_avg_sq, aliased to the arguments (the step runs in place).

#include <algorithm>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
void AdamRange(T* p, const T* g, T* m, T* v, const T* hp, int64_t lo, int64_t hi) {
  const T lr = hp[0], beta1 = hp[1], beta2 = hp[2], eps = hp[3], wd = hp[4];
  const T bias_correction1 = hp[5], bias_correction2_sqrt = hp[6];
  const bool maximize = hp[7] != T(0), decoupled = hp[8] != T(0);
  const T one_minus_beta1 = T(1) - beta1, one_minus_beta2 = T(1) - beta2;
  const T step_size = lr / bias_correction1;
  const T decay = decoupled ? -(lr * wd) : T(0);
  const T l2 = decoupled ? T(0) : wd;
  if (l2 == T(0) && decay == T(0) && !maximize) {  // the common case: no branch, no read of p for decay
    for (int64_t i = lo; i < hi; ++i) {
      const T gi = g[i];
      const T mi = m[i] + one_minus_beta1 * (gi - m[i]);
      const T vi = beta2 * v[i] + one_minus_beta2 * gi * gi;
      m[i] = mi;
      v[i] = vi;
      p[i] = p[i] + (T(0) - step_size * mi / (std::sqrt(vi) / bias_correction2_sqrt + eps));
    }
    return;
  }
  for (int64_t i = lo; i < hi; ++i) {
    const T pi = p[i];
    T gi = maximize ? -g[i] : g[i];
    if (l2 != T(0)) gi = gi + l2 * pi;
    const T mi = m[i] + one_minus_beta1 * (gi - m[i]);
    const T vi = beta2 * v[i] + one_minus_beta2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = pi + (decay * pi - step_size * mi / (std::sqrt(vi) / bias_correction2_sqrt + eps));
  }
}

constexpr int64_t kMinPerThread = 1 << 16;

template <ffi::DataType DT>
ffi::Error Adam(ffi::ThreadPool pool, ffi::Buffer<DT> p, ffi::Buffer<DT> g, ffi::Buffer<DT> m, ffi::Buffer<DT> v,
                ffi::Buffer<DT> hp, ffi::ResultBuffer<DT> p_out, ffi::ResultBuffer<DT> m_out,
                ffi::ResultBuffer<DT> v_out) {
  using T = ffi::NativeType<DT>;
  const int64_t n = static_cast<int64_t>(p.element_count());
  if (g.element_count() != p.element_count() || m.element_count() != p.element_count() ||
      v.element_count() != p.element_count() || hp.element_count() < 9) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "funcopt fused Adam: mismatched buffer sizes");
  }
  T* P = p_out->typed_data();
  T* M = m_out->typed_data();
  T* V = v_out->typed_data();
  // The results alias the arguments when XLA could donate them; copy in otherwise.
  if (P != p.typed_data()) std::copy_n(p.typed_data(), n, P);
  if (M != m.typed_data()) std::copy_n(m.typed_data(), n, M);
  if (V != v.typed_data()) std::copy_n(v.typed_data(), n, V);
  const T* G = g.typed_data();
  const T* H = hp.typed_data();
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n / kMinPerThread));
  const int64_t chunk = (n + threads - 1) / threads;
  std::mutex mu;
  std::condition_variable done;
  int64_t pending = threads - 1;
  for (int64_t t = 1; t < threads; ++t) {
    pool.Schedule([&, t] {
      AdamRange(P, G, M, V, H, t * chunk, std::min(n, (t + 1) * chunk));
      std::lock_guard<std::mutex> lock(mu);
      if (--pending == 0) done.notify_one();
    });
  }
  AdamRange(P, G, M, V, H, 0, std::min(n, chunk));
  std::unique_lock<std::mutex> lock(mu);
  done.wait(lock, [&] { return pending == 0; });
  return ffi::Error::Success();
}

template <ffi::DataType DT>
constexpr auto Binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Ret<ffi::Buffer<DT>>()
      .template Ret<ffi::Buffer<DT>>()
      .template Ret<ffi::Buffer<DT>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FuncoptAdamF32, Adam<ffi::DataType::F32>, Binding<ffi::DataType::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FuncoptAdamF64, Adam<ffi::DataType::F64>, Binding<ffi::DataType::F64>());
