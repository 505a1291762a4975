// Run-time ISA selection (cpp/dispatch.h): the tables are filled once, on first use.
#include "dispatch.h"

#include <cstdlib>
#include <cstring>

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

const Dispatch* dispatch_by_name(const char* name) {
  if (name == nullptr || !cpu_supports(name)) return nullptr;
  static const Dispatch generic{"generic", generic_kernels(), residual_generic(), fastembed_item_generic};
#if defined(MUVERA_X86)
  // The FDE, Chamfer and fastembed kernels have no VNNI build: that level differs in its integer
  // (residual and int8) kernels only.
  static const Dispatch avx2{"avx2", avx2_kernels(), residual_avx2(), fastembed_item_avx2};
  static const Dispatch avx512{"avx512", avx512_kernels(), residual_avx512(), fastembed_item_avx512};
  static const Dispatch avx512vnni{"avx512vnni", avx512_kernels(), residual_avx512vnni(), fastembed_item_avx512};
  if (std::strcmp(name, "avx512vnni") == 0) return &avx512vnni;
  if (std::strcmp(name, "avx512") == 0) return &avx512;
  if (std::strcmp(name, "avx2") == 0) return &avx2;
#endif
  return &generic;
}

namespace {

const Dispatch& choose() {
  const char* forced = std::getenv("MUVERA_ISA");
  if (forced != nullptr && *forced != '\0') {
    if (const Dispatch* d = dispatch_by_name(forced)) return *d;
  }
  const Dispatch* best = dispatch_by_name("generic");
  for (const char* name : kIsaLevels)
    if (const Dispatch* d = dispatch_by_name(name)) best = d;
  return *best;
}

}  // namespace

const Dispatch& active_dispatch() {
  static const Dispatch& chosen = choose();
  return chosen;
}

}  // namespace muvera
