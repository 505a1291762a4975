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

// Unpacks rows [0, jd) of a block into u8 levels, `stride` bytes per row: plane k of byte j goes to
// position k * P + j, so [0, per * P) is written (past d the packed bits are zero, and the query
// weights there are zero too). Rows jd.. keep stale levels: they are never folded into the max.
void unpack_block(const ResidualTablesView& t, const uint8_t* rows, int jd, int stride, uint8_t* out,
                  int64_t* cid, bool* bad_cid) {
  const int P = t.plane_bytes, per = 8 / t.nbits;
  const uint8_t mask = static_cast<uint8_t>((1u << t.nbits) - 1u);
  for (int j = 0; j < jd; ++j) {
    const uint8_t* row = rows + static_cast<int64_t>(j) * (2 + P);
    int64_t c = static_cast<int64_t>(row[0]) | (static_cast<int64_t>(row[1]) << 8);
    if (c >= t.K) {
      *bad_cid = true;
      c = 0;
    }
    cid[j] = c;
    const uint8_t* packed = row + 2;
    uint8_t* dst = out + static_cast<int64_t>(j) * stride;
    int i = 0;
#if MUVERA_RES_LEVEL > 0
    // 32 bytes at a time: one shift and one mask per plane (16-bit shifts; the mask drops the
    // bits that crossed from the neighbouring byte).
    const __m256i m8 = _mm256_set1_epi8(static_cast<char>(mask));
    for (; i + 32 <= P; i += 32) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(packed + i));
      for (int k = 0; k < per; ++k) {
        const __m256i plane = _mm256_and_si256(_mm256_srli_epi16(v, k * t.nbits), m8);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k * P + i), plane);
      }
    }
#endif
    for (; i < P; ++i)
      for (int k = 0; k < per; ++k) dst[k * P + i] = static_cast<uint8_t>((packed[i] >> (k * t.nbits)) & mask);
  }
}

#if MUVERA_RES_LEVEL == 0
// out[i] += row[t] * qt[t][i], t ascending: vectorises over the lanes i, one rounding per step.
void qc_table(const float* qt, int nq_pad, int nq, int d, const uint16_t* centroids, int64_t c0, int64_t c1, float* qc,
              float* rows) {
  (void)nq;
  for (int64_t c = c0; c < c1; ++c) {
    for (int t = 0; t < d; ++t) rows[t] = half_bits_to_float(centroids[c * d + t]);
    const float* row = rows;
    float* out = qc + c * nq_pad;
    for (int i = 0; i < nq_pad; ++i) out[i] = 0.0f;
    for (int t = 0; t < d; ++t) {
      const float r = row[t];
      const float* q = qt + static_cast<int64_t>(t) * nq_pad;
      for (int i = 0; i < nq_pad; ++i) {
        const float prod = r * q[i];
        out[i] += prod;
      }
    }
  }
}

