// avx512vnni build of the residual-code kernels (flags set per file in CMakeLists.txt).
#define MUVERA_RES_NS res_avx512vnni
#define MUVERA_RES_NAME "avx512vnni"
#define MUVERA_RES_LEVEL 3
#include "residual_impl.h"

namespace muvera {
const ResidualKernelSet& residual_avx512vnni() { return res_avx512vnni::kernels(); }
}  // namespace muvera
