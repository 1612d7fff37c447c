// The dispatch layer: tuning policy, the row windows of each op, the per-row path choice, the
// workspace layout, the work queue, and the persistent kernel that ties them together.
//
// One launch, grid fixed by (device, occupancy, rows), never by the lengths: the same launch serves
// any lengths <= stride and can be captured in a CUDA graph once. Every row's path is chosen on the
// device from its own length. When the shape allows team rows the launch is of thread-block clusters,
// which first select the long rows together (team rows, one cluster each, handed out by the work
// queue); then, and in plain launches from the start, every CTA takes the other rows one at a time
// from the queue until none is left.
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
  // with many rows the smallest whose slices hold a row as long as the stride (the most clusters at
  // once). 8 is the portable cluster size, so the launch works on every Hopper part; a team covers
  // rows up to 8 x kSmemKeys = 192K columns in shared memory.
  static constexpr int kMinClusterSize = 2;
  static constexpr int kMaxClusterSize = 8;
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
  static_assert(kMaxClusterSize <= Team::kMaxSize, "a team mailbox holds kMaxSize senders");
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
  uint32_t* queue;  // the work queue's counters (QueueCounter); 0 between launches
};

// Row r's valid window [start, start + n) of its logits row, clamped to [0, stride) as SPEC §3 says:
// negative lengths are empty rows, lengths past the row end are cut. 64-bit arithmetic so that no
// bound a caller passes can overflow.
struct RowWindow {
  int start;
  int n;
};

