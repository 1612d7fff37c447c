// The dispatch layer: the per-row path choice, the work queue (and its place in the workspace), and
// the persistent kernel that ties them to the plan (plan.cuh) and the paths (topk_small.cuh,
// topk_medium.cuh, topk_radix_large.cuh), as the policy (policy.cuh) tunes them.
//
// One launch, grid fixed by (device, occupancy, rows), never by the lengths: the same launch serves
// any lengths <= stride and can be captured in a CUDA graph once. Rows come in the order of the plan
// (plan.cuh: made on the device from the live lengths, once per decode step or by the op itself), and
// every row's path is chosen again on the device from its own live length, so a stale plan costs
// speed, never exactness. When the shape allows team rows the launch is of thread-block clusters,
// which first select the long rows together (team rows, one cluster each, handed out by the work
// queue); then, and in plain launches from the start, every CTA takes the other rows one at a time
// from the queue until none is left. In plain launches of many rows a long row is streamed by its one
// CTA (StreamingRowAgent) rather than held in shared memory, and a CTA with more rows to take looks
// its next one up while it selects the current one. Launches whose stride fits registers (4K, or 16K
// for few rows) run register_rows_kernel instead (below): every row short or a register row, no queue.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "epilogue.cuh"
#include "keys.cuh"
#include "params.cuh"
#include "plan.cuh"
#include "policy.cuh"
#include "topk_medium.cuh"
#include "topk_radix_large.cuh"
#include "team.cuh"
#include "topk_small.cuh"

