// Phase timestamps for performance diagnosis with the ctypes harness (benchmarks/harness): compiled in
// only with -DPERSISTENT_TOPK_STAMPS. Thread 0 of each of the first kStampCtas CTAs records clock64()
// at numbered points; a slot keeps the CTA's latest visit. The product build has none of it.
#pragma once

#ifdef PERSISTENT_TOPK_STAMPS
namespace persistent_topk {
constexpr int kStampCtas = 16;
constexpr int kStampSlots = 16;
__device__ long long stamps[kStampCtas][kStampSlots];
// The launch's span on the global timer (ns): the earliest CTA start (slot 0) and the latest CTA end
// (slot kStampEnd), over every CTA.
constexpr int kStampEnd = 11;
__device__ unsigned long long span[2];
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
}  // namespace persistent_topk
#define PERSISTENT_TOPK_STAMP(slot)                                                      \
  do {                                                                                   \
    if (threadIdx.x == 0 && blockIdx.x < persistent_topk::kStampCtas)                    \
      persistent_topk::stamps[blockIdx.x][slot] = clock64();                             \
    if (threadIdx.x == 0 && (slot) == 0) atomicMin(&persistent_topk::span[0], persistent_topk::global_ns()); \
    if (threadIdx.x == 0 && (slot) == persistent_topk::kStampEnd)                        \
      atomicMax(&persistent_topk::span[1], persistent_topk::global_ns());                \
  } while (0)
#else
#define PERSISTENT_TOPK_STAMP(slot) \
  do {                              \
  } while (0)
#endif
