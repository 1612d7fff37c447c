// A row's team: the CTAs that select one row together. A long row is cut into one slice per CTA of a
// thread-block cluster; each CTA holds its slice in its own shared memory, and the team agrees on
// every radix digit by summing the CTAs' histograms, exchanged through distributed shared memory. The
// selection is then written straight to the output: each CTA learns how many keys the CTAs of lower
// rank (lower columns) select and writes its own at that offset, so no candidate list and no merge
// step exist.
//
// Exchanges are pushed, not pulled: each CTA writes what it shares into every CTA's mailbox with
// st.async, whose arrival completes bytes of the receiver's mbarrier, and each CTA waits on its own
// mbarrier. No cluster barrier and no memory barrier sit on the path: a barrier.cluster.arrive.release
// (or any fence at cluster scope) compiles to MEMBAR.ALL.GPU, ~1K cycles each, and a team row used to
// pay four of them (docs/perf-notes.md).
//
// A team is a run of consecutive ranks of one cluster: a whole cluster, or a part of one when the plan
// sizes a row for fewer CTAs than the cluster has (dispatch.cuh splits a team by halving). Every
// exchange is among the team's CTAs only, so teams of one cluster run side by side without waiting for
// each other.
//
// Cluster CTAs are co-scheduled by the hardware, so they may wait for each other (SPEC §4); CTAs of
// different clusters never do. A solo CTA is a team of one and touches no cluster resource.
#pragma once
#include <cstdint>
#include <cooperative_groups.h>

#include "block_select.cuh"

namespace persistent_topk {

// Distributed shared memory by 32-bit shared::cluster addresses (shared_address(), block_select.cuh),
// mapped where they are used: generic 64-bit pointers from map_shared_rank() are loop-invariant, so
// the compiler hoisted one per CTA of the team and object out of the kernel's loops and spilled them.
__device__ __forceinline__ uint32_t cluster_address(const void* local, int rank) {
  uint32_t remote;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(shared_address(local)), "r"(rank));
  return remote;
}

// st.async: a store into a CTA's shared memory (this one's included) that, once it has landed,
// completes its bytes of the transaction count of that CTA's mbarrier.
__device__ __forceinline__ void push(uint32_t remote, uint32_t value, uint32_t remote_barrier) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.u32 [%0], %1, [%2];" ::"r"(remote), "r"(value),
               "r"(remote_barrier)
               : "memory");
}
__device__ __forceinline__ void push(uint32_t remote, uint2 value, uint32_t remote_barrier) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v2.u32 [%0], {%1, %2}, [%3];" ::"r"(remote),
               "r"(value.x), "r"(value.y), "r"(remote_barrier)
               : "memory");
}
__device__ __forceinline__ void push(uint32_t remote, uint4 value, uint32_t remote_barrier) {
  asm volatile("st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.u32 [%0], {%1, %2, %3, %4}, [%5];" ::"r"(
                   remote),
               "r"(value.x), "r"(value.y), "r"(value.z), "r"(value.w), "r"(remote_barrier)
               : "memory");
}
// This CTA's one arrival on its mbarrier for the current phase, with the bytes it expects to receive.
__device__ __forceinline__ void arrive_expecting(uint32_t barrier, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(barrier), "r"(bytes) : "memory");
}
// Until the phase of the given parity of this CTA's mbarrier has completed; acquire at cluster scope
// pairs with the release of the senders' completions, so what they pushed is visible after it.
__device__ __forceinline__ void wait_phase(uint32_t barrier, uint32_t parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(barrier),
      "r"(parity)
      : "memory");
}

// Cluster barrier halves, called by every thread of the CTA. The non-.aligned forms: a warp may reach
// them diverged (a lane-0 store just before), which the .aligned forms leave undefined. Only the
// team's opening uses them (the whole cluster is one team then).
__device__ __forceinline__ void cluster_arrive_relaxed() { asm volatile("barrier.cluster.arrive.relaxed;\n" ::: "memory"); }
__device__ __forceinline__ void cluster_wait() { asm volatile("barrier.cluster.wait.acquire;\n" ::: "memory"); }