namespace persistent_topk {

static_assert(Policy::kMaxClusterSize <= Team::kMaxSize, "a team mailbox holds a cluster's senders");

// The block-wide radix search every path runs, as the policy tunes it.
using Select = BlockSelect<Policy::kThreads, Policy::kDigitBits>;

// The path of a row from its live length: a row the plan lists as a team row stays one unless its live
// length is too short to split (a stale plan), and no other row becomes one.
__device__ __forceinline__ RowPath row_path(const Params& p, int n, bool team_listed) {
  if (n <= p.k && p.by_value == 0) return RowPath::kShort;
  return team_listed && n > Policy::kTeamMinLength ? RowPath::kTeam : RowPath::kSolo;
}

// The workspace: the work queue's counters, then the plan an op makes for itself when it is given
// none (team rows combine through distributed shared memory and need no scratch here).
struct WorkspaceLayout {
  static constexpr int64_t kQueueBytes = 256;
  static int64_t bytes(int64_t rows, int64_t /*stride*/, int64_t /*k*/) {
    return kQueueBytes + PlanLayout::bytes(rows);
  }
  static void* own_plan(void* workspace) { return static_cast<uint8_t*>(workspace) + kQueueBytes; }
};

// Where the free part of the keys buffer starts after n keys (16-byte aligned).
__device__ __forceinline__ int spare_offset(int n) { return (n + 3) & ~3; }

// Row r (window w) by this CTA's team (a solo row is the one slice of a team of one): its slice into
// shared memory when it fits there, then the team's selection (team.cuh). A long row alone
// (Policy::streams) is selected before this call, from a list of its candidates streamed out of
// global memory (StreamingRowAgent), and only finished here. A slice too long for shared memory
// otherwise (a team row past team_size x kSmemKeys: only a stale plan or a stride beyond the largest
// team's reach makes one), or a streamed row whose candidates did not fit the list, is selected by
// passes over global memory instead, exact and slower. Every CTA of a team takes the same branch (slices share one
// length), so the team's exchanges line up. record_claim() runs in thread 0 once the loads are in;
// phase_hook(step) in thread 0 at three points of a row in shared memory (step 0 after its loads, 1 and
// 2 after its first digit and its compaction: prefetch_next_row).
template <typename T, class RecordClaim, class PhaseHook>
__device__ __forceinline__ void select_row(const Params& p, int r, const RowWindow& w, Team& team, uint32_t* keys,
                                           const FusedIndexWrite* fused, typename Select::TempStorage& ts,
                                           const RecordClaim& record_claim, const PhaseHook& phase_hook) {
  constexpr int kThreads = Policy::kThreads;
  const TeamSlices slices = TeamSlices::of(w.n, team.size, Policy::kSliceAlign);
  const int rank = team.rank();
  const int first = slices.first(rank), length = slices.length(rank, w.n);
  const T* slice = static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start + first;
  const int m = min(p.k, w.n);
  using Registers = RegisterRowAgent<Select, T, Policy::kRegisterKeysPerThread>;
  if (Policy::register_path<T>() && team.size == 1 && m < w.n && w.n <= Registers::kMaxKeys) {
    Select::zero_histogram(ts);
    PERSISTENT_TOPK_STAMP(1);
    __syncthreads();
    Registers::run(slice, w.n, m, ts, shared_address(keys), index_sink(p, r, fused), record_claim);
  } else if (slices.slice_len <= Policy::kSmemKeys && !Policy::streams(w.n, team.size)) {
    Select::zero_histogram(ts);
    PERSISTENT_TOPK_STAMP(1);
    __syncthreads();
    load_row<Select, T>(slice, length, keys, ts);
    // Behind the barrier before the loads (every thread has read what next_row() read of the state)
    // and before the row's write-out, whose exchange hands a team's claim to its other CTAs.
    if (threadIdx.x == 0) {
      record_claim();
      phase_hook(0);
    }
    PERSISTENT_TOPK_STAMP(2);  // (select_in_shared() starts with a barrier: keys and ts.hist complete)
    const int spare = spare_offset(length);
    TeamCombine<Select> combine{team};
    select_in_shared<Select, T>(length, w.n, m, keys, ts, ColumnOf{first}, index_sink(p, r, fused), keys + spare,
                                Policy::kSmemKeys - spare, slices.slice_len > Policy::kCompactMinKeys, combine,
                                phase_hook);
  } else if (Policy::streams(w.n, team.size) && streamed_row.complete) {
    // A long row alone, selected already from the list streamed out of global memory (the kernel's
    // loop, StreamingRowAgent).
    if (threadIdx.x == 0) record_claim();
  } else {
    // A team's slice too long for shared memory (only a stale plan makes one), or a streamed row whose
    // list is not complete (adversarial input): passes over global memory, exact and slower.
    __syncthreads();  // every thread has read what next_row() read of the state
    if (threadIdx.x == 0) record_claim();
    team = select_in_global<Select, T>(slice, length, w.n, m, first, ts, index_sink(p, r, fused), team);
  }
  PERSISTENT_TOPK_STAMP(9);
  // Bare indices, no padding: the row is done. (The kernel's loop starts every row with a barrier, so
  // keys and ts are free for the next one either way.)
  if (m == p.k && !finish_reads_output(p)) return;
  if (finish_reads_output(p)) team.publish_global_writes();  // the answer is in out before one CTA finishes it
  if (team.rank() == 0) finish_row<kThreads, T>(m, p.k, row_output<T>(p, r, w), reinterpret_cast<uint64_t*>(keys));
}

// A row that needs no selection (n <= k, index order): 0..n-1, then the padding.
template <int kThreads, typename T, class RecordClaim>
__device__ __forceinline__ void write_short_row(const Params& p, int r, const RowWindow& w, uint32_t* keys,
                                                const FusedIndexWrite* fused, const RecordClaim& record_claim) {
  if (!finish_reads_output(p) && !fuses_transform(p)) {  // bare indices and padding, nothing to finish
    ShortRowAgent<kThreads>::run_bare(w.n, p.k, row_out(p, r));
    __syncthreads();  // every thread has read what next_row() read of the state
    if (threadIdx.x == 0) record_claim();
    return;
  }
  ShortRowAgent<kThreads>::run(w.n, index_sink(p, r, fused));
  __syncthreads();  // out[0, n) is written; every thread has read what next_row() read of the state
  if (threadIdx.x == 0) record_claim();
  finish_row<kThreads, T>(w.n, p.k, row_output<T>(p, r, w), reinterpret_cast<uint64_t*>(keys));
}

// The work queue: which row each CTA selects next. Rows come in the plan's order (plan.cuh): its team
// rows, longest first, then every other row, longest first. Positions in that order are handed out
// by counters in the workspace that reset themselves; claims are issued before a row's loads and
// recorded once they are in, so their round trip hides behind the loads.
//
// Team launches (clusters) hand out rows in two phases:
//  - team rows (order[0, team_rows)), each to a team of the size the plan gives it. Cluster c starts
//    as one team on team row c; a team given a row for fewer CTAs than it has splits by halving: its
//    first half (quarter...) takes the row, and each other part becomes a team of its own that claims
//    the next row at once. Team sizes fall along the order, so a later row never wants more CTAs
//    than the team that takes it (a stale plan's row may: its team takes it, exact and slower). Then a
//    team takes clusters + (its rank 0's claims on the team counter), one claim during each team
//    row's load, which the team's CTAs receive with the row's last exchange (Team::set_leader_word).
//    A team with a long row thus never holds a second one that an idle team could take. With no more
//    team rows than clusters, the static rows are all of them and no team claims;
//  - every other row by one CTA, each taken from the solo counter: CTAs whose team had no team row
//    start at once, the others join as their team rows finish.
// Plain launches (no team rows possible) start every CTA on position blockIdx.x without touching the
// queue, and hand out positions gridDim.x and up.
//
// The counters reset themselves: a launch's claims on each are counted in advance, so the CTA whose
// claim has the last value knows that nothing touches that counter again and writes 0.
//  - solo counter in team launches: every CTA claims until a claim fails, S + grid claims for S rows
//    (none when S = 0 and no team claims). Every CTA's first solo claim follows its last team claim,
//    so the last solo claim also resets the team counter, whose claims (splits make their number
//    depend on timing) cannot be counted in advance;
//  - solo counter in plain launches: every CTA claims one position past each row it visits, `rows`
//    claims, and none at all when the grid has a CTA for every row.
enum QueueCounter : int { kSoloCounter = 0, kTeamCounter = 1 };
constexpr uint32_t kNoClaim = 0xFFFFFFFFu;  // a claim not made: no row has this position

// The phase of the work a CTA is in: uniform, and kept by every thread in a register (a field that
// every thread reads must not share a word that thread 0 rewrites meanwhile).
enum WorkPhase : int { kTeamRows = 0, kSoloRows = 1 };
enum StaticSolo : int { kNoStaticSolo = 0, kStaticSoloFirst = 1, kStaticSoloDone = 2 };

// Starts bringing the line of `address` into L2 (no register waits for it).
__device__ __forceinline__ void prefetch_l2(const void* address) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(address));
}

