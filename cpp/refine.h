// The refine stage of the FDE candidates: re-scoring a coarse index's candidates with 8-bit
// scalar-quantised FDEs (faiss's SQ8 layout), touching only the dimensions where the query FDE
// is non-zero.
#pragma once
#include <cstdint>

namespace muvera {

struct Dispatch;  // dispatch.h: the kernels of one ISA level

// Rows of 8-bit codes: value t of row i is vmin[t] + (codes[i * dim + t] + 0.5) / 255 * vdiff[t]
// (faiss ScalarQuantizer QT_8bit, per-dimension ranges).
struct Code8View {
  const uint8_t* codes;  // n x dim
  int64_t n;
  int64_t dim;
  const float* vmin;     // dim
  const float* vdiff;    // dim
};

// scores[i * K + j] = <query i, decoded row rows[i * K + j]>, -inf where the row is -1.
// Rows must be in [-1, n) (the binding checks). A query's zero dimensions are skipped: a query
// FDE of a few tokens is zero outside its tokens' partitions (most of it).
void code8_scores(const float* queries, int64_t nq, const int64_t* rows, int64_t K, const Code8View& codes,
                  float* scores, int num_threads, const Dispatch& kernels);

}  // namespace muvera
