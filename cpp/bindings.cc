// pybind11 bindings: argument checks, zero-copy views of NumPy buffers, GIL release. No algorithms.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <limits>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "chamfer.h"
#include "datasync.h"
#include "fde.h"
#include "dispatch.h"
#include "fde_fastembed.h"  // fastembed variant
#include "kernels.h"
#include "parallel.h"
#include "prune.h"
#include "refine.h"
#include "residual.h"

namespace py = pybind11;
using muvera::FdeConfig;
using muvera::FdeEncoder;
using muvera::ItemView;

namespace {

// The dispatch table of an ISA level ("" = the active one).
const muvera::Dispatch& kernels_for(const std::string& isa) {
  if (isa.empty()) return muvera::active_dispatch();
  const muvera::Dispatch* k = muvera::dispatch_by_name(isa.c_str());
  if (k == nullptr) throw py::value_error("isa: '" + isa + "' is unknown or not supported by this CPU");
  return *k;
}

size_t itemsize_of(int dtype) {
  switch (dtype) {
    case muvera::kFloat32: return 4;
    case muvera::kFloat64: return 8;
    case muvera::kFloat16:
    case muvera::kBFloat16: return 2;
    default: throw py::value_error("dtype code must be 0 (float32), 1 (float64), 2 (float16) or 3 (bfloat16)");
  }
}

// The element type of a token buffer, inferred from the array: float32/float64/float16, or
// uint16 holding bfloat16 bits (NumPy has no bfloat16; muvera.batch views torch's that way).
int dtype_of(const py::array& a, const std::string& what) {
  const char kind = a.dtype().kind();
  const auto isz = a.itemsize();
  if (kind == 'f' && isz == 4) return muvera::kFloat32;
  if (kind == 'f' && isz == 8) return muvera::kFloat64;
  if (kind == 'f' && isz == 2) return muvera::kFloat16;
  if (kind == 'u' && isz == 2) return muvera::kBFloat16;
  throw py::type_error(what + ": expected float32, float64, float16 or bfloat16 (as uint16 bits) values, got " +
                       std::string(py::str(a.dtype())));
}

// Checks that `a` is a 2-D (rows, d) buffer of the given element type with contiguous rows.
void check_matrix(const py::array& a, int dtype, int d, const std::string& what) {
  if (a.ndim() != 2)
    throw py::value_error(what + ": expected a 2-D array of shape (n_tokens, " + std::to_string(d) +
                          "), got " + std::to_string(a.ndim()) + "-D");
  if (a.shape(1) != d)
    throw py::value_error(what + ": expected " + std::to_string(d) + " columns (the config's dimension), got " +
                          std::to_string(a.shape(1)));
  const char kind = a.dtype().kind();
  const size_t isz = itemsize_of(dtype);
  const bool ok = static_cast<size_t>(a.itemsize()) == isz &&
                  ((dtype == muvera::kBFloat16) ? (kind == 'u' || kind == 'i' || kind == 'V') : kind == 'f');
  if (!ok) throw py::type_error(what + ": element type does not match the declared dtype");
  if (a.shape(0) > 1 && (a.strides(0) < 0 || a.strides(0) % static_cast<py::ssize_t>(isz) != 0))
    throw py::value_error(what + ": rows must have a positive stride that is a multiple of the item size");
  if (a.shape(0) > 0 && d > 1 && a.strides(1) != static_cast<py::ssize_t>(isz))
    throw py::value_error(what + ": each row must be contiguous");
  // The kernels read rows as typed arrays: the buffer must be aligned to the element size.
  if (reinterpret_cast<uintptr_t>(a.data()) % isz != 0)
    throw py::value_error(what + ": the array is not aligned to its element size (copy it first)");
}

// Encodes gathered items with either encoder class and the kernel of the ISA level it takes (a
// KernelSet for FdeEncoder, an item function for FastembedEncoder), GIL released.
template <typename Enc, typename Kernel>
py::array_t<float> run_encode(const Enc& enc, std::vector<ItemView>& items, int dtype, bool is_document,
                              int num_threads, const Kernel& kernel, const std::string& what) {
  const int64_t n = static_cast<int64_t>(items.size());
  for (int64_t i = 0; i < n; ++i)
    if (items[i].n >= (int64_t(1) << 31))
      throw py::value_error(what + "[" + std::to_string(i) + "]: more than 2^31 - 1 tokens");
  py::array_t<float> out({n, enc.output_dimension()});
  float* dst = out.mutable_data();
  if (num_threads <= 0) num_threads = muvera::default_num_threads();
  int64_t bad;
  {
    py::gil_scoped_release release;
    bad = enc.encode(items.data(), n, dtype, is_document, dst, num_threads, kernel);
  }
  if (bad >= 0)
    throw py::value_error(what + "[" + std::to_string(bad) + "] contains NaN or Inf values (or values so large that its encoding overflows float32)");
  return out;
}

// Offsets must start at 0, never decrease and end within `rows`.
void check_offsets(const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& off, int64_t rows, const std::string& what) {
  if (off.ndim() != 1 || off.shape(0) < 1) throw py::value_error(what + ": expected a 1-D array of n + 1 offsets");
  const int64_t* o = off.data();
  if (o[0] != 0) throw py::value_error(what + ": must start at 0");
  for (py::ssize_t i = 1; i < off.shape(0); ++i)
    if (o[i] < o[i - 1]) throw py::value_error(what + ": must not decrease");
  if (o[off.shape(0) - 1] > rows)
    throw py::value_error(what + ": last offset " + std::to_string(o[off.shape(0) - 1]) + " exceeds the " +
                          std::to_string(rows) + " token rows");
}

// Document offsets where a kernel reads only the candidates' spans: each candidate's
// [off[j], off[j + 1]) is checked, so the cost follows the candidates, not the corpus (a full
// check when every document is read). Candidates were range-checked by the caller.
void check_doc_spans(const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& off, int64_t rows,
                     const int64_t* cand, int64_t count, const std::string& what) {
  if (cand == nullptr) return check_offsets(off, rows, what);
  if (off.ndim() != 1 || off.shape(0) < 1) throw py::value_error(what + ": expected a 1-D array of n + 1 offsets");
  const int64_t* o = off.data();
  if (o[0] != 0) throw py::value_error(what + ": must start at 0");
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = cand[i];
    if (j < 0) continue;
    if (o[j] < 0 || o[j + 1] < o[j] || o[j + 1] > rows)
      throw py::value_error(what + ": the span of document " + std::to_string(j) + " is not within the " +
                            std::to_string(rows) + " token rows (offsets must not decrease)");
  }
}

