// awm_fast._C: the operator schemas (torch.ops.awm_fast.*) and their CPU implementation.
//
// Ops (shapes: x [B, ...], triggers [K, ...], n = elements per image; every index is int64):
//   apply_triggers(x, triggers, lo, hi, check_finite) -> [K, B, ...]      clamp(x[b] + triggers[k], lo, hi)
//   apply_triggers_backward(grad_out, x, triggers, lo, hi, need_x, need_triggers, pass_at_bounds)
//       -> (grad_x, grad_triggers): grad_triggers[k] = Σ_b grad_out[k, b] · [lo < x[b] + Δ[k] < hi] (<= with
//       pass_at_bounds), grad_x[b] = Σ_k (same); a tensor not asked for comes back empty (shape [0]).
//   trigger_step(triggers!, grad, lr, radius, ascent, projection, check_finite)    in place, per trigger
//   project_l1_ball(v [K, n], radius, mode, check_finite) -> [K, n]
// The per-element and per-trigger math lives in trigger_math.h, shared with cuda/trigger_ops.cu.
#include <Python.h>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

#include "ops_common.h"
#include "trigger_math.h"

// `import awm_fast._C` loads this library, whose static initialisers register the ops; the module itself is empty.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "awm_fast compiled ops (torch.ops.awm_fast)",
                                          -1, nullptr};
  return PyModule_Create(&module_def);
}
}