// Where a CTA is in the work: uniform across the CTA, so it lives in shared memory (written by thread
// 0 between barriers) and leaves every register to the selection code.
struct WorkState {
  int started;          // team phase: the cluster's first (static) row has been taken
  uint32_t ordinal;     // team phase: the first row's position; plain launches: the next position
  uint32_t claim;       // solo rows of team launches: the solo counter's answer to the latest claim
  int team_claims;      // team rows are claimed (more team rows than clusters)
  uint32_t team_rows;   // from the plan
  uint32_t solo_rows;
  // Team launches with a CTA for every row and no team row in the plan: CTA b's one row is row b,
  // as in a plain launch (kStaticSoloFirst until it is picked, then kStaticSoloDone).
  int static_solo;
  // The row picked next (-1: none), its team's size in the plan, its live window and its length in
  // the plan.
  int row;
  int planned_team_size;
  RowWindow window;
  int planned_length;
  FusedIndexWrite fused;  // the row's transform, when the selection writes it (fuses_transform)
  // Plain launches with more rows than CTAs (kPrefetchNext): the row at position `ordinal`, looked up
  // while this one is selected (prefetch_next_row). ahead_stage: 0 idle, 1 its order entry in flight,
  // 2 its bounds in flight; ahead_row >= 0: its row, window and planned length are ready. Volatile:
  // only thread 0 reads them, in branches of its own, and the compiler must not hoist those loads into
  // every thread while thread 0 rewrites them mid-row (racecheck reported exactly that).
  volatile int ahead_stage;
  volatile int ahead_row;
  int32_t ahead_entry, ahead_bound, ahead_start, ahead_planned;
  RowWindow ahead_window;
};

// Starts bringing bytes [address, address + bytes) into L2 (the whole 16-byte units inside the range).
__device__ __forceinline__ void prefetch_range_l2(const void* address, int64_t bytes) {
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(address) + 15u) & ~uintptr_t{15};
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(address) + static_cast<uintptr_t>(bytes)) & ~uintptr_t{15};
  if (hi <= lo) return;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(lo), "r"(static_cast<uint32_t>(hi - lo)) : "memory");
}

