#include "prune.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <memory>

#include "dispatch.h"
#include "kernels.h"
#include "parallel.h"

namespace muvera {

int64_t build_bags(const uint8_t* codes, int64_t width, const int64_t* offsets, int64_t begin, int64_t end,
                   int64_t k, std::vector<uint16_t>& ids, int64_t* lengths) {
  std::vector<int64_t> seen(static_cast<size_t>(k), -1);  // the last document each id was seen in
  for (int64_t doc = begin; doc < end; ++doc) {
    const size_t start = ids.size();
    for (int64_t t = offsets[doc]; t < offsets[doc + 1]; ++t) {
      const uint8_t* row = codes + t * width;
      const uint16_t id = static_cast<uint16_t>(row[0] | (row[1] << 8));
      if (id >= k) return doc;
      if (seen[id] != doc) {
        seen[id] = doc;
        ids.push_back(id);
      }
    }
    std::sort(ids.begin() + static_cast<std::ptrdiff_t>(start), ids.end());  // ascending: the table is read in order
    lengths[doc - begin] = static_cast<int64_t>(ids.size() - start);
  }
  return -1;
}

namespace {

int round_to_lanes(int64_t n) { return static_cast<int>((n + kMaxLanes - 1) / kMaxLanes * kMaxLanes); }

// Per thread, kept across calls (pool threads persist): the query x centroid table is k x W floats
// and would otherwise be faulted in again by every single-query search.
struct PruneScratch {
  std::unique_ptr<float[]> table;
  size_t table_size = 0;
  std::vector<uint32_t> stamp;  // generation a centroid's table row was last filled in
  uint32_t generation = 0;
  std::vector<int32_t> which;
  std::vector<int64_t> rows, order;
  std::vector<float> scores;

  void size_for(int64_t k, int W, int64_t C) {
    const size_t want = static_cast<size_t>(k) * static_cast<size_t>(W);
    if (table_size < want) {
      table.reset(new float[want]);  // uninitialised: only the rows a query uses are written, then read
      table_size = want;
    }
    if (stamp.size() < static_cast<size_t>(k)) {
      stamp.assign(static_cast<size_t>(k), 0);
      generation = 0;
    }
    which.resize(std::max(which.size(), static_cast<size_t>(k)));
    rows.reserve(static_cast<size_t>(C));
    order.reserve(static_cast<size_t>(C));
    scores.resize(std::max<size_t>(scores.size(), static_cast<size_t>(C)));
  }
  uint32_t next_generation() {
    if (++generation == 0) {  // wrapped: forget every stamp
      std::fill(stamp.begin(), stamp.end(), 0u);
      generation = 1;
    }
    return generation;
  }
};

}  // namespace

bool prune_candidates(const QueryBatchView& q, const CentroidsView& c, const BagView& bags, const int64_t* candidates,
                      int64_t C, int64_t keep, int64_t* rows_out, float* scores_out, int num_threads,
                      const Dispatch& kernels) {
  const int64_t nq = q.n_queries;
  const int d = c.d;
  int W = kMaxLanes;
  for (int64_t i = 0; i < nq; ++i) W = std::max(W, round_to_lanes(q.offsets[i + 1] - q.offsets[i]));
  const int threads = std::max(1, std::min<int>(num_threads, static_cast<int>(std::max<int64_t>(nq, 1))));
  thread_local PruneScratch scratch;
  std::atomic<bool> bad_id{false};
  parallel_for(nq, threads, [&](int64_t i, int) {
    PruneScratch& s = *&scratch;  // one thread-local lookup per query
    s.size_for(c.k, W, C);
    const int n = static_cast<int>(q.offsets[i + 1] - q.offsets[i]);
    const int w = std::max(kMaxLanes, round_to_lanes(n));
    const int64_t* cand = candidates + i * C;
    s.rows.clear();
    for (int64_t x = 0; x < C; ++x)
      if (cand[x] >= 0) s.rows.push_back(cand[x]);
    const int64_t nv = static_cast<int64_t>(s.rows.size());
    // The table rows of the centroids these candidates use, and no others: the cost follows them.
    const uint32_t gen = s.next_generation();
    uint32_t* stamp = s.stamp.data();  // raw pointers: the loop below must not re-derive them
    int32_t* which = s.which.data();
    const uint16_t* bag_ids = bags.ids;
    const int64_t* bag_off = bags.offsets;
    const int64_t k = c.k;
    int64_t n_which = 0, refs = 0;
    for (int64_t x = 0; x < nv; ++x) refs += bag_off[s.rows[x] + 1] - bag_off[s.rows[x]];
    // Most centroids used (wide candidate lists of a small codebook): the whole table costs less
    // than finding which. The ids are still checked against k.
    const bool all = refs >= 2 * k;
    if (all)
      for (int64_t j = 0; j < k; ++j) which[n_which++] = static_cast<int32_t>(j);
    bool bad = false;
    if (all) {  // only the range check: a max over each bag (vectorised)
      for (int64_t x = 0; x < nv; ++x) {
        uint16_t top = 0;
        for (int64_t b = bag_off[s.rows[x]], e = bag_off[s.rows[x] + 1]; b < e; ++b) top = std::max(top, bag_ids[b]);
        bad |= top >= k;
      }
    }
    for (int64_t x = 0; x < nv && !bad && !all; ++x) {
      const int64_t r = s.rows[x];
      for (int64_t b = bag_off[r], e = bag_off[r + 1]; b < e; ++b) {
        const uint16_t id = bag_ids[b];
        if (id >= k) {  // before the stamp: it has k entries
          bad = true;
          break;
        }
        if (stamp[id] != gen) {
          stamp[id] = gen;
          which[n_which++] = id;
        }
      }
    }
    if (bad) {
      bad_id.store(true, std::memory_order_relaxed);
      return;
    }
    float* table = s.table.get();
    if (n > 0) {
      kernels.core.centroid_table(q.tokens + q.offsets[i] * d, n, d, c.data, which, n_which, table, w);
      if (n < w)
        for (int64_t j = 0; j < n_which; ++j) {
          const int64_t id = which[j];
          std::fill(table + id * w + n, table + (id + 1) * w, 0.0f);
        }
      kernels.core.bag_scores(table, w, n, bags.ids, bags.offsets, s.rows.data(), nv, s.scores.data());
    } else {
      std::fill(s.scores.begin(), s.scores.begin() + nv, 0.0f);
    }
    s.order.resize(static_cast<size_t>(nv));
    for (int64_t x = 0; x < nv; ++x) s.order[x] = x;
    const float* sc = s.scores.data();
    const int64_t* rows = s.rows.data();
    const int64_t take = std::min(keep, nv);
    std::partial_sort(s.order.begin(), s.order.begin() + take, s.order.end(), [&](int64_t a, int64_t b) {
      return sc[a] != sc[b] ? sc[a] > sc[b] : rows[a] < rows[b];
    });
    int64_t* out = rows_out + i * keep;
    float* out_s = scores_out + i * keep;
    for (int64_t x = 0; x < take; ++x) {
      out[x] = rows[s.order[x]];
      out_s[x] = sc[s.order[x]];
    }
    for (int64_t x = take; x < keep; ++x) {
      out[x] = -1;
      out_s[x] = -std::numeric_limits<float>::infinity();
    }
  });
  return !bad_id.load();
}

}  // namespace muvera
