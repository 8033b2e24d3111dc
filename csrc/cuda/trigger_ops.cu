// CUDA kernels of torch.ops.awm_fast.* and their launchers (host wrappers and registration: trigger_ops_cuda.cpp;
// schemas and the CPU implementation: ../awm_fast_ops.cpp).
//
// Every kernel runs on the stream it is given (the current stream of the inputs' device) and indexes with int64
// (K·B·n may exceed 2^31). The per-element and per-trigger math is ../trigger_math.h, the code the CPU runs.
//   apply_triggers            2-D grid: y = output row (k, b), x = element within the row; one read of x and Δ
//                             (both small and cached), one write per output element.
//   apply_triggers_backward   grad_triggers: a block of 32 columns x 8 batch lanes per (column tile, k), the
//                             lanes summed in shared memory (deterministic, no atomics); grad_x: one thread per
//                             (b, i) looping over k.
//   trigger_step / project    one block per trigger: ascent + norms in one pass, then the Michelot/bisection
//                             passes of trigger_math.h as block reductions, then the soft threshold.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "cuda/trigger_kernels.h"
#include "trigger_math.h"

namespace awm_fast {
namespace cuda {
namespace {

constexpr int kApplyThreads = 256;
constexpr int64_t kMaxGridX = int64_t{1} << 16;  // enough blocks to fill any GPU; the kernels stride over the rest
constexpr int64_t kMaxGridY = 65535;
constexpr int kReduceColumns = 32;  // grad_triggers block: 32 consecutive elements (one coalesced warp read) ...
constexpr int kReduceLanes = 8;     // ... x 8 batch lanes
constexpr int kStepThreads = 512;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Threads per block for rows of n elements: a multiple of 32, no more than a short row needs.
int row_threads(int64_t n) {
  return static_cast<int>(std::min<int64_t>(kApplyThreads, std::max<int64_t>(32, ceil_div(n, 32) * 32)));
}

// A clamp bound as eager applies it to a tensor of dtype scalar_t: cast to scalar_t first.
template <typename scalar_t>
math::opmath_t<scalar_t> bound_in_dtype(double bound) {
  return static_cast<math::opmath_t<scalar_t>>(static_cast<scalar_t>(bound));
}

// ------------------------------------------------------------------------------------------------------ apply

template <typename scalar_t, typename opmath_t>
__global__ void apply_triggers_fwd_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ triggers,
                                          scalar_t* __restrict__ out, int64_t K, int64_t B, int64_t n, opmath_t lo,
                                          opmath_t hi) {
  const int64_t rows = K * B;
  const int64_t column_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t row = blockIdx.y; row < rows; row += gridDim.y) {
    const int64_t k = row / B, b = row - k * B;
    const scalar_t* xr = x + b * n;
    const scalar_t* tr = triggers + k * n;
    scalar_t* outr = out + row * n;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += column_stride) {
      const opmath_t v = math::triggered_sum<scalar_t>(static_cast<opmath_t>(xr[i]), static_cast<opmath_t>(tr[i]));
      outr[i] = static_cast<scalar_t>(math::clamp(v, lo, hi));
    }
  }
}

template <typename scalar_t, typename opmath_t>
__global__ void apply_triggers_bwd_triggers_kernel(const scalar_t* __restrict__ grad_out,
                                                   const scalar_t* __restrict__ x,
                                                   const scalar_t* __restrict__ triggers,
                                                   scalar_t* __restrict__ grad_triggers, int64_t K, int64_t B,
                                                   int64_t n, opmath_t lo, opmath_t hi, bool pass_at_bounds) {
  __shared__ opmath_t partial[kReduceLanes][kReduceColumns + 1];
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kReduceColumns + threadIdx.x;
  for (int64_t k = blockIdx.y; k < K; k += gridDim.y) {
    opmath_t acc = opmath_t(0);
    if (i < n) {
      const opmath_t delta = static_cast<opmath_t>(triggers[k * n + i]);
      for (int64_t b = threadIdx.y; b < B; b += kReduceLanes) {
        const opmath_t v = math::triggered_sum<scalar_t>(static_cast<opmath_t>(x[b * n + i]), delta);
        const opmath_t g = static_cast<opmath_t>(grad_out[(k * B + b) * n + i]);
        acc += math::masked_grad(g, v, lo, hi, pass_at_bounds);
      }
    }
    partial[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && i < n) {
      opmath_t total = opmath_t(0);
#pragma unroll
      for (int lane = 0; lane < kReduceLanes; ++lane) total += partial[lane][threadIdx.x];
      grad_triggers[k * n + i] = static_cast<scalar_t>(total);
    }
    __syncthreads();  // `partial` is reused by the next k
  }
}