struct ChamferArgs {
  muvera::QueryBatchView q;
  muvera::TokenStoreView s;
  const int64_t* cand = nullptr;
  int64_t C = 0;
  const uint8_t* alive = nullptr;
};

using F32Array = py::array_t<float, py::array::c_style | py::array::forcecast>;
using I64Array = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using U8Array = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

// The candidates (each a document row or -1), the alive flags (one per document) and the
// document offsets (only the candidates' spans when there are candidates), filled into `a`:
// the one copy of these checks for every rerank binding.
void check_selection(ChamferArgs& a, const I64Array& doff, int64_t store_rows, const std::optional<I64Array>& cand,
                     const std::optional<U8Array>& alive) {
  if (doff.ndim() != 1 || doff.shape(0) < 1) throw py::value_error("doc_offsets: expected a 1-D array of n + 1 offsets");
  const int64_t n_docs = doff.shape(0) - 1;
  if (cand) {
    const I64Array& c = *cand;
    if (c.ndim() != 2 || c.shape(0) != a.q.n_queries)
      throw py::value_error("candidates: expected an (n_queries, C) array of document rows");
    const int64_t* p = c.data();
    for (py::ssize_t i = 0; i < c.size(); ++i)
      if (p[i] < -1 || p[i] >= n_docs)
        throw py::value_error("candidates: entry " + std::to_string(p[i]) + " is not a document row (or -1)");
    a.cand = p;
    a.C = c.shape(1);
    check_doc_spans(doff, store_rows, p, c.size(), "doc_offsets");
  } else {
    a.C = n_docs;
    check_offsets(doff, store_rows, "doc_offsets");
  }
  if (alive) {
    if (alive->ndim() != 1 || alive->shape(0) != n_docs)
      throw py::value_error("alive: expected one flag per document (" + std::to_string(n_docs) + ")");
    a.alive = alive->data();
  }
}

// Every array is a by-value parameter of the binding that calls this: converted copies (int32
// candidates, strided or Fortran-order input) live until the binding returns.
// The stored rows' layout, as the codec names it ("float32", "float16", "int8": d codes + a
// float32 scale per row); "" accepts float32 / float16 arrays as they are. The layout is never
// guessed from the dtype: uint8 rows are int8 codes only when the caller says so.
int store_layout(const py::array& dtok, const std::string& layout) {
  const char kind = dtok.dtype().kind();
  const auto isz = dtok.itemsize();
  const bool f32 = kind == 'f' && isz == 4, f16 = kind == 'f' && isz == 2, u8 = kind == 'u' && isz == 1;
  if (layout.empty()) {
    if (f32) return muvera::kFloat32;
    if (f16) return muvera::kFloat16;
    throw py::type_error("doc_tokens: expected float32 or float16 rows (codes need layout=, e.g. 'int8'), got " +
                         std::string(py::str(dtok.dtype())));
  }
  if (layout == "float32" && f32) return muvera::kFloat32;
  if (layout == "float16" && f16) return muvera::kFloat16;
  if (layout == "int8" && u8) return muvera::kInt8Scaled;
  if (layout != "float32" && layout != "float16" && layout != "int8")
    throw py::value_error("layout: expected '', 'float32', 'float16' or 'int8', got '" + layout + "'");
  throw py::type_error("doc_tokens: " + std::string(py::str(dtok.dtype())) + " rows do not hold layout '" + layout + "'");
}

