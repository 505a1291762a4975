// avx512 build of the kernels (flags set per file in CMakeLists.txt).
#define MUVERA_ISA_NS isa_avx512
#define MUVERA_ISA_NAME "avx512"
#define MUVERA_LANES 16
#include "kernels_impl.h"

namespace muvera {
const KernelSet& avx512_kernels() { return isa_avx512::kernels(); }
}  // namespace muvera
