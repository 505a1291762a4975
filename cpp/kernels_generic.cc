// generic build of the kernels (flags set per file in CMakeLists.txt).
#define MUVERA_ISA_NS isa_generic
#define MUVERA_ISA_NAME "generic"
#define MUVERA_LANES 4
#include "kernels_impl.h"

namespace muvera {
const KernelSet& generic_kernels() { return isa_generic::kernels(); }
}  // namespace muvera