ChamferArgs chamfer_args(const F32Array& qtok, const I64Array& qoff, const py::array& dtok, const I64Array& doff,
                         const std::optional<I64Array>& cand, const std::optional<U8Array>& alive,
                         const std::string& layout) {
  ChamferArgs a;
  if (dtok.ndim() != 2) throw py::value_error("doc_tokens: expected a 2-D (rows, d) array");
  const int dtype = store_layout(dtok, layout);
  const int d = static_cast<int>(dtok.shape(1)) - (dtype == muvera::kInt8Scaled ? 4 : 0);
  if (d <= 0) throw py::value_error("doc_tokens: expected d > 0 columns");
  if (!(dtok.flags() & py::array::c_style)) throw py::value_error("doc_tokens: expected a C-contiguous array");
  if (reinterpret_cast<uintptr_t>(dtok.data()) % static_cast<uintptr_t>(dtok.itemsize()) != 0)
    throw py::value_error("doc_tokens: the array is not aligned to its element size");
  if (qtok.ndim() != 2 || qtok.shape(1) != d)
    throw py::value_error("queries: expected a 2-D array with " + std::to_string(d) + " columns (the stored tokens' dimension)");
  check_offsets(qoff, qtok.shape(0), "query_offsets");
  if (doff.ndim() != 1 || doff.shape(0) < 1) throw py::value_error("doc_offsets: expected a 1-D array of n + 1 offsets");
  a.q = muvera::QueryBatchView{qtok.data(), qoff.data(), qoff.shape(0) - 1};
  a.s = muvera::TokenStoreView{dtok.data(), dtype, d, doff.data(), doff.shape(0) - 1};
  check_selection(a, doff, dtok.shape(0), cand, alive);
  return a;
}

// ---- residual codes ----------------------------------------------------------------------------
struct ResidualArgs {
  ChamferArgs c;
  muvera::ResidualTablesView t;
  const uint8_t* codes = nullptr;
};

ResidualArgs residual_args(const F32Array& qtok, const I64Array& qoff, const U8Array& codes, const I64Array& doff,
                           const std::optional<I64Array>& cand, const std::optional<U8Array>& alive,
                           const py::array& centroids, const F32Array& lo, const F32Array& step, int nbits) {
  if (nbits != 1 && nbits != 2 && nbits != 4 && nbits != 8) throw py::value_error("nbits: expected 1, 2, 4 or 8");
  if (centroids.dtype().kind() != 'f' || centroids.itemsize() != 2)
    throw py::type_error("centroids: expected float16 (the codec's stored table)");
  if (!(centroids.flags() & py::array::c_style) || reinterpret_cast<uintptr_t>(centroids.data()) % 2 != 0)
    throw py::value_error("centroids: expected a C-contiguous, aligned array");
  if (centroids.ndim() != 2 || centroids.shape(0) < 1 || centroids.shape(0) > 65536 || centroids.shape(1) < 1)
    throw py::value_error("centroids: expected a (K <= 65536, d) float16 array");
  const int d = static_cast<int>(centroids.shape(1));
  if (lo.ndim() != 1 || lo.shape(0) != d || step.ndim() != 1 || step.shape(0) != d)
    throw py::value_error("lo, step: expected " + std::to_string(d) + " values each");
  const int plane = (d * nbits + 7) / 8;
  if (codes.ndim() != 2 || codes.shape(1) != 2 + plane)
    throw py::value_error("codes: expected (rows, " + std::to_string(2 + plane) + ") uint8 residual rows");
  if (qtok.ndim() != 2 || qtok.shape(1) != d)
    throw py::value_error("queries: expected a 2-D array with " + std::to_string(d) + " columns");
  // The Chamfer checks on offsets, candidates and flags, with the codes seen as float32 rows of d.
  ResidualArgs a;
  check_offsets(qoff, qtok.shape(0), "query_offsets");
  if (doff.ndim() != 1 || doff.shape(0) < 1) throw py::value_error("doc_offsets: expected a 1-D array of n + 1 offsets");
  const int64_t n_docs = doff.shape(0) - 1;
  a.c.q = muvera::QueryBatchView{qtok.data(), qoff.data(), qoff.shape(0) - 1};
  a.c.s = muvera::TokenStoreView{codes.data(), muvera::kFloat32, d, doff.data(), n_docs};
  check_selection(a.c, doff, codes.shape(0), cand, alive);
  a.t = muvera::ResidualTablesView{static_cast<const uint16_t*>(centroids.data()), centroids.shape(0), lo.data(),
                                   step.data(), d, nbits, plane};
  a.codes = codes.data();
  return a;
}

// ---- encoder inputs ------------------------------------------------------------------------------
// Token items as the encoders read them: the views, their element type, and references that keep
// list items alive while the GIL is released.
struct Items {
  std::vector<ItemView> views;
  int dtype = muvera::kFloat32;
  std::vector<py::array> owned;
};

// Items [starts[i], starts[i] + lengths[i]) of one packed (rows, d) array, each range-checked.
Items packed_items(const py::array& tokens, const I64Array& starts, const I64Array& lengths, int d,
                   const std::string& what) {
  Items it;
  it.dtype = dtype_of(tokens, what);
  check_matrix(tokens, it.dtype, d, what);
  if (starts.ndim() != 1 || lengths.ndim() != 1 || starts.shape(0) != lengths.shape(0))
    throw py::value_error(what + ": starts and lengths must be 1-D arrays of equal length");
  const int64_t rows = tokens.shape(0), n = starts.shape(0);
  const int64_t isz = static_cast<int64_t>(itemsize_of(it.dtype));
  const int64_t stride = rows > 1 ? tokens.strides(0) / isz : d;
  const int64_t* st = starts.data();
  const int64_t* ln = lengths.data();
  it.views.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (st[i] < 0 || ln[i] < 0 || st[i] > rows || ln[i] > rows - st[i])
      throw py::value_error(what + ": item " + std::to_string(i) + " (start " + std::to_string(st[i]) + ", length " +
                            std::to_string(ln[i]) + ") is outside the " + std::to_string(rows) + " rows given");
    it.views[static_cast<size_t>(i)] = ItemView{static_cast<const char*>(tokens.data()) + st[i] * stride * isz, ln[i], stride};
  }
  return it;
}

