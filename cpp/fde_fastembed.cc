// fastembed-compatible FDE kernel (see fde_fastembed.h for the algorithm).
//
// fastembed computes in float64 (its float32 tokens meet float64 matrices). Here:
// * SimHash signs: a float32 GEMM, whose sign is kept only where a rounding-error bound proves it
//   (|dot| > ||x|| * gthr[c] + underflow); the rest (rare for real data) are recomputed in float64.
//   Partition ids therefore equal fastembed's except for a dot product within float64 rounding of
//   zero. float64 tokens take a float64 GEMM instead.
// * Partition sums in float64, token order, as fastembed adds them (bit-identical sums).
// * Projection of the sums (and of fill tokens) in float64, rounded to float32 once at the end,
//   so outputs agree with fastembed's to float32 rounding.
// The GEMMs use register tiles written with GCC/Clang vector extensions; the same template is
// compiled for AVX-512, AVX2 and the baseline ISA (function target attributes); the dispatch table
// (dispatch.h) holds them, so MUVERA_ISA and FDEEncoder(isa=) apply here too.
#include "fde_fastembed.h"
#include "parallel.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <functional>
#include <thread>
#include <type_traits>

namespace muvera {
namespace {

constexpr int kColPad = 16;  // SimHash columns are padded to a multiple of this (widest float vector)
constexpr int kProjPad = 8;  // projection columns: a multiple of this (widest double vector)
constexpr int kMaxRows = 8;  // most rows of one register tile

int round_up(int v, int m) { return (v + m - 1) / m * m; }

// IEEE binary16 -> float, exact for every value (subnormals, Inf, NaN).
inline float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, mant = h & 0x3ffu, bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: shift the leading one into the implicit bit
      exp = 113;
      while ((mant & 0x400u) == 0) {
        mant <<= 1;
        --exp;
      }
      bits = sign | (exp << 23) | ((mant & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 112) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Per-thread working memory, sized for the longest item of a batch before any thread starts.
// Tokens are kept in float64, and for non-float64 input (exact in float32) also in float32.
struct Scratch {
  std::vector<float> x32;        // n_max x d, float32 copy for the SimHash pass (non-float64 input)
  std::vector<double> x64;       // n_max x d, the tokens in float64
  std::vector<double> xnorm;     // n_max, ||x_t|| (float32 SimHash pass)
  std::vector<float> block32;    // kMaxRows x rk_pad, float32 SimHash dot products of a token tile
  std::vector<double> block;     // kMaxRows x rk_pad, float64 SimHash dot products
  std::vector<uint32_t> codes;   // R x n_max partition ids
  // Repetitions are processed in groups of `group`; per group member g:
  std::vector<int32_t> order;    // group x n_max: tokens grouped by slot, ascending within a slot
  std::vector<int32_t> part, count, first;  // group x S (S = min(n_max, B) slots): partition id,
                                            // token count, first token of each slot
  std::vector<int32_t> begin;    // group x (S + 1): where each slot's tokens start in `order`
  std::vector<int32_t> nslot;    // group
  std::vector<double> sums;      // group x S x d partition sums
  std::vector<int32_t> slot;     // n_max: slot of each token (scratch of the counting sort)
  std::vector<int32_t> slot_of;  // B: slot of a partition, -1 if empty (kept all -1 between uses)
  std::vector<int32_t> fill_of;  // B: fill row of an empty partition
  std::vector<int32_t> need, sorted;  // S: fill row of a slot; the occupied ids in ascending order
  std::vector<double> y;         // S x p_pad projected sums
  std::vector<double> fx, fy;    // S x d fill tokens, S x p_pad their projections
  int64_t slots = 1;
  int group = 1;

  Scratch(const FastembedEncoder::Tables& T, int64_t n_max, int dtype) {
    const size_t n = static_cast<size_t>(std::max<int64_t>(n_max, 1));
    const size_t S = static_cast<size_t>(std::max<int64_t>(1, std::min<int64_t>(n_max, T.B)));
    const size_t d = static_cast<size_t>(T.d), rk = static_cast<size_t>(std::max(T.rk_pad, 1));
    x64.resize(n * d);
    if (dtype == kFloat64) {
      block.resize(kMaxRows * rk);
    } else {
      x32.resize(n * d);
      xnorm.resize(n);
      block32.resize(kMaxRows * rk);
    }
    codes.resize(static_cast<size_t>(T.R) * n);
    slots = static_cast<int64_t>(S);
    // Enough repetitions per group to reuse each column block of the tokens, within 256 KiB of sums.
    group = static_cast<int>(std::max<size_t>(1, std::min<size_t>(T.R, (size_t(1) << 18) / (S * d * 8))));
    const size_t G = static_cast<size_t>(group);
    order.resize(G * n);
    for (auto* v : {&part, &count, &first}) v->resize(G * S);
    begin.resize(G * (S + 1));
    nslot.resize(G);
    sums.resize(G * S * d);
    slot.resize(n);
    slot_of.assign(static_cast<size_t>(T.B), -1);
    fill_of.resize(T.fill ? static_cast<size_t>(T.B) : 0);
    need.resize(S);
    sorted.resize(S);
    fx.resize(T.fill ? S * d : 0);
    if (T.project) {
      y.resize(S * static_cast<size_t>(T.p_pad));
      fy.resize(T.fill ? S * static_cast<size_t>(T.p_pad) : 0);
    }
  }
};

// Exponent all ones: NaN or +-Inf. Bit tests instead of a float sum keep the loops vectorisable.
inline uint64_t nonfinite_bits(double v) {
  uint64_t b;
  std::memcpy(&b, &v, sizeof b);
  return static_cast<uint64_t>((b & 0x7ff0000000000000ull) == 0x7ff0000000000000ull);
}
inline uint32_t nonfinite_bits(float v) {
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return static_cast<uint32_t>((b & 0x7f800000u) == 0x7f800000u);
}

// Converts row t of an item to X (float32, exact for every non-float64 input, or float64); false
// if it holds NaN or Inf.
template <typename X>
inline bool load_row(const ItemView& item, int dtype, int64_t t, int d, X* dst) {
  uint64_t bad = 0;
  switch (dtype) {
    case kFloat32: {
      const float* s = static_cast<const float*>(item.data) + t * item.row_stride;
      for (int i = 0; i < d; ++i) dst[i] = s[i];
      break;
    }
    case kFloat64: {
      const double* s = static_cast<const double*>(item.data) + t * item.row_stride;
      for (int i = 0; i < d; ++i) dst[i] = static_cast<X>(s[i]);
      break;
    }
    case kFloat16: {
      const uint16_t* s = static_cast<const uint16_t*>(item.data) + t * item.row_stride;
      for (int i = 0; i < d; ++i) dst[i] = half_to_float(s[i]);
      break;
    }
    default: {  // kBFloat16: the high half of a float32
      const uint16_t* s = static_cast<const uint16_t*>(item.data) + t * item.row_stride;
      for (int i = 0; i < d; ++i) {
        const uint32_t bits = static_cast<uint32_t>(s[i]) << 16;
        float f;
        std::memcpy(&f, &bits, sizeof f);
        dst[i] = f;
      }
      break;
    }
  }
  for (int i = 0; i < d; ++i) bad |= nonfinite_bits(dst[i]);
  return bad == 0;
}

#define MUVERA_FE_INLINE inline __attribute__((always_inline))

// GCC/Clang vector types of N elements (explicit specialisations: a vector_size that depends on a
// template parameter is not applied everywhere by GCC).
template <typename T, int N>
struct Vec;
#define MUVERA_FE_VEC(T, N)                                                                \
  template <>                                                                              \
  struct Vec<T, N> {                                                                       \
    typedef T type __attribute__((vector_size(sizeof(T) * N)));                            \
    /* the same for unaligned memory (aliasing T): direct loads and stores, no memcpy */    \
    typedef T mem __attribute__((vector_size(sizeof(T) * N), aligned(sizeof(T)), may_alias)); \
  };
MUVERA_FE_VEC(double, 2)
MUVERA_FE_VEC(double, 4)
MUVERA_FE_VEC(double, 8)
MUVERA_FE_VEC(float, 2)
MUVERA_FE_VEC(float, 4)
MUVERA_FE_VEC(float, 8)
MUVERA_FE_VEC(float, 16)
#undef MUVERA_FE_VEC

template <typename T, int N>
MUVERA_FE_INLINE typename Vec<T, N>::type loadu(const T* at) {
  return *reinterpret_cast<const typename Vec<T, N>::mem*>(at);
}
template <typename T, int N>
MUVERA_FE_INLINE void storeu(T* at, typename Vec<T, N>::type v) {
  *reinterpret_cast<typename Vec<T, N>::mem*>(at) = v;
}

// Register-tiled C = A . B for one element type: LANES elements per vector, tiles of MR rows x NV
// vectors. Column counts are multiples of LANES (the tables are zero-padded).
template <typename T, int LANES, int MR, int NV>
struct Gemm {
  typedef typename Vec<T, LANES>::type V;
  static_assert(MR <= kMaxRows && kColPad % LANES == 0, "tile shape");

  // C[0..ROWS) x [0, W*LANES) = A (ROWS x K, lda) . B (K x ., ldb).
  template <int ROWS, int W>
  static MUVERA_FE_INLINE void tile(const T* A, int64_t lda, int K, const T* B, int64_t ldb, T* C, int64_t ldc) {
    V acc[ROWS][W];
    for (int m = 0; m < ROWS; ++m)
      for (int v = 0; v < W; ++v) acc[m][v] = V{};
    for (int kk = 0; kk < K; ++kk) {
      V b[W];
      for (int v = 0; v < W; ++v) b[v] = loadu<T, LANES>(B + kk * ldb + v * LANES);
      for (int m = 0; m < ROWS; ++m) {
        const T a = A[m * lda + kk];
        for (int v = 0; v < W; ++v) acc[m][v] += a * b[v];
      }
    }
    for (int m = 0; m < ROWS; ++m)
      for (int v = 0; v < W; ++v) storeu<T, LANES>(C + m * ldc + v * LANES, acc[m][v]);
  }

  template <int ROWS>
  static MUVERA_FE_INLINE void rows(const T* A, int64_t lda, int K, const T* B, int64_t ldb, int N, T* C,
                                    int64_t ldc) {
    int c = 0;
    for (; c + NV * LANES <= N; c += NV * LANES) tile<ROWS, NV>(A, lda, K, B + c, ldb, C + c, ldc);
    for (; c < N; c += LANES) tile<ROWS, 1>(A, lda, K, B + c, ldb, C + c, ldc);
  }

  // The last rem < MR rows in one tile of rem rows (not rem one-row tiles, whose single add
  // chains would wait on the FMA latency).
  template <int ROWS>
  static MUVERA_FE_INLINE void tail(int rem, const T* A, int64_t lda, int K, const T* B, int64_t ldb, int N, T* C,
                                    int64_t ldc) {
    if constexpr (ROWS > 0) {
      if (rem == ROWS)
        rows<ROWS>(A, lda, K, B, ldb, N, C, ldc);
      else
        tail<ROWS - 1>(rem, A, lda, K, B, ldb, N, C, ldc);
    }
  }

  // C (M x N, ldc) = A (M x K, lda) . B (K x N, ldb).
  static MUVERA_FE_INLINE void run(const T* A, int64_t lda, int64_t M, int K, const T* B, int64_t ldb, int N, T* C,
                                   int64_t ldc) {
    int64_t m = 0;
    for (; m + MR <= M; m += MR) rows<MR>(A + m * lda, lda, K, B, ldb, N, C + m * ldc, ldc);
    if (m < M) tail<MR - 1>(static_cast<int>(M - m), A + m * lda, lda, K, B, ldb, N, C + m * ldc, ldc);
  }
};

// The kernels for one vector width: L doubles (2L floats) per vector. Register tiles: MR rows x
// NV vectors for the float32 SimHash pass (and float64 SimHash of float64 tokens); MR64 x NV64 for
// the float64 projection of the partition sums (p columns, p = 16 by default).
template <int L, int MR, int NV, int MR64, int NV64>
struct Kern {
  using G64 = Gemm<double, L, MR64, NV64>;
  using G32 = Gemm<float, 2 * L, MR, NV>;
  using G64S = Gemm<double, L, MR, NV>;
  typedef typename Vec<double, L>::type V;
  typedef typename Vec<float, L>::type VF;  // L floats: one V once widened

  // L values of a token row from `at`, widened to float64.
  static MUVERA_FE_INLINE V load(const double* at) { return loadu<double, L>(at); }
  static MUVERA_FE_INLINE V load(const float* at) { return __builtin_convertvector((loadu<float, L>(at)), V); }

  // ||row|| in float64 (its own rounding is far inside the factor 2 of gthr).
  static MUVERA_FE_INLINE double norm(const float* row, int d) {
    V acc = V{};
    int i = 0;
    for (; i + L <= d; i += L) {
      const V v = load(row + i);
      acc += v * v;
    }
    double s = 0.0;
    for (int l = 0; l < L; ++l) s += acc[l];
    for (; i < d; ++i) s += static_cast<double>(row[i]) * row[i];
    return std::sqrt(s);
  }

  // Dot product of a token row with SimHash column c, in float64.
  static MUVERA_FE_INLINE double dot64(const FastembedEncoder::Tables& T, const double* row, int c) {
    double s = 0.0;
    for (int i = 0; i < T.d; ++i) s += row[i] * T.gauss[static_cast<int64_t>(i) * T.rk_pad + c];
    return s;
  }

  // Partition ids of every token and repetition into s.codes (R x n). float32 tokens take a
  // float32 pass whose signs are kept where they are certain and redone in float64 elsewhere;
  // float64 tokens take a float64 pass.
  template <typename X>
  static MUVERA_FE_INLINE void partition_ids(const FastembedEncoder::Tables& T, const X* x, const double* x64,
                                             int64_t n, Scratch& s) {
    uint32_t* codes = s.codes.data();
    std::fill(codes, codes + static_cast<int64_t>(T.R) * n, 0u);
    if (T.k == 0) return;
    const int d = T.d;
    for (int64_t t0 = 0; t0 < n; t0 += MR) {
      const int64_t m = std::min<int64_t>(MR, n - t0);
      if constexpr (std::is_same<X, float>::value) {
        float* blk = s.block32.data();
        G32::run(x + t0 * d, d, m, d, T.gauss32, T.rk_pad, T.rk_pad, blk, T.rk_pad);
        for (int64_t i = 0; i < m; ++i) {
          const float* dots = blk + i * T.rk_pad;
          const double xn = s.xnorm[t0 + i];
          for (int r = 0; r < T.R; ++r) {
            uint32_t id = 0, unsure = 0;
            for (int j = 0; j < T.k; ++j) {
              const int c = r * T.k + j;
              const double v = dots[c];
              id |= static_cast<uint32_t>(v > 0.0) << j;
              unsure |= static_cast<uint32_t>(!(std::fabs(v) > xn * T.gthr[c] + T.underflow)) << j;  // NaN too
            }
            for (int j = 0; unsure != 0 && j < T.k; ++j) {  // rare: redo uncertain signs in float64
              if (!((unsure >> j) & 1u)) continue;
              const uint32_t bit = static_cast<uint32_t>(dot64(T, x64 + (t0 + i) * d, r * T.k + j) > 0.0) << j;
              id = (id & ~(1u << j)) | bit;
            }
            codes[r * n + t0 + i] = id;
          }
        }
      } else {
        double* blk = s.block.data();
        G64S::run(x + t0 * d, d, m, d, T.gauss, T.rk_pad, T.rk_pad, blk, T.rk_pad);
        for (int64_t i = 0; i < m; ++i) {
          const double* dots = blk + i * T.rk_pad;
          for (int r = 0; r < T.R; ++r) {
            uint32_t id = 0;
            for (int j = 0; j < T.k; ++j) id |= static_cast<uint32_t>(dots[r * T.k + j] > 0.0) << j;
            codes[r * n + t0 + i] = id;
          }
        }
      }
    }
  }

  // Columns [i0, i0 + W*L) of sums[q] = the tokens of slot q added in token order, from +0.0
  // (fastembed's cluster_centers[id] += vec), the running sums in registers.
  template <int W>
  static MUVERA_FE_INLINE void slot_sums(const double* x, int d, int i0, const int32_t* order, const int32_t* begin,
                                         int nslot, double* sums) {
    for (int q = 0; q < nslot; ++q) {
      const int32_t* tok = order + begin[q];
      const int cnt = begin[q + 1] - begin[q];
      V acc[W];
      for (int v = 0; v < W; ++v) acc[v] = V{};
      for (int e = 0; e < cnt; ++e) {
        const double* row = x + static_cast<int64_t>(tok[e]) * d + i0;
        for (int v = 0; v < W; ++v) acc[v] += load(row + v * L);
      }
      for (int v = 0; v < W; ++v) storeu<double, L>(sums + static_cast<int64_t>(q) * d + i0 + v * L, acc[v]);
    }
  }

  // Scalar columns [i0, d) of the same sums (d not a multiple of L).
  static MUVERA_FE_INLINE void slot_sums_tail(const double* x, int d, int i0, const int32_t* order,
                                              const int32_t* begin, int nslot, double* sums) {
    for (int q = 0; q < nslot; ++q)
      for (int i = i0; i < d; ++i) {
        double acc = 0.0;
        for (int e = begin[q]; e < begin[q + 1]; ++e) acc += x[static_cast<int64_t>(order[e]) * d + i];
        sums[static_cast<int64_t>(q) * d + i] = acc;
      }
  }

  // One item into out (R*B*p floats); false if it holds NaN/Inf or its encoding overflows float32.
  // Repetitions go in groups of s.group: slots of every repetition of the group, then the partition
  // sums column block by column block (a block of every token stays in L1 across the group), then
  // per repetition the projection and the fill.
  template <typename X>
  static MUVERA_FE_INLINE bool encode_item(const FastembedEncoder::Tables& T, const ItemView& it, int dtype,
                                           bool is_document, float* out, Scratch& s, X* x) {
    const int d = T.d, p = T.p, B = T.B;
    const int64_t n = it.n;
    const int64_t rep_floats = static_cast<int64_t>(B) * p;
    std::fill(out, out + T.R * rep_floats, 0.0f);
    if (n == 0) return true;
    double* x64 = s.x64.data();
    for (int64_t t = 0; t < n; ++t)
      if (!load_row(it, dtype, t, d, x + t * d)) return false;
    if constexpr (std::is_same<X, float>::value) {
      for (int64_t i = 0; i < n * d; ++i) x64[i] = x[i];
      if (T.k > 0)
        for (int64_t t = 0; t < n; ++t) s.xnorm[t] = norm(x + t * d, d);
    }
    partition_ids(T, static_cast<const X*>(x), static_cast<const double*>(x64), n, s);

    const bool fill = is_document && T.fill;
    const int64_t S = s.slots;  // slot capacity per repetition
    int32_t* slot_of = s.slot_of.data();
    int32_t* slot = s.slot.data();
    uint32_t nonfinite = 0;
    for (int r0 = 0; r0 < T.R; r0 += s.group) {
      const int G = std::min(s.group, T.R - r0);
      // Slots in order of first appearance; tokens grouped by slot (a stable counting sort).
      for (int g = 0; g < G; ++g) {
        const uint32_t* ids = s.codes.data() + (r0 + g) * n;
        int32_t *part = s.part.data() + g * S, *count = s.count.data() + g * S, *first = s.first.data() + g * S;
        int32_t* begin = s.begin.data() + g * (S + 1);
        int32_t* order = s.order.data() + g * n;
        int nslot = 0;
        for (int64_t t = 0; t < n; ++t) {
          const uint32_t id = ids[t];
          int32_t q = slot_of[id];
          if (q < 0) {
            q = nslot++;
            slot_of[id] = q;
            part[q] = static_cast<int32_t>(id);
            count[q] = 0;
            first[q] = static_cast<int32_t>(t);
          }
          ++count[q];
          slot[t] = q;
        }
        for (int q = 0; q < nslot; ++q) slot_of[part[q]] = -1;
        begin[0] = 0;
        for (int q = 0; q < nslot; ++q) begin[q + 1] = begin[q] + count[q];
        for (int64_t t = 0; t < n; ++t) order[begin[slot[t]]++] = static_cast<int32_t>(t);
        for (int q = nslot; q > 0; --q) begin[q] = begin[q - 1];
        begin[0] = 0;
        s.nslot[g] = nslot;
      }
      // Partition sums, column block by column block.
      constexpr int CW = 8;  // vectors per column block: 8 independent add chains
      int i0 = 0;
      for (; i0 + CW * L <= d; i0 += CW * L)
        for (int g = 0; g < G; ++g)
          slot_sums<CW>(x64, d, i0, s.order.data() + g * n, s.begin.data() + g * (S + 1), s.nslot[g],
                        s.sums.data() + g * S * d);
      for (; i0 + L <= d; i0 += L)
        for (int g = 0; g < G; ++g)
          slot_sums<1>(x64, d, i0, s.order.data() + g * n, s.begin.data() + g * (S + 1), s.nslot[g],
                       s.sums.data() + g * S * d);
      if (i0 < d)
        for (int g = 0; g < G; ++g)
          slot_sums_tail(x64, d, i0, s.order.data() + g * n, s.begin.data() + g * (S + 1), s.nslot[g],
                         s.sums.data() + g * S * d);

      for (int g = 0; g < G; ++g) {
        const int r = r0 + g;
        const int nslot = s.nslot[g];
        const int32_t *part = s.part.data() + g * S, *count = s.count.data() + g * S, *first = s.first.data() + g * S;
        const double* sums = s.sums.data() + g * S * d;
        float* blk = out + r * rep_floats;
        // Non-empty partitions: (sum . S / count) * scale for documents, (sum . S) * scale for queries.
        if (T.project) {
          const double* P = T.proj + static_cast<int64_t>(r) * d * T.p_pad;
          double* y = s.y.data();
          G64::run(sums, d, nslot, d, P, T.p_pad, T.p_pad, y, T.p_pad);
          for (int q = 0; q < nslot; ++q) {
            const double* yr = y + static_cast<int64_t>(q) * T.p_pad;
            float* o = blk + static_cast<int64_t>(part[q]) * p;
            const double cnt = count[q];
            if (is_document)
              for (int j = 0; j < p; ++j) o[j] = static_cast<float>((yr[j] / cnt) * T.scale);
            else
              for (int j = 0; j < p; ++j) o[j] = static_cast<float>(yr[j] * T.scale);
          }
        } else {
          for (int q = 0; q < nslot; ++q) {
            const double* sr = sums + static_cast<int64_t>(q) * d;
            float* o = blk + static_cast<int64_t>(part[q]) * p;
            const double cnt = count[q];
            if (is_document)
              for (int j = 0; j < p; ++j) o[j] = static_cast<float>(sr[j] / cnt);
            else
              for (int j = 0; j < p; ++j) o[j] = static_cast<float>(sr[j]);
          }
        }
        // Empty partitions (documents, fill on): the first token of the nearest non-empty partition.
        if (fill && nslot < B) {
          int32_t* sorted = s.sorted.data();
          int32_t* need = s.need.data();
          int32_t* fill_of = s.fill_of.data();
          double* fx = s.fx.data();
          for (int q = 0; q < nslot; ++q) slot_of[part[q]] = q;
          std::copy(part, part + nslot, sorted);
          std::sort(sorted, sorted + nslot);
          std::fill(need, need + nslot, -1);
          int nf = 0;
          for (int b = 0; b < B; ++b) {
            if (slot_of[b] >= 0) continue;
            int32_t best = sorted[0];
            int best_d = __builtin_popcount(static_cast<uint32_t>(b ^ best));
            for (int q = 1; q < nslot && best_d > 1; ++q) {  // ascending ids: the first minimum wins
              const int dq = __builtin_popcount(static_cast<uint32_t>(b ^ sorted[q]));
              if (dq < best_d) {
                best_d = dq;
                best = sorted[q];
              }
            }
            const int32_t q = slot_of[best];
            if (need[q] < 0) {
              need[q] = nf;
              const double* row = x64 + static_cast<int64_t>(first[q]) * d;
              std::copy(row, row + d, fx + static_cast<int64_t>(nf) * d);
              ++nf;
            }
            fill_of[b] = need[q];
          }
          if (T.project) {
            const double* P = T.proj + static_cast<int64_t>(r) * d * T.p_pad;
            G64::run(fx, d, nf, d, P, T.p_pad, T.p_pad, s.fy.data(), T.p_pad);
            for (int b = 0; b < B; ++b) {
              if (slot_of[b] >= 0) continue;
              const double* fr = s.fy.data() + static_cast<int64_t>(fill_of[b]) * T.p_pad;
              float* o = blk + static_cast<int64_t>(b) * p;
              for (int j = 0; j < p; ++j) o[j] = static_cast<float>(fr[j] * T.scale);
            }
          } else {
            for (int b = 0; b < B; ++b) {
              if (slot_of[b] >= 0) continue;
              const double* fr = fx + static_cast<int64_t>(fill_of[b]) * d;
              float* o = blk + static_cast<int64_t>(b) * p;
              for (int j = 0; j < p; ++j) o[j] = static_cast<float>(fr[j]);
            }
          }
          for (int q = 0; q < nslot; ++q) slot_of[part[q]] = -1;
        }
        for (int64_t i = 0; i < rep_floats; ++i) nonfinite |= nonfinite_bits(blk[i]);
      }
    }
    return nonfinite == 0;
  }

  static MUVERA_FE_INLINE bool item(const FastembedEncoder::Tables& T, const ItemView& it, int dtype,
                                    bool is_document, float* out, Scratch& s) {
    if (dtype == kFloat64) return encode_item<double>(T, it, dtype, is_document, out, s, s.x64.data());
    return encode_item<float>(T, it, dtype, is_document, out, s, s.x32.data());
  }
};

}  // namespace

struct FastembedScratch : Scratch {
  using Scratch::Scratch;
};

bool fastembed_item_generic(const FastembedEncoder::Tables& T, const ItemView& it, int dtype, bool doc, float* out,
                            FastembedScratch& s) {
  return Kern<2, 4, 2, 4, 2>::item(T, it, dtype, doc, out, s);
}

#if defined(MUVERA_X86)
__attribute__((target("avx2,fma,popcnt"))) bool fastembed_item_avx2(const FastembedEncoder::Tables& T,
                                                                     const ItemView& it, int dtype, bool doc,
                                                                     float* out, FastembedScratch& s) {
  return Kern<4, 6, 2, 4, 2>::item(T, it, dtype, doc, out, s);
}

__attribute__((target("avx512f,avx512dq,avx512vl,avx512bw,avx2,fma,popcnt"))) bool fastembed_item_avx512(
    const FastembedEncoder::Tables& T, const ItemView& it, int dtype, bool doc, float* out, FastembedScratch& s) {
  return Kern<8, 6, 2, 6, 2>::item(T, it, dtype, doc, out, s);
}
#endif

FastembedEncoder::FastembedEncoder(int d, int R, int k, int p, const double* simhash, const double* projection,
                                   bool fill_documents)
    : d_(d), R_(R), k_(k), p_(projection != nullptr ? p : d) {
  const int rk = R * k;
  const int rk_pad = round_up(std::max(rk, 1), kColPad);
  gauss_.assign(static_cast<size_t>(d) * rk_pad, 0.0);
  gauss32_.assign(static_cast<size_t>(d) * rk_pad, 0.0f);
  gthr_.assign(static_cast<size_t>(std::max(rk, 1)), 0.0);
  for (int r = 0; r < R; ++r)
    for (int j = 0; j < k; ++j) {
      double sq = 0.0;
      for (int i = 0; i < d; ++i) {
        const double g = simhash[(static_cast<size_t>(r) * d + i) * k + j];
        gauss_[static_cast<size_t>(i) * rk_pad + r * k + j] = g;
        gauss32_[static_cast<size_t>(i) * rk_pad + r * k + j] = static_cast<float>(g);
        sq += g * g;
      }
      // A float32 dot product of d terms (one rounding per term, with or without FMA) of float32
      // tokens and these float32-rounded columns is within ((d + 2) u + O(u^2)) * sum |x_i g_i|
      // <= ((d + 2) u) * ||x|| ||g|| (u = 2^-24) of the exact one, plus at most (d + 1) * 2^-149
      // from underflow; the threshold is twice each term.
      gthr_[static_cast<size_t>(r) * k + j] = (d + 2) * std::ldexp(1.0, -23) * std::sqrt(sq) * 1.0000001;
    }
  underflow_ = (d + 1) * std::ldexp(1.0, -148);
  const bool project = projection != nullptr;
  const int p_pad = round_up(p_, kProjPad);
  if (project) {
    proj_.assign(static_cast<size_t>(R) * d * p_pad, 0.0);
    for (int r = 0; r < R; ++r)
      for (int i = 0; i < d; ++i)
        for (int j = 0; j < p_; ++j)
          proj_[(static_cast<size_t>(r) * d + i) * p_pad + j] = projection[(static_cast<size_t>(r) * d + i) * p_ + j];
  }
  tables_ = Tables{d, R, k, p_, 1 << k, rk_pad, p_pad, project, fill_documents,
                   1.0 / std::sqrt(static_cast<double>(p_)), gauss_.data(), gauss32_.data(), gthr_.data(),
                   underflow_, project ? proj_.data() : nullptr};
}

int64_t FastembedEncoder::encode(const ItemView* items, int64_t n_items, int dtype, bool is_document, float* out,
                                 int num_threads, FastembedItemFn fn) const {
  if (n_items == 0) return -1;
  int64_t n_max = 0;
  for (int64_t i = 0; i < n_items; ++i) n_max = std::max(n_max, items[i].n);
  const int64_t out_dim = output_dimension();
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(num_threads, (n_items + 3) / 4));
  // All scratch is allocated here, before any thread starts: a failure throws in the caller's
  // thread (MemoryError in Python); the per-item work allocates nothing.
  std::vector<FastembedScratch> scratch;
  scratch.reserve(static_cast<size_t>(threads));
  for (int64_t t = 0; t < threads; ++t) scratch.emplace_back(tables_, n_max, dtype);

  return encode_items(n_items, static_cast<int>(threads), [&](int64_t i, int tid) {
    return fn(tables_, items[i], dtype, is_document, out + i * out_dim, scratch[static_cast<size_t>(tid)]);
  });
}

}  // namespace muvera
