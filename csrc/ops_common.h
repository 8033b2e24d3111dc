// Host-side argument checks and mode parsing shared by the CPU (awm_fast_ops.cpp) and CUDA (cuda/trigger_ops.cu)
// implementations. Errors name the op and the tensor. Bad values (shapes, modes, radius, NaN/Inf) raise
// ValueError in Python (TORCH_CHECK_VALUE); wrong dtype, device or layout raise RuntimeError (TORCH_CHECK).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "trigger_math.h"

#define CHECK_FLOATING(op, x)                                                                                   \
  TORCH_CHECK(awm_fast::is_supported_dtype((x).scalar_type()),                                                  \
              op, ": " #x " must be float64, float32, bfloat16 or float16, got ", (x).scalar_type())
#define CHECK_SAME_DTYPE(op, x, y)                                                                              \
  TORCH_CHECK((x).scalar_type() == (y).scalar_type(), op, ": " #x " and " #y " must have the same dtype, got ",  \
              (x).scalar_type(), " and ", (y).scalar_type())
#define CHECK_SAME_DEVICE(op, x, y)                                                                             \
  TORCH_CHECK((x).device() == (y).device(), op, ": " #x " and " #y " must be on the same device, got ",         \
              (x).device(), " and ", (y).device())
#define CHECK_CONTIGUOUS(op, x) TORCH_CHECK((x).is_contiguous(), op, ": " #x " must be contiguous")
#define CHECK_MIN_DIM(op, x, d) \
  TORCH_CHECK_VALUE((x).dim() >= (d), op, ": " #x " must have at least " #d " dimension(s), got shape ", (x).sizes())

namespace awm_fast {

inline bool is_supported_dtype(at::ScalarType dtype) {
  return dtype == at::kDouble || dtype == at::kFloat || dtype == at::kBFloat16 || dtype == at::kHalf;
}

inline Ascent parse_ascent(c10::string_view ascent) {
  if (ascent == "plain") return Ascent::kPlain;
  if (ascent == "sign") return Ascent::kSign;
  TORCH_CHECK_VALUE(false, "awm_fast.trigger_step: unknown ascent '", std::string(ascent),
                    "'; expected 'plain' or 'sign'");
}

inline Projection parse_projection(c10::string_view mode, double radius, const char* op) {
  Projection projection = Projection::kNone;
  if (mode == "exact") {
    projection = Projection::kExact;
  } else if (mode == "rescale") {
    projection = Projection::kRescale;
  } else {
    TORCH_CHECK_VALUE(false, op, ": unknown projection mode '", std::string(mode), "'; expected 'exact' or 'rescale'");
  }
  TORCH_CHECK_VALUE(!std::isnan(radius) && radius >= 0.0, op, ": radius must be >= 0 (inf for no projection), got ",
                    radius);
  return std::isinf(radius) ? Projection::kNone : projection;
}

// Elements per item of the leading dimension (one image, one trigger), as int64.
inline int64_t row_numel(const at::Tensor& t) { return t.size(0) == 0 ? 0 : t.numel() / t.size(0); }

inline void check_apply_args(const char* op, const at::Tensor& x, const at::Tensor& triggers, double lo, double hi) {
  CHECK_MIN_DIM(op, x, 1);
  CHECK_MIN_DIM(op, triggers, 1);
  CHECK_FLOATING(op, x);
  CHECK_SAME_DTYPE(op, x, triggers);
  CHECK_SAME_DEVICE(op, x, triggers);
  TORCH_CHECK_VALUE(x.sizes().slice(1) == triggers.sizes().slice(1), op,
                    ": x [B, ...] and triggers [K, ...] must agree after the first dimension, got ", x.sizes(),
                    " and ", triggers.sizes());
  TORCH_CHECK_VALUE(!std::isnan(lo) && !std::isnan(hi), op, ": the clamp bounds must not be NaN, got lo=", lo,
                    ", hi=", hi);
}

// [K, B, ...] for x [B, ...] and triggers [K, ...].
inline std::vector<int64_t> applied_shape(const at::Tensor& x, const at::Tensor& triggers) {
  std::vector<int64_t> shape{triggers.size(0)};
  shape.insert(shape.end(), x.sizes().begin(), x.sizes().end());
  return shape;
}

inline void check_backward_args(const char* op, const at::Tensor& grad_out, const at::Tensor& x,
                                const at::Tensor& triggers) {
  CHECK_SAME_DTYPE(op, grad_out, x);
  CHECK_SAME_DEVICE(op, grad_out, x);
  const auto expected = applied_shape(x, triggers);
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef(expected), op, ": grad_out must have shape ",
                    at::IntArrayRef(expected), " ([K, B, ...]), got ", grad_out.sizes());
}

inline void check_step_args(const char* op, const at::Tensor& triggers, const at::Tensor& grad, double lr) {
  CHECK_MIN_DIM(op, triggers, 1);
  CHECK_FLOATING(op, triggers);
  CHECK_SAME_DTYPE(op, triggers, grad);
  CHECK_SAME_DEVICE(op, triggers, grad);
  CHECK_CONTIGUOUS(op, triggers);  // updated in place
  TORCH_CHECK_VALUE(triggers.sizes() == grad.sizes(), op, ": triggers and grad must have the same shape, got ",
                    triggers.sizes(), " and ", grad.sizes());
  TORCH_CHECK_VALUE(std::isfinite(lr), op, ": lr must be finite, got ", lr);
}

// A bound as the clamp sees it: eager clamps a tensor of dtype scalar_t with bounds cast to scalar_t.
template <typename scalar_t, typename opmath_t>
inline opmath_t bound_in_dtype(double bound) {
  return static_cast<opmath_t>(static_cast<scalar_t>(bound));
}

}  // namespace awm_fast
