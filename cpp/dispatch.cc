// Run-time ISA selection: the best kernel set the CPU (and OS) supports, chosen once.
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace muvera {

bool cpu_supports(const char* isa) {
#if defined(MUVERA_X86)
  __builtin_cpu_init();
  if (std::strcmp(isa, "avx512vnni") == 0) return cpu_supports("avx512") && __builtin_cpu_supports("avx512vnni");
  if (std::strcmp(isa, "avx512") == 0)
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  if (std::strcmp(isa, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
           __builtin_cpu_supports("f16c");
#endif
  return std::strcmp(isa, "generic") == 0;
}

namespace {

const KernelSet& choose() {
  const char* forced = std::getenv("MUVERA_ISA");
  if (forced != nullptr && *forced != '\0') {
    if (const KernelSet* k = kernels_by_name(forced)) return *k;
  }
#if defined(MUVERA_X86)
  if (cpu_supports("avx512")) return avx512_kernels();
  if (cpu_supports("avx2")) return avx2_kernels();
#endif
  return generic_kernels();
}

}  // namespace

const KernelSet* kernels_by_name(const char* name) {
  if (!cpu_supports(name)) return nullptr;
#if defined(MUVERA_X86)
  // The FDE/Chamfer kernels have no VNNI build: "avx512vnni" (a residual-kernel level) uses avx512.
  if (std::strcmp(name, "avx512") == 0 || std::strcmp(name, "avx512vnni") == 0) return &avx512_kernels();
  if (std::strcmp(name, "avx2") == 0) return &avx2_kernels();
#endif
  return &generic_kernels();
}

const KernelSet& active_kernels() {
  static const KernelSet& chosen = choose();
  return chosen;
}

}  // namespace muvera
