// avx2 build of the residual-code kernels (flags set per file in CMakeLists.txt).
#define MUVERA_RES_NS res_avx2
#define MUVERA_RES_NAME "avx2"
#define MUVERA_RES_LEVEL 1
#include "residual_impl.h"

namespace muvera {
const ResidualKernelSet& residual_avx2() { return res_avx2::kernels(); }
}  // namespace muvera