template <typename scalar_t, typename opmath_t>
__global__ void apply_triggers_bwd_x_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                                            const scalar_t* __restrict__ triggers, scalar_t* __restrict__ grad_x,
                                            int64_t K, int64_t B, int64_t n, opmath_t lo, opmath_t hi,
                                            bool pass_at_bounds) {
  const int64_t column_stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t b = blockIdx.y; b < B; b += gridDim.y) {
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += column_stride) {
      const opmath_t xv = static_cast<opmath_t>(x[b * n + i]);
      opmath_t acc = opmath_t(0);
      for (int64_t k = 0; k < K; ++k) {
        const opmath_t v = math::triggered_sum<scalar_t>(xv, static_cast<opmath_t>(triggers[k * n + i]));
        const opmath_t g = static_cast<opmath_t>(grad_out[(k * B + b) * n + i]);
        acc += math::masked_grad(g, v, lo, hi, pass_at_bounds);
      }
      grad_x[b * n + i] = static_cast<scalar_t>(acc);
    }
  }
}

// ------------------------------------------------------------------------------------------------------ step

// All-reduce across the block; every thread gets the result. `shared` holds one slot per warp; the leading
// __syncthreads protects it from the previous call's final read.
template <typename T, typename Op>
__device__ T block_allreduce(T value, Op combine, T identity, T* shared) {
  for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, __shfl_xor_sync(0xffffffffu, value, offset));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (warp == 0) {
    value = lane < warps ? shared[lane] : identity;
    for (int offset = 16; offset > 0; offset >>= 1) value = combine(value, __shfl_xor_sync(0xffffffffu, value, offset));
    if (lane == 0) shared[0] = value;
  }
  __syncthreads();
  return shared[0];
}

struct Sum {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};

struct Max {
  __device__ double operator()(double a, double b) const { return a > b ? a : b; }
};

// The Michelot/bisection reducer of trigger_math.h over one block's row: every thread scans its strided share of
// the row, then a block all-reduce. Called uniformly by all threads of the block (the solver's control flow only
// depends on the all-reduced values, identical in every thread).
template <typename scalar_t>
struct BlockReducer {
  const scalar_t* row;
  int64_t n;
  double* shared_sum;
  long long* shared_count;

  __device__ math::SumCount above(double theta, bool /*theta_is_lower_bound: nothing to compact here*/) {
    double sum = 0.0;
    long long count = 0;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const double a = fabs(static_cast<double>(row[i]));
      const bool keep = a > theta;
      sum += keep ? a : 0.0;
      count += keep;
    }
    sum = block_allreduce(sum, Sum{}, 0.0, shared_sum);
    count = block_allreduce(count, Sum{}, 0LL, shared_count);
    return {sum, static_cast<int64_t>(count)};
  }
};

template <typename scalar_t, typename opmath_t>
__global__ void __launch_bounds__(kStepThreads)
    trigger_step_kernel(scalar_t* __restrict__ rows, const scalar_t* __restrict__ grad, int64_t n, opmath_t lr,
                        Ascent ascent, double radius, Projection projection, int* __restrict__ overflowed) {
  __shared__ double shared_sum[32];
  __shared__ double shared_max[32];
  __shared__ long long shared_count[32];
  scalar_t* row = rows + static_cast<int64_t>(blockIdx.x) * n;
  const scalar_t* g = grad == nullptr ? nullptr : grad + static_cast<int64_t>(blockIdx.x) * n;

  // Ascent, rounded to the storage dtype, and the row's L1 norm and max magnitude in double.
  double l1 = 0.0, max_abs = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    opmath_t t = static_cast<opmath_t>(row[i]);
    if (g != nullptr) t = math::ascend(t, static_cast<opmath_t>(g[i]), lr, ascent);
    const scalar_t stored = static_cast<scalar_t>(t);
    row[i] = stored;  // each thread later reads back only the elements it wrote itself: no barrier needed
    const double a = fabs(static_cast<double>(stored));
    l1 += a;
    max_abs = fmax(max_abs, a);
  }
  l1 = block_allreduce(l1, Sum{}, 0.0, shared_sum);
  max_abs = block_allreduce(max_abs, Max{}, 0.0, shared_max);
  if (!isfinite(l1)) {
    if (threadIdx.x == 0) atomicExch(overflowed, 1);
    return;
  }
  if (projection == Projection::kNone || l1 <= radius) return;  // inside the ball: unchanged
  if (radius == 0.0) {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) row[i] = scalar_t(0);
  } else if (projection == Projection::kRescale) {
    const double scale = math::rescale_factor(l1, radius);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      row[i] = static_cast<scalar_t>(static_cast<double>(row[i]) * scale);
    }
  } else {
    BlockReducer<scalar_t> reducer{row, n, shared_sum, shared_count};
    const double theta = math::l1_ball_threshold(reducer, l1, max_abs, n, radius);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      row[i] = static_cast<scalar_t>(math::soft_threshold(static_cast<double>(row[i]), theta));
    }
  }
}

}  // namespace

