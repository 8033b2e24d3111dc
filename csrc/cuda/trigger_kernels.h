// Launchers of the CUDA kernels (trigger_ops.cu), called by the host wrappers (trigger_ops_cuda.cpp) with raw
// contiguous pointers, int64 sizes and the current stream. Kept free of ATen so the .cu compiles quickly: nvcc
// parses a translation unit once per target architecture, and the ATen/torch headers would dominate that time.
// Each launcher returns the launch status (cudaGetLastError) for the caller to check.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "trigger_math.h"

namespace awm_fast {
namespace cuda {

// out[k, b, i] = clamp(x[b, i] + triggers[k, i], lo, hi); x [B, n], triggers [K, n], out [K, B, n].
template <typename scalar_t>
cudaError_t launch_apply_triggers(const scalar_t* x, const scalar_t* triggers, scalar_t* out, int64_t K, int64_t B,
                                  int64_t n, double lo, double hi, cudaStream_t stream);

// grad_triggers [K, n] and/or grad_x [B, n] (nullptr: not computed) from grad_out [K, B, n].
template <typename scalar_t>
cudaError_t launch_apply_triggers_backward(const scalar_t* grad_out, const scalar_t* x, const scalar_t* triggers,
                                           scalar_t* grad_x, scalar_t* grad_triggers, int64_t K, int64_t B, int64_t n,
                                           double lo, double hi, bool pass_at_bounds, cudaStream_t stream);

// In place on rows [K, n]: ascent with grad [K, n] (nullptr or Ascent::kNone: none), then the projection. Sets
// *overflowed (device int, zeroed by the caller) when a row's L1 norm is not finite after the ascent.
template <typename scalar_t>
cudaError_t launch_trigger_step(scalar_t* rows, const scalar_t* grad, int64_t K, int64_t n, double lr, Ascent ascent,
                                double radius, Projection projection, int* overflowed, cudaStream_t stream);

}  // namespace cuda
}  // namespace awm_fast