// Thread 0 of a plain launch with more rows than CTAs (kPrefetchNext), during a row in shared memory:
// the next row's lookups, one step per call, each an asynchronous copy, so that none stalls the row
// being selected. Step 0 (the row's loads are in, its claim recorded: `ordinal` is the next
// position): the order entry at it; step 1 (after the first digit): the row's bound, start and planned
// length; step 2 (after the compaction): its window, and its logits brought into L2. next_row() then
// takes the row without a round trip (prefill-causal-2k-rows 79.6 -> 74.7 us). The copies are in
// flight only between steps, never across the next row's loads (which count their own groups).
template <typename T>
__device__ __forceinline__ void prefetch_next_row(const Params& p, WorkState& s, int step) {
  if (step == 0) {
    if (s.ahead_stage != 0) wait_async_copies<0>();  // an unfinished chain: its copies land first
    s.ahead_stage = 0;
    s.ahead_row = -1;
    if (s.ordinal >= static_cast<uint32_t>(p.rows)) return;
    copy_async_4(&s.ahead_entry, p.plan.order + s.ordinal);
    commit_async_copies();
    s.ahead_stage = 1;
  } else if (step == 1) {
    if (s.ahead_stage != 1) return;
    wait_async_copies<0>();
    const int r = OrderEntry::row(s.ahead_entry);
    if (static_cast<uint32_t>(r) >= static_cast<uint32_t>(p.rows)) {  // next_row() traps on it
      s.ahead_stage = 0;
      return;
    }
    copy_async_4(&s.ahead_bound, p.source.bounds + p.source.bound_index(r));
    if (p.source.has_starts()) copy_async_4(&s.ahead_start, p.source.row_starts + r);
    copy_async_4(&s.ahead_planned, p.plan.planned_lengths + r);
    commit_async_copies();
    s.ahead_stage = 2;
  } else {
    if (s.ahead_stage != 2) return;
    wait_async_copies<0>();
    const int r = OrderEntry::row(s.ahead_entry);
    const RowWindow w = p.source.window_of(r, s.ahead_bound, s.ahead_start);
    prefetch_range_l2(static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start,
                      static_cast<int64_t>(w.n) * static_cast<int64_t>(sizeof(T)));
    s.ahead_window = w;
    s.ahead_row = r;
    s.ahead_stage = 0;
  }
}

// Thread 0: row r (none if -1), its live window and planned length, into the state. A row outside
// [0, rows) can only come from a plan made for another shape, which the op refuses: trap rather than
// touch memory out of bounds.
__device__ __forceinline__ void pick_row(const Params& p, WorkState& s, int r) {
  if (r < 0) {
    s.row = -1;
    return;
  }
  if (static_cast<uint32_t>(r) >= static_cast<uint32_t>(p.rows)) __trap();
  s.row = r;
  s.window = p.source.window(r);
  s.planned_length = __ldg(p.plan.planned_lengths + r);
  if (fuses_transform(p)) set_fused_write(p, r, s.fused);
}

// Thread 0's claim of the row after the one this CTA starts: issued before the row's loads, so that
// its round trip hides behind them, and recorded (in shared memory; a team's rank 0 hands it to the
// team) once they are in. Held in one register only while the row loads. kClusters: the launch's kind
// (persistent_topk_kernel).
template <bool kClusters>
struct NextRowClaim {
  uint32_t answer = kNoClaim;

  // Thread 0 only.
  __device__ __forceinline__ void issue(const Params& p, WorkPhase phase, const WorkState& s, const Team& team) {
    if (phase == kTeamRows) {
      if (team.rank() == 0 && s.team_claims) answer = atomicAdd(&p.queue[kTeamCounter], 1u);
    } else if (kClusters) {
      answer = atomicAdd(&p.queue[kSoloCounter], 1u);
    } else if (gridDim.x < static_cast<uint32_t>(p.rows)) {
      answer = gridDim.x + atomicAdd(&p.queue[kSoloCounter], 1u);
    }
  }
  __device__ __forceinline__ void record(const Params& p, WorkPhase phase, WorkState& s, const Team& team) const {
    if (phase == kTeamRows) {
      if (team.rank() == 0) Team::set_leader_word(answer);
    } else if (kClusters) {
      s.claim = answer;
    } else {
      s.ordinal = answer;  // plain launches: the next position
    }
  }
};

// The row a CTA selects next (-1: none), its live window and its planned length.
struct NextRow {
  int row;
  RowWindow window;
  int planned_length;
};

