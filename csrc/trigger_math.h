// Per-element and per-trigger math of the batched trigger step, shared verbatim by the CPU implementation
// (awm_fast_ops.cpp) and the CUDA kernels (cuda/trigger_ops.cu), so the CPU tests exercise the code the GPU runs.
//
// Numerics (all functions take and return the math type: float for fp32/bf16/fp16 storage, double for fp64):
// - apply: v = x + Δ is rounded to the storage dtype before the clamp, exactly like eager `(x + Δ).clamp(lo, hi)`,
//   whose intermediate sum is a tensor of that dtype. The clamp's pass-through mask follows torch.clamp's backward
//   (see clamp_passes for the boundary convention).
// - ascent: Δ + lr·g as one fused multiply-add, like eager `Δ.add_(g, alpha=lr)` (ATen's vectorised add is an FMA).
// - L1-ball projection: every sum runs in double whatever the storage dtype; the row is a few hundred thousand
//   values at most, so this costs nothing next to the K·B·n apply/reduce traffic and makes the threshold exact to
//   double rounding.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define AWM_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define AWM_HOST_DEVICE inline
#endif

namespace awm_fast {

enum class Ascent : int { kNone = 0, kPlain = 1, kSign = 2 };
enum class Projection : int { kNone = 0, kExact = 1, kRescale = 2 };

namespace math {

// The math type of a storage type: double for double, float for float, bfloat16 and half (= at::opmath_type).
template <typename scalar_t>
using opmath_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;

// ---------------------------------------------------------------------------------------------- apply / backward

// x + Δ as eager computes it: a math-type add rounded once to the storage dtype.
template <typename scalar_t, typename opmath_t>
AWM_HOST_DEVICE opmath_t triggered_sum(opmath_t x, opmath_t delta) {
  return static_cast<opmath_t>(static_cast<scalar_t>(x + delta));
}

// The clamp of torch.clamp: min(max(v, lo), hi) (inputs are checked finite, so NaN ordering never matters).
template <typename opmath_t>
AWM_HOST_DEVICE opmath_t clamp(opmath_t v, opmath_t lo, opmath_t hi) {
  v = v < lo ? lo : v;
  return v > hi ? hi : v;
}

// torch.clamp's backward mask. Whether the gradient flows when v sits exactly on a bound changed between torch
// releases (torch 2.14 blocks it: lo < v < hi; older releases let it through: lo <= v <= hi), so the caller passes
// the convention of the torch it runs against (awm_fast.ops.trigger detects it once).
template <typename opmath_t>
AWM_HOST_DEVICE bool clamp_passes(opmath_t v, opmath_t lo, opmath_t hi, bool pass_at_bounds) {
  return pass_at_bounds ? ((v >= lo) & (v <= hi)) : ((v > lo) & (v < hi));
}

// Upstream gradient through the clamp: `where(mask, g, 0)`, a select rather than a product so an infinite
// upstream gradient at a blocked element gives 0, not NaN, as in eager.
template <typename opmath_t>
AWM_HOST_DEVICE opmath_t masked_grad(opmath_t g, opmath_t v, opmath_t lo, opmath_t hi, bool pass_at_bounds) {
  return clamp_passes(v, lo, hi, pass_at_bounds) ? g : opmath_t(0);
}

// ---------------------------------------------------------------------------------------------- ascent

AWM_HOST_DEVICE float fused_multiply_add(float a, float b, float c) {
#if defined(__CUDA_ARCH__)
  return fmaf(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

AWM_HOST_DEVICE double fused_multiply_add(double a, double b, double c) {
#if defined(__CUDA_ARCH__)
  return ::fma(a, b, c);
#else
  return std::fma(a, b, c);
#endif
}

// torch.sign: -1, 0 or +1.
template <typename opmath_t>
AWM_HOST_DEVICE opmath_t sign(opmath_t v) {
  return static_cast<opmath_t>((v > opmath_t(0)) - (v < opmath_t(0)));
}

// One ascent step on one element: Δ + lr·g ("plain", SGD on the negated loss) or Δ + lr·sign(g) ("sign").
template <typename opmath_t>
AWM_HOST_DEVICE opmath_t ascend(opmath_t delta, opmath_t grad, opmath_t lr, Ascent ascent) {
  if (ascent == Ascent::kNone) return delta;
  const opmath_t step = ascent == Ascent::kSign ? sign(grad) : grad;
  return fused_multiply_add(lr, step, delta);
}

// (x - x) is 0 for every finite x and NaN for ±Inf and NaN: a branch-free finiteness test that vectorises.
template <typename opmath_t>
AWM_HOST_DEVICE bool is_finite(opmath_t v) {
  return (v - v) == opmath_t(0);
}

// ---------------------------------------------------------------------------------------------- L1-ball projection
//
// Euclidean projection of a row v onto {u : ‖u‖₁ <= r} (Duchi et al. 2008): u_i = sign(v_i)·max(|v_i| - θ, 0),
// θ the root of f(θ) = Σ max(|v_i| - θ, 0) - r, f decreasing and piecewise linear. θ comes from Michelot's
// fixed-point (pivot) iteration θ ← (Σ_{|v|>θ} |v| - r) / #{|v| > θ}, started at (‖v‖₁ - r)/n: every iterate is a
// lower bound of θ* (the active set always contains the support), each pass drops at least one element, and the
// iteration stops exactly at θ* once the active set stops changing. On Gaussian-like rows of 3k-150k elements it
// takes 5-10 passes over a shrinking active set (about 2-3 n element visits in all). A pathological row could need
// many more, so after kMichelotPasses the solver bisects the bracket [last iterate, max|v|] until no |v_i| lies
// strictly inside it, then finishes with Michelot from the lower end (then one or two passes).
//
// The solver is written against a Reducer so the same control flow runs serially on the CPU and block-wide on the
// GPU (where every thread of the block calls it uniformly and `above` performs a block reduction):
//   SumCount above(double theta, bool theta_is_lower_bound): Σ|v_i| and #i over |v_i| > theta. When
//   theta_is_lower_bound is true the reducer may discard elements <= theta for good (the CPU compacts its buffer).

struct SumCount {
  double sum;
  int64_t count;
};

constexpr int kMichelotPasses = 48;
constexpr int kBisectionPasses = 200;

// The per-element shrinkage towards 0 by θ.
AWM_HOST_DEVICE double soft_threshold(double v, double theta) {
  const double magnitude = std::fabs(v) - theta;
  return std::copysign(magnitude > 0.0 ? magnitude : 0.0, v);
}

// The radial rescaling of the authors' code: v · min(1, r / ‖v‖₁).
AWM_HOST_DEVICE double rescale_factor(double l1_norm, double radius) {
  return l1_norm > radius ? radius / l1_norm : 1.0;
}

// Michelot's update from an active set (its sum and size).
AWM_HOST_DEVICE double michelot_threshold(SumCount active, double radius) {
  return (active.sum - radius) / static_cast<double>(active.count);
}

// θ* for a row with ‖v‖₁ = l1_norm > radius > 0, n elements, max |v_i| = max_abs.
template <typename Reducer>
AWM_HOST_DEVICE double l1_ball_threshold(Reducer& reducer, double l1_norm, double max_abs, int64_t n,
                                         double radius) {
  SumCount active{l1_norm, n};
  double theta = michelot_threshold(active, radius);
  for (int pass = 0; pass < kMichelotPasses; ++pass) {
    const SumCount next = reducer.above(theta, true);
    // No element left the active set: θ is the fixed point. (count == 0 can only come from rounding when every
    // |v_i| sits at the threshold; keep the last valid θ.)
    if (next.count == active.count || next.count == 0) return theta;
    active = next;
    theta = michelot_threshold(active, radius);
  }
  // Safeguard: bisect [lo, hi] with f(lo) >= 0 > f(hi) until the open interval holds no |v_i|.
  double lo = theta;
  double hi = max_abs;
  SumCount at_lo = reducer.above(lo, true);
  for (int pass = 0; pass < kBisectionPasses; ++pass) {
    const double mid = 0.5 * (lo + hi);
    if (!(mid > lo && mid < hi)) break;
    const SumCount at_mid = reducer.above(mid, false);
    if (at_mid.sum - static_cast<double>(at_mid.count) * mid - radius >= 0.0) {
      lo = mid;
      at_lo = at_mid;
    } else {
      hi = mid;
      if (at_mid.count == at_lo.count) break;  // no |v_i| in (lo, mid]: the support is {|v| > lo}
    }
  }
  // Finish with Michelot from the lower bound lo.
  active = at_lo;
  if (active.count == 0) return lo;
  theta = michelot_threshold(active, radius);
  for (;;) {
    const SumCount next = reducer.above(theta, true);
    if (next.count == active.count || next.count == 0) return theta;
    active = next;
    theta = michelot_threshold(active, radius);
  }
}

}  // namespace math
}  // namespace awm_fast