// Integer dot products, then the float combine, lane by lane.
void score_block(const ResidualQueryView& q, const uint8_t* u, int width, const int64_t* cid, int jd, float* mx) {
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
inline vflt zero_f() { return _mm256_setzero_ps(); }
inline vflt set1_f(float v) { return _mm256_set1_ps(v); }
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
// The all-lanes maskz forms of the next two: GCC 12's unmasked ones warn (-Wmaybe-uninitialized) at -O1.
inline vflt to_f(vint a) { return _mm512_maskz_cvtepi32_ps(0xFFFF, a); }
inline vflt load_f(const float* p) { return _mm512_loadu_ps(p); }
inline void store_f(float* p, vflt v) { _mm512_storeu_ps(p, v); }
inline vflt mul_f(vflt a, vflt b) { return _mm512_mul_ps(a, b); }
inline vflt add_f(vflt a, vflt b) { return _mm512_add_ps(a, b); }
inline vflt max_f(vflt a, vflt b) { return _mm512_maskz_max_ps(0xFFFF, a, b); }
inline vflt zero_f() { return _mm512_setzero_ps(); }
inline vflt set1_f(float v) { return _mm512_set1_ps(v); }
#endif

// Four centroids per pass over the query: four independent add chains per lane group.
// float16 rows -> float, eight at a time (exact).
void halves_to_floats(const uint16_t* src, int64_t count, float* dst) {
  int64_t i = 0;
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  for (; i < count; ++i) dst[i] = half_bits_to_float(src[i]);
}

// The float operations of one vector width: the level's native one, and on AVX-512 also 256-bit
// (queries of up to 8 tokens: the first 8 of the 16 padded lanes are all there is, and 256-bit
// operations do them at half the cost of 512-bit ones on cores that split the latter in two,
// AMD Zen 4; the same arithmetic lane by lane, so the same scores).
struct NativeOps {
  typedef vflt V;
  static constexpr int kWidth = kLanes;
  static V zero() { return zero_f(); }
  static V load(const float* p) { return load_f(p); }
  static void store(float* p, V v) { store_f(p, v); }
  static V mul(V a, V b) { return mul_f(a, b); }
  static V add(V a, V b) { return add_f(a, b); }
  static V set1(float v) { return set1_f(v); }
};
#if MUVERA_RES_LEVEL >= 2
struct HalfOps {
  typedef __m256 V;
  static constexpr int kWidth = 8;
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const float* p) { return _mm256_loadu_ps(p); }
  static void store(float* p, V v) { _mm256_storeu_ps(p, v); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V set1(float v) { return _mm256_set1_ps(v); }
};
#endif

// Lanes [0, lanes) of the table rows of centroids [c0, c1), Ops::kWidth lanes at a time.
template <typename Ops>
void qc_rows(const float* qt, int nq_pad, int lanes, int d, const uint16_t* centroids, int64_t c0, int64_t c1,
             float* qc, float* rows) {
  typedef typename Ops::V V;
  int64_t c = c0;
  for (; c + 4 <= c1; c += 4) {
    halves_to_floats(centroids + c * d, 4 * static_cast<int64_t>(d), rows);
    const float* r0 = rows;
    const float* r1 = r0 + d;
    const float* r2 = r1 + d;
    const float* r3 = r2 + d;
    for (int g = 0; g < lanes; g += Ops::kWidth) {
      V a0 = Ops::zero(), a1 = Ops::zero(), a2 = Ops::zero(), a3 = Ops::zero();
      for (int t = 0; t < d; ++t) {
        const V q = Ops::load(qt + static_cast<int64_t>(t) * nq_pad + g);
        a0 = Ops::add(a0, Ops::mul(Ops::set1(r0[t]), q));
        a1 = Ops::add(a1, Ops::mul(Ops::set1(r1[t]), q));
        a2 = Ops::add(a2, Ops::mul(Ops::set1(r2[t]), q));
        a3 = Ops::add(a3, Ops::mul(Ops::set1(r3[t]), q));
      }
      Ops::store(qc + c * nq_pad + g, a0);
      Ops::store(qc + (c + 1) * nq_pad + g, a1);
      Ops::store(qc + (c + 2) * nq_pad + g, a2);
      Ops::store(qc + (c + 3) * nq_pad + g, a3);
    }
  }
  for (; c < c1; ++c) {
    halves_to_floats(centroids + c * d, d, rows);
    for (int g = 0; g < lanes; g += Ops::kWidth) {
      V a0 = Ops::zero();
      for (int t = 0; t < d; ++t)
        a0 = Ops::add(a0, Ops::mul(Ops::set1(rows[t]), Ops::load(qt + static_cast<int64_t>(t) * nq_pad + g)));
      Ops::store(qc + c * nq_pad + g, a0);
    }
  }
}

void qc_table(const float* qt, int nq_pad, int nq, int d, const uint16_t* centroids, int64_t c0, int64_t c1, float* qc,
              float* rows) {
#if MUVERA_RES_LEVEL >= 2
  if (nq <= 8) return qc_rows<HalfOps>(qt, nq_pad, 8, d, centroids, c0, c1, qc, rows);  // lanes 8-15 stay zero
#else
  (void)nq;
#endif
  qc_rows<NativeOps>(qt, nq_pad, nq_pad, d, centroids, c0, c1, qc, rows);
}

// G groups of kLanes query tokens against the block's kResidualBlock rows (stale rows past jd
// are scored but not folded into the max). Products are summed in int16 for q.s16_steps quads at
// a time (the bound that keeps vpmaddubsw exact), then widened to int32; VNNI sums in int32.
template <int G>
void score_groups(const ResidualQueryView& q, const uint8_t* u, int width, const int64_t* cid, int jd, int g0,
                  float* mx) {
  constexpr int J = kResidualBlock;
  vint acc[G][J];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < J; ++j) acc[g][j] = zero_i();
#if MUVERA_RES_LEVEL == 3
  for (int s = 0; s < q.quads; ++s) {
    vint qv[G];
    for (int g = 0; g < G; ++g) qv[g] = load_i(q.qi + (static_cast<int64_t>(s) * q.nq_pad + g0 + g * kLanes) * 4);
    for (int j = 0; j < J; ++j) {
      const vint dv = bcast32(u + j * width + s * 4);
      for (int g = 0; g < G; ++g) acc[g][j] = _mm512_dpbusd_epi32(acc[g][j], dv, qv[g]);
    }
  }
#else
  for (int s0 = 0; s0 < q.quads; s0 += q.s16_steps) {
    const int s1 = s0 + q.s16_steps < q.quads ? s0 + q.s16_steps : q.quads;
    vint part[G][J];
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < J; ++j) part[g][j] = zero_i();
    for (int s = s0; s < s1; ++s) {
      vint qv[G];
      for (int g = 0; g < G; ++g) qv[g] = load_i(q.qi + (static_cast<int64_t>(s) * q.nq_pad + g0 + g * kLanes) * 4);
      for (int j = 0; j < J; ++j) {
        const vint dv = bcast32(u + j * width + s * 4);
        for (int g = 0; g < G; ++g) part[g][j] = add16(part[g][j], maddubs(dv, qv[g]));
      }
    }
    for (int g = 0; g < G; ++g)
      for (int j = 0; j < J; ++j) acc[g][j] = add32(acc[g][j], widen(part[g][j]));
  }
