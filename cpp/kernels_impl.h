// Kernel bodies, compiled once per ISA: kernels_<isa>.cc defines MUVERA_ISA_NS and the compiler
// flags, then includes this file. GCC vector extensions give 16-lane code that maps to one zmm,
// two ymm or four xmm registers depending on the flags. Everything here is internal linkage.
#include <cmath>
#include <cstring>

#include "kernels.h"

#ifndef MUVERA_ISA_NS
#error "define MUVERA_ISA_NS before including kernels_impl.h"
#endif
#ifndef MUVERA_SKETCH_CHUNK
#error "define MUVERA_SKETCH_CHUNK (accumulators held in registers by the SimHash loop)"
#endif

namespace muvera {
namespace MUVERA_ISA_NS {
namespace {

typedef float vf __attribute__((vector_size(4 * kBlock)));
typedef int32_t vi __attribute__((vector_size(4 * kBlock)));
static_assert(kSketchPad % MUVERA_SKETCH_CHUNK == 0, "chunk must divide the sketch padding");

inline vf load_vf(const float* p) { return *reinterpret_cast<const vf*>(p); }

inline float half_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
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

inline float bf16_to_float(uint16_t h) {
  uint32_t bits = static_cast<uint32_t>(h) << 16;
  float out;
  std::memcpy(&out, &bits, 4);
  return out;
}

inline bool finite_row(const float* x, int d) {
  uint32_t bad = 0;
  for (int c = 0; c < d; ++c) {
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
    return finite_row(x, static_cast<int>(n * d)) ? x : nullptr;
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

// Sign masks (-1 where > 0) of every SimHash projection for one transposed token block.
template <int JC>
void sketch_signs(const float* xt, const float* gauss, int d, int rk_pad, int32_t* sk) {
  for (int j0 = 0; j0 < rk_pad; j0 += JC) {
    vf acc[JC];
    for (int j = 0; j < JC; ++j) acc[j] = vf{};
    for (int t = 0; t < d; ++t) {
      const vf x = load_vf(xt + t * kBlock);
      const float* g = gauss + static_cast<int64_t>(t) * rk_pad + j0;
      for (int j = 0; j < JC; ++j) acc[j] += g[j] * x;
    }
    for (int j = 0; j < JC; ++j) {
      vi m = acc[j] > 0.0f;  // strictly positive, as the reference: 0, -0 and NaN give bit 0
      *reinterpret_cast<vi*>(sk + (j0 + j) * kBlock) = m;
    }
  }
}

// Sparse AMS projection of one block, summed over input coordinates in ascending order (the order
// the scalar fill path and muvera.reference use, so all three agree bit for bit).
void ams_block(const float* xt, const int32_t* col, const float* sign, int d, int p, float* yt) {
  for (int c = 0; c < p; ++c) *reinterpret_cast<vf*>(yt + c * kBlock) = vf{};
  for (int t = 0; t < d; ++t) {
    vf* y = reinterpret_cast<vf*>(yt + col[t] * kBlock);
    *y += load_vf(xt + t * kBlock) * sign[t];
  }
}

void ams_row(const float* x, const int32_t* col, const float* sign, int d, int p, float* y) {
  for (int c = 0; c < p; ++c) y[c] = 0.0f;
  for (int t = 0; t < d; ++t) y[col[t]] += x[t] * sign[t];
}

inline int popcount32(uint32_t v) { return __builtin_popcount(v); }

bool encode_item(const FdeTablesView& T, const ItemView& item, int dtype, bool is_document,
                 float* out, FdeScratch& s) {
  const int d = T.d, p = T.p, B = T.B, k = T.k, R = T.R;
  const int64_t n = item.n;
  float* fde = T.final_dim > 0 ? s.fde : out;
  std::memset(fde, 0, sizeof(float) * T.fde_dim);
  if (n == 0) {  // empty set: zeros (the reference would give NaN for k = 0 documents)
    if (T.final_dim > 0) std::memset(out, 0, sizeof(float) * T.final_dim);
    return true;
  }
  const float* x = load_item(item, dtype, d, s.x);
  if (x == nullptr) return false;
  std::memset(s.counts, 0, sizeof(int32_t) * R * B);

  for (int64_t i0 = 0; i0 < n; i0 += kBlock) {
    const int nb = static_cast<int>(n - i0 < kBlock ? n - i0 : kBlock);
    for (int t = 0; t < d; ++t)
      for (int l = 0; l < kBlock; ++l) s.xt[t * kBlock + l] = l < nb ? x[(i0 + l) * d + t] : 0.0f;
    if (k > 0) sketch_signs<MUVERA_SKETCH_CHUNK>(s.xt, T.gauss, d, T.rk_pad, s.sk);

    for (int r = 0; r < R; ++r) {
      // Sign pattern w (projection 0 = most significant bit), then its Gray decode.
      vi w = vi{};
      for (int j = 0; j < k; ++j) w = (w << 1) - *reinterpret_cast<const vi*>(s.sk + (r * k + j) * kBlock);
      vi b = w;
      b ^= b >> 1; b ^= b >> 2; b ^= b >> 4; b ^= b >> 8; b ^= b >> 16;
      int32_t* codes = s.codes + static_cast<int64_t>(r) * s.n_max + i0;
      for (int l = 0; l < nb; ++l) codes[l] = w[l];

      float* rep = fde + static_cast<int64_t>(r) * B * p;
      int32_t* counts = s.counts + r * B;
      if (T.identity) {
        for (int l = 0; l < nb; ++l) {
          float* dst = rep + static_cast<int64_t>(b[l]) * p;
          const float* src = x + (i0 + l) * d;
          for (int c = 0; c < p; ++c) dst[c] += src[c];
          ++counts[b[l]];
        }
      } else {
        ams_block(s.xt, T.ams_col + r * d, T.ams_sign + r * d, d, p, s.yt);
        for (int l = 0; l < nb; ++l) {
          float* dst = rep + static_cast<int64_t>(b[l]) * p;
          for (int c = 0; c < p; ++c) dst[c] += s.yt[c * kBlock + l];
          ++counts[b[l]];
        }
      }
    }
  }

  if (is_document) {
    for (int r = 0; r < R; ++r) {
      float* rep = fde + static_cast<int64_t>(r) * B * p;
      const int32_t* counts = s.counts + r * B;
      const int32_t* codes = s.codes + static_cast<int64_t>(r) * s.n_max;
      for (int b = 0; b < B; ++b) {
        float* dst = rep + static_cast<int64_t>(b) * p;
        if (counts[b] > 0) {
          const float cnt = static_cast<float>(counts[b]);
          for (int c = 0; c < p; ++c) dst[c] = dst[c] / cnt;
        } else if (T.fill && k > 0) {
          // Nearest point by Hamming distance to the partition's sign pattern; lowest index wins.
          const uint32_t target = static_cast<uint32_t>(b ^ (b >> 1));
          int64_t best = 0;
          int best_dist = 64;
          for (int64_t i = 0; i < n; ++i) {
            int dist = popcount32(static_cast<uint32_t>(codes[i]) ^ target);
            if (dist < best_dist) { best_dist = dist; best = i; }
          }
          if (T.identity) {
            std::memcpy(dst, x + best * d, sizeof(float) * p);
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
  }
  return true;
}

}  // namespace

const KernelSet& kernels() {
  static const KernelSet set{MUVERA_ISA_NAME, &encode_item};
  return set;
}

}  // namespace MUVERA_ISA_NS
}  // namespace muvera
