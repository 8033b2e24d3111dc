// CUDA implementation of torch.ops.awm_fast.* (schemas: ../awm_fast_ops.cpp): argument checks, allocation, the
// dtype switch and the launch on the current stream of the inputs' device; the kernels are in trigger_ops.cu.
// This host half is plain C++ (compiled once by the host compiler) so that nvcc, which parses a .cu once per target
// architecture, never sees the ATen/torch headers. Built only where setup.py finds nvcc.
//
// NaN/Inf checks (check_finite=True) reduce on the device and read one bool back: a host synchronisation per call.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <cstdint>
#include <tuple>

#include "cuda/trigger_kernels.h"
#include "ops_common.h"

namespace awm_fast {
namespace {

void check_all_finite_cuda(const at::Tensor& t, const char* op, const char* name) {
  TORCH_CHECK_VALUE(t.isfinite().all().item<bool>(), op, ": ", name,
                    " contains NaN or Inf; the trigger step needs finite inputs (pass check_finite=False to skip "
                    "this check and its host synchronisation)");
}

at::Tensor apply_triggers_cuda(const at::Tensor& x_in, const at::Tensor& triggers_in, double lo, double hi,
                               bool check_finite) {
  constexpr const char* op = "awm_fast.apply_triggers";
  check_apply_args(op, x_in, triggers_in, lo, hi);
  const c10::cuda::CUDAGuard guard(x_in.device());
  // x [B, n] and triggers [K, n] are 1/K and 1/B of the output: a contiguous copy of a strided input costs little.
  const at::Tensor x = x_in.contiguous();
  const at::Tensor triggers = triggers_in.contiguous();
  if (check_finite) {
    check_all_finite_cuda(x, op, "x");
    check_all_finite_cuda(triggers, op, "triggers");
  }
  at::Tensor out = at::empty(applied_shape(x, triggers), x.options());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "apply_triggers_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_apply_triggers(x.const_data_ptr<scalar_t>(), triggers.const_data_ptr<scalar_t>(),
                                               out.mutable_data_ptr<scalar_t>(), triggers.size(0), x.size(0),
                                               row_numel(x), lo, hi, stream));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> apply_triggers_backward_cuda(const at::Tensor& grad_out_in,
                                                                const at::Tensor& x_in,
                                                                const at::Tensor& triggers_in, double lo, double hi,
                                                                bool need_x, bool need_triggers,
                                                                bool pass_at_bounds) {
  constexpr const char* op = "awm_fast.apply_triggers_backward";
  check_apply_args(op, x_in, triggers_in, lo, hi);
  check_backward_args(op, grad_out_in, x_in, triggers_in);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor x = x_in.contiguous();
  const at::Tensor triggers = triggers_in.contiguous();
  // Autograd hands over the gradient of a fresh [K, B, ...] output, contiguous in practice.
  const at::Tensor grad_out = grad_out_in.contiguous();
  at::Tensor grad_x = need_x ? at::empty_like(x) : at::empty({0}, x.options());
  at::Tensor grad_triggers = need_triggers ? at::empty_like(triggers) : at::empty({0}, triggers.options());
  const int64_t K = triggers.size(0), B = x.size(0), n = row_numel(x);
  if (n == 0 || (!need_x && !need_triggers)) return {grad_x, grad_triggers};
  if (K == 0 || B == 0) {  // empty sums
    if (need_x) grad_x.zero_();
    if (need_triggers) grad_triggers.zero_();
    return {grad_x, grad_triggers};
  }
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "apply_triggers_backward_cuda", [&] {
    C10_CUDA_CHECK(cuda::launch_apply_triggers_backward(
        grad_out.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), triggers.const_data_ptr<scalar_t>(),
        need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
        need_triggers ? grad_triggers.mutable_data_ptr<scalar_t>() : nullptr, K, B, n, lo, hi, pass_at_bounds,
        stream));
  });
  return {grad_x, grad_triggers};
}

// Ascent + projection of K rows in place, one block per row. Returns whether a row overflowed; the flag is only
// read back (a synchronisation) when `read_overflow`.
template <typename scalar_t>
bool step_rows_cuda(scalar_t* rows, const scalar_t* grad, int64_t K, int64_t n, double lr, Ascent ascent,
                    double radius, Projection projection, const at::Tensor& like, bool read_overflow) {
  TORCH_CHECK(K <= INT32_MAX, "awm_fast: at most 2^31 - 1 triggers per call, got ", K);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor overflowed = at::empty({1}, like.options().dtype(at::kInt));
  C10_CUDA_CHECK(cudaMemsetAsync(overflowed.mutable_data_ptr<int>(), 0, sizeof(int), stream));
  C10_CUDA_CHECK(cuda::launch_trigger_step(rows, grad, K, n, lr, ascent, radius, projection,
                                           overflowed.mutable_data_ptr<int>(), stream));
  return read_overflow && overflowed.item<int>() != 0;
}

void trigger_step_cuda(const at::Tensor& triggers, const at::Tensor& grad_in, double lr, double radius,
                       c10::string_view ascent_mode, c10::string_view projection_mode, bool check_finite) {
  constexpr const char* op = "awm_fast.trigger_step";
  check_step_args(op, triggers, grad_in, lr);
  const Ascent ascent = parse_ascent(ascent_mode);
  const Projection projection = parse_projection(projection_mode, radius, op);
  const c10::cuda::CUDAGuard guard(triggers.device());
  const at::Tensor grad = grad_in.contiguous();  // [K, ...] like the triggers: small
  if (triggers.numel() == 0) return;
  // Checked before anything is written, so a bad input leaves the triggers untouched.
  if (check_finite) {
    check_all_finite_cuda(triggers, op, "triggers");
    check_all_finite_cuda(grad, op, "grad");
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, triggers.scalar_type(), "trigger_step_cuda", [&] {
    const bool overflow =
        step_rows_cuda(triggers.mutable_data_ptr<scalar_t>(), grad.const_data_ptr<scalar_t>(), triggers.size(0),
                       row_numel(triggers), lr, ascent, radius, projection, triggers, check_finite);
    TORCH_CHECK_VALUE(!overflow, op, ": the ascent step overflowed ", triggers.scalar_type(),
                      " (lr * grad too large); the triggers now hold Inf");
  });
}

at::Tensor project_l1_ball_cuda(const at::Tensor& v, double radius, c10::string_view mode, bool check_finite) {
  constexpr const char* op = "awm_fast.project_l1_ball";
  TORCH_CHECK_VALUE(v.dim() == 2, op, ": v must be 2-D [K, n], got shape ", v.sizes());
  CHECK_FLOATING(op, v);
  const Projection projection = parse_projection(mode, radius, op);
  const c10::cuda::CUDAGuard guard(v.device());
  if (check_finite) check_all_finite_cuda(v, op, "v");
  at::Tensor out = v.clone(at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "project_l1_ball_cuda", [&] {
    step_rows_cuda<scalar_t>(out.mutable_data_ptr<scalar_t>(), nullptr, out.size(0), out.size(1), 0.0, Ascent::kNone,
                             radius, projection, out, false);
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(awm_fast, CUDA, m) {
  m.impl("apply_triggers", &apply_triggers_cuda);
  m.impl("apply_triggers_backward", &apply_triggers_backward_cuda);
  m.impl("trigger_step", &trigger_step_cuda);
  m.impl("project_l1_ball", &project_l1_ball_cuda);
}

}  // namespace awm_fast
