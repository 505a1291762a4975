// fastembed-compatible FDEs (FDEConfig(variant="fastembed")): the algorithm of fastembed's Muvera
// postprocessor (fastembed/postprocess/muvera.py), given its random matrices explicitly. The
// matrices are drawn in Python with NumPy exactly as fastembed draws them
// (muvera/reference_fastembed.py); this file only encodes.
//
// Per item and repetition r (k SimHash bits, B = 2^k partitions, p output width):
//   id(x)   = sum_j [x . G_r[:, j] > 0] << j            (float64 dot products; plain binary ids)
//   c_b     = sum of the tokens with id b, in token order (float64); documents divide by the count
//   fill    = documents with fill on: an empty b takes the first token of the non-empty partition
//             nearest in Hamming distance of the ids (lowest id on ties)
//   out_r,b = (1/sqrt(p)) * c_b . S_r   if a projection is given (p < d), else c_b
// laid out as out[r*B*p + b*p + j] and rounded to float32 once, at the end.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace muvera {

struct FastembedScratch;  // per-thread working memory (fde_fastembed.cc)

// Layout the kernels read.
struct FastembedTables {
  int d, R, k, p, B;
  int rk_pad;           // columns of `gauss`/`gauss32`: R*k rounded up to a multiple of 16
  int p_pad;            // columns of each projection: p rounded up to a multiple of 8
  bool project, fill;
  double scale;         // 1 / sqrt(p)
  const double* gauss;  // d x rk_pad, column r*k + j = simhash[r][:, j], zero padding
  const float* gauss32; // the same rounded to float32 (the fast SimHash pass)
  const double* gthr;   // R*k: a float32 dot product with column c whose magnitude is at most
                        // ||x|| * gthr[c] + underflow may have the wrong sign: redone in float64
  double underflow;
  const double* proj;   // R x d x p_pad, zero padding (project only)
};

// One item's encoding (false if it holds NaN or Inf), compiled per ISA level.
using FastembedItemFn = bool (*)(const FastembedTables&, const ItemView&, int dtype, bool is_document,
                                 float* out, FastembedScratch&);
bool fastembed_item_generic(const FastembedTables&, const ItemView&, int, bool, float*, FastembedScratch&);
#if defined(MUVERA_X86)
bool fastembed_item_avx2(const FastembedTables&, const ItemView&, int, bool, float*, FastembedScratch&);
bool fastembed_item_avx512(const FastembedTables&, const ItemView&, int, bool, float*, FastembedScratch&);
#endif

class FastembedEncoder {
 public:
  // simhash: R x d x k float64 (row-major, simhash[r][i][j]); projection: R x d x p float64
  // (+-1 in fastembed) or nullptr for none (p = d). Arguments must already be validated.
  FastembedEncoder(int d, int R, int k, int p, const double* simhash, const double* projection,
                   bool fill_documents);

  int dimension() const { return d_; }
  int64_t output_dimension() const { return static_cast<int64_t>(R_) * (int64_t(1) << k_) * p_; }

  // Encodes items into out (n_items x output_dimension) with one ISA level's item kernel (from
  // the dispatch table, cpp/dispatch.h). Returns -1 on success, else the index of the first item found to hold NaN or
  // Inf (or whose encoding overflows float32). Safe to call from several threads at once.
  int64_t encode(const ItemView* items, int64_t n_items, int dtype, bool is_document, float* out,
                 int num_threads, FastembedItemFn item_kernel) const;

  using Tables = FastembedTables;

 private:
  int d_, R_, k_, p_;
  double underflow_ = 0.0;
  std::vector<double> gauss_, gthr_, proj_;
  std::vector<float> gauss32_;
  Tables tables_{};
};

}  // namespace muvera
