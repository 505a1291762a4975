// Driver of the residual-code rerank: query preparation (int8 weights, centroid table), threads
// over (query, candidate chunk) tasks, and the per-ISA kernel choice.
#include "residual.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "dispatch.h"
#include "parallel.h"
#include "prune.h"

namespace muvera {
namespace {

constexpr int64_t kDocsPerTask = 32;
constexpr int64_t kCentroidsPerTask = 512;
constexpr int64_t kTableBudget = int64_t(64) << 20;  // bytes of query x centroid tables at once

int query_max(int nbits) { return nbits <= 4 ? 127 : 63; }

// Everything kernels read about one query; rebuilt per query batch.
struct PreparedQuery {
  int nq = 0, nq_pad = 0;
  std::vector<int8_t> qi;
  std::vector<float> sq, a, qt;  // qt: d x nq_pad transposed query (for the centroid table)
  int64_t table = 0;             // offset of this query's K x nq_pad table in the batch buffer
};

void prepare(const float* x, int nq, const ResidualTablesView& t, PreparedQuery& p) {
  const int d = t.d, quads = (d + 3) / 4;
  p.nq = nq;
  p.nq_pad = std::max(kMaxLanes, (nq + kMaxLanes - 1) / kMaxLanes * kMaxLanes);
  p.qi.assign(static_cast<size_t>(quads) * p.nq_pad * 4, 0);
  p.sq.assign(p.nq_pad, 0.0f);
  p.a.assign(nq, 0.0f);
  p.qt.assign(static_cast<size_t>(d) * p.nq_pad, 0.0f);
  const float qmax = static_cast<float>(query_max(t.nbits));
  const float mid = static_cast<float>((1 << t.nbits) - 1) / 2.0f;
  std::vector<float> qs(d), lo_mid(d);
  for (int c = 0; c < d; ++c) {
    const float shift = t.step[c] * mid;
    lo_mid[c] = t.lo[c] + shift;
  }
  for (int i = 0; i < nq; ++i) {
    const float* q = x + static_cast<int64_t>(i) * d;
    float peak = 0.0f, a = 0.0f;
    for (int c = 0; c < d; ++c) {
      qs[c] = q[c] * t.step[c];
      peak = std::max(peak, std::fabs(qs[c]));
      const float prod = q[c] * lo_mid[c];
      a += prod;
      p.qt[static_cast<size_t>(c) * p.nq_pad + i] = q[c];
    }
    const float sq = peak / qmax;
    const float safe = sq > 0.0f ? sq : 1.0f;
    int64_t sum_qi = 0;
    for (int c = 0; c < d; ++c) {
      // clamped: a subnormal scale could round one step past qmax (and past int8)
      const float r = std::min(qmax, std::max(-qmax, std::nearbyint(qs[c] / safe)));
      const int8_t v = static_cast<int8_t>(r);
      p.qi[(static_cast<size_t>(c / 4) * p.nq_pad + i) * 4 + c % 4] = v;
      sum_qi += v;
    }
    // The rounding of q * step, centred on the middle level (see muvera/codecs/residual.py).
    const float centre = static_cast<float>(sum_qi) * mid;
    const float corr = sq * centre;
    p.sq[i] = sq;
    p.a[i] = a - corr;
  }
}

}  // namespace

namespace {

// The query batches of a residual rerank: each batch's queries prepared and their query x
// centroid tables filled (only the centroids the candidates use: read from their codes, or
// from their bags when given), then handed to `then(b0, b1, prepared, tables)`.
template <typename Then>
bool residual_batches(const QueryBatchView& q, const ResidualTablesView& t, const uint8_t* codes, const int64_t* offsets,
                      const int64_t* candidates, int64_t C, const uint8_t* alive, const BagView* bags, int threads,
                      const ResidualKernelSet& kernels, Then then) {
  const int64_t nq = q.n_queries;
  const int64_t row_bytes = 2 + t.plane_bytes;
  int64_t max_pad = kMaxLanes;
  for (int64_t i = 0; i < nq; ++i)
    max_pad = std::max<int64_t>(max_pad, (q.offsets[i + 1] - q.offsets[i] + kMaxLanes - 1) / kMaxLanes * kMaxLanes);
  std::vector<std::vector<float>> rows(threads, std::vector<float>(static_cast<size_t>(4) * t.d));
  const int64_t per_table = std::max<int64_t>(1, t.K * max_pad * static_cast<int64_t>(sizeof(float)));
  const int64_t batch = std::max<int64_t>(1, std::min<int64_t>(nq, kTableBudget / per_table));
  std::vector<PreparedQuery> prepared(static_cast<size_t>(batch));
  std::vector<float> tables;
  std::vector<uint8_t> used;  // per query of the batch: K flags, the centroids its table needs
  bool bad = false;
  for (int64_t b0 = 0; b0 < nq; b0 += batch) {
    const int64_t b1 = std::min(nq, b0 + batch);
    int64_t total = 0;
    for (int64_t i = b0; i < b1; ++i) {
      PreparedQuery& p = prepared[static_cast<size_t>(i - b0)];
      prepare(q.tokens + q.offsets[i] * t.d, static_cast<int>(q.offsets[i + 1] - q.offsets[i]), t, p);
      p.table = total;
      total += t.K * p.nq_pad;
    }
    tables.assign(static_cast<size_t>(total), 0.0f);
    // A query's table rows are needed only for the centroids its candidates' tokens use: when
    // the candidates hold fewer tokens (bag entries) than 4K (2K), mark those (2 bytes read per
    // token) and skip the rest (at a million documents K is ~10^5 and a query's candidates use
    // a small share).
    used.assign(static_cast<size_t>((b1 - b0) * t.K), 1);
    for (int64_t i = b0; i < b1 && candidates != nullptr; ++i) {
      int64_t refs = 0;
      for (int64_t c = 0; c < C; ++c) {
        const int64_t doc = candidates[i * C + c];
        if (doc >= 0) refs += bags != nullptr ? bags->offsets[doc + 1] - bags->offsets[doc] : offsets[doc + 1] - offsets[doc];
      }
      const bool all = refs >= (bags != nullptr ? 2 : 4) * t.K;
      uint8_t* mark = used.data() + (i - b0) * t.K;
      if (bags != nullptr) {  // the bags' ids are checked here, where they are read anyway
        if (!all) std::fill(mark, mark + t.K, static_cast<uint8_t>(0));
        uint16_t top = 0;
        for (int64_t c = 0; c < C; ++c) {
          const int64_t doc = candidates[i * C + c];
          if (doc < 0 || (alive != nullptr && !alive[doc])) continue;
          const uint16_t* ids = bags->ids + bags->offsets[doc];
          const int64_t len = bags->offsets[doc + 1] - bags->offsets[doc];
          if (all) {
            for (int64_t b = 0; b < len; ++b) top = std::max(top, ids[b]);
            continue;
          }
          for (int64_t b = 0; b < len; ++b) {
            top = std::max(top, ids[b]);
            mark[ids[b] < t.K ? ids[b] : 0] = 1;
          }
        }
        if (top >= t.K) return false;  // a bag id past the table: nothing is scored
        continue;
      }
      if (all) continue;
      std::fill(mark, mark + t.K, static_cast<uint8_t>(0));
      for (int64_t c = 0; c < C; ++c) {
        const int64_t doc = candidates[i * C + c];
        if (doc < 0 || (alive != nullptr && !alive[doc])) continue;
        for (int64_t j = offsets[doc]; j < offsets[doc + 1]; ++j) {
          const uint8_t* row = codes + j * row_bytes;
          const int64_t cid = static_cast<int64_t>(row[0]) | (static_cast<int64_t>(row[1]) << 8);
          mark[cid < t.K ? cid : 0] = 1;  // an id past K scores as centroid 0 (and fails the call)
        }
      }
    }
    const int64_t cchunks = (t.K + kCentroidsPerTask - 1) / kCentroidsPerTask;
    parallel_for((b1 - b0) * cchunks, threads, [&](int64_t task, int tid) {
      const PreparedQuery& p = prepared[static_cast<size_t>(task / cchunks)];
      const uint8_t* mark = used.data() + (task / cchunks) * t.K;
      const int64_t c0 = (task % cchunks) * kCentroidsPerTask, c1 = std::min(t.K, c0 + kCentroidsPerTask);
      for (int64_t r0 = c0; r0 < c1;) {  // runs of used centroids
        while (r0 < c1 && !mark[r0]) ++r0;
        int64_t r1 = r0;
        while (r1 < c1 && mark[r1]) ++r1;
        if (r1 > r0)
          kernels.qc_table(p.qt.data(), p.nq_pad, p.nq, t.d, t.centroids, r0, r1, tables.data() + p.table,
                           rows[tid].data());
        r0 = r1;
      }
    });
    bad |= !then(b0, b1, prepared, tables);
  }
  return !bad;
}

// Scores of candidates (n x C rows, -1 = none) of the batch's queries with their tables.
bool score_batch(const QueryBatchView& q, const ResidualTablesView& t, const uint8_t* codes, const int64_t* offsets,
                 int64_t b0, int64_t b1, const std::vector<PreparedQuery>& prepared, const std::vector<float>& tables,
                 const int64_t* candidates, int64_t C, const uint8_t* alive, float* scores, int threads,
                 const ResidualKernelSet& kernels) {
  const int quads = (t.d + 3) / 4;
  const int levels_max = (1 << t.nbits) - 1;
  const int s16_steps = std::max(1, 32767 / (2 * levels_max * query_max(t.nbits)));
  const int64_t row_bytes = 2 + t.plane_bytes;
  int64_t max_pad = kMaxLanes;
  for (int64_t i = b0; i < b1; ++i) max_pad = std::max<int64_t>(max_pad, prepared[static_cast<size_t>(i - b0)].nq_pad);
  std::vector<std::vector<uint8_t>> unpacked(
      threads, std::vector<uint8_t>(static_cast<size_t>(kResidualBlock) * residual_scratch_stride(t.d, t.nbits)));
  std::vector<std::vector<float>> best(threads, std::vector<float>(static_cast<size_t>(max_pad)));
  std::atomic<bool> bad{false};
  (void)q;
  score_candidates(b0, b1, C, candidates, alive, offsets, scores, threads, kDocsPerTask,
                   [&](int64_t i, int tid, int64_t begin, int64_t m) {
                     const PreparedQuery& p = prepared[static_cast<size_t>(i - b0)];
                     const ResidualQueryView view{p.nq, p.nq_pad, quads, p.qi.data(), p.sq.data(), p.a.data(),
                                                  tables.data() + p.table, s16_steps, nullptr};
                     bool doc_bad = false;
                     const float v = kernels.doc_score(view, t, codes + begin * row_bytes, m, unpacked[tid].data(),
                                                       best[tid].data(), &doc_bad);
                     if (doc_bad) bad.store(true, std::memory_order_relaxed);
                     return v;
                   });
  return !bad.load();
}

}  // namespace

bool residual_scores(const QueryBatchView& q, const ResidualTablesView& t, const uint8_t* codes,
                     const int64_t* offsets, int64_t n_docs, const int64_t* candidates, int64_t C,
                     const uint8_t* alive, float* scores, int num_threads, const ResidualKernelSet& kernels) {
  (void)n_docs;
  if (q.n_queries == 0 || C == 0) return true;
  const int threads = std::max(1, num_threads);
  return residual_batches(q, t, codes, offsets, candidates, C, alive, nullptr, threads, kernels,
                          [&](int64_t b0, int64_t b1, const std::vector<PreparedQuery>& prepared,
                              const std::vector<float>& tables) {
                            return score_batch(q, t, codes, offsets, b0, b1, prepared, tables, candidates, C, alive,
                                               scores, threads, kernels);
                          });
}

bool residual_prune(const QueryBatchView& q, const ResidualTablesView& t, const uint8_t* codes, const int64_t* offsets,
                    const BagView& bags, const int64_t* wide, int64_t C, int64_t keep, int64_t* kept,
                    float* bag_scores_out, float* scores, int num_threads, const Dispatch& kernels) {
  const int64_t nq = q.n_queries;
  if (nq == 0) return true;
  const int threads = std::max(1, num_threads);
  struct Scratch {
    std::vector<int64_t> rows, order;
    std::vector<float> sc;
  };
  std::vector<Scratch> scratch(static_cast<size_t>(threads));
  for (Scratch& s : scratch) {  // sized once: no allocation inside the workers
    s.rows.reserve(static_cast<size_t>(C));
    s.order.reserve(static_cast<size_t>(C));
    s.sc.resize(static_cast<size_t>(C));
  }
  return residual_batches(
      q, t, codes, offsets, wide, C, nullptr, &bags, threads, kernels.residual,
      [&](int64_t b0, int64_t b1, const std::vector<PreparedQuery>& prepared, const std::vector<float>& tables) {
        parallel_for(b1 - b0, threads, [&](int64_t task, int tid) {
          const int64_t i = b0 + task;
          const PreparedQuery& p = prepared[static_cast<size_t>(task)];
          Scratch& s = scratch[static_cast<size_t>(tid)];
          s.rows.clear();
          for (int64_t x = 0; x < C; ++x)
            if (wide[i * C + x] >= 0) s.rows.push_back(wide[i * C + x]);
          const int64_t nv = static_cast<int64_t>(s.rows.size());
          // Bag scores on the rerank's own table (its padding lanes are zero): no second table.
          kernels.core.bag_scores(tables.data() + p.table, p.nq_pad, p.nq, bags.ids, bags.offsets, s.rows.data(), nv,
                                  s.sc.data());
          s.order.resize(static_cast<size_t>(nv));
          for (int64_t x = 0; x < nv; ++x) s.order[x] = x;
          const float* sc = s.sc.data();
          const int64_t* r = s.rows.data();
          const int64_t take = std::min(keep, nv);
          std::partial_sort(s.order.begin(), s.order.begin() + take, s.order.end(), [&](int64_t a, int64_t b) {
            return sc[a] != sc[b] ? sc[a] > sc[b] : r[a] < r[b];
          });
          for (int64_t x = 0; x < keep; ++x) {
            kept[i * keep + x] = x < take ? r[s.order[x]] : -1;
            if (bag_scores_out != nullptr)
              bag_scores_out[i * keep + x] = x < take ? sc[s.order[x]] : -std::numeric_limits<float>::infinity();
          }
        });
        if (scores == nullptr) return true;
        return score_batch(q, t, codes, offsets, b0, b1, prepared, tables, kept, keep, nullptr, scores, threads,
                           kernels.residual);
      });
}

namespace {

// One query as int8 weights: per token, scale = max|q| / 127 and qi = rint(q / scale) (clamped),
// exactly as muvera/codecs/int8.py quantises tokens; corr = 128 * sum qi (the VNNI bias).
struct Int8Query {
  int nq = 0, nq_pad = 0;
  std::vector<int8_t> qi;
  std::vector<float> sq;
  std::vector<int32_t> corr;
};

void prepare_int8(const float* x, int nq, int d, Int8Query& p) {
  const int quads = (d + 3) / 4;
  p.nq = nq;
  p.nq_pad = std::max(kMaxLanes, (nq + kMaxLanes - 1) / kMaxLanes * kMaxLanes);
  p.qi.assign(static_cast<size_t>(quads) * p.nq_pad * 4, 0);
  p.sq.assign(p.nq_pad, 0.0f);
  p.corr.assign(p.nq_pad, 0);
  for (int i = 0; i < nq; ++i) {
    const float* q = x + static_cast<int64_t>(i) * d;
    float peak = 0.0f;
    for (int c = 0; c < d; ++c) peak = std::max(peak, std::fabs(q[c]));
    const float sq = peak / 127.0f;
    const float safe = sq > 0.0f ? sq : 1.0f;
    int32_t sum = 0;
    for (int c = 0; c < d; ++c) {
      const float r = std::min(127.0f, std::max(-127.0f, std::nearbyint(q[c] / safe)));
      const int8_t v = static_cast<int8_t>(r);
      p.qi[(static_cast<size_t>(c / 4) * p.nq_pad + i) * 4 + c % 4] = v;
      sum += v;
    }
    p.sq[i] = sq;
    p.corr[i] = 128 * sum;
  }
}

}  // namespace

void int8_scores(const QueryBatchView& q, const TokenStoreView& s, const int64_t* candidates, int64_t C,
                 const uint8_t* alive, float* scores, int num_threads, const ResidualKernelSet& kernels) {
  const int64_t nq = q.n_queries;
  if (nq == 0 || C == 0) return;
  const int d = s.d, threads = std::max(1, num_threads), quads = (d + 3) / 4;
  std::vector<Int8Query> prepared(static_cast<size_t>(nq));
  int64_t max_pad = kMaxLanes;
  for (int64_t i = 0; i < nq; ++i) {
    prepare_int8(q.tokens + q.offsets[i] * d, static_cast<int>(q.offsets[i + 1] - q.offsets[i]), d, prepared[i]);
    max_pad = std::max<int64_t>(max_pad, prepared[i].nq_pad);
  }
  std::vector<std::vector<float>> best(threads, std::vector<float>(static_cast<size_t>(max_pad)));
  const int64_t row_bytes = static_cast<int64_t>(d) + 4;
  const uint8_t* base = static_cast<const uint8_t*>(s.tokens);
  score_candidates(0, nq, C, candidates, alive, s.offsets, scores, threads, kDocsPerTask,
                   [&](int64_t i, int tid, int64_t begin, int64_t m) {
                     const Int8Query& p = prepared[static_cast<size_t>(i)];
                     const ResidualQueryView view{p.nq, p.nq_pad, quads, p.qi.data(), p.sq.data(), nullptr,
                                                  nullptr, 0, p.corr.data()};
                     return kernels.int8_doc_score(view, base + begin * row_bytes, m, d, best[tid].data());
                   });
}

}  // namespace muvera
