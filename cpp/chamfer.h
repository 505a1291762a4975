// Exact Chamfer (MaxSim) scoring of queries against documents of a packed token store, with
// threads across (query, candidate chunk) tasks and exact top-k selection.
#pragma once
#include <cstdint>

#include "kernels.h"

namespace muvera {

struct Dispatch;  // dispatch.h: the kernels of one ISA level

struct TokenStoreView {
  const void* tokens;     // T rows of store_row_bytes(dtype, d) bytes, contiguous
  int dtype;              // kFloat32, kFloat16 or kInt8Scaled
  int d;
  const int64_t* offsets; // n_docs + 1
  int64_t n_docs;
};

struct QueryBatchView {
  const float* tokens;    // packed query tokens, d columns
  const int64_t* offsets; // n_queries + 1
  int64_t n_queries;
};

// scores[i * C + c] = Chamfer(query i, doc candidates[i * C + c]); candidates == nullptr means
// doc c (C = n_docs). Entries that are -1 or whose doc is not alive get -inf.
void chamfer_scores(const QueryBatchView& q, const TokenStoreView& s, const int64_t* candidates, int64_t C,
                    const uint8_t* alive, float* scores, int num_threads, const Dispatch& kernels);

// Top-k of the same scores (candidate rows must not repeat within a query): rows (-1 padded) and scores (-inf padded), best first; ties go to
// the lower document row.
void chamfer_topk(const QueryBatchView& q, const TokenStoreView& s, const int64_t* candidates, int64_t C,
                  const uint8_t* alive, int64_t k, int64_t* out_rows, float* out_scores, int num_threads,
                  const Dispatch& kernels);

// Top-k of precomputed scores (n_queries x C; -inf = not eligible), candidates as above.
void select_topk(const float* scores, const int64_t* candidates, int64_t nq, int64_t C, int64_t k,
                 int64_t* out_rows, float* out_scores, int num_threads);

}  // namespace muvera