// ------------------------------------------------------------------------------------------------------ launchers

template <typename scalar_t>
cudaError_t launch_apply_triggers(const scalar_t* x, const scalar_t* triggers, scalar_t* out, int64_t K, int64_t B,
                                  int64_t n, double lo, double hi, cudaStream_t stream) {
  using opmath_t = math::opmath_t<scalar_t>;
  const int threads = row_threads(n);
  const dim3 grid(static_cast<unsigned>(std::min(ceil_div(n, threads), kMaxGridX)),
                  static_cast<unsigned>(std::min(K * B, kMaxGridY)));
  apply_triggers_fwd_kernel<scalar_t, opmath_t><<<grid, threads, 0, stream>>>(
      x, triggers, out, K, B, n, bound_in_dtype<scalar_t>(lo), bound_in_dtype<scalar_t>(hi));
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_apply_triggers_backward(const scalar_t* grad_out, const scalar_t* x, const scalar_t* triggers,
                                           scalar_t* grad_x, scalar_t* grad_triggers, int64_t K, int64_t B, int64_t n,
                                           double lo, double hi, bool pass_at_bounds, cudaStream_t stream) {
  using opmath_t = math::opmath_t<scalar_t>;
  const opmath_t lo_s = bound_in_dtype<scalar_t>(lo), hi_s = bound_in_dtype<scalar_t>(hi);
  if (grad_triggers != nullptr) {
    const dim3 block(kReduceColumns, kReduceLanes);
    const dim3 grid(static_cast<unsigned>(ceil_div(n, kReduceColumns)), static_cast<unsigned>(std::min(K, kMaxGridY)));
    apply_triggers_bwd_triggers_kernel<scalar_t, opmath_t>
        <<<grid, block, 0, stream>>>(grad_out, x, triggers, grad_triggers, K, B, n, lo_s, hi_s, pass_at_bounds);
    const cudaError_t status = cudaGetLastError();
    if (status != cudaSuccess) return status;
  }
  if (grad_x != nullptr) {
    const int threads = row_threads(n);
    const dim3 grid(static_cast<unsigned>(std::min(ceil_div(n, threads), kMaxGridX)),
                    static_cast<unsigned>(std::min(B, kMaxGridY)));
    apply_triggers_bwd_x_kernel<scalar_t, opmath_t>
        <<<grid, threads, 0, stream>>>(grad_out, x, triggers, grad_x, K, B, n, lo_s, hi_s, pass_at_bounds);
  }
  return cudaGetLastError();
}

template <typename scalar_t>
cudaError_t launch_trigger_step(scalar_t* rows, const scalar_t* grad, int64_t K, int64_t n, double lr, Ascent ascent,
                                double radius, Projection projection, int* overflowed, cudaStream_t stream) {
  using opmath_t = math::opmath_t<scalar_t>;
  trigger_step_kernel<scalar_t, opmath_t><<<static_cast<unsigned>(K), kStepThreads, 0, stream>>>(
      rows, grad, n, static_cast<opmath_t>(lr), ascent, radius, projection, overflowed);
  return cudaGetLastError();
}

#define AWM_FAST_INSTANTIATE_LAUNCHERS(scalar_t)                                                                   \
  template cudaError_t launch_apply_triggers<scalar_t>(const scalar_t*, const scalar_t*, scalar_t*, int64_t,      \
                                                       int64_t, int64_t, double, double, cudaStream_t);            \
  template cudaError_t launch_apply_triggers_backward<scalar_t>(const scalar_t*, const scalar_t*, const scalar_t*, \
                                                                scalar_t*, scalar_t*, int64_t, int64_t, int64_t,   \
                                                                double, double, bool, cudaStream_t);               \
  template cudaError_t launch_trigger_step<scalar_t>(scalar_t*, const scalar_t*, int64_t, int64_t, double, Ascent, \
                                                     double, Projection, int*, cudaStream_t);

AWM_FAST_INSTANTIATE_LAUNCHERS(double)
AWM_FAST_INSTANTIATE_LAUNCHERS(float)
AWM_FAST_INSTANTIATE_LAUNCHERS(c10::Half)
AWM_FAST_INSTANTIATE_LAUNCHERS(c10::BFloat16)
#undef AWM_FAST_INSTANTIATE_LAUNCHERS

}  // namespace cuda
}  // namespace awm_fast
