// Plain-data views shared by the per-ISA kernels and the dispatcher. Kernels see only raw pointers:
// no STL types cross into the ISA translation units (their inline copies would otherwise be merged
// across ISAs by the linker).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace muvera {

enum DType : int { kFloat32 = 0, kFloat64 = 1, kFloat16 = 2, kBFloat16 = 3,
                   // Token store rows of the int8 codec: d int8 codes, then a little-endian float32
                   // scale (d + 4 bytes); the token is scale * code.
                   kInt8Scaled = 4 };

// Bytes of one stored token row of `dtype` with `d` values.
inline int64_t store_row_bytes(int dtype, int d) {
  return dtype == kInt8Scaled ? d + 4 : static_cast<int64_t>(d) * (dtype == kFloat16 ? 2 : 4);
}

// IEEE half -> float, exact (scalar; SIMD builds convert with F16C where they can).
inline float half_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    float f = static_cast<float>(man) * 5.9604644775390625e-8f;  // subnormal or zero: man * 2^-24
    std::memcpy(&bits, &f, 4);
    bits |= sign;
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 112u) << 23) | (man << 13);
  }
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

constexpr int kMaxLanes = 16;    // most tokens per SIMD block (one lane per token), sizes scratch
constexpr int kSketchPad = 12;   // SimHash columns are padded to a multiple of this

// The sparse AMS matrix of every repetition as the kernels walk it, for one SIMD width `lanes`.
// Output columns are taken in chunks of `lanes`; within a chunk they are sorted by how many input
// coordinates feed them (longest first) and summed four at a time (four independent add chains
// hide the add latency). Each column still sums its coordinates in ascending order.
struct AmsSchedule {
  int lanes, chunks;          // chunks = ceil(p / lanes)
  // R x chunks x lanes: natural column c0 + i is at sorted position unsort[i] of its chunk.
  const int32_t* unsort;
  // R x chunks x (lanes / 4): steps of each group of four sorted positions.
  const int32_t* group_steps;
  // R x chunks: where the chunk's steps start in `steps`.
  const int64_t* chunk_begin;
  // Per group and step, four byte offsets into the kernels' signed block (rows 0..d-1: the block,
  // d..2d-1: its negation, 2d: zeros), i.e. (t or d + t or 2d) * lanes * 4.
  const int64_t* steps;
};

// Random tables of one encoder, generated once (fde.cc) and read by every call.
struct FdeTablesView {
  int d, R, k, p, B;          // p = projected width (d for identity), B = 2^k
  int rk_pad;                 // row stride of `gauss` (R*k rounded up to kSketchPad)
  bool identity, fill;
  const float* gauss;         // d x rk_pad, column r*k+j = projection j of repetition r
  const int32_t* ams_col;     // R x d, output column of each input coordinate (AMS only)
  const float* ams_sign;      // R x d, +-1
  AmsSchedule ams[3];         // for 4, 8 and 16 lanes (index log2(lanes) - 2)
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
  float* xt;       // (2d+1) x kMaxLanes, one token block transposed, then negated (64-byte aligned)
  int32_t* sk;     // rk_pad x kMaxLanes sign masks (64-byte aligned)
  int32_t* codes;  // R x n_max raw sign patterns
  int32_t* counts; // R x B
  float* proj;     // R x n_max x p projected rows (AMS), kept for the fill; nullptr if too large
  float* row;      // p, one projected row for the fill
  int32_t* first;  // B, lowest point index of each sign pattern (fill)
  float* fde;      // fde_dim partition sums (64-byte aligned)
  int64_t n_max;
};

struct KernelSet {
  const char* name;
  // Chamfer (MaxSim) of one query against one document of m >= 1 rows (dtype kFloat32,
  // kFloat16 or kInt8Scaled; rows contiguous, store_row_bytes apart). The query is given transposed and zero-padded:
  // qt[t * nq_pad + i] for token i < nq, nq_pad a multiple of kMaxLanes, and as rows: q[i * d + t].
  // scratch: m * d floats (rows are decoded there, one document at a time, where a layout needs
  // floats in memory). short_layout: short queries may take the pair layout (lanes along the
  // dimension, rounded differently) or put document tokens in the lanes (the query-lane
  // layout's scores bit for bit); false keeps the query-lane layout.
  float (*chamfer_doc)(const float* qt, const float* q, int nq, int nq_pad, int d, const void* doc, int dtype,
                       int64_t m, float* scratch, bool short_layout);
  // Encodes one item into out (final_dim or fde_dim floats). Returns false, leaving out
  // unspecified, if the item holds NaN or Inf.
  bool (*encode_item)(const FdeTablesView& t, const ItemView& item, int dtype, bool is_document,
                      float* out, FdeScratch& s);
  // Sparse inner products with 8-bit codes: out[i] = sum over runs r of sum_{t in [runs[2r],
  // runs[2r+1])} w[t] * codes[rows[i] * dim + t], for n rows (all >= 0). The refine stage of the
  // FDE candidates: a query FDE is zero outside its tokens' partitions, so only those runs count.
  void (*code8_dots)(const float* w, const int32_t* runs, int nruns, const uint8_t* codes, int64_t dim,
                     const int64_t* rows, int64_t n, float* out);
  // The centroid-interaction prune (prune.h), on a query x centroid table of W floats per centroid.
  // bag_scores: out[x] = sum over i < nq (in order) of max over the ids of document rows[x]'s bag
  // (ids[bag_off[r] .. bag_off[r + 1]), non-empty) of table[id * W + i]; W a multiple of 8, >= nq.
  void (*bag_scores)(const float* table, int W, int nq, const uint16_t* ids, const int64_t* bag_off,
                     const int64_t* rows, int64_t n, float* out);
};

const KernelSet& generic_kernels();
const KernelSet& avx2_kernels();
const KernelSet& avx512_kernels();

}  // namespace muvera
