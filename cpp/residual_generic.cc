// generic build of the residual-code kernels (flags set per file in CMakeLists.txt).
#define MUVERA_RES_NS res_generic
#define MUVERA_RES_NAME "generic"
#define MUVERA_RES_LEVEL 0
#include "residual_impl.h"

namespace muvera {
const ResidualKernelSet& residual_generic() { return res_generic::kernels(); }
}  // namespace muvera
