// Kernel bodies, compiled once per ISA: kernels_<isa>.cc defines MUVERA_ISA_NS and the compiler
// flags, then includes this file. GCC vector extensions give 16-lane code that maps to one zmm,
// two ymm or four xmm registers depending on the flags. Everything here is internal linkage.
#include <cmath>
#include <cstring>
#if defined(__F16C__)
#include <immintrin.h>
#endif
#if defined(__aarch64__)
#include <arm_neon.h>
#endif

#include "kernels.h"

#ifndef MUVERA_ISA_NS
#error "define MUVERA_ISA_NS before including kernels_impl.h"
#endif
#ifndef MUVERA_LANES
#error "define MUVERA_LANES (floats per native vector: tokens per block)"
#endif
#include <utility>

namespace muvera {
namespace MUVERA_ISA_NS {
namespace {

constexpr int kLanes = MUVERA_LANES;
constexpr int kLaneIndex = kLanes == 4 ? 0 : kLanes == 8 ? 1 : 2;  // FdeTablesView::ams
static_assert(kLanes == 4 || kLanes == 8 || kLanes == 16, "schedules exist for 4, 8 and 16 lanes");
constexpr int kSketchChunk = kSketchPad;  // SimHash accumulators kept in registers
static_assert(kLanes <= kMaxLanes, "scratch is sized for kMaxLanes");
typedef float vf __attribute__((vector_size(4 * kLanes)));
typedef int32_t vi __attribute__((vector_size(4 * kLanes)));

inline vf load_vf(const float* p) { return *reinterpret_cast<const vf*>(p); }

inline float half_to_float(uint16_t h) { return half_bits_to_float(h); }

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

inline bool finite_row(const float* x, int64_t d) {
  uint32_t bad = 0;
  for (int64_t c = 0; c < d; ++c) {
    uint32_t bits;
    std::memcpy(&bits, x + c, 4);
    bad |= static_cast<uint32_t>((bits & 0x7f800000u) == 0x7f800000u);
  }
  return bad == 0;
}

// Makes the item available as contiguous float32 rows; returns nullptr on NaN/Inf.
const float* load_item(const ItemView& item, int dtype, int d, float* buf) {
  const int64_t n = item.n;
  if (dtype == kFloat32 && item.row_stride == d) {
    const float* x = static_cast<const float*>(item.data);
    return finite_row(x, n * d) ? x : nullptr;
  }
  for (int64_t i = 0; i < n; ++i) {
    float* dst = buf + i * d;
    switch (dtype) {
      case kFloat32: {
        const float* src = static_cast<const float*>(item.data) + i * item.row_stride;
        for (int c = 0; c < d; ++c) dst[c] = src[c];
        break;
      }
      case kFloat64: {
        const double* src = static_cast<const double*>(item.data) + i * item.row_stride;
        for (int c = 0; c < d; ++c) dst[c] = static_cast<float>(src[c]);
        break;
      }
      case kFloat16: {
        const uint16_t* src = static_cast<const uint16_t*>(item.data) + i * item.row_stride;
        for (int c = 0; c < d; ++c) dst[c] = half_to_float(src[c]);
        break;
      }
      default: {
        const uint16_t* src = static_cast<const uint16_t*>(item.data) + i * item.row_stride;
        for (int c = 0; c < d; ++c) dst[c] = bf16_to_float(src[c]);
        break;
      }
    }
    if (!finite_row(dst, d)) return nullptr;  // float64 overflow to Inf is caught here too
  }
  return buf;
}

// Sign masks (-1 where > 0) of SimHash projections j0..j0+JC-1 for one transposed token block.
template <int JC>
void sketch_chunk(const float* xt, const float* gauss, int d, int stride, int j0, int32_t* sk) {
  vf acc[JC];
  for (int j = 0; j < JC; ++j) acc[j] = vf{};
  for (int t = 0; t < d; ++t) {
    const vf x = load_vf(xt + t * kLanes);
    const float* g = gauss + static_cast<int64_t>(t) * stride + j0;
    for (int j = 0; j < JC; ++j) acc[j] += g[j] * x;
  }
  for (int j = 0; j < JC; ++j) {
    vi m = acc[j] > 0.0f;  // strictly positive, as the reference: 0, -0 and NaN give bit 0
    *reinterpret_cast<vi*>(sk + (j0 + j) * kLanes) = m;
  }
}

template <int... N>
void sketch_tail(int rest, const float* xt, const float* gauss, int d, int stride, int j0, int32_t* sk,
                 std::integer_sequence<int, N...>) {
  ((rest == N + 1 ? sketch_chunk<N + 1>(xt, gauss, d, stride, j0, sk) : void()), ...);
}

// All R*k projections: full chunks of kSketchChunk accumulators, then one exact-size tail.
void sketch_signs(const float* xt, const float* gauss, int d, int rk, int stride, int32_t* sk) {
  int j0 = 0;
  for (; j0 + kSketchChunk <= rk; j0 += kSketchChunk) sketch_chunk<kSketchChunk>(xt, gauss, d, stride, j0, sk);
  if (j0 < rk)
    sketch_tail(rk - j0, xt, gauss, d, stride, j0, sk, std::make_integer_sequence<int, kSketchChunk - 1>{});
}

// Shuffle masks of one butterfly stage of an N-lane vector: lo[j] = (j & S) ? b[j - S] : a[j],
// hi[j] = (j & S) ? b[j] : a[j + S]  (indices >= N select from b).
template <typename VI, int N, int S, size_t... J>
constexpr VI stage_mask(bool hi, std::index_sequence<J...>) {
  return VI{static_cast<int32_t>(hi ? ((J & S) ? N + J : J + S) : ((J & S) ? N + J - S : J))...};
}

// Butterfly stages S, S/2, ..., 1 of an in-register N x N transpose of rows (V: N floats).
template <typename V, typename VI, int N, int S>
inline void transpose_stages(V* rows) {
  constexpr VI lo = stage_mask<VI, N, S>(false, std::make_index_sequence<N>{});
  constexpr VI hi = stage_mask<VI, N, S>(true, std::make_index_sequence<N>{});
  for (int i = 0; i < N; ++i) {
    if (i & S) continue;
    const V a = rows[i], b = rows[i + S];
    rows[i] = __builtin_shuffle(a, b, lo);
    rows[i + S] = __builtin_shuffle(a, b, hi);
  }
  if constexpr (S > 1) transpose_stages<V, VI, N, S / 2>(rows);
}

// In-register kLanes x kLanes transpose: log2(kLanes) butterfly stages of two-source shuffles.
inline void transpose_square(vf* rows) { transpose_stages<vf, vi, kLanes, kLanes / 2>(rows); }

inline vf load_vf_unaligned(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof(vf));
  return v;
}

// Token block -> xt (d x kLanes): square tiles through registers, zero lanes past nb.
void transpose_block(const float* x, int64_t nb, int d, float* xt) {
  int t0 = 0;
  if (nb == kLanes) {
    for (; t0 + kLanes <= d; t0 += kLanes) {
      vf rows[kLanes];
      for (int l = 0; l < kLanes; ++l) rows[l] = load_vf_unaligned(x + l * d + t0);
      transpose_square(rows);
      for (int t = 0; t < kLanes; ++t) *reinterpret_cast<vf*>(xt + (t0 + t) * kLanes) = rows[t];
    }
  }
  for (int t = t0; t < d; ++t)
    for (int l = 0; l < kLanes; ++l) xt[t * kLanes + l] = l < nb ? x[l * d + t] : 0.0f;
}

// Sparse AMS projection of one token block, added into the partitions of its tokens (and kept in
// `proj` for the fill when given). `xt` holds the block, its negation and a zero row, so a signed
// term is one indexed add. Each column sums its input coordinates in ascending order, padded with
// the zero row (adding +0 to a sum that started at +0 changes nothing): the order of the scalar
// path and of muvera.reference, so all three agree bit for bit.
void ams_block_accumulate(const float* xt, const AmsSchedule& S, int r, int p, const int32_t* part,
                          int nb, float* rep, float* proj, int64_t proj_stride) {
  const char* base = reinterpret_cast<const char*>(xt);
  constexpr int kGroups = kLanes / 4;
  for (int h = 0; h < S.chunks; ++h) {
    const int64_t rh = static_cast<int64_t>(r) * S.chunks + h;
    const int c0 = h * kLanes;
    const int width = p - c0 < kLanes ? p - c0 : kLanes;
    const int64_t* step = S.steps + S.chunk_begin[rh];
    const int32_t* group_steps = S.group_steps + rh * kGroups;
    vf acc[kLanes];
    for (int g = 0; g < kGroups; ++g) {
      vf a0 = vf{}, a1 = vf{}, a2 = vf{}, a3 = vf{};
      for (int q = 0; q < group_steps[g]; ++q, step += 4) {
        a0 += *reinterpret_cast<const vf*>(base + step[0]);
        a1 += *reinterpret_cast<const vf*>(base + step[1]);
        a2 += *reinterpret_cast<const vf*>(base + step[2]);
        a3 += *reinterpret_cast<const vf*>(base + step[3]);
      }
      acc[4 * g] = a0; acc[4 * g + 1] = a1; acc[4 * g + 2] = a2; acc[4 * g + 3] = a3;
    }
    transpose_square(acc);  // acc[l] = token l's projected columns, in sorted order
    vi unsort;
    std::memcpy(&unsort, S.unsort + rh * kLanes, sizeof(vi));  // std::vector data: not vector-aligned
    for (int l = 0; l < nb; ++l) {
      const vf row = __builtin_shuffle(acc[l], unsort);  // back to natural column order
      float* dst = rep + static_cast<int64_t>(part[l]) * p + c0;
      float* keep = proj != nullptr ? proj + l * proj_stride + c0 : nullptr;
      if (width == kLanes) {
        vf v = load_vf_unaligned(dst) + row;
        std::memcpy(dst, &v, sizeof(vf));
        if (keep != nullptr) std::memcpy(keep, &row, sizeof(vf));
      } else {
        for (int c = 0; c < width; ++c) dst[c] += row[c];
        if (keep != nullptr)
          for (int c = 0; c < width; ++c) keep[c] = row[c];
      }
    }
  }
}

void ams_row(const float* x, const int32_t* col, const float* sign, int d, int p, float* y) {
  for (int c = 0; c < p; ++c) y[c] = 0.0f;
  for (int t = 0; t < d; ++t) y[col[t]] += x[t] * sign[t];
}

inline int popcount32(uint32_t v) { return __builtin_popcount(v); }

// The point whose sign pattern is nearest (Hamming) to `target`; the lowest index wins ties. With
// fewer patterns than points, scans the patterns (`first`: lowest point of each, -1 if none).
int64_t nearest_point(const int32_t* codes, int64_t n, uint32_t target, int k, const int32_t* first) {
  const int64_t B = int64_t(1) << k;
  int64_t best = 0;
  int best_dist = 64;
  if (B <= n) {
    best = n;
    for (int64_t w = 0; w < B; ++w) {
      if (first[w] < 0) continue;
      const int dist = popcount32(static_cast<uint32_t>(w) ^ target);
      if (dist < best_dist || (dist == best_dist && first[w] < best)) {
        best_dist = dist;
        best = first[w];
      }
    }
    return best;
  }
  for (int64_t i = 0; i < n; ++i) {
    const int dist = popcount32(static_cast<uint32_t>(codes[i]) ^ target);
    if (dist < best_dist) {
      best_dist = dist;
      best = i;
    }
  }
  return best;
}

bool encode_item(const FdeTablesView& T, const ItemView& item, int dtype, bool is_document,
                 float* out, FdeScratch& s) {
  const int d = T.d, p = T.p, B = T.B, k = T.k, R = T.R;
  const int64_t n = item.n;
  if (n == 0) {  // empty set: zeros (the reference would give NaN for k = 0 documents)
    std::memset(out, 0, sizeof(float) * (T.final_dim > 0 ? T.final_dim : T.fde_dim));
    return true;
  }
  // Partition sums go to 64-byte aligned scratch: the caller's rows may be only 16-byte aligned,
  // and read-modify-write of vectors split across cache lines stalls store forwarding.
  float* fde = s.fde;
  std::memset(fde, 0, sizeof(float) * T.fde_dim);
  const float* x = load_item(item, dtype, d, s.x);
  if (x == nullptr) return false;
  std::memset(s.counts, 0, sizeof(int32_t) * R * B);

  for (int64_t i0 = 0; i0 < n; i0 += kLanes) {
    const int nb = static_cast<int>(n - i0 < kLanes ? n - i0 : kLanes);
    transpose_block(x + i0 * d, nb, d, s.xt);
    if (!T.identity) {  // rows d..2d-1: the negated block; row 2d: zeros (see ams_block_accumulate)
      for (int t = 0; t < d; ++t)
        *reinterpret_cast<vf*>(s.xt + (d + t) * kLanes) = -load_vf(s.xt + t * kLanes);
      *reinterpret_cast<vf*>(s.xt + 2 * d * kLanes) = vf{};
    }
    if (k > 0) sketch_signs(s.xt, T.gauss, d, R * k, T.rk_pad, s.sk);

    for (int r = 0; r < R; ++r) {
      // Sign pattern w (projection 0 = most significant bit), then its Gray decode.
      vi w = vi{};
      for (int j = 0; j < k; ++j) w = (w << 1) - *reinterpret_cast<const vi*>(s.sk + (r * k + j) * kLanes);
      vi b = w;
      b ^= b >> 1; b ^= b >> 2; b ^= b >> 4; b ^= b >> 8; b ^= b >> 16;
      int32_t* codes = s.codes + static_cast<int64_t>(r) * s.n_max + i0;
      alignas(sizeof(vi)) int32_t part[kLanes];
      *reinterpret_cast<vi*>(part) = b;
      if (nb == kLanes) std::memcpy(codes, &w, sizeof(vi));
      else for (int l = 0; l < nb; ++l) codes[l] = w[l];

      float* rep = fde + static_cast<int64_t>(r) * B * p;
      int32_t* counts = s.counts + r * B;
      if (T.identity) {
        for (int l = 0; l < nb; ++l) {
          float* dst = rep + static_cast<int64_t>(part[l]) * p;
          const float* src = x + (i0 + l) * d;
          for (int c = 0; c < p; ++c) dst[c] += src[c];
          ++counts[part[l]];
        }
      } else {
        float* proj = s.proj != nullptr ? s.proj + (static_cast<int64_t>(r) * s.n_max + i0) * p : nullptr;
        ams_block_accumulate(s.xt, T.ams[kLaneIndex], r, p, part, nb, rep, proj, p);
        for (int l = 0; l < nb; ++l) ++counts[part[l]];
      }
    }
  }

  if (is_document) {
    for (int r = 0; r < R; ++r) {
      float* rep = fde + static_cast<int64_t>(r) * B * p;
      const int32_t* counts = s.counts + r * B;
      const int32_t* codes = s.codes + static_cast<int64_t>(r) * s.n_max;
      if (T.fill && k > 0 && B <= n) {  // first point of every sign pattern, for nearest_point
        for (int w = 0; w < B; ++w) s.first[w] = -1;
        for (int64_t i = n - 1; i >= 0; --i) s.first[codes[i]] = static_cast<int32_t>(i);
      }
      for (int b = 0; b < B; ++b) {
        float* dst = rep + static_cast<int64_t>(b) * p;
        if (counts[b] > 0) {
          const float cnt = static_cast<float>(counts[b]);
          for (int c = 0; c < p; ++c) dst[c] = dst[c] / cnt;
        } else if (T.fill && k > 0) {
          const int64_t best = nearest_point(codes, n, static_cast<uint32_t>(b ^ (b >> 1)), k, s.first);
          if (T.identity) {
            std::memcpy(dst, x + best * d, sizeof(float) * p);
          } else if (s.proj != nullptr) {
            std::memcpy(dst, s.proj + (static_cast<int64_t>(r) * s.n_max + best) * p, sizeof(float) * p);
          } else {
            ams_row(x + best * d, T.ams_col + r * d, T.ams_sign + r * d, d, p, s.row);
            std::memcpy(dst, s.row, sizeof(float) * p);
          }
        }
      }
    }
  }

  if (T.final_dim > 0) {  // count-sketch, sequential as in the reference
    std::memset(out, 0, sizeof(float) * T.final_dim);
    for (int64_t i = 0; i < T.fde_dim; ++i) out[T.cs_index[i]] += T.cs_sign[i] * fde[i];
  } else {
    std::memcpy(out, fde, sizeof(float) * T.fde_dim);
  }
  // Finite inputs so large that a partition sum overflows float32 are reported, not returned.
  return finite_row(out, T.final_dim > 0 ? T.final_dim : T.fde_dim);
}

// ---- Chamfer ---------------------------------------------------------------------------------

// Rows of a float16 document as float32 (F16C where the build has it).
void halves_to_floats(const uint16_t* src, int64_t count, float* dst) {
  int64_t i = 0;
#if defined(__F16C__)
  for (; i + 8 <= count; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
  for (; i < count; ++i) dst[i] = half_to_float(src[i]);
}

// int8 codec rows (d codes, then a float32 scale) -> scale * code, exactly as the NumPy decoder
// computes it (one float32 multiply per value; the loop vectorises per ISA).
void int8_rows_to_floats(const uint8_t* src, int64_t m, int d, float* dst) {
  for (int64_t r = 0; r < m; ++r) {
    const uint8_t* row = src + r * (static_cast<int64_t>(d) + 4);
    float scale;
    std::memcpy(&scale, row + d, sizeof(float));
    const int8_t* codes = reinterpret_cast<const int8_t*>(row);
    float* out = dst + r * d;
    for (int t = 0; t < d; ++t) out[t] = static_cast<float>(codes[t]) * scale;
  }
}

// Max over doc rows j0..j0+JD-1 of their dot products with query lanes of groups g0, g0+1
// (GC groups of kLanes query tokens), folded into mx.
template <int GC, int JD>
inline void maxsim_tile(const float* qt, int nq_pad, int d, const float* doc, int64_t j0, int g0, vf* mx) {
  vf acc[GC][JD];
  for (int g = 0; g < GC; ++g)
    for (int j = 0; j < JD; ++j) acc[g][j] = vf{};
  const float* rows = doc + j0 * d;
  for (int t = 0; t < d; ++t) {
    vf q[GC];
    for (int g = 0; g < GC; ++g) q[g] = load_vf_unaligned(qt + static_cast<int64_t>(t) * nq_pad + (g0 + g) * kLanes);
    for (int j = 0; j < JD; ++j) {
      const float v = rows[j * d + t];
      for (int g = 0; g < GC; ++g) acc[g][j] += v * q[g];
    }
  }
  for (int g = 0; g < GC; ++g)
    for (int j = 0; j < JD; ++j) mx[g] = acc[g][j] > mx[g] ? acc[g][j] : mx[g];
}

template <int GC>
void maxsim_groups(const float* qt, int nq_pad, int d, const float* doc, int64_t m, int g0, vf* mx) {
  constexpr int JD = kLanes == 16 ? 6 : kLanes == 8 ? 3 : 2;  // accumulators: GC * JD registers
  int64_t j0 = 0;
  for (; j0 + JD <= m; j0 += JD) maxsim_tile<GC, JD>(qt, nq_pad, d, doc, j0, g0, mx);
  for (; j0 < m; ++j0) maxsim_tile<GC, 1>(qt, nq_pad, d, doc, j0, g0, mx);
}

// ---- Short queries: document tokens in the lanes ----------------------------------------------
// A query of 4 tokens fills 4 of 16 query lanes; here kLanes document tokens share a vector and
// each query token is a broadcast. Per (query, document) token pair the dot product runs over
// t ascending with the same multiply-adds as maxsim_tile, so both layouts give identical scores.

// The short-query layout's vector width: 8 lanes in the AVX-512 build too, where its 16 x 16
// register transposes cost more than the multiply-adds they feed (AMD Zen 4, measured with
// bench/bench_codecs.py: float16, 5-token queries, 8 lanes 1.6x faster than 16).
#ifndef MUVERA_SHORT_LANES
#define MUVERA_SHORT_LANES (MUVERA_LANES == 16 ? 8 : MUVERA_LANES)
#endif
constexpr int kShortLanes = MUVERA_SHORT_LANES;

typedef float vs __attribute__((vector_size(4 * kShortLanes)));
typedef int32_t vsi __attribute__((vector_size(4 * kShortLanes)));

// V's width of consecutive values of a stored row as floats (float16 converted on load: exact).
template <typename V>
inline V load_values(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
inline V load_values(const uint16_t* p) {
  constexpr int N = static_cast<int>(sizeof(V) / sizeof(float));
#if defined(__AVX512F__)
  // The all-lanes maskz form: GCC 12's unmasked one warns (-Wmaybe-uninitialized) in its headers.
  if constexpr (N == 16)
    return reinterpret_cast<V>(_mm512_maskz_cvtph_ps(0xFFFF, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))));
#endif
#if defined(__F16C__)
  if constexpr (N == 8) return reinterpret_cast<V>(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
#endif
  V v;
  for (int l = 0; l < N; ++l) v[l] = half_to_float(p[l]);
  return v;
}
template <typename T>
inline vs load_chunk(const T* p) { return load_values<vs>(p); }
// Whether load_chunk converts float16 with an instruction (F16C); without it a document is
// converted once into scratch instead (scalar conversion inside the fused loop measured slower).
constexpr bool kConvertsHalves = (MUVERA_SHORT_LANES == 16 || MUVERA_SHORT_LANES == 8)
#if defined(__F16C__)
    && true;
#else
    && false;
#endif
inline float value_of(float x) { return x; }
inline float value_of(uint16_t h) { return half_to_float(h); }

// B blocks of L document tokens from row j0 (tokens past m read as zero, then masked to -inf)
// against NQ query tokens, folded into mx: B * NQ independent multiply-add chains.
template <int NQ, int B, bool kFull, typename T>
inline void short_blocks(const float* qt, int nq_pad, int d, const T* rows, int64_t j0, int64_t m, vs* mx) {
  constexpr int L = kShortLanes;
  int nb[B];  // tokens of each block (all L when kFull: the hot path has no per-lane tests)
  for (int b = 0; b < B; ++b)
    nb[b] = kFull ? L : static_cast<int>(std::max<int64_t>(0, std::min<int64_t>(L, m - j0 - b * L)));
  vs acc[B][NQ];
  for (int b = 0; b < B; ++b)
    for (int i = 0; i < NQ; ++i) acc[b][i] = vs{};
  int t0 = 0;
  for (; t0 + L <= d; t0 += L) {
#pragma GCC unroll 4
    for (int b = 0; b < B; ++b) {
      const T* block = rows + (j0 + static_cast<int64_t>(b) * L) * d + t0;
      vs x[L];
      if (kFull) {
        for (int l = 0; l < L; ++l) x[l] = load_chunk(block + static_cast<int64_t>(l) * d);
      } else {
        for (int l = 0; l < L; ++l) x[l] = l < nb[b] ? load_chunk(block + static_cast<int64_t>(l) * d) : vs{};
      }
      transpose_stages<vs, vsi, L, L / 2>(x);  // x[t] = value t0 + t of each token
#pragma GCC unroll 16
      for (int t = 0; t < L; ++t) {
        const float* qrow = qt + static_cast<int64_t>(t0 + t) * nq_pad;
#pragma GCC unroll 12
        for (int i = 0; i < NQ; ++i) acc[b][i] += qrow[i] * x[t];
      }
    }
  }
  for (int t = t0; t < d; ++t) {  // d not a multiple of L
    const float* qrow = qt + static_cast<int64_t>(t) * nq_pad;
    for (int b = 0; b < B; ++b) {
      const T* block = rows + (j0 + static_cast<int64_t>(b) * L) * d;
      vs x;
      for (int l = 0; l < L; ++l) x[l] = l < nb[b] ? value_of(block[static_cast<int64_t>(l) * d + t]) : 0.0f;
      for (int i = 0; i < NQ; ++i) acc[b][i] += qrow[i] * x;
    }
  }
  const vs neg_inf = vs{} - __builtin_inff();
  vsi lane;
  for (int l = 0; l < L; ++l) lane[l] = l;
  for (int b = 0; b < B; ++b) {
    if (!kFull && nb[b] == 0) continue;
    const vsi past = lane >= static_cast<int32_t>(nb[b]);  // -1 on lanes past the end
    const vs pen = past ? neg_inf : vs{};
    for (int i = 0; i < NQ; ++i) {
      const vs v = acc[b][i] + pen;
      mx[i] = v > mx[i] ? v : mx[i];
    }
  }
}

// The short-query layout, fused: document tokens are read straight from the store (float16
// converted in registers), transposed kShortLanes values at a time in registers and folded into
// one accumulator per (query token, block) -- no decoded copy of the document and no transposed
// buffer. Same multiply-adds in the same order (t ascending) as maxsim_tile. One or two query
// tokens interleave 4 or 2 blocks, so that enough chains are in flight; more blocks for longer
// queries measured slower (their accumulators and query broadcasts spill).
template <int NQ, typename T>
float chamfer_doc_lanes(const float* qt, int nq_pad, int d, const T* rows, int64_t m, float total) {
  constexpr int L = kShortLanes;
  constexpr int B = NQ == 1 ? 4 : NQ == 2 ? 2 : 1;
  vs mx[NQ];
  for (int i = 0; i < NQ; ++i) mx[i] = vs{} - __builtin_inff();
  int64_t j0 = 0;
  for (; j0 + B * L <= m; j0 += B * L) short_blocks<NQ, B, true>(qt, nq_pad, d, rows, j0, m, mx);
  for (; j0 < m; j0 += L) short_blocks<NQ, 1, false>(qt, nq_pad, d, rows, j0, m, mx);
  for (int i = 0; i < NQ; ++i) {
    float best = mx[i][0];
    for (int l = 1; l < L; ++l) best = mx[i][l] > best ? mx[i][l] : best;
    total += best;  // token order, continuing the caller's sum
  }
  return total;
}

// Query tokens one pass of the document-lane layout keeps in registers. Past the pair layout's
// lengths, the layout rule picks it wherever a query would fill its kLanes-token groups to less
// than ~80% (17-23 tokens on AVX-512, ...); such queries take several passes over the document
// (12 + 5 tokens, ...), each adding its tokens' maxima in token order, so a last pass may hold
// one or two tokens.
constexpr int kMaxLanesQuery = 12;

// Out of line: inlining every NQ instance into chamfer_doc measured slower query-lane passes.
template <typename T, int... N>
__attribute__((noinline)) float chamfer_doc_lanes_n(int nq, const float* qt, int nq_pad, int d, const T* rows,
                                                    int64_t m, std::integer_sequence<int, N...>) {
  float total = 0.0f;
  for (int i0 = 0; i0 < nq; i0 += kMaxLanesQuery) {
    const int n = std::min(kMaxLanesQuery, nq - i0);
    ((n == N + 1 ? (total = chamfer_doc_lanes<N + 1>(qt + i0, nq_pad, d, rows, m, total), 0) : 0), ...);
  }
  return total;
}

// ---- Short queries: dot products along the dimension ----------------------------------------
// A short query fills few of the kLanes query lanes, so here the lanes run along the dimension
// instead: each (query token, document token) pair has an accumulator of kLanes partial sums
// (lane l sums dimensions l, l + kLanes, ... in ascending order, one multiply-add each), and
// kLanes accumulators at a time are summed by one butterfly tree. No transpose of the document;
// every pair's sum is the same arithmetic wherever the pair sits in the tree, so a query's score
// is the sum, in token order, of its tokens' scores as one-token queries.

// One level of the tree: a and b hold kLanes / W entities of W partial lanes each; the result holds
// twice as many entities of W / 2 lanes, each the sum of an entity's first and second halves.
// Halves of 4+ lanes move as whole 128-bit blocks (result: a's halves, then b's: vshuff32x4 /
// vperm2f128); below that within each block (a's half, then b's: vshufps).
template <int W>
constexpr int half_source(int p, bool hi) {
  if constexpr (W >= 8) {
    constexpr int H = kLanes / 2;
    return (p < H ? 0 : kLanes) + ((p % H) / (W / 2)) * W + (p % (W / 2)) + (hi ? W / 2 : 0);
  } else {
    const int block = p / 4 * 4, r = p % 4;
    const int src = r < 2 ? 0 : kLanes;
    if constexpr (W == 4) return src + block + (r % 2) + (hi ? 2 : 0);  // [a0 a1 b0 b1] / [a2 a3 b2 b3]
    return src + block + 2 * (r % 2) + (hi ? 1 : 0);                     // [a0 a2 b0 b2] / [a1 a3 b1 b3]
  }
}
template <int W, size_t... P>
constexpr vi half_mask(bool hi, std::index_sequence<P...>) {
  return vi{static_cast<int32_t>(half_source<W>(static_cast<int>(P), hi))...};
}

// v[0..N) -> v[0]: lane p holds the full sum of entity tree_entity(p) (the input index).
template <int W, int N>
__attribute__((always_inline)) inline void reduce_tree(vf* v) {
  if constexpr (W > 1) {
    constexpr vi lo = half_mask<W>(false, std::make_index_sequence<kLanes>{});
    constexpr vi hi = half_mask<W>(true, std::make_index_sequence<kLanes>{});
#pragma GCC unroll 16
    for (int i = 0; i < N / 2; ++i)
      v[i] = __builtin_shuffle(v[2 * i], v[2 * i + 1], lo) + __builtin_shuffle(v[2 * i], v[2 * i + 1], hi);
    reduce_tree<W / 2, N / 2>(v);
  }
}

// Which input accumulator ends in lane p (the tree above, followed entity by entity).
constexpr int tree_entity(int p) {
  int ent[kLanes][kLanes] = {};  // ent[vector][lane]
  for (int e = 0; e < kLanes; ++e)
    for (int l = 0; l < kLanes; ++l) ent[e][l] = e;
  int n = kLanes;
  for (int w = kLanes; w > 1; w /= 2, n /= 2) {
    for (int i = 0; i < n / 2; ++i) {
      int out[kLanes] = {};
      for (int q = 0; q < kLanes; ++q) {
        const int s = w == 16 ? half_source<16>(q, false) : w == 8 ? half_source<8>(q, false)
                    : w == 4 ? half_source<4>(q, false) : half_source<2>(q, false);
        out[q] = s < kLanes ? ent[2 * i][s] : ent[2 * i + 1][s - kLanes];
      }
      for (int q = 0; q < kLanes; ++q) ent[i][q] = out[q];
    }
  }
  return ent[0][p];
}
template <size_t... P>
constexpr vi tree_entities(std::index_sequence<P...>) {
  return vi{tree_entity(static_cast<int>(P))...};
}

// kLanes values of a stored row as floats; n < kLanes of them, zero filled.
template <typename T>
inline vf load_row(const T* p) { return load_values<vf>(p); }
template <typename T>
inline vf load_row_part(const T* p, int n) {
  vf v = vf{};
  for (int l = 0; l < n; ++l) v[l] = value_of(p[l]);
  return v;
}

constexpr int64_t kPairPrefetchBytes = 1024;  // measured: 1-8 KB ahead alike, 1 KB best for 1-token queries

// a * b + c rounded once where the ISA fuses it (an intrinsic, not left to contraction: the
// compiler may split a multiply from its add across branches, and a pair's arithmetic must not
// depend on where its block sits); two roundings in the generic x86 build (no FMA there).
inline vf fused_multiply_add(vf a, vf b, vf c) {
#if defined(__AVX512F__) && MUVERA_LANES == 16
  return reinterpret_cast<vf>(_mm512_fmadd_ps(reinterpret_cast<__m512>(a), reinterpret_cast<__m512>(b), reinterpret_cast<__m512>(c)));
#elif defined(__FMA__) && MUVERA_LANES == 8
  return reinterpret_cast<vf>(_mm256_fmadd_ps(reinterpret_cast<__m256>(a), reinterpret_cast<__m256>(b), reinterpret_cast<__m256>(c)));
#elif defined(__FMA__) && MUVERA_LANES == 4
  return reinterpret_cast<vf>(_mm_fmadd_ps(reinterpret_cast<__m128>(a), reinterpret_cast<__m128>(b), reinterpret_cast<__m128>(c)));
#elif defined(__aarch64__) && MUVERA_LANES == 4  // the generic build there: NEON fuses too
  return reinterpret_cast<vf>(vfmaq_f32(reinterpret_cast<float32x4_t>(c), reinterpret_cast<float32x4_t>(a),
                                        reinterpret_cast<float32x4_t>(b)));
#else
  return a * b + c;
#endif
}

// Pairs per block: one tree's worth (kLanes accumulators), as many document tokens as fit.
template <int NQ>
constexpr int pair_block_tokens() { return NQ >= kLanes ? 1 : kLanes / NQ; }

// NQ query tokens (rows of q, d apart) against J document tokens from row j0, of which `valid`
// exist: pair (i, j) accumulates in acc[i * J + j]; the tree's sums are folded into *best
// (pairs past `valid` as -inf; their slots re-read row j0, so that every block runs the same code).
template <int NQ, bool kFull, typename T>
__attribute__((always_inline)) inline void pair_block(const float* q, int d, const T* rows, int64_t j0, int valid, vf* best) {
  constexpr int J = pair_block_tokens<NQ>();
  static_assert(NQ * J <= kLanes, "one tree per block");
  vf acc[kLanes];
#pragma GCC unroll 16
  for (int e = 0; e < kLanes; ++e) acc[e] = vf{};
  const T* row[J];
#pragma GCC unroll 16
  for (int j = 0; j < J; ++j) row[j] = rows + (j0 + (kFull || j < valid ? j : 0)) * d;
  int t0 = 0;
  for (; t0 + kLanes <= d; t0 += kLanes) {
    vf qv[NQ];
#pragma GCC unroll 16
    for (int i = 0; i < NQ; ++i) qv[i] = load_vf_unaligned(q + static_cast<int64_t>(i) * d + t0);
#pragma GCC unroll 16
    for (int j = 0; j < J; ++j) {
      const vf x = load_row(row[j] + t0);
#pragma GCC unroll 16
      for (int i = 0; i < NQ; ++i) acc[i * J + j] = fused_multiply_add(qv[i], x, acc[i * J + j]);
    }
  }
  if (t0 < d) {  // the dimensions past the last full vector, zero filled (adds +0)
    const int rest = d - t0;
    vf qv[NQ];
#pragma GCC unroll 16
    for (int i = 0; i < NQ; ++i) qv[i] = load_row_part(q + static_cast<int64_t>(i) * d + t0, rest);
#pragma GCC unroll 16
    for (int j = 0; j < J; ++j) {
      const vf x = load_row_part(row[j] + t0, rest);
#pragma GCC unroll 16
      for (int i = 0; i < NQ; ++i) acc[i * J + j] = fused_multiply_add(qv[i], x, acc[i * J + j]);
    }
  }
  reduce_tree<kLanes, kLanes>(acc);
  vf sums = acc[0];
  if (!kFull) {
    constexpr vi ent = tree_entities(std::make_index_sequence<kLanes>{});
    const vi past = (ent % J) >= valid;  // -1 where the pair's document token is past the end
    sums = past ? vf{} - __builtin_inff() : sums;
  }
  *best = sums > *best ? sums : *best;
}

template <int NQ, typename T>
float chamfer_doc_pairs(const float* q, int d, const T* rows, int64_t m, float total) {
  constexpr int J = pair_block_tokens<NQ>();
  vf best = vf{} - __builtin_inff();
  int64_t j0 = 0;
  const char* bytes = reinterpret_cast<const char*>(rows);
  const int64_t row_bytes = static_cast<int64_t>(d) * sizeof(T), doc_bytes = m * row_bytes;
  for (; j0 + J <= m; j0 += J) {
    // Ask for the rows a few blocks on: the hardware prefetcher stops at page boundaries.
    const int64_t ahead = j0 * row_bytes + kPairPrefetchBytes, stop = std::min(doc_bytes, ahead + J * row_bytes);
    for (int64_t b = ahead; b < stop; b += 64) __builtin_prefetch(bytes + b);
    pair_block<NQ, true>(q, d, rows, j0, J, &best);
  }
  if (j0 < m) pair_block<NQ, false>(q, d, rows, j0, static_cast<int>(m - j0), &best);
  constexpr vi ent = tree_entities(std::make_index_sequence<kLanes>{});
  float mx[NQ];
  for (int i = 0; i < NQ; ++i) mx[i] = -__builtin_inff();
  for (int p = 0; p < kLanes; ++p)
    if (ent[p] < NQ * J) mx[ent[p] / J] = best[p] > mx[ent[p] / J] ? best[p] : mx[ent[p] / J];
  for (int i = 0; i < NQ; ++i) total += mx[i];  // token order, continuing the caller's sum
  return total;
}

// Query tokens per pass (a pass reads the whole document once), and the longest query that takes
// this layout: past it the lane layouts cost less. Measured on AMD Zen 4 against the document-lane
// layout, 200 random 240-token float16 documents, d = 128: AVX-512 1.6-2.5x faster for 1-4
// tokens, even at 5-14 (one tree per block costs what 8 x 8 transposes did), behind past 14;
// AVX2 faster up to 24 tokens.
constexpr int kMaxPairQuery = kLanes;
constexpr int kPairLayoutMaxQuery = kLanes == 16 ? 14 : kLanes == 8 ? 24 : 8;

template <typename T, int... N>
__attribute__((noinline)) float chamfer_doc_pairs_n(int nq, const float* q, int d, const T* rows, int64_t m,
                                                    std::integer_sequence<int, N...>) {
  float total = 0.0f;
  for (int i0 = 0; i0 < nq; i0 += kMaxPairQuery) {
    const int n = std::min(kMaxPairQuery, nq - i0);
    ((n == N + 1 ? (total = chamfer_doc_pairs<N + 1>(q + static_cast<int64_t>(i0) * d, d, rows, m, total), 0) : 0), ...);
  }
  return total;
}

float chamfer_doc(const float* qt, const float* q, int nq, int nq_pad, int d, const void* doc, int dtype, int64_t m,
                  float* scratch, bool allow_short) {
  if (m <= 0 || nq <= 0) return 0.0f;
  // Short queries: pairs along the dimension (the rule depends on the query alone, so every
  // document of one query is scored by the same arithmetic). Longer ones: vector passes, where
  // query lanes need ceil(nq / L) per document token and document lanes nq per L document
  // tokens (plus a transpose): the cheaper wins.
  const bool pairs = allow_short && nq <= kPairLayoutMaxQuery;
  const int64_t query_lanes = static_cast<int64_t>((nq + kLanes - 1) / kLanes) * m;
  const int64_t doc_lanes = static_cast<int64_t>(nq) * ((m + kLanes - 1) / kLanes) + (m + kLanes - 1) / kLanes;
  const bool short_layout = allow_short && 5 * doc_lanes < 4 * query_lanes;
  constexpr auto kQueries = std::make_integer_sequence<int, kMaxLanesQuery>{};
  constexpr auto kPairQueries = std::make_integer_sequence<int, kMaxPairQuery>{};
  if (dtype == kFloat16 && kConvertsHalves) {  // read in place, converted in registers
    const uint16_t* halves = static_cast<const uint16_t*>(doc);
    if (pairs) return chamfer_doc_pairs_n(nq, q, d, halves, m, kPairQueries);
    if (short_layout) return chamfer_doc_lanes_n(nq, qt, nq_pad, d, halves, m, kQueries);
  }
  const float* rows = static_cast<const float*>(doc);
  if (dtype == kFloat16) {
    halves_to_floats(static_cast<const uint16_t*>(doc), m * d, scratch);
    rows = scratch;
  } else if (dtype == kInt8Scaled) {
    int8_rows_to_floats(static_cast<const uint8_t*>(doc), m, d, scratch);
    rows = scratch;
  }
  if (pairs) return chamfer_doc_pairs_n(nq, q, d, rows, m, kPairQueries);
  if (short_layout) return chamfer_doc_lanes_n(nq, qt, nq_pad, d, rows, m, kQueries);
  const int groups = (nq + kLanes - 1) / kLanes;  // lanes past nq are zero: skip whole empty groups
  const vf neg_inf = vf{} - __builtin_inff();
  float total = 0.0f;
  int g0 = 0;
  for (; g0 < groups; g0 += 2) {
    vf mx[2] = {neg_inf, neg_inf};
    if (g0 + 2 <= groups) maxsim_groups<2>(qt, nq_pad, d, rows, m, g0, mx);
    else maxsim_groups<1>(qt, nq_pad, d, rows, m, g0, mx);
    for (int g = 0; g < 2 && g0 + g < groups; ++g)
      for (int l = 0; l < kLanes; ++l)
        if ((g0 + g) * kLanes + l < nq) total += mx[g][l];
  }
  return total;
}

// ---- Refine: sparse dot products with 8-bit codes -------------------------------------------
// kLanes bytes as floats (vpmovzxbd + vcvtdq2ps; GCC turns a vector-extension conversion of
// bytes into one scalar convert per lane).
inline vf bytes_to_floats(const uint8_t* p) {
#if defined(__AVX512F__) && MUVERA_LANES == 16
  // The all-lanes maskz forms: GCC 12's unmasked ones warn (-Wmaybe-uninitialized) in its headers.
  const __m512i wide = _mm512_maskz_cvtepu8_epi32(0xFFFF, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return reinterpret_cast<vf>(_mm512_maskz_cvtepi32_ps(0xFFFF, wide));
#elif defined(__AVX2__) && MUVERA_LANES == 8
  return reinterpret_cast<vf>(_mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)))));
#else
  vf v;
  for (int l = 0; l < kLanes; ++l) v[l] = static_cast<float>(p[l]);
  return v;
#endif
}
constexpr int64_t kCode8Ahead = 4;