#endif
  for (int g = 0; g < G; ++g) {
    const int lane0 = g0 + g * kLanes;
    vflt best = load_f(mx + lane0);
    const vflt scale = load_f(q.sq + lane0);
    for (int j = 0; j < jd; ++j) {
      const vflt v = add_f(load_f(q.qc + cid[j] * q.nq_pad + lane0), mul_f(scale, to_f(acc[g][j])));
      best = max_f(best, v);
    }
    store_f(mx + lane0, best);
  }
}

#if MUVERA_RES_LEVEL >= 2
// Queries of up to 8 tokens on AVX-512 (see qc_table_narrow): score_groups on the first 8 lanes
// with 256-bit operations; the same integer sums and float combine, lane by lane.
void score_block_narrow(const ResidualQueryView& q, const uint8_t* u, int width, const int64_t* cid, int jd,
                        float* mx) {
  constexpr int J = kResidualBlock;
  __m256i acc[J];
  for (int j = 0; j < J; ++j) acc[j] = _mm256_setzero_si256();
  const int64_t qstride = static_cast<int64_t>(q.nq_pad) * 4;
#if MUVERA_RES_LEVEL == 3
  for (int s = 0; s < q.quads; ++s) {
    const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.qi + s * qstride));
    for (int j = 0; j < J; ++j) {
      int32_t v;
      std::memcpy(&v, u + j * width + s * 4, 4);
      acc[j] = _mm256_dpbusd_epi32(acc[j], _mm256_set1_epi32(v), qv);
    }
  }
