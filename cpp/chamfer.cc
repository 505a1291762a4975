#include "chamfer.h"

#include "parallel.h"
#include "dispatch.h"
#include "residual.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <system_error>
#include <thread>
#include <vector>

namespace muvera {
namespace {

constexpr int64_t kDocsPerTask = 32;

int pad_to_lanes(int64_t n) { return static_cast<int>((n + kMaxLanes - 1) / kMaxLanes * kMaxLanes); }

}  // namespace

void chamfer_scores(const QueryBatchView& q, const TokenStoreView& s, const int64_t* candidates, int64_t C,
                    const uint8_t* alive, float* scores, int num_threads, const Dispatch& kernels) {
  const int d = s.d;
  const int64_t nq = q.n_queries;
  if (nq == 0 || C == 0) return;
  if (s.dtype == kInt8Scaled) {  // integer dot products on the codes (residual.h)
    int8_scores(q, s, candidates, C, alive, scores, num_threads, kernels.residual);
    return;
  }
  // Every query transposed and zero-padded once (padding lanes score 0 against any document).
  std::vector<int64_t> qt_offset(nq + 1, 0);
  std::vector<int> nq_pad(nq);
  for (int64_t i = 0; i < nq; ++i) {
    nq_pad[i] = std::max(pad_to_lanes(q.offsets[i + 1] - q.offsets[i]), kMaxLanes);
    qt_offset[i + 1] = qt_offset[i] + static_cast<int64_t>(nq_pad[i]) * d;
  }
  std::vector<float> qt(static_cast<size_t>(qt_offset[nq]), 0.0f);
  for (int64_t i = 0; i < nq; ++i) {
    const float* src = q.tokens + q.offsets[i] * d;
    float* dst = qt.data() + qt_offset[i];
    const int64_t n = q.offsets[i + 1] - q.offsets[i];
    for (int64_t r = 0; r < n; ++r)
      for (int t = 0; t < d; ++t) dst[static_cast<int64_t>(t) * nq_pad[i] + r] = src[r * d + t];
  }
  // Scratch for the longest document read: over the candidates only, so the cost follows them.
  int64_t max_len = 0;
  if (candidates != nullptr) {
    for (int64_t x = 0; x < nq * C; ++x) {
      const int64_t j = candidates[x];
      if (j >= 0) max_len = std::max(max_len, s.offsets[j + 1] - s.offsets[j]);
    }
  } else {
    for (int64_t j = 0; j < s.n_docs; ++j) max_len = std::max(max_len, s.offsets[j + 1] - s.offsets[j]);
  }
  const int threads = std::max(1, num_threads);
  std::vector<std::vector<float>> scratch(threads);
  if (s.dtype == kFloat16 || s.dtype == kInt8Scaled)
    for (auto& v : scratch) v.resize(static_cast<size_t>(std::max<int64_t>(max_len * d, 1)));
  const int64_t row_bytes = store_row_bytes(s.dtype, d);
  const char* base = static_cast<const char*>(s.tokens);
  score_candidates(0, nq, C, candidates, alive, s.offsets, scores, threads, kDocsPerTask,
                   [&](int64_t i, int tid, int64_t begin, int64_t m) {
                     const int n = static_cast<int>(q.offsets[i + 1] - q.offsets[i]);
                     float* buf = scratch[tid].empty() ? nullptr : scratch[tid].data();
                     return kernels.core.chamfer_doc(qt.data() + qt_offset[i], q.tokens + q.offsets[i] * d, n, nq_pad[i], d, base + begin * row_bytes,
                                                s.dtype, m, buf, true);
                   });
}

void chamfer_topk(const QueryBatchView& q, const TokenStoreView& s, const int64_t* candidates, int64_t C,
                  const uint8_t* alive, int64_t k, int64_t* out_rows, float* out_scores, int num_threads,
                  const Dispatch& kernels) {
  const int64_t nq = q.n_queries;
  std::vector<float> scores(static_cast<size_t>(nq * C));
  chamfer_scores(q, s, candidates, C, alive, scores.data(), num_threads, kernels);
  select_topk(scores.data(), candidates, nq, C, k, out_rows, out_scores, num_threads);
}

void select_topk(const float* all_scores, const int64_t* candidates, int64_t nq, int64_t C, int64_t k,
                 int64_t* out_rows, float* out_scores, int num_threads) {
  std::vector<std::vector<int64_t>> order(std::max(1, num_threads));
  for (auto& v : order) v.reserve(static_cast<size_t>(C));  // no allocation inside the workers
  parallel_for(nq, num_threads, [&](int64_t i, int tid) {
    std::vector<int64_t>& idx = order[tid];
    idx.clear();
    const float* row = all_scores + i * C;
    for (int64_t c = 0; c < C; ++c)
      if (row[c] != -std::numeric_limits<float>::infinity()) idx.push_back(c);
    auto doc_of = [&](int64_t c) { return candidates != nullptr ? candidates[i * C + c] : c; };
    auto better = [&](int64_t a, int64_t b) {
      if (row[a] != row[b]) return row[a] > row[b];
      return doc_of(a) < doc_of(b);
    };
    // Candidate rows are unique per query (the Python layer guarantees it).
    const int64_t take = std::min<int64_t>(k, static_cast<int64_t>(idx.size()));
    std::partial_sort(idx.begin(), idx.begin() + take, idx.end(), better);
    int64_t filled = 0;
    for (; filled < take; ++filled) {
      out_rows[i * k + filled] = doc_of(idx[filled]);
      out_scores[i * k + filled] = row[idx[filled]];
    }
    for (; filled < k; ++filled) {
      out_rows[i * k + filled] = -1;
      out_scores[i * k + filled] = -std::numeric_limits<float>::infinity();
    }
  });
}

}  // namespace muvera
