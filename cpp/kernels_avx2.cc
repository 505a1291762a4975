// avx2 build of the kernels (flags set per file in CMakeLists.txt).
#define MUVERA_ISA_NS isa_avx2
#define MUVERA_ISA_NAME "avx2"
#define MUVERA_LANES 8
#include "kernels_impl.h"

namespace muvera {
const KernelSet& avx2_kernels() { return isa_avx2::kernels(); }
}  // namespace muvera