void code8_dots(const float* w, const int32_t* runs, int nruns, const uint8_t* codes, int64_t dim,
                const int64_t* rows, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* row = codes + rows[i] * dim;
    if (i + kCode8Ahead < n) {  // the rows are random: ask for a later row's runs now
      const uint8_t* next = codes + rows[i + kCode8Ahead] * dim;
      for (int r = 0; r < nruns; ++r)
        for (int t = runs[2 * r]; t < runs[2 * r + 1]; t += 64) __builtin_prefetch(next + t);
    }
    vf acc0 = vf{}, acc1 = vf{};  // two chains: runs are often one vector long
    float tail = 0.0f;
    for (int r = 0; r < nruns; ++r) {
      int t = runs[2 * r];
      const int end = runs[2 * r + 1];
      for (; t + 2 * kLanes <= end; t += 2 * kLanes) {
        acc0 += load_vf_unaligned(w + t) * bytes_to_floats(row + t);
        acc1 += load_vf_unaligned(w + t + kLanes) * bytes_to_floats(row + t + kLanes);
      }
      if (t + kLanes <= end) {
        ((r & 1) ? acc1 : acc0) += load_vf_unaligned(w + t) * bytes_to_floats(row + t);
        t += kLanes;
      }
      for (; t < end; ++t) tail += w[t] * static_cast<float>(row[t]);
    }
    acc0 += acc1;
    float total = tail;
    for (int l = 0; l < kLanes; ++l) total += acc0[l];
    out[i] = total;
  }
}