// Read once per row (the work queue keeps what it read: WorkState::row_windows), through the
// read-only data path: the kernel never writes them.
__device__ __forceinline__ RowWindow row_window(const Params& p, int r) {
  int64_t start = 0, length;
  if (p.window_mode == kWindowDecode) {
    length = static_cast<int64_t>(__ldg(p.bounds + r / p.next_n)) - p.next_n + (r % p.next_n) + 1;
  } else if (p.window_mode == kWindowPrefill) {
    const int32_t row_start = __ldg(p.row_starts + r);
    start = row_start < 0 ? 0 : (row_start > p.stride ? p.stride : row_start);
    length = static_cast<int64_t>(__ldg(p.bounds + r)) - row_start;
  } else {
    length = __ldg(p.bounds + r);
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

// The workspace: the work queue's counters, nothing per row (team rows combine through distributed
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

// Row r (window w) by this CTA's team: its slice into shared memory, then the team's selection
// (team.cuh). A solo row is the one slice of a team of one. record_claim() runs in thread 0 once the
// loads are in.
template <typename T, class RecordClaim>
__device__ __forceinline__ void select_row_in_shared(const Params& p, int r, const RowWindow& w, Team& team,
                                                     uint32_t* keys,
                                                     typename BlockSelect<Policy::kThreads>::TempStorage& ts,
                                                     const RecordClaim& record_claim) {
  constexpr int kThreads = Policy::kThreads;
  using Select = BlockSelect<kThreads>;
  Select::zero_histogram(ts);
  const TeamSlices slices = TeamSlices::of(w.n, team.size, Policy::kSliceAlign);
  const int rank = team.rank();
  const int first = slices.first(rank), length = slices.length(rank, w.n);
  PERSISTENT_TOPK_STAMP(1);
  __syncthreads();
  load_row<kThreads, T>(static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start + first,
                        length, keys, ts);
  // Behind the barrier before the loads (every thread has read what next_row() read of the state) and
  // before the row's write-out, whose exchange hands a team's claim to its other CTAs.
  if (threadIdx.x == 0) record_claim();
  PERSISTENT_TOPK_STAMP(2);  // (select_in_shared() starts with a barrier: keys and ts.hist complete)
  const int spare = spare_offset(length);
  const int m = min(p.k, w.n);
  select_in_shared<kThreads, T>(length, w.n, m, keys, ts, ColumnOf{first}, index_sink(p, r), keys + spare,
                                Policy::kSmemKeys - spare, slices.slice_len > Policy::kCompactMinKeys, team);
  PERSISTENT_TOPK_STAMP(9);
  // Bare indices, no padding: the row is done. (The kernel's loop starts every row with a barrier, so
  // keys and ts are free for the next one either way.)
  if (m == p.k && !finish_reads_output(p)) return;
  if (finish_reads_output(p)) team.publish_global_writes();  // the answer is in out before one CTA finishes it
  if (team.rank() == 0) finish_row<kThreads, T>(m, p.k, row_output<T>(p, r, w), reinterpret_cast<uint64_t*>(keys));
}

// The work queue: which row each CTA selects next. Its mechanism (counters in the workspace that reset
// themselves, claims hidden behind a row's loads) is apart from its contents (which rows, in what
// order: today rows in index order, found from their lengths; later a device plan's list, SPEC §5).
//
// Team launches (clusters) hand out rows in two phases, each over ordinals that count the rows of its
// kind in index order (find_row() finds the row of an ordinal):
//  - team rows: cluster c starts on team row c, then takes clusters + (its rank 0's claims on the team
//    counter), one claim during each team row's load, which the team's CTAs receive with the row's
//    last exchange (Team::set_leader_word). A cluster with a long row thus never holds a second one
//    that an idle cluster could take (static round robin gave some clusters two team rows and others
//    none);
//  - every other row (short, solo and global rows) by one CTA, each taken from the solo counter: CTAs
//    whose cluster had no team row start at once, the others join as their team rows finish.
// Plain launches (no team rows possible) start every CTA on row blockIdx.x without touching the queue,
// and hand out rows gridDim.x and up.
//
// The counters reset themselves: a launch's claims on each are counted in advance, so the CTA whose
// claim has the last value knows that nothing touches that counter again and writes 0.
//  - team counter: one claim per team row selected, T claims for T team rows (claims past the last
//    ordinal fail; clusters whose first ordinal fails claim nothing; see skip_team_claims() for
//    launches that need no claim);
//  - solo counter in team launches: every CTA claims until a claim fails, S + grid claims for S rows
//    (none when S = 0);
//  - solo counter in plain launches: every CTA claims one row past each row it visits, `rows` claims,
//    and none at all when the grid has a CTA for every row.
enum QueueCounter : int { kSoloCounter = 0, kTeamCounter = 1 };
constexpr uint32_t kNoClaim = 0xFFFFFFFFu;  // a claim not made: no row has this ordinal

// Where a CTA is in the work: uniform across the CTA, so it lives in shared memory (written between
// rows, behind barriers) and leaves every register to the selection code.
struct WorkState {
  static constexpr int kWarps = Policy::kThreads / 32;
  enum Phase : int { kTeamRows = 0, kSoloRows = 1 };
  int phase;
  int row;                  // the row selected last; -1 before the first
  uint32_t ordinal;         // the next row's ordinal (plain launches: the row itself)
  uint32_t claim;           // solo rows of team launches: the solo counter's answer to the latest claim
  int team_claims_skipped;  // see skip_team_claims(); set by the first search of the team phase,
  uint32_t team_total;      // with the number of team rows when they are skipped
  // The row cursor (find_row): the ordinals a CTA asks for within a phase only grow, so each search
  // resumes where the last one stopped. Rows before window_row are counted (cursor_count of the
  // phase's kind); window_lanes marks the rows of the kind among the kThreads rows from window_row,
  // one word per warp, and row_windows holds their RowWindows (a row's bounds are read once: every
  // later read would be an L2 round trip, ~700 cycles, as the team's cluster-scope acquires invalidate
  // L1). Written only between two barriers (look_at_window).
  int window_row;
  uint32_t cursor_count;
  uint32_t window_lanes[kWarps];
  RowWindow row_windows[Policy::kThreads];
};

__device__ __forceinline__ void reset_cursor(WorkState& s) {
  s.window_row = -1;  // no window looked at yet
  s.cursor_count = 0;
}

// Marks which of the kThreads rows from `first` are of the kind (one per thread) and moves the window
// there; `counted` rows of the kind lie before it. Block-wide; the caller puts barriers around it.
__device__ __forceinline__ void look_at_window(const Params& p, WorkState& s, int first, uint32_t counted,
                                               bool team_kind) {
  const int r = first + static_cast<int>(threadIdx.x);
  const RowWindow w = r < p.rows ? row_window(p, r) : RowWindow{0, 0};
  s.row_windows[threadIdx.x] = w;
  const bool match = r < p.rows && (plan_row(p, w.n) == RowPath::kTeam) == team_kind;
  const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, match);
  if (threadIdx.x % 32 == 0) s.window_lanes[threadIdx.x / 32] = lanes;
  if (threadIdx.x == 0) {
    s.window_row = first;
    s.cursor_count = counted;
  }
}

// What find_row() found: the row (-1 if there are fewer rows of the kind than the ordinal asks for)
// with its window and, when its search reached the window that holds the last row, how many rows of
// the kind exist.
struct FoundRow {
  static constexpr uint32_t kTotalUnknown = 0xFFFFFFFFu;
  int row;
  uint32_t total;
  RowWindow window;
};

// Block-wide (every thread calls it and gets the same answer): the row with the given ordinal among
// the rows that are team rows (team_kind) or are not. A window of kThreads rows is looked at once;
// later searches that end in it read its marks from shared memory, without a barrier.
__device__ __forceinline__ FoundRow find_row(const Params& p, WorkState& s, uint32_t ordinal, bool team_kind) {
  const int lane = threadIdx.x % 32;
  for (;;) {
    if (s.window_row < 0) {
      __syncthreads();  // every thread has read window_row
      look_at_window(p, s, 0, 0u, team_kind);
      __syncthreads();
    }
    // Every warp finds the answer from the window's marks: lane w counts warp w's rows.
    const int base = s.window_row;
    const uint32_t counted = s.cursor_count;
    const uint32_t lanes = lane < WorkState::kWarps ? s.window_lanes[lane] : 0u;
    const uint32_t count = __popc(lanes);
    uint32_t inclusive = count;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const uint32_t other = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    const uint32_t total = __shfl_sync(0xFFFFFFFFu, inclusive, 31);
    const uint32_t wanted = ordinal - counted;  // ordinal >= counted: the cursor never passes an answer
    const bool last_window = base + Policy::kThreads >= p.rows;
    const uint32_t kind_total = last_window ? counted + total : FoundRow::kTotalUnknown;
    if (wanted < total) {
      const int holder = __ffs(__ballot_sync(0xFFFFFFFFu, inclusive > wanted)) - 1;
      const uint32_t holder_lanes = __shfl_sync(0xFFFFFFFFu, lanes, holder);
      const uint32_t holder_before = __shfl_sync(0xFFFFFFFFu, inclusive - count, holder);
      const int bit = static_cast<int>(__fns(holder_lanes, 0, static_cast<int>(wanted - holder_before) + 1));
      const int at = 32 * holder + bit;
      return FoundRow{base + at, kind_total, s.row_windows[at]};
    }
    if (last_window) return FoundRow{-1, kind_total, RowWindow{0, 0}};
    __syncthreads();  // every thread has read the window and the cursor
    look_at_window(p, s, base + Policy::kThreads, counted + total, team_kind);
    __syncthreads();
  }
}

// Whether a team launch's clusters skip their team-row claims, from the first search of the team phase:
// every CTA knows the number of team rows after it when one window holds every row, and when there are
// no more of them than clusters, no claim could name one (each cluster's first, static ordinal covers
// them all). Uniform over the launch, so the count of claims that resets the team counter stays exact.
__device__ __forceinline__ bool skip_team_claims(const Params& p, const FoundRow& first) {
  return p.rows <= Policy::kThreads && first.total <= gridDim.x / static_cast<uint32_t>(p.team_size);
}

// Thread 0's claim of the row after the one this CTA starts: issued before the row's loads, so that
// its round trip hides behind them, and recorded (in shared memory; a team's rank 0 hands it to the
// team) once they are in. Held in one register only while the row loads.
struct NextRowClaim {
  uint32_t answer = kNoClaim;

  // Thread 0 only.
  __device__ __forceinline__ void issue(const Params& p, const WorkState& s, const Team& team) {
    if (s.phase == WorkState::kTeamRows) {
      if (team.rank() == 0 && !s.team_claims_skipped) answer = atomicAdd(&p.queue[kTeamCounter], 1u);
    } else if (p.team_size > 1) {
      answer = atomicAdd(&p.queue[kSoloCounter], 1u);
    } else if (gridDim.x < static_cast<uint32_t>(p.rows)) {
      answer = gridDim.x + atomicAdd(&p.queue[kSoloCounter], 1u);
    }
  }
  __device__ __forceinline__ void record(const Params& p, WorkState& s, const Team& team) const {
    if (s.phase == WorkState::kTeamRows) {
      if (team.rank() == 0) Team::set_leader_word(answer);
    } else if (p.team_size > 1) {
      s.claim = answer;
    } else {
      s.ordinal = answer;  // plain launches: the row itself
    }
  }
};

// The row a CTA selects next (-1: none) and its window.
struct NextRow {
  int row;
  RowWindow window;
};

// Block-wide: the row this CTA selects next, or -1 when it is done (see the work queue above). Leaves
// the team (team becomes solo) when the team rows run out.
__device__ __forceinline__ NextRow next_row(const Params& p, WorkState& s, Team& team) {
  const uint32_t rows = static_cast<uint32_t>(p.rows);
  if (p.team_size == 1) {  // plain launch: the row is the ordinal
    const uint32_t row = s.ordinal;
    if (row < rows) return NextRow{static_cast<int>(row), row_window(p, static_cast<int>(row))};
    if (threadIdx.x == 0 && row == gridDim.x + rows - 1u) p.queue[kSoloCounter] = 0u;  // the last claim
    return NextRow{-1, RowWindow{0, 0}};
  }
  if (s.phase == WorkState::kTeamRows) {
    const uint32_t clusters = gridDim.x / static_cast<uint32_t>(p.team_size);
    const bool after_first = s.row >= 0;
    const bool claims = after_first && !s.team_claims_skipped;
    uint32_t claim = kNoClaim;  // thread 0's
    if (threadIdx.x == 0 && after_first) {  // rank 0's claim names the cluster's next team row
      if (claims) claim = Team::leader_word();
      s.ordinal = claims ? clusters + claim : kNoClaim;
    }
    __syncthreads();
    const uint32_t ordinal = s.ordinal;
    // A skipped claim names no row: the search would find none.
    const FoundRow found =
        ordinal == kNoClaim ? FoundRow{-1, s.team_total, RowWindow{0, 0}} : find_row(p, s, ordinal, true);
    if (threadIdx.x == 0 && !after_first) {  // read only in later calls, behind barriers
      s.team_claims_skipped = skip_team_claims(p, found);
      s.team_total = found.total;
    }
    if (found.row >= 0) {
      if (threadIdx.x == 0) s.row = found.row;
      return NextRow{found.row, found.window};
    }
    // The team rows are all taken (a failed search has counted them).
    const uint32_t team_rows = found.total;
    if (threadIdx.x == 0 && team.rank() == 0 && claim != kNoClaim && claim == team_rows - 1u)
      p.queue[kTeamCounter] = 0u;  // the last claim
    team.close();
    team = Team::solo();
    const uint32_t solo_rows = rows - team_rows;
    if (solo_rows == 0u) return NextRow{-1, RowWindow{0, 0}};
    __syncthreads();  // every thread has read the cursor
    if (threadIdx.x == 0) {
      s.phase = WorkState::kSoloRows;
      reset_cursor(s);
      s.claim = atomicAdd(&p.queue[kSoloCounter], 1u);
    }
    __syncthreads();
  }
  const uint32_t claim = s.claim;
  const FoundRow found = find_row(p, s, claim, false);
  if (found.row < 0 && threadIdx.x == 0 && claim == found.total + gridDim.x - 1u)
    p.queue[kSoloCounter] = 0u;  // the last claim
  return NextRow{found.row, found.window};
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

  // One loop over the rows the queue hands this CTA, team rows first (one copy of the selection code,
  // which keeps it free of register spills). The launch sets team_size to 1 unless it is of clusters.
  PERSISTENT_TOPK_STAMP(0);
  const bool team_launch = p.team_size > 1;
  Team team = team_launch ? Team::of_cluster(p.team_size) : Team::solo();
  team.open();
  if (threadIdx.x == 0) {
    state.phase = team_launch ? WorkState::kTeamRows : WorkState::kSoloRows;
    state.row = -1;
    state.ordinal = team_launch ? blockIdx.x / static_cast<uint32_t>(p.team_size) : blockIdx.x;
    reset_cursor(state);
  }
  for (;;) {
    __syncthreads();  // the previous row's shared state is free; `state` is written
    const NextRow next = next_row(p, state, team);
    const int r = next.row;
    if (r < 0) break;
    const RowWindow w = next.window;
    const RowPath path = plan_row(p, w.n);
    NextRowClaim claim;
    if (threadIdx.x == 0) claim.issue(p, state, team);
    if (path == RowPath::kTeam || path == RowPath::kSolo) {
      select_row_in_shared<T>(p, r, w, team, keys, select_storage, [&]() { claim.record(p, state, team); });
      continue;
    }
    if (path == RowPath::kShort && !finish_reads_output(p)) {  // indices and padding, nothing to finish
      ShortRowAgent<kThreads>::run_bare(w.n, p.k, p.out + static_cast<int64_t>(r) * p.k);
      __syncthreads();  // every thread has read what next_row() read of `state`
      if (threadIdx.x == 0) claim.record(p, state, team);
      continue;
    }
    const RowOutput<T> output = row_output<T>(p, r, w);
    const int m = min(p.k, w.n);
    if (path == RowPath::kShort) {
      ShortRowAgent<kThreads>::run(w.n, index_sink(p, r));
    } else {
      select_in_global<kThreads, T>(output.row, w.n, m, select_storage, index_sink(p, r));
    }
    __syncthreads();  // out[0, m) is written; every thread has read what next_row() read of `state`
    if (threadIdx.x == 0) claim.record(p, state, team);
    finish_row<kThreads, T>(m, p.k, output, reinterpret_cast<uint64_t*>(keys));
  }
  PERSISTENT_TOPK_STAMP(11);
}

}  // namespace persistent_topk
