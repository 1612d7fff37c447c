// The dispatch layer: tuning policy, the row windows of each op, the per-row path choice, the
// workspace layout, the work queue, and the persistent kernel that ties them together.
//
// One launch, grid fixed by (device, occupancy, rows), never by the lengths: the same launch serves
// any lengths <= stride and can be captured in a CUDA graph once. Every row's path is chosen on the
// device from its own length. When the shape allows team rows the launch is of thread-block clusters,
// which first select the long rows together (team rows, statically spread over the clusters); then,
// and in plain launches from the start, every CTA takes the other rows one at a time from an atomic
// counter until none is left.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"
#include "topk_medium.cuh"
#include "topk_radix_large.cuh"
#include "team.cuh"
#include "topk_small.cuh"

namespace persistent_topk {

// Every tuning constant, with its reason.
struct Policy {
  // Two CTAs of 16 warps per SM: one streams its next row from HBM while the other runs its passes
  // out of shared memory (measured against one 32-warp CTA per SM: 1.3-1.5x faster on batches of
  // many rows, equal on small ones; docs/perf-notes.md).
  static constexpr int kThreads = 512;
  static constexpr int kMinBlocksPerSM = 2;
  // Keys a CTA holds in shared memory: 24K x 4 B = 96 KB; with 8.5 KB of histogram and state two CTAs
  // fit in Hopper's 228 KB per SM. Holds a solo row or a team row's slice, and behind it the keys that
  // survive the first digit (compacted).
  static constexpr int kSmemKeys = 24576;
  // Rows up to this long may be selected by one CTA alone: 16K leaves 8K words behind the row for its
  // compacted keys (about k plus one histogram bin).
  static constexpr int kSoloMaxKeys = 16384;
  // Slices longer than this (a solo row is a slice; decided per team, so that a team's CTAs run the
  // same passes) compact the keys that survive the first digit before the later passes. On shorter
  // ones the list would hold much of the slice (k = 2048 of 4K keys) and the compaction pass costs
  // more than it saves (docs/perf-notes.md).
  static constexpr int kCompactMinKeys = 6144;
  // CTAs per thread-block cluster, i.e. per team row, chosen per launch from the shape (launch.cuh):
  // batches with few rows take the largest team (a row's latency falls with its slices); batches
  // with many rows the size, among those whose slices hold a row as long as the stride, that
  // finishes them in the fewest, shortest rounds. 8 is the portable cluster size, so the launch works
  // on every Hopper part; a team covers rows up to 8 x kSmemKeys = 192K columns in shared memory.
  static constexpr int kMinClusterSize = 2;
  static constexpr int kMaxClusterSize = 8;
  // What a team row costs beyond its slice, in keys, for the choice of team size in batches of many
  // rows (launch.cuh): its digit exchanges and barriers take ~14K cycles whatever its length, its
  // passes over a slice ~0.5 cycles per key (clock64 stamps of 16K slices, docs/perf-notes.md).
  static constexpr int kTeamRowFixedKeys = 28672;
  // When a batch has no more rows than the grid has clusters of the largest size, most clusters
  // would idle: every row longer than this is then selected by a whole team.
  static constexpr int kTeamMinFewRows = 4096;
  // Slices start at multiples of this many columns, so each starts 16-byte aligned whenever the row
  // does (16 covers 4-byte and 2-byte logits).
  static constexpr int kSliceAlign = 16;
  // sorted=True sorts the selection in the keys buffer as 64-bit words, padded to a power of two.
  static constexpr int kMaxSortedK = 8192;
  static_assert(kMaxSortedK * 2 <= kSmemKeys, "the sorted selection fits the keys buffer");
  static_assert(kSoloMaxKeys <= kSmemKeys && kTeamMinFewRows <= kSoloMaxKeys, "a solo row fits the keys buffer");
  static_assert(kMaxClusterSize <= Team::kMaxSize, "team reads are unrolled for kMaxSize CTAs");
};

enum WindowMode : int { kWindowLengths = 0, kWindowDecode = 1, kWindowPrefill = 2 };

struct Params {
  const void* logits;
  int64_t row_pitch;  // elements between rows: logits.stride(0), not the width (vLLM #42169)
  int rows;
  int stride;  // columns per row (SPEC's stride): lengths are clamped to it
  const int32_t* bounds;      // lengths, seq_lens or row_ends (see WindowMode)
  const int32_t* row_starts;  // kWindowPrefill only
  int window_mode;
  int next_n;
  int k;
  int by_value;  // sorted=True
  const int32_t* page_table;  // null unless the page-table transform is fused
  int64_t page_table_pitch;
  int page_size;
  int32_t* out;
  void* values;  // null unless values are wanted
  // Rows longer than this are team rows (plan_row), selected by teams of team_size CTAs (the
  // launch's cluster size); both chosen on the host from the shape alone (launch.cuh).
  int team_min_length;
  int team_size;
  // Workspace (WorkspaceLayout)
  uint32_t* queue;  // [0]: rows claimed beyond the grid's first row per CTA; 0 between launches
};

// Row r's valid window [start, start + n) of its logits row, clamped to [0, stride) as SPEC §3 says:
// negative lengths are empty rows, lengths past the row end are cut. 64-bit arithmetic so that no
// bound a caller passes can overflow.
struct RowWindow {
  int start;
  int n;
};

__device__ __forceinline__ RowWindow row_window(const Params& p, int r) {
  int64_t start = 0, length;
  if (p.window_mode == kWindowDecode) {
    length = static_cast<int64_t>(p.bounds[r / p.next_n]) - p.next_n + (r % p.next_n) + 1;
  } else if (p.window_mode == kWindowPrefill) {
    start = p.row_starts[r];
    start = start < 0 ? 0 : (start > p.stride ? p.stride : start);
    length = static_cast<int64_t>(p.bounds[r]) - p.row_starts[r];
  } else {
    length = p.bounds[r];
  }
  length = length < 0 ? 0 : length;
  length = length > p.stride - start ? p.stride - start : length;
  return RowWindow{static_cast<int>(start), static_cast<int>(length)};
}

enum class RowPath { kShort, kSolo, kTeam, kGlobal };

// The per-row path choice, a pure function of the row's own length and the call's constants, made on
// the device for every row (a captured graph serves any lengths):
//   short: n <= k, the answer is 0..n-1 (no logit read);
//   solo:  one CTA, the row in its shared memory;
//   team:  the CTAs of one cluster, one slice of the row in each one's shared memory;
//   global: a slice would not fit shared memory; one CTA, passes over global memory.
__host__ __device__ inline RowPath plan_row(int n, int k, bool by_value, int team_min_length, int team_size) {
  if (n <= k && !by_value) return RowPath::kShort;
  if (n <= team_min_length) return RowPath::kSolo;
  if (TeamSlices::of(n, team_size, Policy::kSliceAlign).slice_len <= Policy::kSmemKeys) return RowPath::kTeam;
  return RowPath::kGlobal;
}
__device__ __forceinline__ RowPath plan_row(const Params& p, int n) {
  return plan_row(n, p.k, p.by_value != 0, p.team_min_length, p.team_size);
}

// The workspace: the work queue's counter, nothing per row (team rows combine through distributed
// shared memory). 256 bytes keep the layout open for the device plan.
struct WorkspaceLayout {
  static constexpr int64_t kBytes = 256;
  static int64_t bytes(int64_t /*rows*/, int64_t /*stride*/, int64_t /*k*/) { return kBytes; }
};

// Where the free part of the keys buffer starts after n keys (16-byte aligned).
__device__ __forceinline__ int spare_offset(int n) { return (n + 3) & ~3; }

template <typename T>
__device__ __forceinline__ RowOutput<T> row_output(const Params& p, int r, const RowWindow& w) {
  RowOutput<T> output;
  output.out = p.out + static_cast<int64_t>(r) * p.k;
  output.values = p.values ? static_cast<T*>(p.values) + static_cast<int64_t>(r) * p.k : nullptr;
  output.row = static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start;
  output.page_table = p.page_table ? p.page_table + static_cast<int64_t>(r) * p.page_table_pitch : nullptr;
  output.page_size = p.page_size;
  output.by_value = p.by_value != 0;
  return output;
}

__device__ __forceinline__ IndexSink index_sink(const Params& p, int r) {
  return IndexSink{p.out + static_cast<int64_t>(r) * p.k};
}

// Whether finishing a row reads what other CTAs of its team wrote (else rank 0 only pads).
__device__ __forceinline__ bool finish_reads_output(const Params& p) {
  return p.by_value != 0 || p.values != nullptr || p.page_table != nullptr;
}

// Row r by this CTA's team: its slice into shared memory, then the team's selection (team.cuh). A
// solo row is the one slice of a team of one.
template <typename T, class OnLoadsIssued>
__device__ __forceinline__ void select_row_in_shared(const Params& p, int r, Team& team, uint32_t* keys,
                                                     typename BlockSelect<Policy::kThreads>::TempStorage& ts,
                                                     const OnLoadsIssued& on_loads_issued) {
  constexpr int kThreads = Policy::kThreads;
  using Select = BlockSelect<kThreads>;
  team.reclaim();  // the team has read this CTA's histogram and counts of the previous row
  Select::zero_histogram(ts);
  const RowWindow w = row_window(p, r);
  const TeamSlices slices = TeamSlices::of(w.n, team.size, Policy::kSliceAlign);
  const int rank = team.rank();
  const int first = slices.first(rank), length = slices.length(rank, w.n);
  PERSISTENT_TOPK_STAMP(1);
  __syncthreads();
  load_row<kThreads, T>(static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start + first,
                        length, keys, ts, on_loads_issued);
  PERSISTENT_TOPK_STAMP(2);  // (select_in_shared() starts with a barrier: keys and ts.hist complete)
  const int spare = spare_offset(length);
  const int m = min(p.k, w.n);
  select_in_shared<kThreads, T>(length, w.n, m, keys, ts, ColumnOf{first}, index_sink(p, r), keys + spare,
                                Policy::kSmemKeys - spare, slices.slice_len > Policy::kCompactMinKeys, team);
  PERSISTENT_TOPK_STAMP(9);
  // Bare indices, no padding: the row is done. (The kernel's loop starts every row with a barrier, so
  // keys and ts are free for the next one either way.)
  if (m == p.k && !finish_reads_output(p)) return;
  if (finish_reads_output(p)) team.publish();  // the whole answer is in out before one CTA finishes it
  if (team.rank() == 0) finish_row<kThreads, T>(m, p.k, row_output<T>(p, r, w), reinterpret_cast<uint64_t*>(keys));
}

// Where a CTA is in the work: uniform across the CTA, so it lives in shared memory (updated by warp
// 0 between rows) and leaves every register to the selection code.
struct WorkState {
  enum Phase : int { kTeamRows = 0, kTeamRowsDone = 1, kSoloRows = 2, kDone = 3 };
  int phase;
  int row;                  // the row to select now
  int batch;                // team phase: first of the 32 rows looked at (batch + j * clusters)
  uint32_t team_rows_left;  // team phase: of those, the team rows not yet selected (bit j)
  uint32_t item;            // solo phase: this CTA's current row
  uint32_t claim;           // solo phase: the queue's answer to this CTA's latest claim
};

// Warp 0: the next row of this CTA into `state` (see the kernel for the order).
__device__ __forceinline__ void next_row(const Params& p, WorkState& state) {
  const int lane = threadIdx.x % 32;
  const uint32_t rows = static_cast<uint32_t>(p.rows);
  const int phase = state.phase;
  uint32_t left = state.team_rows_left;
  int batch = state.batch;
  __syncwarp();  // every lane has read `state` before lane 0 rewrites it
  if (phase == WorkState::kTeamRows) {
    const int clusters = static_cast<int>(gridDim.x) / p.team_size;
    while (left == 0u && batch < p.rows) {  // look at the next 32 rows of this cluster
      const int candidate = batch + lane * clusters;
      left = __ballot_sync(0xFFFFFFFFu,
                           candidate < p.rows && plan_row(p, row_window(p, candidate).n) == RowPath::kTeam);
      if (left == 0u) batch += 32 * clusters;
    }
    if (lane == 0) {
      if (left == 0u) {
        state.phase = WorkState::kTeamRowsDone;
        state.batch = p.rows;
      } else {
        state.row = batch + (__ffs(left) - 1) * clusters;
        left &= left - 1u;
        state.batch = left == 0u ? batch + 32 * clusters : batch;
      }
      state.team_rows_left = left;
    }
    return;
  }
  if (lane != 0) return;
  if (phase == WorkState::kTeamRowsDone) {
    state.phase = WorkState::kSoloRows;
  } else {  // the previous solo row is done: its claim names the next one
    state.item = gridDim.x + state.claim;
    if (state.claim == rows - 1) p.queue[0] = 0u;  // the launch's last claim: reset for the next launch
  }
  if (state.item >= rows) {
    state.phase = WorkState::kDone;
    return;
  }
  state.row = static_cast<int>(state.item);
}

// Thread 0 claims the row after this one, while the row's loads are in flight: the claim's round
// trip hides behind them, and its answer goes straight to shared memory (not a register that lives
// through the selection).
__device__ __forceinline__ void claim_next_row(const Params& p, WorkState& state) {
  if (threadIdx.x == 0) state.claim = atomicAdd(&p.queue[0], 1u);
}

template <typename T>
__global__ void __launch_bounds__(Policy::kThreads, Policy::kMinBlocksPerSM) persistent_topk_kernel(Params p) {
  constexpr int kThreads = Policy::kThreads;
  using Select = BlockSelect<kThreads>;
  // 128-byte aligned whatever the static shared memory before it adds up to: a warp's 512-byte
  // cp.async fills and 16-byte reads of keys then touch 4 128-byte lines, not 5 (an offset of 16 bytes
  // made every row's load ~40% slower in an experiment).
  extern __shared__ __align__(128) uint4 dynamic_smem[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(dynamic_smem);  // [Policy::kSmemKeys]
  __shared__ typename Select::TempStorage select_storage;
  __shared__ WorkState state;

  // Two phases, one loop (one copy of the selection code, which keeps it free of register spills).
  //
  // Team rows first: cluster c looks at rows c, c + clusters, c + 2 clusters, ... (32 at a time, one
  // per lane) and selects those that are team rows, all its CTAs together. Every CTA of the cluster
  // reads the same lengths and so walks the same rows through the same barriers. Long rows thus go
  // first, as longest-first scheduling wants.
  //
  // Then every other row by one CTA. Each CTA starts on row blockIdx.x without touching the queue;
  // the queue hands out rows gridDim.x and up. The queue resets itself: every CTA whose first row
  // exists claims one row past each row it visits, so a launch makes exactly `rows` claims, and the
  // CTA whose claim is the last one (claim == rows - 1) knows nothing touches the counter again.
  PERSISTENT_TOPK_STAMP(0);
  const bool team_rows_possible = p.stride > p.team_min_length;
  Team team = team_rows_possible ? Team::of_cluster(p.team_size) : Team::solo();
  if (threadIdx.x == 0) {
    state.phase = team_rows_possible ? WorkState::kTeamRows : WorkState::kTeamRowsDone;
    state.batch = static_cast<int>(blockIdx.x) / p.team_size;
    state.team_rows_left = 0u;
    state.item = blockIdx.x;
  }
  for (;;) {
    __syncthreads();  // the previous row's shared state is free; `state` is written
    if (threadIdx.x < 32) next_row(p, state);
    __syncthreads();
    const int phase = state.phase, r = state.row;
    if (phase == WorkState::kDone) break;
    if (phase == WorkState::kTeamRowsDone) {
      team.reclaim();  // nobody reads this CTA's shared memory any more: free for solo rows
      PERSISTENT_TOPK_STAMP(10);
      team = Team::solo();
      continue;
    }
    const RowWindow w = row_window(p, r);
    const RowPath path = plan_row(p, w.n);
    const bool solo_phase = phase == WorkState::kSoloRows;
    if (path == (solo_phase ? RowPath::kSolo : RowPath::kTeam)) {
      select_row_in_shared<T>(p, r, team, keys, select_storage, [&]() {
        if (solo_phase) claim_next_row(p, state);
      });
      continue;
    }
    if (solo_phase) claim_next_row(p, state);  // short rows are quick, team rows done: nothing to hide behind
    if (!solo_phase || (path != RowPath::kShort && path != RowPath::kGlobal)) continue;  // done by its team
    const RowOutput<T> output = row_output<T>(p, r, w);
    const int m = min(p.k, w.n);
    if (path == RowPath::kShort) {
      ShortRowAgent<kThreads>::run(w.n, index_sink(p, r));
    } else {
      select_in_global<kThreads, T>(output.row, w.n, m, select_storage, index_sink(p, r));
    }
    __syncthreads();  // out[0, m) is written
    finish_row<kThreads, T>(m, p.k, output, reinterpret_cast<uint64_t*>(keys));
  }
  PERSISTENT_TOPK_STAMP(11);
}

}  // namespace persistent_topk
