// Adam's update over all parameters at once, and the clearing of their gradients, on
// several threads of the CPU. The parameters, moments and powers of beta are Paddle's
// Adam's own tensors, updated in place in the order of Paddle's CPU kernel:
//   m1 = beta1 m1 + (1 - beta1) g,   m2 = beta2 m2 + (1 - beta2) g g,
//   lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t),   eps_t = epsilon sqrt(1 - beta2^t),
//   p = p - lr_t m1 / (sqrt(m2) + eps_t),   then beta1^t *= beta1, beta2^t *= beta2.
// metaheac/fused_adam.py builds the optimizer on it and says when it is used.
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "cpu_threads.h"
#include "paddle/extension.h"

namespace {

#define CLONED __attribute__((target_clones("arch=haswell", "default")))

struct AdamSpan {
  float* param;
  const float* grad;
  float* moment1;
  float* moment2;
  int64_t size;
  float lr;   // lr_t
  float eps;  // eps_t
};

CLONED void adam_update(const AdamSpan& s, int64_t lo, int64_t hi, float beta1, float beta2) {
  const float keep1 = 1 - beta1, keep2 = 1 - beta2;
  for (int64_t i = lo; i < hi; ++i) {
    const float g = s.grad[i];
    const float m1 = beta1 * s.moment1[i] + keep1 * g;
    const float m2 = beta2 * s.moment2[i] + keep2 * g * g;
    s.moment1[i] = m1;
    s.moment2[i] = m2;
    s.param[i] = s.param[i] - s.lr * (m1 / (std::sqrt(m2) + s.eps));
  }
}

// Runs work(tensor, lo, hi) over the elements of tensors of the given sizes, split
// into `threads` equal shares of their total, one thread each.
void split_tensors_over_threads(const std::vector<int64_t>& sizes, int64_t threads,
                                const std::function<void(size_t, int64_t, int64_t)>& work) {
  int64_t total = 0;
  for (int64_t size : sizes) total += size;
  split_over_threads(total, threads, 16, [&](int64_t begin, int64_t end) {
    int64_t offset = 0;
    for (size_t k = 0; k < sizes.size(); ++k) {
      const int64_t lo = std::max(begin - offset, int64_t{0});
      const int64_t hi = std::min(end - offset, sizes[k]);
      if (lo < hi) work(k, lo, hi);
      offset += sizes[k];
    }
  });
}

// The loops index raw memory: every tensor must be float32, on the CPU, contiguous.
void check_float32_cpu(const std::vector<paddle::Tensor>& tensors, const char* what) {
  for (const auto& t : tensors)
    PD_CHECK(t.is_cpu() && t.dtype() == paddle::DataType::FLOAT32 && t.is_contiguous(),
             "fused Adam: every ", what, " must be a contiguous float32 tensor on the CPU");
}

}  // namespace

void FusedAdam(std::vector<paddle::Tensor>& params, const std::vector<paddle::Tensor>& grads,
               std::vector<paddle::Tensor>& moment1, std::vector<paddle::Tensor>& moment2,
               std::vector<paddle::Tensor>& beta1_pow, std::vector<paddle::Tensor>& beta2_pow,
               const std::vector<paddle::Tensor>& learning_rates, float beta1, float beta2,
               float epsilon, int64_t threads) {
  const size_t n = params.size();
  PD_CHECK(grads.size() == n && moment1.size() == n && moment2.size() == n &&
               beta1_pow.size() == n && beta2_pow.size() == n && learning_rates.size() == n,
           "fused Adam: one gradient, two moments, two powers of beta and one learning "
           "rate per parameter");
  check_float32_cpu(params, "parameter");
  check_float32_cpu(grads, "gradient");
  check_float32_cpu(moment1, "moment");
  check_float32_cpu(moment2, "moment");
  check_float32_cpu(beta1_pow, "power of beta");
  check_float32_cpu(beta2_pow, "power of beta");
  check_float32_cpu(learning_rates, "learning rate");
  std::vector<AdamSpan> spans;
  std::vector<int64_t> sizes;
  for (size_t k = 0; k < n; ++k) {
    const int64_t size = params[k].numel();
    PD_CHECK(grads[k].numel() == size && moment1[k].numel() == size &&
                 moment2[k].numel() == size,
             "fused Adam: a gradient or moment differs in size from its parameter");
    float* power1 = beta1_pow[k].data<float>();
    float* power2 = beta2_pow[k].data<float>();
    const float lr =
        learning_rates[k].data<float>()[0] * (std::sqrt(1 - *power2) / (1 - *power1));
    spans.push_back({params[k].data<float>(), grads[k].data<float>(), moment1[k].data<float>(),
                     moment2[k].data<float>(), size, lr, epsilon * std::sqrt(1 - *power2)});
    sizes.push_back(size);
    *power1 = beta1 * *power1;
    *power2 = beta2 * *power2;
  }
  split_tensors_over_threads(sizes, threads, [&](size_t k, int64_t lo, int64_t hi) {
    adam_update(spans[k], lo, hi, beta1, beta2);
  });
}

void FillZeros(std::vector<paddle::Tensor>& grads, int64_t threads) {
  check_float32_cpu(grads, "gradient");
  std::vector<int64_t> sizes;
  for (const auto& g : grads) sizes.push_back(g.numel());
  split_tensors_over_threads(sizes, threads, [&](size_t k, int64_t lo, int64_t hi) {
    std::fill(grads[k].data<float>() + lo, grads[k].data<float>() + hi, 0.0f);
  });
}

PD_BUILD_OP(metaheac_fused_adam)
    .Inputs({paddle::Vec("Param"), paddle::Vec("Grad"), paddle::Vec("Moment1"),
             paddle::Vec("Moment2"), paddle::Vec("Beta1Pow"), paddle::Vec("Beta2Pow"),
             paddle::Vec("LearningRate")})
    .Outputs({paddle::Vec("ParamOut"), paddle::Vec("Moment1Out"), paddle::Vec("Moment2Out"),
              paddle::Vec("Beta1PowOut"), paddle::Vec("Beta2PowOut")})
    .SetInplaceMap({{paddle::Vec("Param"), paddle::Vec("ParamOut")},
                    {paddle::Vec("Moment1"), paddle::Vec("Moment1Out")},
                    {paddle::Vec("Moment2"), paddle::Vec("Moment2Out")},
                    {paddle::Vec("Beta1Pow"), paddle::Vec("Beta1PowOut")},
                    {paddle::Vec("Beta2Pow"), paddle::Vec("Beta2PowOut")}})
    .Attrs({"beta1: float", "beta2: float", "epsilon: float", "threads: int64_t"})
    .SetKernelFn(PD_KERNEL(FusedAdam));

PD_BUILD_OP(metaheac_fill_zeros)
    .Inputs({paddle::Vec("Grad")})
    .Outputs({paddle::Vec("GradOut")})
    .SetInplaceMap({{paddle::Vec("Grad"), paddle::Vec("GradOut")}})
    .Attrs({"threads: int64_t"})
    .SetKernelFn(PD_KERNEL(FillZeros));
