// Optimizer steps in one pass over flat buffers: XLA FFI handlers for the CPU.
//
// XLA:CPU writes each output array from its own loop, and does not fuse a producer with its
// consumer when both must be written out. A step that updates the parameters and state buffers
// thus reads the new state back after writing it: Adam makes 10 memory accesses per parameter
// (three loops) and SGD with momentum 6 (two loops). These kernels read each buffer once and
// write the updated ones back, as torch's fused CPU kernels do (Adam 7, SGD with momentum 5),
// split over XLA's intra-op thread pool. The arithmetic is funcopt.adam's and funcopt.sgd's, in
// the same order (built with -ffp-contract=off: no fused multiply-add either).
//
// All arguments and results are 1-D buffers of one dtype; the last argument is a vector of the
// step's scalars. The results alias the parameter and state arguments (the step runs in place).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMinPerThread = 1 << 16;

// Runs range(lo, hi) over [0, n) in contiguous chunks, about one per thread of XLA's intra-op pool,
// and returns when all are done. Chunks are claimed from a counter, and this thread claims them
// too: it never waits for a task the pool has not started. XLA runs independent custom calls (one
// per large parameter kept in its own buffer) on the same pool at once; had each waited for pool
// tasks of its own while holding a pool thread, they could all wait for each other. A task that
// starts after every chunk is claimed finds nothing to do and only touches the shared counters.
template <typename Range>
void ParallelFor(ffi::ThreadPool& pool, int64_t n, const Range& range) {
  const int64_t parts = std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), n / kMinPerThread));
  const int64_t chunk = (n + parts - 1) / parts;
  struct Shared {
    std::atomic<int64_t> next{0};
    std::mutex mu;
    std::condition_variable done;
    int64_t finished = 0;
  };
  auto shared = std::make_shared<Shared>();
  auto work = [shared, parts, chunk, n, &range] {
    int64_t here = 0;
    for (int64_t c; (c = shared->next.fetch_add(1)) < parts; ++here) {
      range(c * chunk, std::min(n, (c + 1) * chunk));
    }
    if (here == 0) return;
    std::lock_guard<std::mutex> lock(shared->mu);
    shared->finished += here;
    if (shared->finished == parts) shared->done.notify_one();
  };
  for (int64_t t = 1; t < parts; ++t) pool.Schedule([work] { work(); });
  work();
  std::unique_lock<std::mutex> lock(shared->mu);
  shared->done.wait(lock, [&] { return shared->finished == parts; });
}

// The result buffer of an in-place argument: the same memory when XLA could donate it, else a copy.
template <ffi::DataType DT>
ffi::NativeType<DT>* InPlace(const ffi::Buffer<DT>& arg, ffi::ResultBuffer<DT>& out) {
  ffi::NativeType<DT>* data = out->typed_data();
  if (data != arg.typed_data()) std::copy_n(arg.typed_data(), arg.element_count(), data);
  return data;
}

// --- Adam / AdamW --------------------------------------------------------------------------------
// Arguments: params, grads, exp_avg, exp_avg_sq and the scalars
// [lr, beta1, beta2, eps, weight_decay, 1 - beta1^t, sqrt(1 - beta2^t), maximize, decoupled].
// Results: params, exp_avg, exp_avg_sq.

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
  T* P = InPlace(p, p_out);
  T* M = InPlace(m, m_out);
  T* V = InPlace(v, v_out);
  const T* G = g.typed_data();
  const T* H = hp.typed_data();
  ParallelFor(pool, n, [&](int64_t lo, int64_t hi) { AdamRange(P, G, M, V, H, lo, hi); });
  return ffi::Error::Success();
}