namespace awm_fast {
namespace {

// Elements per parallel task below which at::parallel_for stays on one thread (ATen's own grain size).
constexpr int64_t kGrainSize = 32768;
// Columns of the backward's reduction tiles: a task accumulates the rows of grad_out over one tile of columns into
// opmath accumulators that stay in cache while the row segments stream through. grad_triggers keeps K accumulator
// rows per task so that each x[b] segment is read from memory once, not once per trigger (on 3x224x224, K=10,
// B=128 that is 0.85 GB of traffic instead of 1.5 GB); its tile shrinks with K to keep them within ~256 KB. Tiles
// also shrink, down to kMinTile, to give every thread at least two tasks.
constexpr int64_t kMaxTile = 4096;
constexpr int64_t kMinTile = 256;
constexpr int64_t kAccumulatorBudget = 65536;  // opmath values per task

int64_t reduction_tile(int64_t accumulator_rows, int64_t tasks_per_tile, int64_t n) {
  const int64_t wanted_tasks = 2 * static_cast<int64_t>(at::get_num_threads());
  int64_t tile = kMaxTile;
  while (tile > kMinTile && tile * accumulator_rows > kAccumulatorBudget) tile /= 2;
  while (tile > kMinTile && tasks_per_tile * ((n + tile - 1) / tile) < wanted_tasks) tile /= 2;
  return tile;
}

// The hot loops are compiled twice on x86-64: for the baseline (SSE2, what the extension is built for) and for
// AVX2+FMA, picked at run time. Same results: the loops hold no a*b+c the compiler could contract, and the ascent's
// explicit FMA is exactly rounded in both (a libm call in the baseline, which also keeps that loop scalar).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define AWM_FAST_AVX2_CLONES 1
#define AWM_FAST_TARGET_AVX2 __attribute__((target("avx2,fma")))
bool cpu_has_avx2_fma() {
  static const bool has = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return has;
}
#endif

// Non-zero when any element is NaN or Inf; an integer OR reduction, so the loop vectorises.
template <typename scalar_t>
bool row_all_finite(const scalar_t* __restrict__ data, int64_t n) {
  using opmath_t = math::opmath_t<scalar_t>;
  int nonfinite = 0;
  for (int64_t i = 0; i < n; ++i) nonfinite |= !math::is_finite(static_cast<opmath_t>(data[i]));
  return nonfinite == 0;
}

// out[i] = clamp(x[i] + Δ[i], lo, hi), the sum rounded to scalar_t first (trigger_math.h).
template <typename scalar_t, typename opmath_t>
inline void apply_row_body(const scalar_t* __restrict__ x, const scalar_t* __restrict__ delta,
                           scalar_t* __restrict__ out, int64_t n, opmath_t lo, opmath_t hi) {
  for (int64_t i = 0; i < n; ++i) {
    const opmath_t v = math::triggered_sum<scalar_t>(static_cast<opmath_t>(x[i]), static_cast<opmath_t>(delta[i]));
    out[i] = static_cast<scalar_t>(math::clamp(v, lo, hi));
  }
}

// acc[i] += where(clamp passes x[i] + Δ[i], g[i], 0) over one tile, x + Δ recomputed exactly as in apply_row.
template <typename scalar_t, typename opmath_t>
inline void accumulate_row_body(opmath_t* __restrict__ acc, const scalar_t* __restrict__ grad,
                                const scalar_t* __restrict__ x, const opmath_t* __restrict__ delta, int64_t len,
                                opmath_t lo, opmath_t hi, bool pass_at_bounds) {
  // The convention is loop-invariant: -O3 unswitches the loop, each copy vectorises.
  for (int64_t i = 0; i < len; ++i) {
    const opmath_t v = math::triggered_sum<scalar_t>(static_cast<opmath_t>(x[i]), delta[i]);
    acc[i] += math::masked_grad(static_cast<opmath_t>(grad[i]), v, lo, hi, pass_at_bounds);
  }
}

#ifdef AWM_FAST_AVX2_CLONES
template <typename scalar_t, typename opmath_t>
AWM_FAST_TARGET_AVX2 void apply_row_avx2(const scalar_t* x, const scalar_t* delta, scalar_t* out, int64_t n,
                                         opmath_t lo, opmath_t hi) {
  apply_row_body(x, delta, out, n, lo, hi);
}

template <typename scalar_t, typename opmath_t>
AWM_FAST_TARGET_AVX2 void accumulate_row_avx2(opmath_t* acc, const scalar_t* grad, const scalar_t* x,
                                              const opmath_t* delta, int64_t len, opmath_t lo, opmath_t hi,
                                              bool pass_at_bounds) {
  accumulate_row_body(acc, grad, x, delta, len, lo, hi, pass_at_bounds);
}
#endif

template <typename scalar_t, typename opmath_t>
void apply_row(const scalar_t* x, const scalar_t* delta, scalar_t* out, int64_t n, opmath_t lo, opmath_t hi) {
#ifdef AWM_FAST_AVX2_CLONES
  if (cpu_has_avx2_fma()) return apply_row_avx2(x, delta, out, n, lo, hi);
#endif
  apply_row_body(x, delta, out, n, lo, hi);
}

template <typename scalar_t, typename opmath_t>
void accumulate_row(opmath_t* acc, const scalar_t* grad, const scalar_t* x, const opmath_t* delta, int64_t len,
                    opmath_t lo, opmath_t hi, bool pass_at_bounds) {
#ifdef AWM_FAST_AVX2_CLONES
  if (cpu_has_avx2_fma()) return accumulate_row_avx2(acc, grad, x, delta, len, lo, hi, pass_at_bounds);
#endif
  accumulate_row_body(acc, grad, x, delta, len, lo, hi, pass_at_bounds);
}

template <typename scalar_t>
bool all_finite(const scalar_t* data, int64_t count) {
  std::atomic<bool> finite{true};
  at::parallel_for(0, count, kGrainSize, [&](int64_t begin, int64_t end) {
    if (!row_all_finite(data + begin, end - begin)) finite.store(false, std::memory_order_relaxed);
  });
  return finite.load();
}

void check_all_finite(const at::Tensor& t, const char* op, const char* name) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, t.scalar_type(), "awm_fast_check_finite", [&] {
    TORCH_CHECK_VALUE(all_finite(t.const_data_ptr<scalar_t>(), t.numel()), op, ": ", name,
                      " contains NaN or Inf; the trigger step needs finite inputs (pass check_finite=False to skip "
                      "this check)");
  });
}

// ------------------------------------------------------------------------------------------------------ apply

