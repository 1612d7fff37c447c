// Phase timestamps for performance diagnosis with the ctypes harness (benchmarks/harness): compiled in
// only with -DPERSISTENT_TOPK_STAMPS. Thread 0 of each of the first kStampCtas CTAs records clock64()
// at numbered points; a slot keeps the CTA's latest visit. The product build has none of it.
#pragma once

#ifdef PERSISTENT_TOPK_STAMPS
namespace persistent_topk {
constexpr int kStampCtas = 16;
constexpr int kStampSlots = 16;
__device__ long long stamps[kStampCtas][kStampSlots];
}  // namespace persistent_topk
#define PERSISTENT_TOPK_STAMP(slot)                                                      \
  do {                                                                                   \
    if (threadIdx.x == 0 && blockIdx.x < persistent_topk::kStampCtas)                    \
      persistent_topk::stamps[blockIdx.x][slot] = clock64();                             \
  } while (0)
#else
#define PERSISTENT_TOPK_STAMP(slot) \
  do {                              \
  } while (0)
#endif