#else
  for (int s0 = 0; s0 < q.quads; s0 += q.s16_steps) {
    const int s1 = s0 + q.s16_steps < q.quads ? s0 + q.s16_steps : q.quads;
    __m256i part[J];
    for (int j = 0; j < J; ++j) part[j] = _mm256_setzero_si256();
    for (int s = s0; s < s1; ++s) {
      const __m256i qv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(q.qi + s * qstride));
      for (int j = 0; j < J; ++j) {
        int32_t v;
        std::memcpy(&v, u + j * width + s * 4, 4);
        part[j] = _mm256_add_epi16(part[j], _mm256_maddubs_epi16(_mm256_set1_epi32(v), qv));
      }
    }
    for (int j = 0; j < J; ++j)
      acc[j] = _mm256_add_epi32(acc[j], _mm256_madd_epi16(part[j], _mm256_set1_epi16(1)));
  }
#endif
  __m256 best = _mm256_loadu_ps(mx);
  const __m256 scale = _mm256_loadu_ps(q.sq);
  for (int j = 0; j < jd; ++j) {
    const __m256 v = _mm256_add_ps(_mm256_loadu_ps(q.qc + cid[j] * q.nq_pad),
                                   _mm256_mul_ps(scale, _mm256_cvtepi32_ps(acc[j])));
    best = _mm256_max_ps(best, v);
  }
  _mm256_storeu_ps(mx, best);
}
#endif

void score_block(const ResidualQueryView& q, const uint8_t* u, int width, const int64_t* cid, int jd, float* mx) {
#if MUVERA_RES_LEVEL >= 2
  if (q.nq <= 8) return score_block_narrow(q, u, width, cid, jd, mx);
#endif
  int g0 = 0;
  for (; g0 + 2 * kLanes <= q.nq_pad; g0 += 2 * kLanes) score_groups<2>(q, u, width, cid, jd, g0, mx);
  for (; g0 < q.nq_pad; g0 += kLanes) score_groups<1>(q, u, width, cid, jd, g0, mx);
}
#endif

float doc_score(const ResidualQueryView& q, const ResidualTablesView& t, const uint8_t* rows, int64_t m,
                uint8_t* scratch, float* mx, bool* bad_cid) {
  if (m <= 0 || q.nq <= 0) return 0.0f;
  for (int i = 0; i < q.nq_pad; ++i) mx[i] = -std::numeric_limits<float>::infinity();
  int64_t cid[kResidualBlock] = {0, 0, 0, 0};
  const int64_t row_bytes = 2 + t.plane_bytes;
  const int stride = residual_scratch_stride(t.d, t.nbits);
  for (int64_t j0 = 0; j0 < m; j0 += kResidualBlock) {
    const int jd = static_cast<int>(m - j0 < kResidualBlock ? m - j0 : kResidualBlock);
    unpack_block(t, rows + j0 * row_bytes, jd, stride, scratch, cid, bad_cid);
    score_block(q, scratch, stride, cid, jd, mx);
  }
  float total = 0.0f;
  for (int i = 0; i < q.nq; ++i) {
    const float v = mx[i] + q.a[i];
    total += v;
  }
  return total;
}

// ---- int8 codec rows ------------------------------------------------------------------------
// Four document rows at a time against every query lane; the integer dot of a pair is exact on
// every level (VNNI: (c + 128) . q - 128 sum q; vpmaddubsw: |c| . sign(q, c), each pair sum
// <= 2 * 127 * 127), so every ISA gives the same scores.
inline float row_scale(const uint8_t* row, int d) {
  float s;
  std::memcpy(&s, row + d, 4);
  return s;
}

