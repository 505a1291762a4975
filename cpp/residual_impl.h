// Residual-code kernel bodies, compiled once per ISA (residual_<isa>.cc sets MUVERA_RES_NS and
// MUVERA_RES_LEVEL, and the flags in CMakeLists.txt, including -ffp-contract=off: every ISA rounds
// exactly as the NumPy reference, one multiply and one add at a time).
//   level 0: portable C++; 1: AVX2 (vpmaddubsw, 8 query tokens per vector);
//   2: AVX-512BW (vpmaddubsw, 16); 3: AVX-512 VNNI (vpdpbusd, 16).
#include <cstring>
#include <limits>
#if MUVERA_RES_LEVEL > 0
#include <immintrin.h>
#endif

#include "residual.h"

#ifndef MUVERA_RES_NS
#error "define MUVERA_RES_NS and MUVERA_RES_LEVEL before including residual_impl.h"
#endif

namespace muvera {
namespace MUVERA_RES_NS {
namespace {

constexpr int kQcLanes = 16;
typedef float vq __attribute__((vector_size(4 * kQcLanes)));

void qc_table(const float* qt, int nq_pad, int d, const float* centroids, int64_t c0, int64_t c1, float* qc) {
  for (int64_t c = c0; c < c1; ++c) {
    const float* row = centroids + c * d;
    for (int g = 0; g < nq_pad; g += kQcLanes) {
      vq acc = vq{};
      for (int t = 0; t < d; ++t) {
        vq q;
        std::memcpy(&q, qt + static_cast<int64_t>(t) * nq_pad + g, sizeof(vq));
        const vq prod = row[t] * q;  // rounded, then added: no contraction in this file
        acc += prod;
      }
      std::memcpy(qc + c * nq_pad + g, &acc, sizeof(vq));
    }
  }
}

// Unpacks rows [0, jd) of a block into u8 levels, quads*4 bytes per row (zeros past d and for
// rows jd..kResidualBlock-1); returns the centroid ids in cid.
void unpack_block(const ResidualTablesView& t, const uint8_t* rows, int jd, int quads, uint8_t* out,
                  int64_t* cid, bool* bad_cid) {
  const int P = t.plane_bytes, per = 8 / t.nbits, width = quads * 4;
  const uint8_t mask = static_cast<uint8_t>((1u << t.nbits) - 1u);
  std::memset(out, 0, static_cast<size_t>(kResidualBlock) * width);
  for (int j = 0; j < kResidualBlock; ++j) cid[j] = 0;
  for (int j = 0; j < jd; ++j) {
    const uint8_t* row = rows + static_cast<int64_t>(j) * (2 + P);
    int64_t c = static_cast<int64_t>(row[0]) | (static_cast<int64_t>(row[1]) << 8);
    if (c >= t.K) {
      *bad_cid = true;
      c = 0;
    }
    cid[j] = c;
    const uint8_t* packed = row + 2;
    uint8_t* dst = out + static_cast<int64_t>(j) * width;
    for (int k = 0; k < per; ++k) {
      const int base = k * P;
      const int n = t.d - base < P ? t.d - base : P;
      const int shift = k * t.nbits;
      for (int i = 0; i < n; ++i) dst[base + i] = static_cast<uint8_t>((packed[i] >> shift) & mask);
    }
  }
}

#if MUVERA_RES_LEVEL == 0
// Integer dot products, then the float combine, lane by lane.
void score_block(const ResidualQueryView& q, const uint8_t* u, const int64_t* cid, int jd, float* mx) {
  const int width = q.quads * 4;
  for (int i = 0; i < q.nq_pad; ++i) {
    for (int j = 0; j < jd; ++j) {
      const uint8_t* doc = u + static_cast<int64_t>(j) * width;
      int32_t dot = 0;
      for (int s = 0; s < q.quads; ++s) {
        const int8_t* qv = q.qi + (static_cast<int64_t>(s) * q.nq_pad + i) * 4;
        for (int b = 0; b < 4; ++b) dot += static_cast<int32_t>(doc[s * 4 + b]) * qv[b];
      }
      const float prod = q.sq[i] * static_cast<float>(dot);
      const float v = q.qc[cid[j] * q.nq_pad + i] + prod;
      if (v > mx[i]) mx[i] = v;
    }
  }
}
#else
#if MUVERA_RES_LEVEL == 1
typedef __m256i vint;
typedef __m256 vflt;
constexpr int kLanes = 8;
inline vint zero_i() { return _mm256_setzero_si256(); }
inline vint load_i(const void* p) { return _mm256_loadu_si256(static_cast<const __m256i*>(p)); }
inline vint bcast32(const uint8_t* p) { int32_t v; std::memcpy(&v, p, 4); return _mm256_set1_epi32(v); }
inline vint maddubs(vint u, vint s) { return _mm256_maddubs_epi16(u, s); }
inline vint add16(vint a, vint b) { return _mm256_add_epi16(a, b); }
inline vint add32(vint a, vint b) { return _mm256_add_epi32(a, b); }
inline vint widen(vint a) { return _mm256_madd_epi16(a, _mm256_set1_epi16(1)); }
inline vflt to_f(vint a) { return _mm256_cvtepi32_ps(a); }
inline vflt load_f(const float* p) { return _mm256_loadu_ps(p); }
inline void store_f(float* p, vflt v) { _mm256_storeu_ps(p, v); }
inline vflt mul_f(vflt a, vflt b) { return _mm256_mul_ps(a, b); }
inline vflt add_f(vflt a, vflt b) { return _mm256_add_ps(a, b); }
inline vflt max_f(vflt a, vflt b) { return _mm256_max_ps(a, b); }
#else
typedef __m512i vint;
typedef __m512 vflt;
constexpr int kLanes = 16;
inline vint zero_i() { return _mm512_setzero_si512(); }
inline vint load_i(const void* p) { return _mm512_loadu_si512(p); }
inline vint bcast32(const uint8_t* p) { int32_t v; std::memcpy(&v, p, 4); return _mm512_set1_epi32(v); }
inline vint maddubs(vint u, vint s) { return _mm512_maddubs_epi16(u, s); }
inline vint add16(vint a, vint b) { return _mm512_add_epi16(a, b); }
inline vint add32(vint a, vint b) { return _mm512_add_epi32(a, b); }
inline vint widen(vint a) { return _mm512_madd_epi16(a, _mm512_set1_epi16(1)); }
inline vflt to_f(vint a) { return _mm512_cvtepi32_ps(a); }
inline vflt load_f(const float* p) { return _mm512_loadu_ps(p); }
inline void store_f(float* p, vflt v) { _mm512_storeu_ps(p, v); }
inline vflt mul_f(vflt a, vflt b) { return _mm512_mul_ps(a, b); }
inline vflt add_f(vflt a, vflt b) { return _mm512_add_ps(a, b); }
inline vflt max_f(vflt a, vflt b) { return _mm512_max_ps(a, b); }
#endif

// One group of kLanes query tokens against the block's kResidualBlock rows (unused rows are zero
// and are not folded into the max). Products are summed in int16 for q.s16_steps quads at a time
// (the bound that keeps vpmaddubsw exact), then widened to int32; VNNI sums in int32 directly.
void score_block(const ResidualQueryView& q, const uint8_t* u, const int64_t* cid, int jd, float* mx) {
  constexpr int J = kResidualBlock;
  const int width = q.quads * 4;
  for (int g = 0; g < q.nq_pad; g += kLanes) {
    vint acc[J];
    for (int j = 0; j < J; ++j) acc[j] = zero_i();
#if MUVERA_RES_LEVEL == 3
    for (int s = 0; s < q.quads; ++s) {
      const vint qv = load_i(q.qi + (static_cast<int64_t>(s) * q.nq_pad + g) * 4);
      for (int j = 0; j < J; ++j) acc[j] = _mm512_dpbusd_epi32(acc[j], bcast32(u + j * width + s * 4), qv);
    }
#else
    for (int s0 = 0; s0 < q.quads; s0 += q.s16_steps) {
      const int s1 = s0 + q.s16_steps < q.quads ? s0 + q.s16_steps : q.quads;
      vint part[J];
      for (int j = 0; j < J; ++j) part[j] = zero_i();
      for (int s = s0; s < s1; ++s) {
        const vint qv = load_i(q.qi + (static_cast<int64_t>(s) * q.nq_pad + g) * 4);
        for (int j = 0; j < J; ++j) part[j] = add16(part[j], maddubs(bcast32(u + j * width + s * 4), qv));
      }
      for (int j = 0; j < J; ++j) acc[j] = add32(acc[j], widen(part[j]));
    }
#endif
    vflt best = load_f(mx + g);
    const vflt scale = load_f(q.sq + g);
    for (int j = 0; j < jd; ++j) {
      const vflt v = add_f(load_f(q.qc + cid[j] * q.nq_pad + g), mul_f(scale, to_f(acc[j])));
      best = max_f(best, v);
    }
    store_f(mx + g, best);
  }
}
#endif

float doc_score(const ResidualQueryView& q, const ResidualTablesView& t, const uint8_t* rows, int64_t m,
                uint8_t* scratch, float* mx, bool* bad_cid) {
  if (m <= 0 || q.nq <= 0) return 0.0f;
  for (int i = 0; i < q.nq_pad; ++i) mx[i] = -std::numeric_limits<float>::infinity();
  int64_t cid[kResidualBlock];
  const int64_t row_bytes = 2 + t.plane_bytes;
  for (int64_t j0 = 0; j0 < m; j0 += kResidualBlock) {
    const int jd = static_cast<int>(m - j0 < kResidualBlock ? m - j0 : kResidualBlock);
    unpack_block(t, rows + j0 * row_bytes, jd, q.quads, scratch, cid, bad_cid);
    score_block(q, scratch, cid, jd, mx);
  }
  float total = 0.0f;
  for (int i = 0; i < q.nq; ++i) {
    const float v = mx[i] + q.a[i];
    total += v;
  }
  return total;
}

}  // namespace

const ResidualKernelSet& kernels() {
  static const ResidualKernelSet set{MUVERA_RES_NAME, &qc_table, &doc_score};
  return set;
}

}  // namespace MUVERA_RES_NS
}  // namespace muvera
