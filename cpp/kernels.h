// Plain-data views shared by the per-ISA kernels and the dispatcher. Kernels see only raw pointers:
// no STL types cross into the ISA translation units (their inline copies would otherwise be merged
// across ISAs by the linker).
#pragma once
#include <cstddef>
#include <cstdint>

namespace muvera {

enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3 };

constexpr int kBlock = 16;       // tokens per SIMD block (one lane per token)
constexpr int kSketchPad = 12;   // SimHash columns are padded to a multiple of this

// Random tables of one encoder, generated once (fde.cc) and read by every call.
struct FdeTablesView {
  int d, R, k, p, B;          // p = projected width (d for identity), B = 2^k
  int rk_pad;                 // row stride of `gauss` (R*k rounded up to kSketchPad)
  bool identity, fill;
  const float* gauss;         // d x rk_pad, column r*k+j = projection j of repetition r
  const int32_t* ams_col;     // R x d, output column of each input coordinate (AMS only)
  const float* ams_sign;      // R x d, +-1
  int64_t fde_dim;            // R*B*p
  int64_t final_dim;          // 0 = no count-sketch
  const uint32_t* cs_index;   // fde_dim
  const float* cs_sign;       // fde_dim
};

// One item (document or query): n rows of d values, row_stride elements apart.
struct ItemView {
  const void* data;
  int64_t n;
  int64_t row_stride;
};

// Per-thread working memory, sized by fde.cc for the longest item of a batch.
struct FdeScratch {
  float* x;        // n_max x d, float32 copy of the item (unused for contiguous float32 input)
  float* xt;       // d x kBlock, one token block transposed (64-byte aligned)
  int32_t* sk;     // rk_pad x kBlock sign masks (64-byte aligned)
  int32_t* codes;  // R x n_max raw sign patterns
  int32_t* counts; // R x B
  float* yt;       // p x kBlock projected block (64-byte aligned)
  float* row;      // p, one projected row for the fill
  float* fde;      // fde_dim, used only with a final projection
  int64_t n_max;
};

struct KernelSet {
  const char* name;
  // Encodes one item into out (final_dim or fde_dim floats). Returns false, leaving out
  // unspecified, if the item holds NaN or Inf.
  bool (*encode_item)(const FdeTablesView& t, const ItemView& item, int dtype, bool is_document,
                      float* out, FdeScratch& s);
};

const KernelSet& generic_kernels();
const KernelSet& avx2_kernels();
const KernelSet& avx512_kernels();

// The best kernel set this CPU supports, chosen once; MUVERA_ISA=generic|avx2|avx512 overrides.
const KernelSet& active_kernels();
const KernelSet* kernels_by_name(const char* name);  // nullptr if unknown or unsupported here

}  // namespace muvera