// One item per (n_i, d) array of a list, all of one element type.
Items list_items(const py::list& arrays, int d, const std::string& what) {
  Items it;
  const int64_t n = static_cast<int64_t>(arrays.size());
  int dtype = -1;
  it.views.resize(static_cast<size_t>(n));
  it.owned.reserve(static_cast<size_t>(n));  // the list may change while the GIL is released
  for (int64_t i = 0; i < n; ++i) {
    const std::string name = what + "[" + std::to_string(i) + "]";
    if (!py::isinstance<py::array>(arrays[i])) throw py::type_error(name + ": expected a NumPy array");
    py::array a = py::reinterpret_borrow<py::array>(arrays[i]);
    const int item_dtype = dtype_of(a, name);
    if (dtype >= 0 && item_dtype != dtype) throw py::type_error(name + ": every item of one call must have the same dtype");
    dtype = item_dtype;
    check_matrix(a, dtype, d, name);
    const int64_t stride = a.shape(0) > 1 ? a.strides(0) / static_cast<py::ssize_t>(itemsize_of(dtype)) : d;
    it.views[static_cast<size_t>(i)] = ItemView{a.data(), a.shape(0), stride};
    it.owned.push_back(std::move(a));
  }
  if (dtype >= 0) it.dtype = dtype;
  return it;
}

