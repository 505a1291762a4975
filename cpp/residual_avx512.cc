// avx512 build of the residual-code kernels (flags set per file in CMakeLists.txt).
#define MUVERA_RES_NS res_avx512
#define MUVERA_RES_NAME "avx512"
#define MUVERA_RES_LEVEL 2
#include "residual_impl.h"

namespace muvera {
const ResidualKernelSet& residual_avx512() { return res_avx512::kernels(); }
}  // namespace muvera
