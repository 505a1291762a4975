// The centroid-interaction prune (PLAID's candidate stage, on MUVERA's FDE candidates): a
// document's bag is the set of k-means centroid ids of its tokens (the residual codec's ids), and
// its bag score for a query is sum_i max_{c in bag} <q_i, c> -- Chamfer with every token moved to
// its centroid. It reads ~2 bytes per distinct centroid of a document and one small table per
// query, so a wide FDE candidate list can be cut to the few the exact rerank reads.
#pragma once
#include <cstdint>
#include <vector>

namespace muvera {

struct BagView {
  const uint16_t* ids;     // every document's distinct centroid ids, ascending within a document
  const int64_t* offsets;  // n_docs + 1 (every bag non-empty)
  int64_t n_docs;
};

// Appends the bags of documents [begin, end) of residual code rows (`width` bytes each, the
// first two a little-endian centroid id) to `ids` and their sizes to `lengths[doc - begin]`.
// Returns the first document holding an id >= k, or -1 when all are valid.
int64_t build_bags(const uint8_t* codes, int64_t width, const int64_t* offsets, int64_t begin, int64_t end,
                   int64_t k, std::vector<uint16_t>& ids, int64_t* lengths);

// The prune itself runs on the residual rerank's query x centroid tables: residual_prune
// (residual.h).

}  // namespace muvera