at::Tensor apply_triggers_cpu(const at::Tensor& x_in, const at::Tensor& triggers_in, double lo, double hi,
                              bool check_finite) {
  constexpr const char* op = "awm_fast.apply_triggers";
  check_apply_args(op, x_in, triggers_in, lo, hi);
  // x [B, n] and triggers [K, n] are 1/K and 1/B of the output: a contiguous copy of a strided input costs little.
  const at::Tensor x = x_in.contiguous();
  const at::Tensor triggers = triggers_in.contiguous();
  at::Tensor out = at::empty(applied_shape(x, triggers), x.options());
  const int64_t K = triggers.size(0), B = x.size(0), n = row_numel(x);
  if (out.numel() == 0) return out;

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "apply_triggers_cpu", [&] {
    using opmath_t = math::opmath_t<scalar_t>;
    const opmath_t lo_s = bound_in_dtype<scalar_t, opmath_t>(lo), hi_s = bound_in_dtype<scalar_t, opmath_t>(hi);
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = triggers.const_data_ptr<scalar_t>();
    scalar_t* op_ = out.mutable_data_ptr<scalar_t>();
    std::atomic<bool> x_finite{true}, triggers_finite{true};
    // One output row (k, b) per iteration; the NaN/Inf check rides along on the rows that read each input row
    // first (k == 0 for x, b == 0 for triggers) instead of costing a separate pass.
    at::parallel_for(0, K * B, std::max<int64_t>(1, kGrainSize / n), [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t k = row / B, b = row - k * B;
        apply_row(xp + b * n, tp + k * n, op_ + row * n, n, lo_s, hi_s);
        if (check_finite && k == 0 && !row_all_finite(xp + b * n, n)) x_finite.store(false, std::memory_order_relaxed);
        if (check_finite && b == 0 && !row_all_finite(tp + k * n, n)) {
          triggers_finite.store(false, std::memory_order_relaxed);
        }
      }
    });
    TORCH_CHECK_VALUE(x_finite.load(), op, ": x contains NaN or Inf (pass check_finite=False to skip this check)");
    TORCH_CHECK_VALUE(triggers_finite.load(), op,
                      ": triggers contains NaN or Inf (pass check_finite=False to skip this check)");
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> apply_triggers_backward_cpu(const at::Tensor& grad_out_in, const at::Tensor& x_in,
                                                               const at::Tensor& triggers_in, double lo, double hi,
                                                               bool need_x, bool need_triggers,
                                                               bool pass_at_bounds) {
  constexpr const char* op = "awm_fast.apply_triggers_backward";
  check_apply_args(op, x_in, triggers_in, lo, hi);
  check_backward_args(op, grad_out_in, x_in, triggers_in);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor triggers = triggers_in.contiguous();
  // Autograd hands over the gradient of a fresh [K, B, ...] output, contiguous in practice; a strided one is
  // copied once rather than read K·B times with strides.
  const at::Tensor grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_triggers = need_triggers ? at::empty_like(triggers) : at::empty({0}, triggers.options());
  const int64_t K = triggers.size(0), B = x.size(0), n = row_numel(x);
  if (n == 0) return {grad_x, grad_triggers};
  if (K == 0 || B == 0) {  // empty sums
    if (need_x) grad_x.zero_();
    if (need_triggers) grad_triggers.zero_();
    return {grad_x, grad_triggers};
  }

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "apply_triggers_backward_cpu", [&] {
    using opmath_t = math::opmath_t<scalar_t>;
    const opmath_t lo_s = bound_in_dtype<scalar_t, opmath_t>(lo), hi_s = bound_in_dtype<scalar_t, opmath_t>(hi);
    const scalar_t* gp = grad_out.const_data_ptr<scalar_t>();
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    const scalar_t* tp = triggers.const_data_ptr<scalar_t>();

    if (need_triggers) {
      // Task = one tile of columns for every trigger: for each b, x[b, tile] is read once and stays in L1 while the
      // K gradient row segments grad_out[k, b, tile] stream into the K accumulator rows.
      scalar_t* gtp = grad_triggers.mutable_data_ptr<scalar_t>();
      const int64_t tile = reduction_tile(K, 1, n), n_tiles = (n + tile - 1) / tile;
      const int64_t grain = std::max<int64_t>(1, kGrainSize / (std::min(n, tile) * B * K));
      at::parallel_for(0, n_tiles, grain, [&](int64_t begin, int64_t end) {
        std::vector<opmath_t> acc(static_cast<size_t>(K * tile)), delta(static_cast<size_t>(K * tile));
        for (int64_t task = begin; task < end; ++task) {
          const int64_t i0 = task * tile, len = std::min(tile, n - i0);
          for (int64_t k = 0; k < K; ++k) {
            for (int64_t i = 0; i < len; ++i) {
              acc[k * tile + i] = opmath_t(0);
              delta[k * tile + i] = static_cast<opmath_t>(tp[k * n + i0 + i]);
            }
          }
          for (int64_t b = 0; b < B; ++b) {
            for (int64_t k = 0; k < K; ++k) {
              accumulate_row<scalar_t>(acc.data() + k * tile, gp + (k * B + b) * n + i0, xp + b * n + i0,
                                       delta.data() + k * tile, len, lo_s, hi_s, pass_at_bounds);
            }
          }
          for (int64_t k = 0; k < K; ++k) {
            for (int64_t i = 0; i < len; ++i) gtp[k * n + i0 + i] = static_cast<scalar_t>(acc[k * tile + i]);
          }
        }
      });
    }
    if (need_x) {
      // Task (b, tile): accumulate over the K triggers.
      scalar_t* gxp = grad_x.mutable_data_ptr<scalar_t>();
      const int64_t tile = reduction_tile(1, B, n), n_tiles = (n + tile - 1) / tile;
      const int64_t grain = std::max<int64_t>(1, kGrainSize / (std::min(n, tile) * K));
      at::parallel_for(0, B * n_tiles, grain, [&](int64_t begin, int64_t end) {
        std::vector<opmath_t> acc(static_cast<size_t>(tile)), delta(static_cast<size_t>(tile));
        for (int64_t task = begin; task < end; ++task) {
          const int64_t b = task / n_tiles, i0 = (task - b * n_tiles) * tile;
          const int64_t len = std::min(tile, n - i0);
          std::fill(acc.begin(), acc.begin() + len, opmath_t(0));
          for (int64_t k = 0; k < K; ++k) {
            for (int64_t i = 0; i < len; ++i) delta[i] = static_cast<opmath_t>(tp[k * n + i0 + i]);
            accumulate_row<scalar_t>(acc.data(), gp + (k * B + b) * n + i0, xp + b * n + i0, delta.data(), len, lo_s,
                                     hi_s, pass_at_bounds);
          }
          for (int64_t i = 0; i < len; ++i) gxp[b * n + i0 + i] = static_cast<scalar_t>(acc[i]);
        }
      });
    }
  });
  return {grad_x, grad_triggers};
}