// Thread 0, team phase: the team's next team row (-1: none) into the state, with its team's size.
__device__ __forceinline__ void pick_team_row(const Params& p, WorkState& s) {
  const uint32_t clusters = gridDim.x / static_cast<uint32_t>(p.cluster_size);
  int32_t entry = -1;
  if (!s.started) {
    // The cluster's first team row: static. The plan's team row count and the entry at this position
    // are read at once (one round trip, not two); clusters <= rows, so the position is in the order
    // whether or not it holds a team row. With a CTA for every row, the row this CTA takes should the
    // plan have no team row (row blockIdx.x, as in a plain launch: kStaticSoloFirst) has its bounds
    // brought into L2 meanwhile: such a launch (wide engine buffers of short rows) then reads them
    // from L2 right after the header, not from memory after a claim and a read of the order.
    const uint32_t team_rows = static_cast<uint32_t>(p.plan.header->team_rows);
    const int32_t candidate = __ldg(p.plan.order + s.ordinal);
    const bool cta_per_row = static_cast<uint32_t>(p.rows) <= gridDim.x;
    if (cta_per_row && blockIdx.x < static_cast<uint32_t>(p.rows)) {
      const int r = static_cast<int>(blockIdx.x);
      // (bounds + r: the row's length or end but in decode with next_n > 1, where it is a harmless
      // miss; a division, or the row starts too, cost the kernel a spilled register.)
      prefetch_l2(p.source.bounds + r);
      prefetch_l2(p.plan.planned_lengths + r);
    }
    s.started = 1;
    s.team_rows = team_rows;
    s.solo_rows = static_cast<uint32_t>(p.rows) - team_rows;
    s.team_claims = team_rows > clusters;
    s.static_solo = cta_per_row && team_rows == 0u ? kStaticSoloFirst : kNoStaticSolo;
    if (s.ordinal < team_rows) entry = candidate;
  } else if (s.team_claims) {  // rank 0's claim, received with the last row's counts
    const uint32_t position = clusters + Team::leader_word();
    if (position < s.team_rows) entry = __ldg(p.plan.order + position);
  }
  s.planned_team_size = entry < 0 ? 0 : OrderEntry::team_size(entry);
  pick_row(p, s, entry < 0 ? -1 : OrderEntry::row(entry));
}