// What a team's CTAs push to each other: one slot per parity of the exchange's sequence number, so
// that an exchange's words can arrive while the previous exchange's are still being read (no CTA gets
// two exchanges ahead of another: each exchange needs every CTA's words).
struct TeamMailbox {
  static constexpr int kMaxSize = 16;  // Hopper's largest (non-portable) cluster
  // The most words one CTA sends in one exchange: a histogram's 64 group counts.
  static constexpr int kWords = 64;
  alignas(16) uint32_t words[2][kMaxSize][kWords];  // [slot][sender][word]
  alignas(8) uint64_t arrived[2];                   // mbarriers, one per slot
  uint32_t leader_word_out;  // rank 0: the word it hands the team with the row's counts
  uint32_t leader_word_in;   // rank 0's word, received with the latest row's counts
};
__shared__ TeamMailbox team_mailbox;

// One exchange: its mailbox slot and the phase of that slot's mbarrier that completes it.
struct Exchange {
  int slot;
  uint32_t phase;
};

struct Team {
  static constexpr int kMaxSize = TeamMailbox::kMaxSize;
  int size;  // CTAs selecting this row: 1 (solo), the cluster size or a part of it
  // The cluster rank of the team's first CTA (bits kBaseShift and up) and the exchanges begun (the
  // rest): one register for both, since the team lives in registers through the selection. Every CTA of the
  // team begins the same exchanges in the same order (a team split from another inherits the count:
  // their CTAs began the same ones).
  uint32_t base_and_exchanges;
  static constexpr int kBaseShift = 28;
  static constexpr uint32_t kExchangesMask = (1u << kBaseShift) - 1u;
  static_assert(TeamMailbox::kMaxSize <= (1 << (32 - kBaseShift)), "a cluster rank fits the top bits");

  __device__ __forceinline__ static Team solo() { return Team{1, 0u}; }
  __device__ __forceinline__ static Team of_cluster(int size) { return Team{size, 0u}; }
  // The team of `count` CTAs from this team's rank `first` on, which this CTA belongs to.
  __device__ __forceinline__ Team part(int first, int count) const {
    return Team{count, base_and_exchanges + (static_cast<uint32_t>(first) << kBaseShift)};
  }
  __device__ __forceinline__ int base() const { return static_cast<int>(base_and_exchanges >> kBaseShift); }
  __device__ __forceinline__ uint32_t exchanges() const { return base_and_exchanges & kExchangesMask; }
  // This CTA's place in the team: slices of lower rank hold lower columns.
  __device__ __forceinline__ int rank() const {
    return size == 1 ? 0 : static_cast<int>(cooperative_groups::this_cluster().block_rank()) - base();
  }