#if MUVERA_RES_LEVEL == 0
void int8_block(const ResidualQueryView& q, const uint8_t* rows, int d, int jd, float* mx) {
  const int64_t stride = d + 4;
  for (int j = 0; j < jd; ++j) {
    const int8_t* c = reinterpret_cast<const int8_t*>(rows + j * stride);
    const float scale = row_scale(rows + j * stride, d);
    for (int i = 0; i < q.nq_pad; ++i) {
      int32_t dot = 0;
      for (int t = 0; t < d; ++t) dot += static_cast<int32_t>(c[t]) * q.qi[(static_cast<int64_t>(t / 4) * q.nq_pad + i) * 4 + t % 4];
      const float prod = q.sq[i] * static_cast<float>(dot);
      const float v = prod * scale;
      if (v > mx[i]) mx[i] = v;
    }
  }
}
#else
// A quad of document codes at p, broadcast; past d the row's scale bytes are read (inside the
// row), and the query weights there are zero.
template <int G>
void int8_groups(const ResidualQueryView& q, const uint8_t* rows, int d, int jd, int g0, float* mx) {
  constexpr int J = kResidualBlock;
  const int64_t stride = d + 4;
  vint acc[G][J];
  for (int g = 0; g < G; ++g)
    for (int j = 0; j < J; ++j) acc[g][j] = zero_i();
  for (int s = 0; s < q.quads; ++s) {
    vint qv[G];
    for (int g = 0; g < G; ++g) qv[g] = load_i(q.qi + (static_cast<int64_t>(s) * q.nq_pad + g0 + g * kLanes) * 4);
    for (int j = 0; j < J; ++j) {
      const vint dv = bcast32(rows + (j < jd ? j : 0) * stride + s * 4);
#if MUVERA_RES_LEVEL == 3
      const vint du = _mm512_xor_si512(dv, _mm512_set1_epi8(static_cast<char>(0x80)));  // c + 128
      for (int g = 0; g < G; ++g) acc[g][j] = _mm512_dpbusd_epi32(acc[g][j], du, qv[g]);
#elif MUVERA_RES_LEVEL == 2
      const vint da = _mm512_abs_epi8(dv);
      const __mmask64 neg = _mm512_movepi8_mask(dv);
      for (int g = 0; g < G; ++g) {
        const vint sq = _mm512_mask_sub_epi8(qv[g], neg, zero_i(), qv[g]);  // sign(q, c)
        acc[g][j] = add32(acc[g][j], widen(maddubs(da, sq)));
      }
#else
      const vint da = _mm256_abs_epi8(dv);
      for (int g = 0; g < G; ++g) acc[g][j] = add32(acc[g][j], widen(maddubs(da, _mm256_sign_epi8(qv[g], dv))));
#endif
    }
  }
  for (int g = 0; g < G; ++g) {
    const int lane0 = g0 + g * kLanes;
    vflt best = load_f(mx + lane0);
    const vflt sq = load_f(q.sq + lane0);
#if MUVERA_RES_LEVEL == 3
    const vint corr = load_i(q.corr + lane0);
#endif
    for (int j = 0; j < jd; ++j) {
#if MUVERA_RES_LEVEL == 3
      const vint dot = _mm512_sub_epi32(acc[g][j], corr);
#else
      const vint dot = acc[g][j];
#endif
      const vflt v = mul_f(mul_f(sq, to_f(dot)), set1_f(row_scale(rows + j * stride, d)));
      best = max_f(best, v);
    }
    store_f(mx + lane0, best);
  }
}

void int8_block(const ResidualQueryView& q, const uint8_t* rows, int d, int jd, float* mx) {
  int g0 = 0;
  for (; g0 + 2 * kLanes <= q.nq_pad; g0 += 2 * kLanes) int8_groups<2>(q, rows, d, jd, g0, mx);
  for (; g0 < q.nq_pad; g0 += kLanes) int8_groups<1>(q, rows, d, jd, g0, mx);
}
#endif

float int8_doc_score(const ResidualQueryView& q, const uint8_t* rows, int64_t m, int d, float* mx) {
  if (m <= 0 || q.nq <= 0) return 0.0f;
  for (int i = 0; i < q.nq_pad; ++i) mx[i] = -std::numeric_limits<float>::infinity();
  const int64_t stride = d + 4;
  for (int64_t j0 = 0; j0 < m; j0 += kResidualBlock) {
    const int jd = static_cast<int>(m - j0 < kResidualBlock ? m - j0 : kResidualBlock);
    int8_block(q, rows + j0 * stride, d, jd, mx);
  }
  float total = 0.0f;
  for (int i = 0; i < q.nq; ++i) total += mx[i];
  return total;
}

}  // namespace

const ResidualKernelSet& kernels() {
  static const ResidualKernelSet set{MUVERA_RES_NAME, &qc_table, &doc_score, &int8_doc_score};
  return set;
}

}  // namespace MUVERA_RES_NS
}  // namespace muvera