// Block-wide: the row this CTA selects next, or -1 when it is done (see the work queue above). In the
// team phase, splits the team when its row wants fewer CTAs; leaves the team (team becomes solo,
// phase kSoloRows) when the team rows run out. kPrefetchNext: a plain launch whose next row may have
// been looked up already (prefetch_next_row).
template <bool kClusters, bool kPrefetchNext>
__device__ __forceinline__ NextRow next_row(const Params& p, WorkState& s, Team& team, WorkPhase& phase) {
  if (phase == kTeamRows) {
    for (;;) {
      if (threadIdx.x == 0) pick_team_row(p, s);
      __syncthreads();
      if (s.row < 0) break;
      // The part of the team that takes the row: halves while they hold the CTAs the row wants.
      int taking = team.size;
      while ((taking & 1) == 0 && taking / 2 >= 2 && taking / 2 >= s.planned_team_size) taking /= 2;
      const int rank = team.rank();
      if (rank < taking) {
        team = team.part(0, taking);
        return NextRow{s.row, s.window, s.planned_length};
      }
      // The other parts, [taking, 2 taking), [2 taking, 4 taking), ...: teams without a row, which
      // claim one now (with no team claims, every team row had a static start: none is left).
      int part = taking;
      while (rank >= 2 * part) part *= 2;
      team = team.part(part, part);
      if (!s.team_claims) break;
      __syncthreads();  // every thread has read the state
      if (threadIdx.x == 0 && team.rank() == 0) Team::set_leader_word(atomicAdd(&p.queue[kTeamCounter], 1u));
      team.lower_ranks_total(0u, 0u);  // hands the team its rank 0's claim
    }
    // The team rows are all taken: on alone.
    team.close();
    team = Team::solo();
    phase = kSoloRows;
    if (s.solo_rows == 0u && !s.team_claims) return NextRow{-1, RowWindow{0, 0}, 0};
    // Read by every thread before the barrier (the compiler may load it in every thread, not only in
    // thread 0, which rewrites it below).
    const bool claims = !s.static_solo;
    __syncthreads();  // every thread has read the state
    if (threadIdx.x == 0 && claims) s.claim = atomicAdd(&p.queue[kSoloCounter], 1u);
  }
  if (threadIdx.x == 0) {
    int r = -1;
    bool picked = false;  // the row looked up ahead is taken: no pick_row()
    if (s.static_solo == kStaticSoloFirst) {
      if (blockIdx.x < static_cast<uint32_t>(p.rows)) r = static_cast<int>(blockIdx.x);
      s.static_solo = kStaticSoloDone;
    } else if (s.static_solo == kStaticSoloDone) {
      // Its one row is done. Every CTA with a row claimed once during it (NextRowClaim), `rows` claims.
      if (s.claim == static_cast<uint32_t>(p.rows) - 1u) p.queue[kSoloCounter] = 0u;
    } else if (!kClusters) {  // plain launch: every position of the order, the first one static
      if (kPrefetchNext && s.ahead_row >= 0) {  // looked up during the previous row: no round trip
        s.row = s.ahead_row;
        s.window = s.ahead_window;
        s.planned_length = s.ahead_planned;
        if (fuses_transform(p)) set_fused_write(p, s.ahead_row, s.fused);
        s.ahead_row = -1;
        picked = true;
      } else if (s.ordinal < static_cast<uint32_t>(p.rows)) {
        if (kPrefetchNext && s.ahead_stage != 0) {  // a lookup left unfinished: its copies land first
          wait_async_copies<0>();
          s.ahead_stage = 0;
        }
        // With a CTA for every row, every row starts at once and the order cannot matter: row =
        // position saves the order's round trip before the row's bounds.
        r = p.rows <= static_cast<int>(gridDim.x) ? static_cast<int>(s.ordinal)
                                                  : OrderEntry::row(__ldg(p.plan.order + s.ordinal));
      } else if (s.ordinal == gridDim.x + static_cast<uint32_t>(p.rows) - 1u) {
        p.queue[kSoloCounter] = 0u;  // the last claim
      }
    } else if (s.claim < s.solo_rows) {
      r = OrderEntry::row(__ldg(p.plan.order + s.team_rows + s.claim));
    } else if (s.claim == s.solo_rows + gridDim.x - 1u) {  // the last claim on either counter
      p.queue[kSoloCounter] = 0u;
      if (s.team_claims) p.queue[kTeamCounter] = 0u;
    }
    if (!picked) pick_row(p, s, r);
  }
  __syncthreads();
  return NextRow{s.row, s.window, s.planned_length};
}

// Thread 0: a row whose live length is not the one planned makes the plan STALE (SPEC §5); the row
// itself is selected from its live length all the same.
__device__ __forceinline__ void check_planned_length(const Params& p, const NextRow& next) {
  if (next.window.n != next.planned_length) atomicOr(&p.plan.header->status, kPlanStale);
}