  // Every thread, once, before the team's first exchange: the mailbox's mbarriers are initialized, and
  // the cluster barrier that makes them so in every CTA before any CTA pushes to another is arrived
  // at. It is waited for only by the first exchange (or close()), so that its latency hides behind the
  // first row's start and load.
  __device__ __forceinline__ void open() {
    if (size == 1) return;
    if (threadIdx.x == 0) {
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(&team_mailbox.arrived[0])) : "memory");
      asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(shared_address(&team_mailbox.arrived[1])) : "memory");
      asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    }
    cluster_arrive_relaxed();
  }
  // Every thread, once, when the team breaks up: completes open()'s barrier if no exchange has. Nothing
  // more arrives in this CTA's mailbox (every exchange it began has completed), so it may go on alone
  // and exit.
  __device__ __forceinline__ void close() {
    if (size > 1 && exchanges() == 0u) cluster_wait();
  }

  // Every thread, uniformly: the next exchange, in which every CTA sends `words` words to every CTA.
  // Thread 0 arrives on this CTA's mbarrier expecting them (that slot's previous exchange is complete:
  // thread 0 has waited for it).
  __device__ __forceinline__ Exchange begin_exchange(int words) {
    const uint32_t e = exchanges();
    if (e == 0u) cluster_wait();  // open(): every CTA's mailbox is ready
    const Exchange x{static_cast<int>(e & 1u), (e >> 1) & 1u};
    ++base_and_exchanges;
    if (threadIdx.x == 0) {
      arrive_expecting(shared_address(&team_mailbox.arrived[x.slot]), static_cast<uint32_t>(size * words) * 4u);
    }
    return x;
  }
  // The exchange begun last.
  __device__ __forceinline__ Exchange latest() const {
    const uint32_t e = exchanges() - 1u;
    return Exchange{static_cast<int>(e & 1u), (e >> 1) & 1u};
  }
  // Words [word, word + 1, 2 or 4) of exchange x (a uint32_t, uint2 or uint4), from team CTA `from`
  // into cluster CTA `cta`'s mailbox.
  template <typename Words>
  __device__ __forceinline__ static void push_words(const Exchange& x, int from, int cta, int word, const Words& value) {
    push(cluster_address(&team_mailbox.words[x.slot][from][word], cta), value,
         cluster_address(&team_mailbox.arrived[x.slot], cta));
  }
  // This CTA's words from `word` of exchange x to team CTA `to`. The SM issues remote stores one at a
  // time, so a message of 16 bytes costs about what one of 4 does: the team's exchanges send 8- and
  // 16-byte messages, spread over a warp's lanes (publishing a histogram's 64 group counts: ~1.35K
  // cycles as 1,024 one-word messages a CTA, ~0.73K as 256 16-byte ones; docs/perf-notes.md, session 19).
  template <typename Words>
  __device__ __forceinline__ void send_to(const Exchange& x, int to, int word, const Words& value) const {
    push_words(x, rank(), base() + to, word, value);
  }
  // The same words to every CTA of the team, from one thread.
  template <typename Words>
  __device__ __forceinline__ void send(const Exchange& x, int word, const Words& value) const {
    const int me = rank(), first = base();
#pragma unroll
    for (int to = 0; to < kMaxSize; ++to) {
      if (to < size) push_words(x, me, first + to, word, value);
    }
  }
  // Until every CTA's words of exchange x are here.
  __device__ __forceinline__ void wait(const Exchange& x) const {
    wait_phase(shared_address(&team_mailbox.arrived[x.slot]), x.phase);
  }
  __device__ __forceinline__ static const uint32_t* received(const Exchange& x, int sender) {
    return team_mailbox.words[x.slot][sender];
  }

  // (above, at) summed over the CTAs of lower rank, given this CTA's own. Called by every thread of the
  // CTA; one exchange. Rank 0's leader word (set_leader_word) travels with it.
  __device__ __forceinline__ uint2 lower_ranks_total(uint32_t above, uint32_t at) {
    if (size == 1) return make_uint2(0, 0);
    const Exchange x = begin_exchange(4);
    if (threadIdx.x == 0) send(x, 0, make_uint4(above, at, team_mailbox.leader_word_out, 0u));
    wait(x);
    const int lane = threadIdx.x % 32;
    const uint32_t* from = received(x, lane < kMaxSize ? lane : 0);
    const bool lower = lane < rank();
    if (threadIdx.x == 0) team_mailbox.leader_word_in = received(x, 0)[2];
    return make_uint2(__reduce_add_sync(0xFFFFFFFFu, lower ? from[0] : 0u),
                      __reduce_add_sync(0xFFFFFFFFu, lower ? from[1] : 0u));
  }
  // Rank 0's thread 0: the word the team receives with this row's counts (lower_ranks_total).
  __device__ __forceinline__ static void set_leader_word(uint32_t word) { team_mailbox.leader_word_out = word; }
  // Thread 0: rank 0's word, received with the latest row's counts.
  __device__ __forceinline__ static uint32_t leader_word() { return team_mailbox.leader_word_in; }

  // Every CTA's global-memory writes so far are visible to every CTA of the team (for rows that one
  // CTA finishes from what all of them wrote). Also a barrier for this CTA's own threads. One exchange
  // of a word behind a release fence, not a cluster barrier: a team may be a part of its cluster.
  __device__ __forceinline__ void publish_global_writes() {
    __syncthreads();
    if (size == 1) return;
    const Exchange x = begin_exchange(1);
    if (threadIdx.x == 0) {
      asm volatile("fence.acq_rel.cluster;" ::: "memory");  // the CTA's writes (ordered by the barrier) first
      send(x, 0, 0u);
    }
    wait(x);
  }
};

}  // namespace persistent_topk
