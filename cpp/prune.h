// The centroid-interaction prune (PLAID's candidate stage, on MUVERA's FDE candidates): a
// document's bag is the set of k-means centroid ids of its tokens (the residual codec's ids), and
// its bag score for a query is sum_i max_{c in bag} <q_i, c> -- Chamfer with every token moved to
// its centroid. It reads ~2 bytes per distinct centroid of a document and one small table per
// query, so a wide FDE candidate list can be cut to the few the exact rerank reads.
#pragma once
#include <cstdint>
#include <vector>

#include "chamfer.h"

namespace muvera {

struct Dispatch;  // dispatch.h: the kernels of one ISA level

struct BagView {
  const uint16_t* ids;     // every document's distinct centroid ids, ascending within a document
  const int64_t* offsets;  // n_docs + 1 (every bag non-empty)
  int64_t n_docs;
};

struct CentroidsView {
  const uint16_t* data;    // k x d float16
  int64_t k;
  int d;
};

// Appends the bags of documents [begin, end) of residual code rows (`width` bytes each, the
// first two a little-endian centroid id) to `ids` and their sizes to `lengths[doc - begin]`.
// Returns the first document holding an id >= k, or -1 when all are valid.
int64_t build_bags(const uint8_t* codes, int64_t width, const int64_t* offsets, int64_t begin, int64_t end,
                   int64_t k, std::vector<uint16_t>& ids, int64_t* lengths);

// The `keep` best candidates of each query by bag score, best first, ties to the lower row:
// rows_out / scores_out are n_queries x keep (-1 / -inf padded). candidates: n_queries x C rows,
// -1 = none, each < bags.n_docs and unique within a query (the binding checks the range and the
// candidates' bag spans). Returns false, the output unspecified, if a bag holds an id >= c.k.
bool prune_candidates(const QueryBatchView& q, const CentroidsView& c, const BagView& bags, const int64_t* candidates,
                      int64_t C, int64_t keep, int64_t* rows_out, float* scores_out, int num_threads,
                      const Dispatch& kernels);

}  // namespace muvera