// The persistent kernel, in three instances per dtype by the launch's kind (launch_persistent_topk):
// kClusters for launches of clusters (p.cluster_size > 1, team rows possible), the others for plain
// launches. In those every team branch folds away (the team's size is known to be 1): their code is a
// third smaller (151 KiB against 235 KiB for float32) and their rows faster (prefill-causal-2k-rows
// 86.2 -> 79.6 us, decode-uniform-b128-16k 16.5 -> 15.3, b256-64k 42.3 -> 40.7; docs/perf-notes.md).
// kPrefetchNext for plain launches with more rows than CTAs: each CTA looks up its next row during
// the current one (prefetch_next_row); kept out of the other plain launches, where it has nothing to
// do and its code alone cost 2% (decode-uniform-b128-16k).
template <typename T, bool kClusters, bool kPrefetchNext>
__global__ void __launch_bounds__(Policy::kThreads, Policy::kMinBlocksPerSM) persistent_topk_kernel(Params p) {
  // 128-byte aligned whatever the static shared memory before it adds up to: a warp's 512-byte
  // cp.async fills and 16-byte reads of keys then touch 4 128-byte lines, not 5 (an offset of 16 bytes
  // made every row's load ~40% slower in an experiment).
  extern __shared__ __align__(128) uint4 dynamic_smem[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(dynamic_smem);  // [Policy::kSmemKeys]
  __shared__ typename Select::TempStorage select_storage;
  __shared__ WorkState state;

  // One loop over the rows the queue hands this CTA, team rows first (one copy of the selection code,
  // which keeps it free of register spills). The launch sets cluster_size to 1 unless it is of clusters,
  // and runs this kernel with kClusters exactly when it is (launch.cuh).
  PERSISTENT_TOPK_STAMP(0);
  constexpr bool team_launch = kClusters;
  Team team = team_launch ? Team::of_cluster(p.cluster_size) : Team::solo();
  team.open();
  WorkPhase phase = team_launch ? kTeamRows : kSoloRows;
  if (threadIdx.x == 0) {  // (team launches read the plan's team row count with their first row)
    state.started = 0;
    state.ordinal = team_launch ? blockIdx.x / static_cast<uint32_t>(p.cluster_size) : blockIdx.x;
    state.team_rows = 0u;
    state.solo_rows = static_cast<uint32_t>(p.rows);
    state.team_claims = 0;
    state.static_solo = kNoStaticSolo;
    state.ahead_stage = 0;
    state.ahead_row = -1;
  }
  // Programmatic dependent launch: all of the above may overlap the previous kernel's tail; nothing
  // it writes (logits, lengths, plan, the queue's counters) is read before this.
  wait_for_previous_grid();
  allow_next_grid();
  for (;;) {
    __syncthreads();  // the previous row's shared state is free; `state` is written
    PERSISTENT_TOPK_STAMP(10);
    const NextRow next = next_row<kClusters, kPrefetchNext>(p, state, team, phase);
    const int r = next.row;
    if (r < 0) {
      if (kPrefetchNext && threadIdx.x == 0 && state.ahead_stage != 0) wait_async_copies<0>();
      break;
    }
    const RowWindow w = next.window;
    NextRowClaim<kClusters> claim;
    if (threadIdx.x == 0) {
      claim.issue(p, phase, state, team);
      if (team.rank() == 0) check_planned_length(p, next);
    }
    auto record_claim = [&]() { claim.record(p, phase, state, team); };
    const RowPath path = row_path(p, w.n, phase == kTeamRows);
    const bool team_row = phase == kTeamRows && path == RowPath::kTeam;
    if (phase == kTeamRows && !team_row) {
      // A team row by the plan that its live length gives to one CTA (a stale plan): the team's CTAs
      // still exchange once, which hands them rank 0's claim, and rank 0 selects the row alone.
      // (Rank 0 records its claim again below: the same word.)
      if (threadIdx.x == 0) record_claim();
      team.lower_ranks_total(0u, 0u);
      if (team.rank() != 0) continue;
    }
    if (path == RowPath::kShort) {
      write_short_row<Policy::kThreads, T>(p, r, w, keys, &state.fused, record_claim);
      continue;
    }
    // A long row alone: selected from a list of its keys streamed out of global memory (here, where
    // few registers are live across the call: placed in select_row() the call made the kernel
    // spill); select_row() then finishes it.
    if (!team_row && Policy::streams(w.n, 1)) {
      StreamingRowAgent<Select, T>::template select<kClusters>(static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start,
                                           w.n, min(p.k, w.n), keys, select_storage, index_sink(p, r, &state.fused));
    }
    // One call site of the selection for team rows and rows alone (its code is the kernel's bulk).
    Team selecting = team_row ? team : Team::solo();
    if constexpr (kPrefetchNext) {
      select_row<T>(p, r, w, selecting, keys, &state.fused, select_storage, record_claim,
                    [&](int step) { prefetch_next_row<T>(p, state, step); });
    } else {
      select_row<T>(p, r, w, selecting, keys, &state.fused, select_storage, record_claim, NoPhaseHook{});
    }
    if (team_row) team = selecting;
  }
  PERSISTENT_TOPK_STAMP(11);
}

// A register-rows launch's row state: uniform, written by thread 0 between barriers.
struct RegisterRowState {
  RowWindow window;
  int32_t bound, row_start;  // the words the row's window comes from (RowSource::window_of)
  int planned_length;
  FusedIndexWrite fused;
};

// The kernel of launches whose stride fits registers (LaunchShape::register_rows): every row is short or
// a register row, and all rows cost about the same, so CTA b takes rows b, b + grid, ... with no
// queue. Each CTA issues the loads of its row's whole stride (in bounds whatever the row's length:
// logits are [rows, stride]) before thread 0 reads the row's window, so the two round trips overlap;
// the keys outside the window are then dropped. The plan is still checked row by row (STALE); a call
// without one launches this kernel alone, with no plan to check (p.plan all null). Cta: the
// RegisterRowsCta that holds the stride (Policy::register_rows_cta).
template <typename T, class Cta>
__global__ void __launch_bounds__(Cta::kThreads, Cta::kMinBlocksPerSM) register_rows_kernel(Params p) {
  using RowSelect = BlockSelect<Cta::kThreads, Cta::kDigitBits>;
  extern __shared__ __align__(128) uint4 dynamic_smem[];
  uint32_t* keys_buffer = reinterpret_cast<uint32_t*>(dynamic_smem);  // staged selection, finish_row's scratch
  __shared__ typename RowSelect::TempStorage select_storage;
  __shared__ RegisterRowState state;
  using Registers = RegisterRowAgent<RowSelect, T, Cta::kKeysPerThread>;
  static_assert(Registers::kMaxKeys == Cta::kMaxStride, "a thread's keys cover the stride");
  static_assert(Cta::kMaxStride <= Policy::kSmemKeys, "the staged selection fits the keys buffer");

  PERSISTENT_TOPK_STAMP(0);
  wait_for_previous_grid();
  allow_next_grid();
  // With k >= stride every row is n <= k: no logit is read.
  const bool reads_logits = p.source.stride > p.k;
  for (int r = blockIdx.x; r < p.rows; r += gridDim.x) {
    // Thread 0 copies the row's bounds and planned length into `state` before the logits' loads are
    // issued: the keys' conversion waits for the logits, and by then the words are in. Read after the
    // barrier below, they were a second round trip behind the logits (b1-4k and b8-16k: ~1K cycles,
    // stamps); the planned length, checked after the next row's loads (or at the end), kept the last
    // row's thread 0 ~400 cycles longer. Asynchronous copies hold no register across the loads (held
    // in registers, they made the 16-bit kernels of 16 keys per thread spill).
    if (threadIdx.x == 0) {
      copy_async_4(&state.bound, p.source.bounds + p.source.bound_index(r));
      if (p.source.has_starts()) copy_async_4(&state.row_start, p.source.row_starts + r);
      if (p.plan.planned_lengths != nullptr) copy_async_4(&state.planned_length, p.plan.planned_lengths + r);
      commit_async_copies();
    }
    typename Registers::Keys keys;
    if (reads_logits) Registers::load(static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch,
                                      p.source.stride, keys);
    __syncthreads();  // the previous row is done with the shared state
    PERSISTENT_TOPK_STAMP(10);
    RowSelect::zero_histogram(select_storage);
    if (threadIdx.x == 0) {
      wait_async_copies<0>();
      // Volatile reads: loads the compiler hoisted out of this branch would read the words in every
      // thread while the copies land (the race session 16 found in the lookup ahead).
      const int32_t bound = load_shared(shared_address(&state.bound));
      const int32_t row_start = p.source.has_starts() ? load_shared(shared_address(&state.row_start)) : 0;
      const RowWindow window = p.source.window_of(r, bound, row_start);
      state.window = window;
      // The plan against the live length (STALE); a call without a plan has none to check.
      if (p.plan.planned_lengths != nullptr) {
        check_planned_length(p, NextRow{0, window, load_shared(shared_address(&state.planned_length))});
      }
      if (fuses_transform(p)) set_fused_write(p, r, state.fused);
    }
    __syncthreads();
    const RowWindow w = state.window;
    if (w.n <= p.k) {  // index order or sorted=True alike: 0..n-1 are the selection
      write_short_row<Cta::kThreads, T>(p, r, w, keys_buffer, &state.fused, [] {});
      continue;
    }
    PERSISTENT_TOPK_STAMP(1);
    Registers::keep_window(keys, w.start, w.n);
    Registers::select(keys, Cta::kKeysPerThread * static_cast<int>(threadIdx.x) - w.start, p.k,
                      select_storage, shared_address(keys_buffer), index_sink(p, r, &state.fused));
    PERSISTENT_TOPK_STAMP(9);
    if (finish_reads_output(p)) {
      finish_row<Cta::kThreads, T>(p.k, p.k, row_output<T>(p, r, w), reinterpret_cast<uint64_t*>(keys_buffer));
    }
  }
  PERSISTENT_TOPK_STAMP(11);
}

}  // namespace persistent_topk