// ------------------------------------------------------------------------------------------------------ step

// Michelot/bisection reducer over a row's magnitudes (trigger_math.h). Once a threshold is known to be a lower
// bound of θ*, the elements at or below it can never re-enter the support: the buffer is compacted, so the passes
// shrink with the active set (the usual total is a small multiple of n).
struct CompactingReducer {
  double* values;
  int64_t size;

  // Branch-free: which magnitudes pass a threshold is data-dependent (about half of them on the first passes),
  // and a mispredicted branch per element would cost more than the whole pass.
  math::SumCount above(double theta, bool theta_is_lower_bound) {
    double sum = 0.0;
    int64_t count = 0;
    for (int64_t r = 0; r < size; ++r) {
      const double a = values[r];
      const bool keep = a > theta;
      if (theta_is_lower_bound) values[count] = a;  // loop-invariant branch: unswitched
      count += keep;
      sum += keep ? a : 0.0;
    }
    if (theta_is_lower_bound) size = count;
    return {sum, count};
  }
};

// row[i] += lr · step(g[i]) as one FMA, rounded to scalar_t (trigger_math.h); see AWM_FAST_AVX2_CLONES.
template <typename scalar_t, typename opmath_t>
inline void ascend_row_body(scalar_t* __restrict__ row, const scalar_t* __restrict__ grad, int64_t n, opmath_t lr,
                            Ascent ascent) {
  if (ascent == Ascent::kSign) {
    for (int64_t i = 0; i < n; ++i) {
      row[i] = static_cast<scalar_t>(math::ascend(static_cast<opmath_t>(row[i]), static_cast<opmath_t>(grad[i]), lr,
                                                  Ascent::kSign));
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      row[i] = static_cast<scalar_t>(math::ascend(static_cast<opmath_t>(row[i]), static_cast<opmath_t>(grad[i]), lr,
                                                  Ascent::kPlain));
    }
  }
}