constexpr int64_t kBagAhead = 4;  // documents whose ids are prefetched ahead (they are random rows)

// sum_{i < upto} max over the bag of col[id * W + i], for a chunk of N table columns (N floats
// per id: one or two native vectors, whatever the ISA).
template <int N>
inline float bag_chunk(const float* col, int W, const uint16_t* bag, int64_t len, int upto) {
  typedef float vc __attribute__((vector_size(4 * N)));
  auto load = [&](uint16_t id) {
    vc v;
    std::memcpy(&v, col + static_cast<int64_t>(id) * W, sizeof(v));
    return v;
  };
  vc m0 = load(bag[0]), m1 = m0;
  int64_t j = 1;
  for (; j + 2 <= len; j += 2) {  // two chains: the max latency, not the loads, would bound one
    const vc a = load(bag[j]), b = load(bag[j + 1]);
    m0 = a > m0 ? a : m0;
    m1 = b > m1 ? b : m1;
  }
  if (j < len) {
    const vc a = load(bag[j]);
    m0 = a > m0 ? a : m0;
  }
  m0 = m1 > m0 ? m1 : m0;
  float best[N];
  std::memcpy(best, &m0, sizeof(m0));
  float total = 0.0f;
  for (int i = 0; i < upto; ++i) total += best[i];
  return total;
}