template <ffi::DataType DT>
constexpr auto AdamBinding() {
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

// --- SGD with momentum ---------------------------------------------------------------------------
// Arguments: params, grads, momentum_buffer and the scalars
// [-lr, momentum, 1 - dampening, weight_decay, sign (-1 when maximizing, else 1), first, nesterov],
// where first is nonzero on the step that starts the buffer (torch's buffer = gradient).
// Results: params, momentum_buffer.
//
// funcopt.sgd's order: g = sign * g (an exact negation); g = g + weight_decay * p (skipped at 0, as
// torch does); b = g on the first step, else momentum * b + (1 - dampening) * g; d = g + momentum * b
// with nesterov, else b; p = p + (-lr) * d. The flags are template arguments: each loop is branch-free.

template <typename T, bool kFirst, bool kDecay, bool kNesterov>
void SgdLoop(T* p, const T* g, T* b, const T* hp, int64_t lo, int64_t hi) {
  const T neg_lr = hp[0], momentum = hp[1], one_minus_dampening = hp[2], wd = hp[3], sign = hp[4];
  for (int64_t i = lo; i < hi; ++i) {
    T gi = sign * g[i];
    if (kDecay) gi = gi + wd * p[i];
    const T bi = kFirst ? gi : momentum * b[i] + one_minus_dampening * gi;
    b[i] = bi;
    const T di = kNesterov ? gi + momentum * bi : bi;
    p[i] = p[i] + neg_lr * di;
  }
}

template <typename T, bool kFirst, bool kDecay>
void SgdRange(T* p, const T* g, T* b, const T* hp, bool nesterov, int64_t lo, int64_t hi) {
  if (nesterov) {
    SgdLoop<T, kFirst, kDecay, true>(p, g, b, hp, lo, hi);
  } else {
    SgdLoop<T, kFirst, kDecay, false>(p, g, b, hp, lo, hi);
  }
}

template <typename T>
void SgdRange(T* p, const T* g, T* b, const T* hp, int64_t lo, int64_t hi) {
  const bool decay = hp[3] != T(0), first = hp[5] != T(0), nesterov = hp[6] != T(0);
  if (first) {
    decay ? SgdRange<T, true, true>(p, g, b, hp, nesterov, lo, hi)
          : SgdRange<T, true, false>(p, g, b, hp, nesterov, lo, hi);
  } else {
    decay ? SgdRange<T, false, true>(p, g, b, hp, nesterov, lo, hi)
          : SgdRange<T, false, false>(p, g, b, hp, nesterov, lo, hi);
  }
}

template <ffi::DataType DT>
ffi::Error Sgd(ffi::ThreadPool pool, ffi::Buffer<DT> p, ffi::Buffer<DT> g, ffi::Buffer<DT> b, ffi::Buffer<DT> hp,
               ffi::ResultBuffer<DT> p_out, ffi::ResultBuffer<DT> b_out) {
  using T = ffi::NativeType<DT>;
  const int64_t n = static_cast<int64_t>(p.element_count());
  if (g.element_count() != p.element_count() || b.element_count() != p.element_count() ||
      hp.element_count() < 7) {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "funcopt fused SGD: mismatched buffer sizes");
  }
  T* P = InPlace(p, p_out);
  T* B = InPlace(b, b_out);
  const T* G = g.typed_data();
  const T* H = hp.typed_data();
  ParallelFor(pool, n, [&](int64_t lo, int64_t hi) { SgdRange(P, G, B, H, lo, hi); });
  return ffi::Error::Success();
}

template <ffi::DataType DT>
constexpr auto SgdBinding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Arg<ffi::Buffer<DT>>()
      .template Ret<ffi::Buffer<DT>>()
      .template Ret<ffi::Buffer<DT>>();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(FuncoptAdamF32, Adam<ffi::DataType::F32>, AdamBinding<ffi::DataType::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FuncoptAdamF64, Adam<ffi::DataType::F64>, AdamBinding<ffi::DataType::F64>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FuncoptSgdF32, Sgd<ffi::DataType::F32>, SgdBinding<ffi::DataType::F32>());
XLA_FFI_DEFINE_HANDLER_SYMBOL(FuncoptSgdF64, Sgd<ffi::DataType::F64>, SgdBinding<ffi::DataType::F64>());
