// Chamfer rerank on residual codes (centroid id + nbits-per-dimension levels), without decoding the
// candidates: per query, a query x centroid table and int8 query residual weights; per document
// block, the levels unpacked into L1 and scored with integer dot products (see
// muvera/codecs/residual.py for the algebra and the NumPy reference it equals bit for bit).
#pragma once
#include <cstdint>
#include <cstring>

#include "chamfer.h"

namespace muvera {

// The codec's learned tables.
struct ResidualTablesView {
  const uint16_t* centroids;  // K x d float16 bits, as stored (converted four rows at a time)
  int64_t K;
  const float* lo;         // d
  const float* step;       // d
  int d, nbits;
  int plane_bytes;         // P = ceil(d * nbits / 8); a stored row is 2 + P bytes
};

// One prepared query, as every kernel set reads it.
struct ResidualQueryView {
  int nq, nq_pad;          // tokens, and padded to a multiple of kMaxLanes
  int quads;               // ceil(d / 4): dimensions in groups of four (zero padded)
  const int8_t* qi;        // quads x nq_pad x 4: quantised q * step (0 in padding)
  const float* sq;         // nq_pad scales (0 in padding)
  const float* a;          // nq: sum_t q_t lo_t
  const float* qc;         // K x nq_pad: q . centroid (0 in padding lanes)
  int s16_steps;           // quads that may be summed in int16 before widening (vpmaddubsw bound)
  const int32_t* corr;     // int8 rerank: nq_pad values 128 * sum_t qi (the VNNI bias), else null
};

struct ResidualKernelSet {
  const char* name;
  // qc[c * nq_pad + i] = sum_t centroids[c][t] * qt[t * nq_pad + i] (sequential in t, no FMA) for
  // centroids c in [c0, c1), for the nq query tokens (lanes past nq may be left as they are: the
  // caller zeroes the table). rows: 4 * d floats of scratch (float16 rows converted there).
  void (*qc_table)(const float* qt, int nq_pad, int nq, int d, const uint16_t* centroids, int64_t c0, int64_t c1,
                   float* qc, float* rows);
  // Chamfer score of one document of m rows (2 + P bytes each). scratch: kResidualBlock *
  // residual_scratch_stride bytes; mx: nq_pad floats. Sets *bad_cid if a centroid id is outside [0, K) (that token then
  // scores as centroid 0).
  float (*doc_score)(const ResidualQueryView& q, const ResidualTablesView& t, const uint8_t* rows, int64_t m,
                     uint8_t* scratch, float* mx, bool* bad_cid);
  // Chamfer score of one document of m int8-codec rows (d codes, then a float32 scale): exact
  // integer dot products with the int8 query (q.qi, q.sq, q.corr), then
  // (sq_i * dot) * scale_j per pair, max over j, sum over i (muvera/codecs/int8.py's reference).
  // mx: nq_pad floats.
  float (*int8_doc_score)(const ResidualQueryView& q, const uint8_t* rows, int64_t m, int d, float* mx);
};

constexpr int kResidualBlock = 4;  // document tokens unpacked and scored together
static_assert(kResidualBlock == 4, "doc_score initialises four centroid ids");

// Bytes per unpacked row in the kernels' scratch: every plane position and every quad, rounded
// to 32. The scratch is kResidualBlock rows, zeroed once.
inline int residual_scratch_stride(int d, int nbits) {
  const int per = 8 / nbits, plane = (d * nbits + 7) / 8, quads = (d + 3) / 4;
  const int width = per * plane > quads * 4 ? per * plane : quads * 4;
  return (width + 31) / 32 * 32;
}

const ResidualKernelSet& residual_generic();
const ResidualKernelSet& residual_avx2();
const ResidualKernelSet& residual_avx512();
const ResidualKernelSet& residual_avx512vnni();

// scores[i * C + c] for candidates as in chamfer_scores. Returns false if a stored centroid id is out
// of range (the scores are then unspecified).
bool residual_scores(const QueryBatchView& q, const ResidualTablesView& t, const uint8_t* codes,
                     const int64_t* offsets, int64_t n_docs, const int64_t* candidates, int64_t C,
                     const uint8_t* alive, float* scores, int num_threads, const ResidualKernelSet& kernels);

// The centroid-interaction prune on the rerank's own tables (prune.h): of each query's C `wide`
// candidates (-1 = none), the `keep` best by bag score into kept (n_queries x keep, best first,
// ties to the lower row, -1 padded) and, if given, their bag scores into bag_scores (-inf
// padded); then, if `scores` is given, the residual Chamfer scores of the kept rows (n_queries x
// keep, -inf for padding), exactly as residual_scores would give them. Returns false, the output
// unspecified, if a candidate's bag or code holds a centroid id >= K.
struct BagView;
struct Dispatch;
bool residual_prune(const QueryBatchView& q, const ResidualTablesView& t, const uint8_t* codes, const int64_t* offsets,
                    const BagView& bags, const int64_t* wide, int64_t C, int64_t keep, int64_t* kept,
                    float* bag_scores, float* scores, int num_threads, const Dispatch& kernels);

// scores[i * C + c] of an int8-codec store (rows of d codes and a float32 scale), candidates as
// in chamfer_scores: each query token quantised to int8 (scale max|q| / 127), integer dot
// products (AVX2/AVX-512 vpmaddubsw, VNNI vpdpbusd), one float combine per pair.
void int8_scores(const QueryBatchView& q, const TokenStoreView& s, const int64_t* candidates, int64_t C,
                 const uint8_t* alive, float* scores, int num_threads, const ResidualKernelSet& kernels);

}  // namespace muvera