// The table is W floats per centroid, W a multiple of 8 covering nq: 16 columns at a time, 8 for
// a rest of up to 8 tokens (the residual rerank's table has W = 16 for a 5-token query).
void bag_scores(const float* table, int W, int nq, const uint16_t* ids, const int64_t* bag_off,
                const int64_t* rows, int64_t n, float* out) {
  for (int64_t x = 0; x < n; ++x) {
    if (x + kBagAhead < n) {
      const int64_t r = rows[x + kBagAhead];
      for (int64_t b = bag_off[r]; b < bag_off[r + 1]; b += 32) __builtin_prefetch(ids + b);
    }
    const uint16_t* bag = ids + bag_off[rows[x]];
    const int64_t len = bag_off[rows[x] + 1] - bag_off[rows[x]];
    float total = 0.0f;  // query tokens in order, chunk by chunk
    for (int c0 = 0; c0 < nq;) {
      if (nq - c0 > 8 && c0 + 16 <= W) {
        total += bag_chunk<16>(table + c0, W, bag, len, std::min(16, nq - c0));
        c0 += 16;
      } else {  // up to 8 tokens left: 8 columns (W is a multiple of 8 and covers nq)
        total += bag_chunk<8>(table + c0, W, bag, len, nq - c0);
        c0 += 8;
      }
    }
    out[x] = total;
  }
}

}  // namespace

const KernelSet& kernels() {
  static const KernelSet set{MUVERA_ISA_NAME, &chamfer_doc, &encode_item, &code8_dots, &bag_scores};
  return set;
}

}  // namespace MUVERA_ISA_NS
}  // namespace muvera