#ifdef AWM_FAST_AVX2_CLONES
template <typename scalar_t, typename opmath_t>
AWM_FAST_TARGET_AVX2 void ascend_row_avx2(scalar_t* row, const scalar_t* grad, int64_t n, opmath_t lr,
                                          Ascent ascent) {
  ascend_row_body(row, grad, n, lr, ascent);
}
#endif

template <typename scalar_t, typename opmath_t>
void ascend_row(scalar_t* row, const scalar_t* grad, int64_t n, opmath_t lr, Ascent ascent) {
  if (ascent == Ascent::kNone) return;
#ifdef AWM_FAST_AVX2_CLONES
  if (cpu_has_avx2_fma()) return ascend_row_avx2(row, grad, n, lr, ascent);
#endif
  ascend_row_body(row, grad, n, lr, ascent);
}

struct RowNorms {
  double l1;
  double max_abs;
};

// ‖row‖₁ and max |row_i| in double, four independent partial sums so the add latency does not serialise the loop.
template <typename scalar_t>
RowNorms row_norms(const scalar_t* __restrict__ row, int64_t n) {
  double sum[4] = {0.0, 0.0, 0.0, 0.0}, max_abs[4] = {0.0, 0.0, 0.0, 0.0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int j = 0; j < 4; ++j) {
      const double a = std::fabs(static_cast<double>(row[i + j]));
      sum[j] += a;
      max_abs[j] = a > max_abs[j] ? a : max_abs[j];
    }
  }
  for (; i < n; ++i) {
    const double a = std::fabs(static_cast<double>(row[i]));
    sum[0] += a;
    max_abs[0] = a > max_abs[0] ? a : max_abs[0];
  }
  // An Inf or NaN row gives a non-finite sum: the caller reports it.
  return {(sum[0] + sum[1]) + (sum[2] + sum[3]), std::max(std::max(max_abs[0], max_abs[1]),
                                                            std::max(max_abs[2], max_abs[3]))};
}

// Ascent (optional) then projection of K rows of n elements, in place. Returns false when a row became non-finite
// (lr · grad overflowed the dtype).
template <typename scalar_t>
bool step_rows_cpu(scalar_t* rows, const scalar_t* grad, int64_t K, int64_t n, double lr, Ascent ascent,
                   double radius, Projection projection) {
  using opmath_t = math::opmath_t<scalar_t>;
  const opmath_t lr_s = static_cast<opmath_t>(lr);
  std::atomic<bool> finite{true};
  // Rows are independent; small rows are batched per task so tiny steps do not wake the thread pool (under a
  // loaded machine an OpenMP region costs milliseconds).
  const int64_t row_grain = std::max<int64_t>(1, kGrainSize / std::max<int64_t>(n, 1));
  at::parallel_for(0, K, row_grain, [&](int64_t begin, int64_t end) {
    std::vector<double> magnitudes;
    for (int64_t k = begin; k < end; ++k) {
      scalar_t* __restrict__ row = rows + k * n;
      const scalar_t* __restrict__ g = grad == nullptr ? nullptr : grad + k * n;
      // Pass 1: ascend, rounding to the storage dtype (the projection sees what eager's add_ would have stored).
      if (g != nullptr) ascend_row(row, g, n, lr_s, ascent);
      // Pass 2: L1 norm and max magnitude in double.
      const RowNorms norms = row_norms(row, n);
      const double l1 = norms.l1, max_abs = norms.max_abs;
      if (!std::isfinite(l1)) {
        finite.store(false, std::memory_order_relaxed);
        continue;
      }
      if (projection == Projection::kNone || l1 <= radius) continue;  // inside the ball: unchanged
      if (radius == 0.0) {
        std::fill(row, row + n, scalar_t(0));
      } else if (projection == Projection::kRescale) {
        const double scale = math::rescale_factor(l1, radius);
        for (int64_t i = 0; i < n; ++i) row[i] = static_cast<scalar_t>(static_cast<double>(row[i]) * scale);
      } else {
        // Only magnitudes above Michelot's first threshold (a lower bound of θ*) can be in the support: the
        // buffer starts with the solver's first pass already done.
        const double first_threshold = (l1 - radius) / static_cast<double>(n);
        magnitudes.resize(static_cast<size_t>(n));
        int64_t kept = 0;
        for (int64_t i = 0; i < n; ++i) {
          const double a = std::fabs(static_cast<double>(row[i]));
          magnitudes[kept] = a;  // branch-free compaction, as in CompactingReducer
          kept += a > first_threshold;
        }
        CompactingReducer reducer{magnitudes.data(), kept};
        const double theta = math::l1_ball_threshold(reducer, l1, max_abs, n, radius);
        for (int64_t i = 0; i < n; ++i) {
          row[i] = static_cast<scalar_t>(math::soft_threshold(static_cast<double>(row[i]), theta));
        }
      }
    }
  });
  return finite.load();
}