// encode_packed and encode_list, the same for every encoder class: `dim(enc)` is its token
// dimension, `run(enc, views, dtype, is_document, num_threads, isa, what)` encodes.
template <typename Enc, typename Dim, typename Run>
void bind_encode(py::class_<Enc>& cls, Dim dim, Run run) {
  cls.def("encode_packed",
          [dim, run](const Enc& enc, py::array tokens, I64Array starts, I64Array lengths, bool is_document,
                     int num_threads, const std::string& isa, const std::string& what) {
            Items it = packed_items(tokens, starts, lengths, dim(enc), what);
            return run(enc, it.views, it.dtype, is_document, num_threads, isa, what);
          },
          py::arg("tokens"), py::arg("starts"), py::arg("lengths"), py::arg("is_document"),
          py::arg("num_threads") = 0, py::arg("isa") = "", py::arg("what") = "tokens")
      .def("encode_list",
           [dim, run](const Enc& enc, const py::list& arrays, bool is_document, int num_threads,
                      const std::string& isa, const std::string& what) {
             Items it = list_items(arrays, dim(enc), what);
             return run(enc, it.views, it.dtype, is_document, num_threads, isa, what);
           },
           py::arg("arrays"), py::arg("is_document"), py::arg("num_threads") = 0, py::arg("isa") = "",
           py::arg("what") = "items");
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "muvera C++ core: FDE encoding kernels with run-time SIMD dispatch";

  m.def("active_isa", []() { return std::string(muvera::active_dispatch().name); },
        "Name of the ISA level chosen for this CPU (generic, avx2, avx512 or avx512vnni).");
  m.def("supported_isas", []() {
    std::vector<std::string> out;
    for (const char* name : muvera::kIsaLevels)
      if (muvera::dispatch_by_name(name) != nullptr) out.emplace_back(name);
    return out;
  }, "ISA levels this CPU runs, lowest first.");
  m.def("default_num_threads", &muvera::default_num_threads);

  // A self-check of the shared thread pool (the tests call it from many threads and after a
  // fork): sums 0..n-1 over parallel_for; task `fail_at` throws, which must reach the caller.
  m.def("parallel_check",
        [](int64_t n, int num_threads, int64_t fail_at) {
          if (n < 0 || n > (int64_t(1) << 32)) throw py::value_error("n: expected 0 <= n <= 2**32");
          if (num_threads < 1 || num_threads > 1024) throw py::value_error("num_threads: expected 1..1024");
          std::atomic<int64_t> sum{0};
          std::vector<std::atomic<int>> used(static_cast<size_t>(num_threads));
          {
            py::gil_scoped_release release;
            muvera::parallel_for(n, num_threads, [&](int64_t t, int tid) {
              if (t == fail_at) throw std::runtime_error("task " + std::to_string(t) + " failed");
              sum += t;
              used[static_cast<size_t>(tid)] = 1;
            });
          }
          int threads = 0;
          for (auto& u : used) threads += u.load();
          return py::make_tuple(sum.load(), threads);
        },
        py::arg("n"), py::arg("num_threads"), py::arg("fail_at") = -1);

  py::class_<muvera::DataSyncWorker>(m, "DataSyncWorker",
                                     "A thread that runs fdatasync(fd) while the caller goes on (the write-ahead "
                                     "log's overlapped flush).")
      .def(py::init<>())
      .def("start",
           [](muvera::DataSyncWorker& w, int fd) {
             if (fd < 0) throw py::value_error("fd must be an open file descriptor (>= 0), got " + std::to_string(fd));
             if (!w.start(fd)) throw py::value_error("a started flush was not waited for yet");
           },
           py::arg("fd"))
      .def("wait",
           [](muvera::DataSyncWorker& w) {
             int err;
             {
               py::gil_scoped_release release;
               err = w.wait();
             }
             if (err != 0) {
               errno = err;
               PyErr_SetFromErrno(PyExc_OSError);  // an OSError with the flush's errno
               throw py::error_already_set();
             }
           },
           "Wait for the started flush; raises OSError with its errno if it failed.");

  m.def("chamfer_scores",
        [](F32Array qtok, I64Array qoff, py::array dtok, I64Array doff, std::optional<I64Array> cand,
           int num_threads, const std::string& isa, const std::string& layout) {
          ChamferArgs a = chamfer_args(qtok, qoff, dtok, doff, cand, std::nullopt, layout);
          const muvera::Dispatch& kernels = kernels_for(isa);
          py::array_t<float> out({a.q.n_queries, a.C});
          float* dst = out.mutable_data();
          if (num_threads <= 0) num_threads = muvera::default_num_threads();
          {
            py::gil_scoped_release release;
            muvera::chamfer_scores(a.q, a.s, a.cand, a.C, a.alive, dst, num_threads, kernels);
          }
          return out;
        },
        py::arg("query_tokens"), py::arg("query_offsets"), py::arg("doc_tokens"), py::arg("doc_offsets"),
        py::arg("candidates"), py::arg("num_threads") = 0, py::arg("isa") = "", py::arg("layout") = "",
        "Chamfer scores (n_queries, C) of queries against candidate documents (all if candidates is None).");

  m.def("chamfer_topk",
        [](F32Array qtok, I64Array qoff, py::array dtok, I64Array doff, std::optional<I64Array> cand,
           std::optional<U8Array> alive, int64_t k, int num_threads, const std::string& isa,
           const std::string& layout) {
          if (k <= 0) throw py::value_error("k: expected a positive int");
          ChamferArgs a = chamfer_args(qtok, qoff, dtok, doff, cand, alive, layout);
          if (a.q.n_queries > 0 && k > (int64_t(1) << 40) / a.q.n_queries)
            throw py::value_error("k: n_queries * k is too large to allocate");
          const muvera::Dispatch& kernels = kernels_for(isa);
          py::array_t<int64_t> rows({a.q.n_queries, k});
          py::array_t<float> scores({a.q.n_queries, k});
          int64_t* r = rows.mutable_data();
          float* sc = scores.mutable_data();
          if (num_threads <= 0) num_threads = muvera::default_num_threads();
          {
            py::gil_scoped_release release;
            muvera::chamfer_topk(a.q, a.s, a.cand, a.C, a.alive, k, r, sc, num_threads, kernels);
          }
          return py::make_tuple(rows, scores);
        },
        py::arg("query_tokens"), py::arg("query_offsets"), py::arg("doc_tokens"), py::arg("doc_offsets"),
        py::arg("candidates"), py::arg("alive"), py::arg("k"), py::arg("num_threads") = 0, py::arg("isa") = "",
        py::arg("layout") = "",
        "Exact Chamfer top-k: (rows, scores), each (n_queries, k); -1 / -inf where fewer qualified.");

  m.def("code8_refine_topk",
        [](F32Array queries, I64Array rows, U8Array codes, F32Array vmin, F32Array vdiff, int64_t k,
           int num_threads, const std::string& isa) {
          if (queries.ndim() != 2) throw py::value_error("queries: expected a 2-D float32 array (n_queries, dim)");
          if (rows.ndim() != 2 || rows.shape(0) != queries.shape(0))
            throw py::value_error("rows: expected a 2-D int64 array (n_queries, K)");
          if (codes.ndim() != 2 || codes.shape(1) != queries.shape(1))
            throw py::value_error("codes: expected a 2-D uint8 array (n, dim) with the queries' dim");
          const int64_t dim = queries.shape(1), nq = queries.shape(0), K = rows.shape(1), n = codes.shape(0);
          if (vmin.ndim() != 1 || vmin.shape(0) != dim || vdiff.ndim() != 1 || vdiff.shape(0) != dim)
            throw py::value_error("vmin, vdiff: expected 1-D float32 arrays of the queries' dim");
          if (dim > std::numeric_limits<int32_t>::max()) throw py::value_error("queries: dim too large");
          if (k <= 0) throw py::value_error("k: expected a positive int");
          const int64_t* r = rows.data();
          for (int64_t i = 0; i < nq * K; ++i)
            if (r[i] < -1 || r[i] >= n) throw py::value_error("rows: expected values in [-1, n) (-1 = none)");
          const muvera::Dispatch& kernels = kernels_for(isa);
          py::array_t<int64_t> out_rows({nq, k});
          py::array_t<float> out_scores({nq, k});
          int64_t* orow = out_rows.mutable_data();
          float* osc = out_scores.mutable_data();
          if (num_threads <= 0) num_threads = muvera::default_num_threads();
          {
            py::gil_scoped_release release;
            std::vector<float> scores(static_cast<size_t>(nq * K));
            muvera::Code8View view{codes.data(), n, dim, vmin.data(), vdiff.data()};
            muvera::code8_scores(queries.data(), nq, r, K, view, scores.data(), num_threads, kernels);
            muvera::select_topk(scores.data(), r, nq, K, k, orow, osc, num_threads);
          }
          return py::make_tuple(out_rows, out_scores);
        },
        py::arg("queries"), py::arg("rows"), py::arg("codes"), py::arg("vmin"), py::arg("vdiff"), py::arg("k"),
        py::arg("num_threads") = 0, py::arg("isa") = "",
        "Refine: the top-k (rows, scores) of each query's candidate rows (-1 = none) by inner product with "
        "8-bit codes (faiss SQ8: vmin + (code + 0.5) / 255 * vdiff), over the query's non-zero dims only.");

  // ---- residual codes --------------------------------------------------------------------------
  m.def("residual_scores",
        [](F32Array qtok, I64Array qoff, U8Array codes, I64Array doff, std::optional<I64Array> cand,
           py::array centroids, F32Array lo, F32Array step, int nbits, int num_threads, const std::string& isa) {
          ResidualArgs a = residual_args(qtok, qoff, codes, doff, cand, std::nullopt, centroids, lo, step, nbits);
          const muvera::ResidualKernelSet& kernels = kernels_for(isa).residual;
          py::array_t<float> out({a.c.q.n_queries, a.c.C});
          float* dst = out.mutable_data();
          if (num_threads <= 0) num_threads = muvera::default_num_threads();
          bool ok;
          {
            py::gil_scoped_release release;
            ok = muvera::residual_scores(a.c.q, a.t, a.codes, a.c.s.offsets, a.c.s.n_docs, a.c.cand, a.c.C, nullptr,
                                         dst, num_threads, kernels);
          }
          if (!ok) throw py::value_error("codes: a centroid id is outside the codec's centroid table");
          return out;
        },
        py::arg("query_tokens"), py::arg("query_offsets"), py::arg("codes"), py::arg("doc_offsets"),
        py::arg("candidates"), py::arg("centroids"), py::arg("lo"), py::arg("step"), py::arg("nbits"),
        py::arg("num_threads") = 0, py::arg("isa") = "",
        "Residual-code Chamfer scores (n_queries, C) (all documents if candidates is None).");
  m.def("residual_topk",
        [](F32Array qtok, I64Array qoff, U8Array codes, I64Array doff, std::optional<I64Array> cand,
           std::optional<U8Array> alive, py::array centroids, F32Array lo, F32Array step, int nbits, int64_t k,
           int num_threads, const std::string& isa) {
          if (k <= 0) throw py::value_error("k: expected a positive int");
          ResidualArgs a = residual_args(qtok, qoff, codes, doff, cand, alive, centroids, lo, step, nbits);
          const int64_t nq = a.c.q.n_queries, C = a.c.C;
          if (nq > 0 && (k > (int64_t(1) << 40) / nq || C > (int64_t(1) << 40) / nq))
            throw py::value_error("k, candidates: n_queries * width is too large to allocate");
          const muvera::ResidualKernelSet& kernels = kernels_for(isa).residual;
          py::array_t<int64_t> rows({nq, k});
          py::array_t<float> scores({nq, k});
          int64_t* r = rows.mutable_data();
          float* sc = scores.mutable_data();
          if (num_threads <= 0) num_threads = muvera::default_num_threads();
          bool ok;
          {
            py::gil_scoped_release release;
            std::vector<float> all(static_cast<size_t>(nq * C));
            ok = muvera::residual_scores(a.c.q, a.t, a.codes, a.c.s.offsets, a.c.s.n_docs, a.c.cand, C, a.c.alive,
                                         all.data(), num_threads, kernels);
            if (ok) muvera::select_topk(all.data(), a.c.cand, nq, C, k, r, sc, num_threads);
          }
          if (!ok) throw py::value_error("codes: a centroid id is outside the codec's centroid table");
          return py::make_tuple(rows, scores);
        },
        py::arg("query_tokens"), py::arg("query_offsets"), py::arg("codes"), py::arg("doc_offsets"),
        py::arg("candidates"), py::arg("alive"), py::arg("centroids"), py::arg("lo"), py::arg("step"),
        py::arg("nbits"), py::arg("k"), py::arg("num_threads") = 0, py::arg("isa") = "",
        "Top-k on residual codes: (rows, scores), each (n_queries, k); -1 / -inf where fewer qualified.");
  // ---- end residual codes ----------------------------------------------------------------------

  // ---- the centroid-interaction prune (prune.h) ------------------------------------------------
  m.def("centroid_bags",
        [](U8Array codes, I64Array doff, int64_t begin, int64_t end, int64_t k) {
          if (codes.ndim() != 2 || codes.shape(1) < 2)
            throw py::value_error("codes: expected a 2-D uint8 array of residual code rows (a 2-byte centroid id first)");
          if (k < 1 || k > 65536) throw py::value_error("k: expected the codec's centroid count, in [1, 65536]");
          check_offsets(doff, codes.shape(0), "doc_offsets");
          const int64_t n_docs = doff.shape(0) - 1;
          if (begin < 0 || end < begin || end > n_docs)
            throw py::value_error("begin, end: expected 0 <= begin <= end <= " + std::to_string(n_docs));
          const int64_t* o = doff.data();
          for (int64_t j = begin; j < end; ++j)
            if (o[j + 1] == o[j]) throw py::value_error("doc_offsets: document " + std::to_string(j) + " has no tokens");
          std::vector<uint16_t> ids;
          py::array_t<int64_t> lengths(end - begin);
          int64_t bad;
          {
            py::gil_scoped_release release;
            ids.reserve(static_cast<size_t>(o[end] - o[begin]));
            bad = muvera::build_bags(codes.data(), codes.shape(1), o, begin, end, k, ids, lengths.mutable_data());
          }
          if (bad >= 0)
            throw py::value_error("codes: document " + std::to_string(bad) + " holds a centroid id >= " + std::to_string(k));
          py::array_t<uint16_t> out(static_cast<py::ssize_t>(ids.size()));
          if (!ids.empty()) std::memcpy(out.mutable_data(), ids.data(), ids.size() * sizeof(uint16_t));
          return py::make_tuple(out, lengths);
        },
        py::arg("codes"), py::arg("doc_offsets"), py::arg("begin"), py::arg("end"), py::arg("k"),
        "Bags of documents [begin, end): (ids uint16, lengths int64), each document's distinct centroid ids ascending.");
  m.def("residual_prune_topk",
        [](F32Array qtok, I64Array qoff, U8Array codes, I64Array doff, I64Array wide,
           py::array_t<uint16_t, py::array::c_style> bag_ids, I64Array bag_off, py::array centroids, F32Array lo,
           F32Array step, int nbits, int64_t keep, int64_t k, int num_threads, const std::string& isa) {
          if (keep <= 0) throw py::value_error("keep: expected a positive int");
          if (k < 0 || k > keep) throw py::value_error("k: expected 0 (the kept rows and their bag scores) or 1..keep");
          ResidualArgs a = residual_args(qtok, qoff, codes, doff, wide, std::nullopt, centroids, lo, step, nbits);
          const int64_t nq = a.c.q.n_queries, C = a.c.C, n_docs = a.c.s.n_docs;
          if (nq > 0 && keep > (int64_t(1) << 40) / nq) throw py::value_error("keep: n_queries * keep is too large");
          if (bag_ids.ndim() != 1) throw py::value_error("bag_ids: expected a 1-D uint16 array");
          if (bag_off.ndim() != 1 || bag_off.shape(0) != n_docs + 1)
            throw py::value_error("bag_offsets: expected one offset per document + 1 (" + std::to_string(n_docs + 1) + ")");
          const int64_t* bo = bag_off.data();
          const uint16_t* ids = bag_ids.data();
          const int64_t n_ids = bag_ids.shape(0);
          for (py::ssize_t x = 0; x < wide.size(); ++x) {  // the candidates' bags only: the cost follows them
            const int64_t j = a.c.cand[x];
            if (j < 0) continue;
            if (bo[j] < 0 || bo[j + 1] <= bo[j] || bo[j + 1] > n_ids)
              throw py::value_error("bag_offsets: the bag of document " + std::to_string(j) + " is empty or outside bag_ids");
          }  // the ids themselves are checked against the table by residual_prune, GIL released
          const muvera::Dispatch& kernels = kernels_for(isa);
          const int64_t width = k == 0 ? keep : k;
          py::array_t<int64_t> out_rows({nq, width});
          py::array_t<float> out_scores({nq, width});
          int64_t* orow = out_rows.mutable_data();
          float* osc = out_scores.mutable_data();
          if (num_threads <= 0) num_threads = muvera::default_num_threads();
          bool ok;
          {
            py::gil_scoped_release release;
            muvera::BagView bags{ids, bo, n_docs};
            if (k == 0) {
              ok = muvera::residual_prune(a.c.q, a.t, a.codes, a.c.s.offsets, bags, a.c.cand, C, keep, orow, osc,
                                          nullptr, num_threads, kernels);
            } else {
              std::vector<int64_t> kept(static_cast<size_t>(nq * keep));
              std::vector<float> scores(static_cast<size_t>(nq * keep));
              ok = muvera::residual_prune(a.c.q, a.t, a.codes, a.c.s.offsets, bags, a.c.cand, C, keep, kept.data(),
                                          nullptr, scores.data(), num_threads, kernels);
              if (ok) muvera::select_topk(scores.data(), kept.data(), nq, keep, k, orow, osc, num_threads);
            }
          }
          if (!ok)
            throw py::value_error("bag_ids / codes: a candidate holds a centroid id outside the codec's " +
                                  std::to_string(a.t.K) + " centroids");
          return py::make_tuple(out_rows, out_scores);
        },
        py::arg("query_tokens"), py::arg("query_offsets"), py::arg("codes"), py::arg("doc_offsets"),
        py::arg("candidates"), py::arg("bag_ids"), py::arg("bag_offsets"), py::arg("centroids"), py::arg("lo"),
        py::arg("step"), py::arg("nbits"), py::arg("keep"), py::arg("k"), py::arg("num_threads") = 0,
        py::arg("isa") = "",
        "The centroid-interaction prune on residual codes: of each query's candidates, the keep best by bag score "
        "(sum over query tokens of the max q . centroid over the document's distinct centroids), then with k > 0 "
        "their residual Chamfer top-k (rows, scores), each (n_queries, k), as residual_topk would rank them; with "
        "k = 0 the kept rows and their bag scores, each (n_queries, keep), best first; -1 / -inf padded.");

  py::class_<FdeEncoder> fde_encoder(m, "FdeEncoder");
  fde_encoder
      .def(py::init([](int dimension, int num_repetitions, int num_simhash_projections, int32_t seed,
                       bool ams_sketch, int projection_dimension, bool fill_empty_partitions,
                       int64_t final_projection_dimension) {
             // The Python layer validates with friendlier messages; these guard the C++ invariants.
             if (dimension <= 0) throw py::value_error("dimension must be > 0");
             if (num_repetitions <= 0) throw py::value_error("num_repetitions must be > 0");
             if (num_simhash_projections < 0 || num_simhash_projections > 30)
               throw py::value_error("num_simhash_projections must be in [0, 30]");
             if (ams_sketch && projection_dimension <= 0)
               throw py::value_error("projection_dimension must be > 0 with the AMS sketch");
             if (final_projection_dimension < 0 || final_projection_dimension > (int64_t(1) << 32))
               throw py::value_error("final_projection_dimension must be in [0, 2^32]");
             const int64_t p = ams_sketch ? projection_dimension : dimension;
             const int64_t fde = static_cast<int64_t>(num_repetitions) * (int64_t(1) << num_simhash_projections) * p;
             if (fde > (int64_t(1) << 31))
               throw py::value_error("num_repetitions * 2^num_simhash_projections * width exceeds 2^31 floats");
             FdeConfig c;
             c.dimension = dimension;
             c.num_repetitions = num_repetitions;
             c.num_simhash_projections = num_simhash_projections;
             c.seed = seed;
             c.ams_sketch = ams_sketch;
             c.projection_dimension = projection_dimension;
             c.fill_empty_partitions = fill_empty_partitions;
             c.final_projection_dimension = final_projection_dimension;
             py::gil_scoped_release release;  // table generation can take a while for big configs
             return new FdeEncoder(c);
           }),
           py::arg("dimension"), py::arg("num_repetitions"), py::arg("num_simhash_projections"),
           py::arg("seed"), py::arg("ams_sketch"), py::arg("projection_dimension"),
           py::arg("fill_empty_partitions"), py::arg("final_projection_dimension"))
      .def_property_readonly("output_dimension", &FdeEncoder::output_dimension)
      .def("tables", [](const FdeEncoder& enc) {
        // Copies of the random tables, for tests against the NumPy reference.
        const muvera::FdeTablesView& t = enc.tables();
        py::dict out;
        py::array_t<float> gauss({t.d, t.R * t.k});
        for (int r = 0; r < t.d; ++r)
          for (int j = 0; j < t.R * t.k; ++j) gauss.mutable_at(r, j) = t.gauss[static_cast<int64_t>(r) * t.rk_pad + j];
        out["gauss"] = gauss;
        if (!t.identity) {
          out["ams_col"] = py::array_t<int32_t>({t.R, t.d}, t.ams_col);
          out["ams_sign"] = py::array_t<float>({t.R, t.d}, t.ams_sign);
        }
        if (t.final_dim > 0) {
          out["cs_index"] = py::array_t<uint32_t>({t.fde_dim}, t.cs_index);
          out["cs_sign"] = py::array_t<float>({t.fde_dim}, t.cs_sign);
        }
        return out;
      });
  bind_encode(
      fde_encoder, [](const FdeEncoder& enc) { return enc.tables().d; },
      [](const FdeEncoder& enc, std::vector<ItemView>& items, int dtype, bool is_document, int num_threads,
         const std::string& isa, const std::string& what) {
        return run_encode(enc, items, dtype, is_document, num_threads, kernels_for(isa).core, what);
      });

  // ---- fastembed variant: FDEConfig(variant="fastembed"), cpp/fde_fastembed.h --------------------
  // The random matrices come from Python (muvera/reference_fastembed.py); encode_packed and
  // encode_list take the same arguments as FdeEncoder's, so FDEEncoder drives either class.
  {
    using FE = muvera::FastembedEncoder;
    using F64Array = py::array_t<double, py::array::c_style | py::array::forcecast>;
    auto run = [](const FE& enc, std::vector<ItemView>& items, int dtype, bool is_document, int num_threads,
                  const std::string& isa, const std::string& what) {
      return run_encode(enc, items, dtype, is_document, num_threads, kernels_for(isa).fastembed_item, what);
    };
    py::class_<FE> fastembed(m, "FastembedEncoder");
    fastembed
        .def(py::init([](F64Array simhash, std::optional<F64Array> projection, bool fill_empty_partitions) {
               if (simhash.ndim() != 3) throw py::value_error("simhash: expected an (R, d, k) float64 array");
               const int64_t R = simhash.shape(0), d = simhash.shape(1), k = simhash.shape(2);
               if (R < 1 || R > (1 << 20) || d < 1 || d > (1 << 20) || k > 30)
                 throw py::value_error("simhash: expected 1 <= R <= 2^20, 1 <= d <= 2^20 and k <= 30");
               int64_t p = d;
               if (projection) {
                 const F64Array& P = *projection;
                 if (P.ndim() != 3 || P.shape(0) != R || P.shape(1) != d || P.shape(2) < 1 || P.shape(2) > d)
                   throw py::value_error("projection: expected an (R, d, p) array, 1 <= p <= d, matching simhash");
                 p = P.shape(2);
               }
               if (R * (int64_t(1) << k) * p > (int64_t(1) << 31))
                 throw py::value_error("R * 2^k * p exceeds 2^31 floats");
               for (const F64Array* a : {&simhash, projection ? &*projection : nullptr}) {
                 if (a == nullptr) continue;
                 const double* v = a->data();
                 for (py::ssize_t i = 0; i < a->size(); ++i)
                   if (!(v[i] - v[i] == 0.0)) throw py::value_error("simhash/projection: values must be finite");
               }
               return new FE(static_cast<int>(d), static_cast<int>(R), static_cast<int>(k), static_cast<int>(p),
                             simhash.data(), projection ? projection->data() : nullptr, fill_empty_partitions);
             }),
             py::arg("simhash"), py::arg("projection"), py::arg("fill_empty_partitions"),
             "simhash (R, d, k) and projection (R, d, p) or None (no projection); see fde_fastembed.h.")
        .def_property_readonly("output_dimension", &FE::output_dimension);
    bind_encode(fastembed, [](const FE& enc) { return enc.dimension(); }, run);
  }
  // ---- end of fastembed variant -------------------------------------------------------------------
}
