// A row's team: the CTAs that select one row together. A long row is cut into one slice per CTA of a
// thread-block cluster; each CTA holds its slice in its own shared memory, and the team agrees on
// every radix digit by summing the CTAs' histograms through distributed shared memory. The selection
// is then written straight to the output: each CTA learns how many keys the CTAs of lower rank (lower
// columns) select and writes its own at that offset, so no candidate list and no merge step exist.
//
// Cluster CTAs are co-scheduled by the hardware, so they may wait for each other (SPEC §4); CTAs of
// different clusters never do. A solo CTA is a team of one and touches no cluster barrier.
#pragma once
#include <cstdint>
#include <cooperative_groups.h>

namespace persistent_topk {

// Distributed shared memory by 32-bit shared::cluster addresses, mapped where they are read: generic
// 64-bit pointers from map_shared_rank() are loop-invariant, so the compiler hoisted one per CTA of
// the team and object out of the kernel's loops and spilled them.
__device__ __forceinline__ uint32_t cluster_address(const void* local, int rank) {
  const uint32_t shared = static_cast<uint32_t>(__cvta_generic_to_shared(local));
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(shared), "r"(rank));
  return remote;
}
__device__ __forceinline__ uint32_t load_cluster_u32(uint32_t address) {
  uint32_t value;
  asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(value) : "r"(address) : "memory");
  return value;
}
__device__ __forceinline__ void store_cluster_u32(uint32_t address, uint32_t value) {
  asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(address), "r"(value) : "memory");
}
__device__ __forceinline__ uint2 load_cluster_u32x2(uint32_t address) {
  uint2 value;
  asm volatile("ld.shared::cluster.v2.u32 {%0, %1}, [%2];" : "=r"(value.x), "=r"(value.y) : "r"(address) : "memory");
  return value;
}

// Cluster barrier halves, called by every thread of the CTA. The non-.aligned forms: a warp may reach
// them diverged (a lane-0 store just before, a loop whose trip count differs by lane), which the
// .aligned forms leave undefined. A release arrive compiles to a GPU-scope memory barrier
// (MEMBAR.ALL.GPU, which waits for every store in flight, global ones included), so only publish()
// pays for one; an arrive that only says "my reads of the others' shared memory are done" is relaxed:
// the values read are already in registers and used.
__device__ __forceinline__ void cluster_arrive_release() { asm volatile("barrier.cluster.arrive.release;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory"); }

struct Team {
  // The largest team: remote reads are unrolled to this many CTAs so that they are all in flight at
  // once (a distributed shared memory round trip costs hundreds of cycles; one after another they
  // cost microseconds per exchange).
  static constexpr int kMaxSize = 8;
  int size;  // CTAs selecting this row: 1 (solo) or the cluster size
  // This CTA has said it finished reading the others' published state (barrier arrive) but has not
  // yet waited for the others to say the same; nothing published may be overwritten until it has.
  bool reading_released;

  __device__ __forceinline__ static Team solo() { return Team{1, false}; }
  __device__ __forceinline__ static Team of_cluster(int size) { return Team{size, false}; }
  // This CTA's slice: slices of lower rank hold lower columns. Read from the hardware where needed
  // rather than held in a register through the selection.
  __device__ __forceinline__ int rank() const {
    return size == 1 ? 0 : static_cast<int>(cooperative_groups::this_cluster().block_rank());
  }

  // Every CTA has written what it publishes (shared-memory histogram, counts) and may read the others'.
  // Also a barrier for this CTA's own threads.
  __device__ __forceinline__ void publish() {
    if (size == 1) {
      __syncthreads();
      return;
    }
    reclaim();
    cluster_arrive_release();
    cluster_wait();
  }
  // This CTA's reads of the others' published state are complete (arrive now, wait in reclaim()).
  // Call only after the values read have been used (the arrive is relaxed).
  __device__ __forceinline__ void release_reads() {
    if (size == 1) return;
    cluster_arrive_relaxed();
    reading_released = true;
  }
  // Before overwriting anything published: every CTA has finished reading it.
  __device__ __forceinline__ void reclaim() {
    if (size == 1 || !reading_released) return;
    cluster_wait();
    reading_released = false;
  }

  // Writes `value` to one shared-memory word at the same place in every CTA of the team (this one
  // included); the next publish() makes it visible to them.
  __device__ __forceinline__ void broadcast_word(uint32_t* local, uint32_t value) const {
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) {
      if (r < size) store_cluster_u32(cluster_address(local, r), value);
    }
  }

  // Sum over the team of one shared-memory word / 8-byte-aligned pair at the same place in every CTA.
  __device__ __forceinline__ uint32_t sum_words(const uint32_t* local) const {
    uint32_t c[kMaxSize];
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) c[r] = r < size ? load_cluster_u32(cluster_address(local, r)) : 0u;
    uint32_t sum = 0;
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) sum += c[r];
    return sum;
  }
  __device__ __forceinline__ uint2 sum_pairs(const uint32_t* local) const {
    uint2 c[kMaxSize];
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) c[r] = r < size ? load_cluster_u32x2(cluster_address(local, r)) : make_uint2(0, 0);
    uint2 sum = make_uint2(0, 0);
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) {
      sum.x += c[r].x;
      sum.y += c[r].y;
    }
    return sum;
  }

  // (above, at) summed over the CTAs of lower rank, given this CTA's own; `slot` is shared memory
  // that the team reads. Called by every thread of the CTA: in every warp, lane r reads rank r's
  // slot if r is below this CTA's rank, and lanes 0..kMaxSize-1 are summed (one remote load per lane).
  __device__ __forceinline__ uint2 lower_ranks_total(uint2* slot, uint32_t above, uint32_t at) {
    if (size == 1) return make_uint2(0, 0);
    reclaim();
    if (threadIdx.x == 0) *slot = make_uint2(above, at);
    publish();
    const int lane = threadIdx.x % 32;
    uint2 before = lane < rank() ? load_cluster_u32x2(cluster_address(slot, lane)) : make_uint2(0, 0);
#pragma unroll
    for (int offset = 1; offset < kMaxSize; offset <<= 1) {
      before.x += __shfl_xor_sync(0xFFFFFFFFu, before.x, offset);
      before.y += __shfl_xor_sync(0xFFFFFFFFu, before.y, offset);
    }
    before = make_uint2(__shfl_sync(0xFFFFFFFFu, before.x, 0), __shfl_sync(0xFFFFFFFFu, before.y, 0));
    release_reads();  // after the loaded values are used: the loads have completed
    return before;
  }
};

}  // namespace persistent_topk
