#include "fde.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <functional>
#include <new>
#include <thread>

#include "parallel.h"
#include "rng.h"

namespace muvera {
namespace {

// Per-repetition seed: int32 addition with wrap-around, then reinterpreted as unsigned.
uint32_t repetition_seed(int32_t seed, int r) {
  return static_cast<uint32_t>(seed) + static_cast<uint32_t>(r);
}

// Owns 64-byte aligned buffers; released together when the batch ends (or throws).
class AlignedArena {
 public:
  AlignedArena() = default;
  AlignedArena(const AlignedArena&) = delete;
  AlignedArena& operator=(const AlignedArena&) = delete;
  ~AlignedArena() {
    for (void* p : owned_) std::free(p);
  }
  template <typename T>
  T* array(int64_t n) {
    size_t bytes = static_cast<size_t>(std::max<int64_t>(n, 1)) * sizeof(T);
    bytes = (bytes + 63) / 64 * 64;
    void* p = std::aligned_alloc(64, bytes);
    if (p == nullptr) throw std::bad_alloc();
    owned_.push_back(p);
    return static_cast<T*>(p);
  }

 private:
  std::vector<void*> owned_;
};

}  // namespace

int default_num_threads() {
  unsigned n = std::thread::hardware_concurrency();
  return n == 0 ? 1 : static_cast<int>(n);
}

FdeEncoder::FdeEncoder(const FdeConfig& c) : config_(c) {
  const int d = c.dimension, R = c.num_repetitions, k = c.num_simhash_projections;
  const int p = c.ams_sketch ? c.projection_dimension : d;
  const int B = 1 << k;
  const int rk = R * k;
  const int rk_pad = (rk + kSketchPad - 1) / kSketchPad * kSketchPad;

  // SimHash: repetition r draws a d x k Gaussian matrix column-major (Eigen's fill order).
  gauss_.assign(static_cast<size_t>(d) * std::max(rk_pad, 1), 0.0f);
  if (k > 0) {
    for (int r = 0; r < R; ++r) {
      Mt19937 g(repetition_seed(c.seed, r));
      NormalFloat normal;
      for (int j = 0; j < k; ++j)
        for (int t = 0; t < d; ++t) gauss_[static_cast<size_t>(t) * rk_pad + r * k + j] = normal(g);
    }
  }
  // AMS: per repetition, every input coordinate gets one output column, then one sign.
  if (c.ams_sketch) {
    ams_col_.resize(static_cast<size_t>(R) * d);
    ams_sign_.resize(static_cast<size_t>(R) * d);
    for (int r = 0; r < R; ++r) {
      Mt19937 g(repetition_seed(c.seed, r));
      for (int t = 0; t < d; ++t) {
        ams_col_[static_cast<size_t>(r) * d + t] = static_cast<int32_t>(uniform_below(g, p));
        ams_sign_[static_cast<size_t>(r) * d + t] = bernoulli_half(g) ? 1.0f : -1.0f;
      }
    }
  }
  const int64_t fde_dim = static_cast<int64_t>(R) * B * p;
  if (c.final_projection_dimension > 0) {
    cs_index_.resize(fde_dim);
    cs_sign_.resize(fde_dim);
    Mt19937 g(static_cast<uint32_t>(c.seed));
    for (int64_t i = 0; i < fde_dim; ++i) {
      cs_index_[i] = uniform_below(g, static_cast<uint32_t>(c.final_projection_dimension));
      cs_sign_[i] = bernoulli_half(g) ? 1.0f : -1.0f;
    }
  }
  view_ = FdeTablesView{d, R, k, p, B, rk_pad, !c.ams_sketch, c.fill_empty_partitions,
                        gauss_.data(), ams_col_.data(), ams_sign_.data(), {}, fde_dim,
                        c.final_projection_dimension, cs_index_.data(), cs_sign_.data()};
  if (c.ams_sketch)
    for (int i = 0; i < 3; ++i) build_schedule(4 << i, schedules_[i], view_.ams[i]);
}

void FdeEncoder::build_schedule(int lanes, Schedule& out, AmsSchedule& view) const {
  const int d = config_.dimension, R = config_.num_repetitions, p = config_.projection_dimension;
  const int chunks = (p + lanes - 1) / lanes, groups = lanes / 4;
  out.unsort.assign(static_cast<size_t>(R) * chunks * lanes, 0);
  out.group_steps.assign(static_cast<size_t>(R) * chunks * groups, 0);
  out.chunk_begin.assign(static_cast<size_t>(R) * chunks, 0);
  out.steps.clear();
  std::vector<std::vector<int32_t>> rows_of(p);  // signed block rows feeding each column, ascending
  for (int r = 0; r < R; ++r) {
    for (auto& v : rows_of) v.clear();
    for (int t = 0; t < d; ++t) {
      const size_t at = static_cast<size_t>(r) * d + t;
      rows_of[ams_col_[at]].push_back(ams_sign_[at] > 0.0f ? t : d + t);
    }
    for (int h = 0; h < chunks; ++h) {
      const size_t rh = static_cast<size_t>(r) * chunks + h;
      const int c0 = h * lanes, width = std::min(lanes, p - c0);
      std::vector<int> sorted(lanes, -1);  // -1: a lane past p, fed only by the zero row
      for (int i = 0; i < width; ++i) sorted[i] = c0 + i;
      std::stable_sort(sorted.begin(), sorted.begin() + width, [&](int a, int b) {
        return rows_of[a].size() > rows_of[b].size();
      });
      for (int j = 0; j < width; ++j) out.unsort[rh * lanes + (sorted[j] - c0)] = j;
      out.chunk_begin[rh] = static_cast<int64_t>(out.steps.size());
      for (int g = 0; g < groups; ++g) {
        size_t steps = 0;
        for (int j = 4 * g; j < 4 * g + 4; ++j)
          if (sorted[j] >= 0) steps = std::max(steps, rows_of[sorted[j]].size());
        out.group_steps[rh * groups + g] = static_cast<int32_t>(steps);
        for (size_t q = 0; q < steps; ++q)
          for (int j = 4 * g; j < 4 * g + 4; ++j) {
            const bool live = sorted[j] >= 0 && q < rows_of[sorted[j]].size();
            const int64_t row = live ? rows_of[sorted[j]][q] : 2 * d;
            out.steps.push_back(row * lanes * static_cast<int64_t>(sizeof(float)));
          }
      }
    }
  }
  view = AmsSchedule{lanes, chunks, out.unsort.data(), out.group_steps.data(), out.chunk_begin.data(),
                     out.steps.data()};
}

int64_t FdeEncoder::encode(const ItemView* items, int64_t n_items, int dtype, bool is_document,
                           float* out, int num_threads, const KernelSet& kernels) const {
  if (n_items == 0) return -1;
  int64_t n_max = 0;
  for (int64_t i = 0; i < n_items; ++i) n_max = std::max(n_max, items[i].n);
  const int64_t out_dim = output_dimension();
  const FdeTablesView& T = view_;

  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(num_threads, (n_items + 3) / 4));
  // All scratch is allocated here, before any thread starts: a failure throws in the caller's
  // thread (MemoryError in Python) instead of terminating the process from a worker.
  AlignedArena arena;
  std::vector<FdeScratch> scratch(threads);
  for (FdeScratch& s : scratch) {
    s.n_max = n_max;
    s.x = arena.array<float>(n_max * T.d);
    s.xt = arena.array<float>(static_cast<int64_t>(2 * T.d + 1) * kMaxLanes);
    s.sk = arena.array<int32_t>(static_cast<int64_t>(T.rk_pad) * kMaxLanes);
    s.codes = arena.array<int32_t>(T.R * n_max);
    s.counts = arena.array<int32_t>(static_cast<int64_t>(T.R) * T.B);
    s.row = arena.array<float>(T.p);
    s.first = arena.array<int32_t>(T.B);
    // Projected rows are kept for the fill when they fit in a few MB; else recomputed (ams_row).
    const int64_t proj_floats = static_cast<int64_t>(T.R) * n_max * T.p;
    s.proj = (!T.identity && T.fill && proj_floats <= (int64_t(1) << 21)) ? arena.array<float>(proj_floats) : nullptr;
    s.fde = arena.array<float>(T.fde_dim);
  }

  return encode_items(n_items, static_cast<int>(threads), [&](int64_t i, int tid) {
    return kernels.encode_item(T, items[i], dtype, is_document, out + i * out_dim, scratch[static_cast<size_t>(tid)]);
  });
}

}  // namespace muvera
