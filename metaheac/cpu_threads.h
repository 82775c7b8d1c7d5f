// Splitting a loop over the CPU's threads, for the kernels of metaheac/*.cc.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <thread>
#include <vector>

// Runs work(lo, hi) over [0, n) split into `threads` contiguous shares, each a multiple of
// `align` items (so that shares of float arrays do not write one cache line), one thread
// each; this thread takes the first.
inline void split_over_threads(int64_t n, int64_t threads, int64_t align,
                               const std::function<void(int64_t, int64_t)>& work) {
  threads = std::max<int64_t>(1, std::min(threads, n));
  const int64_t share = ((n + threads - 1) / threads + align - 1) / align * align;
  std::vector<std::thread> helpers;
  for (int64_t t = 1; t < threads && t * share < n; ++t)
    helpers.emplace_back(work, t * share, std::min(n, (t + 1) * share));
  work(0, std::min(n, share));
  for (auto& helper : helpers) helper.join();
}
