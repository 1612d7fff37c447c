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

struct Team {
  // The largest team: remote reads are unrolled to this many CTAs so that they are all in flight at
  // once (a distributed shared memory round trip costs hundreds of cycles; one after another they
  // cost microseconds per exchange).
  static constexpr int kMaxSize = 8;
  int size;  // CTAs selecting this row: 1 (solo) or the cluster size
  int rank;  // this CTA's slice: slices of lower rank hold lower columns
  // This CTA has said it finished reading the others' published state (barrier arrive) but has not
  // yet waited for the others to say the same; nothing published may be overwritten until it has.
  bool reading_released;

  __device__ __forceinline__ static Team solo() { return Team{1, 0, false}; }
  __device__ __forceinline__ static Team of_cluster(int size) {
    return Team{size, static_cast<int>(cooperative_groups::this_cluster().block_rank()), false};
  }

  // Every CTA has written what it publishes (shared-memory histogram, counts) and may read the others'.
  // Also a barrier for this CTA's own threads.
  __device__ __forceinline__ void publish() {
    if (size == 1) {
      __syncthreads();
      return;
    }
    reclaim();
    cooperative_groups::this_cluster().sync();
  }
  // This CTA's reads of the others' published state are complete (arrive now, wait in reclaim()).
  __device__ __forceinline__ void release_reads() {
    if (size == 1) return;
    __cluster_barrier_arrive();
    reading_released = true;
  }
  // Before overwriting anything published: every CTA has finished reading it.
  __device__ __forceinline__ void reclaim() {
    if (size == 1 || !reading_released) return;
    __cluster_barrier_wait();
    reading_released = false;
  }

  // Sum over the team of one shared-memory word / 8-byte pair at the same place in every CTA.
  __device__ __forceinline__ uint32_t sum_words(const uint32_t* local) const {
    uint32_t c[kMaxSize];
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) c[r] = r < size ? *cooperative_groups::this_cluster().map_shared_rank(local, r) : 0u;
    uint32_t sum = 0;
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) sum += c[r];
    return sum;
  }
  __device__ __forceinline__ uint2 sum_pairs(const uint32_t* local) const {
    const uint2* pair = reinterpret_cast<const uint2*>(local);
    uint2 c[kMaxSize];
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) {
      c[r] = r < size ? *cooperative_groups::this_cluster().map_shared_rank(pair, r) : make_uint2(0, 0);
    }
    uint2 sum = make_uint2(0, 0);
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) {
      sum.x += c[r].x;
      sum.y += c[r].y;
    }
    return sum;
  }

  // (above, at) summed over the CTAs of lower rank, given this CTA's own; `slot` is shared memory
  // that the team reads. Called by every thread of the CTA.
  __device__ __forceinline__ uint2 lower_ranks_total(uint2* slot, uint32_t above, uint32_t at) {
    if (size == 1) return make_uint2(0, 0);
    reclaim();
    if (threadIdx.x == 0) *slot = make_uint2(above, at);
    publish();
    uint2 counts[kMaxSize];
#pragma unroll
    for (int r = 0; r < kMaxSize; ++r) {
      counts[r] = r < rank ? *cooperative_groups::this_cluster().map_shared_rank(slot, r) : make_uint2(0, 0);
    }
    release_reads();
    uint2 before = counts[0];
#pragma unroll
    for (int r = 1; r < kMaxSize; ++r) {
      before.x += counts[r].x;
      before.y += counts[r].y;
    }
    return before;
  }
};

}  // namespace persistent_topk
