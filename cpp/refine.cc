#include "refine.h"

#include <algorithm>
#include <limits>
#include <vector>

#include "dispatch.h"
#include "parallel.h"

namespace muvera {

namespace {

struct Code8Scratch {  // one per thread, sized before the workers start
  std::vector<float> w, dots;
  std::vector<int32_t> runs;
  std::vector<int64_t> valid;
};

}  // namespace

void code8_scores(const float* queries, int64_t nq, const int64_t* rows, int64_t K, const Code8View& c,
                  float* scores, int num_threads, const Dispatch& kernels) {
  const int64_t dim = c.dim;
  std::vector<Code8Scratch> scratch(static_cast<size_t>(std::max(1, num_threads)));
  for (Code8Scratch& s : scratch) {
    s.w.assign(static_cast<size_t>(dim), 0.0f);
    s.runs.reserve(static_cast<size_t>(dim + 1));
    s.valid.reserve(static_cast<size_t>(K));
    s.dots.resize(static_cast<size_t>(K));
  }
  parallel_for(nq, num_threads, [&](int64_t i, int tid) {
    Code8Scratch& s = scratch[static_cast<size_t>(tid)];
    const float* q = queries + i * dim;
    // Per query, once: the codes' weights, the constant part and the runs of non-zero values.
    s.runs.clear();
    double base = 0.0;
    for (int64_t t = 0; t < dim;) {
      if (q[t] == 0.0f) {
        ++t;
        continue;
      }
      const int64_t start = t;
      for (; t < dim && q[t] != 0.0f; ++t) {
        s.w[t] = q[t] * c.vdiff[t] / 255.0f;
        base += static_cast<double>(q[t]) * (c.vmin[t] + 0.5f * c.vdiff[t] / 255.0f);
      }
      s.runs.push_back(static_cast<int32_t>(start));
      s.runs.push_back(static_cast<int32_t>(t));
    }
    // The valid rows, packed (a coarse search pads short candidate lists with -1).
    const int64_t* r = rows + i * K;
    s.valid.clear();
    for (int64_t j = 0; j < K; ++j)
      if (r[j] >= 0) s.valid.push_back(r[j]);
    const int64_t nv = static_cast<int64_t>(s.valid.size());
    std::fill(s.dots.begin(), s.dots.begin() + nv, 0.0f);
    if (!s.runs.empty() && nv > 0)
      kernels.core.code8_dots(s.w.data(), s.runs.data(), static_cast<int>(s.runs.size() / 2), c.codes, dim,
                              s.valid.data(), nv, s.dots.data());
    float* out = scores + i * K;
    int64_t v = 0;
    for (int64_t j = 0; j < K; ++j)
      out[j] = r[j] < 0 ? -std::numeric_limits<float>::infinity() : static_cast<float>(base) + s.dots[v++];
  });
}

}  // namespace muvera