void trigger_step_cpu(const at::Tensor& triggers, const at::Tensor& grad_in, double lr, double radius,
                      c10::string_view ascent_mode, c10::string_view projection_mode, bool check_finite) {
  constexpr const char* op = "awm_fast.trigger_step";
  check_step_args(op, triggers, grad_in, lr);
  const Ascent ascent = parse_ascent(ascent_mode);
  const Projection projection = parse_projection(projection_mode, radius, op);
  const at::Tensor grad = grad_in.contiguous();  // [K, ...] like the triggers: small
  if (triggers.numel() == 0) return;
  // Checked before anything is written, so a bad input leaves the triggers untouched.
  if (check_finite) {
    check_all_finite(triggers, op, "triggers");
    check_all_finite(grad, op, "grad");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, triggers.scalar_type(), "trigger_step_cpu", [&] {
    const bool finite = step_rows_cpu(triggers.mutable_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(),
                                      triggers.size(0), row_numel(triggers), lr, ascent, radius, projection);
    TORCH_CHECK_VALUE(finite || !check_finite, op, ": the ascent step overflowed ", triggers.scalar_type(),
                      " (lr * grad too large); the triggers now hold Inf");
  });
}

at::Tensor project_l1_ball_cpu(const at::Tensor& v, double radius, c10::string_view mode, bool check_finite) {
  constexpr const char* op = "awm_fast.project_l1_ball";
  TORCH_CHECK_VALUE(v.dim() == 2, op, ": v must be 2-D [K, n], got shape ", v.sizes());
  CHECK_FLOATING(op, v);
  const Projection projection = parse_projection(mode, radius, op);
  if (check_finite) check_all_finite(v, op, "v");
  at::Tensor out = v.clone(at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "project_l1_ball_cpu", [&] {
    step_rows_cpu<scalar_t>(out.mutable_data_ptr<scalar_t>(), nullptr, out.size(0), out.size(1), 0.0, Ascent::kNone,
                            radius, projection);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY(awm_fast, m) {
  m.def("apply_triggers(Tensor x, Tensor triggers, float lo, float hi, bool check_finite=True) -> Tensor");
  m.def(
      "apply_triggers_backward(Tensor grad_out, Tensor x, Tensor triggers, float lo, float hi, bool need_x, "
      "bool need_triggers, bool pass_at_bounds) -> (Tensor, Tensor)");
  m.def(
      "trigger_step(Tensor(a!) triggers, Tensor grad, float lr, float radius, str ascent, str projection, "
      "bool check_finite=True) -> ()");
  m.def("project_l1_ball(Tensor v, float radius, str mode, bool check_finite=True) -> Tensor");
}

TORCH_LIBRARY_IMPL(awm_fast, CPU, m) {
  m.impl("apply_triggers", &apply_triggers_cpu);
  m.impl("apply_triggers_backward", &apply_triggers_backward_cpu);
  m.impl("trigger_step", &trigger_step_cpu);
  m.impl("project_l1_ball", &project_l1_ball_cpu);
}

}  // namespace awm_fast
