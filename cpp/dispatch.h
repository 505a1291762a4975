// The one dispatch table: every kernel an ISA level runs (FDE encode, Chamfer over float32 /
// float16 / int8 rows, fastembed FDE, residual codes, the int8 integer rerank), filled once per
// level and chosen once per process. Nothing else picks a kernel by ISA.
#pragma once

#include "fde_fastembed.h"
#include "kernels.h"
#include "residual.h"

namespace muvera {

struct Dispatch {
  const char* name;                    // "generic", "avx2", "avx512" or "avx512vnni"
  const KernelSet& core;               // FDE encode and Chamfer (kernels_<isa>.cc)
  const ResidualKernelSet& residual;   // residual codes and int8 rows (residual_<isa>.cc)
  FastembedItemFn fastembed_item;      // fastembed FDE of one item (fde_fastembed.cc)
};

// Every level, lowest first (whether or not this CPU runs it).
constexpr const char* kIsaLevels[] = {"generic", "avx2", "avx512", "avx512vnni"};

// Whether this CPU (and OS) runs a level.
bool cpu_supports(const char* isa);

// The best level this CPU runs, chosen once; MUVERA_ISA=<level> overrides.
const Dispatch& active_dispatch();
// A level by name; nullptr if unknown or not supported here.
const Dispatch* dispatch_by_name(const char* name);

}  // namespace muvera
