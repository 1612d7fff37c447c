// The plan (SPEC §5): made once per decode step by a small device kernel from the live lengths,
// read by every layer's launch of the persistent kernel, and checked by it row by row.
//
// It holds, in one int32 buffer: a header (the shape and launch policy it was made for, and the
// status word the kernel sets to STALE), each row's planned length, and the order in which the
// kernel hands rows out: the team rows (each selected by a team of its own size, a cluster or a part
// of one) longest first, then every other row longest first (short rows, which need no selection,
// last). Longest first (LPT) keeps the long rows off the end of the launch, where they would run with
// the grid idle beside them. The plan only orders and sizes work: every path decision is made again
// from the live length, so a stale plan still gives the exact answer, just possibly more slowly.
#pragma once
#include <cstdint>

#include "policy.cuh"

namespace persistent_topk {

// Row windows (persistent_topk/plan.py MODE_*): lengths from column 0; decode's seq_lens and next_n;
// prefill's row starts and ends; row starts and lengths counted from them.
enum WindowMode : int { kWindowLengths = 0, kWindowDecode = 1, kWindowPrefill = 2, kWindowStarts = 3 };

// Programmatic dependent launch (PDL). A kernel launched with the programmatic-serialization attribute
// may start before the kernel ahead of it in the stream has finished; it waits here before it reads
// anything that kernel may write. Without the attribute this returns at once.
__device__ __forceinline__ void wait_for_previous_grid() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
// Lets the next kernel, if launched with PDL, start its prologue now (it still waits for this grid to
// finish before reading what it writes).
__device__ __forceinline__ void allow_next_grid() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

// Row r's valid window [start, start + n) of its logits row, clamped to [0, stride) as SPEC §3 says:
// negative lengths are empty rows, lengths past the row end are cut.
struct RowWindow {
  int start;
  int n;
};

// Where the rows' windows come from: lengths, decode's seq_lens and next_n, or prefill's row
// starts and ends. Shared by the plan kernel and the persistent kernel, so both read the same
// windows. 64-bit arithmetic, so that no bound a caller passes can overflow.
struct RowSource {
  const int32_t* bounds;      // lengths, seq_lens or row_ends (see WindowMode)
  const int32_t* row_starts;  // kWindowPrefill and kWindowStarts only
  int window_mode;
  int next_n;
  int stride;  // columns per row (SPEC's stride): windows are clamped to it

  // Which word of `bounds` holds row r's bound, and whether the mode has row starts.
  __device__ __forceinline__ int bound_index(int r) const { return window_mode == kWindowDecode ? r / next_n : r; }
  __device__ __forceinline__ bool has_starts() const {
    return window_mode == kWindowPrefill || window_mode == kWindowStarts;
  }
  // Row r's window from its bound (bounds[bound_index(r)]) and, where the mode has them, its start
  // (row_starts[r]; anything otherwise): for callers that fetch the two words themselves.
  __device__ __forceinline__ RowWindow window_of(int r, int32_t bound, int32_t row_start) const {
    int64_t start = 0, length;
    if (window_mode == kWindowDecode) {
      length = static_cast<int64_t>(bound) - next_n + (r % next_n) + 1;
    } else if (has_starts()) {
      start = row_start < 0 ? 0 : (row_start > stride ? stride : row_start);
      length = static_cast<int64_t>(bound) - (window_mode == kWindowPrefill ? row_start : 0);
    } else {
      length = bound;
    }
    length = length < 0 ? 0 : length;
    length = length > stride - start ? stride - start : length;
    return RowWindow{static_cast<int>(start), static_cast<int>(length)};
  }
  // Through the read-only data path: no kernel of this library writes the bounds.
  __device__ __forceinline__ RowWindow window(int r) const {
    return window_of(r, __ldg(bounds + bound_index(r)), has_starts() ? __ldg(row_starts + r) : 0);
  }
};

enum class RowPath { kShort, kSolo, kTeam };

// The team sizes a cluster of `cluster_size` CTAs can give a row: its own size and its halves while
// they are even (16: 16, 8, 4, 2; 6: 6, 3), so that a cluster splits into teams by halving
// (dispatch.cuh). The smallest of them with at least `want` CTAs (the cluster's size if none has),
// never below 2.
__host__ __device__ inline int team_size_for(int want, int cluster_size) {
  int size = cluster_size;
  while ((size & 1) == 0 && size / 2 >= 2 && size / 2 >= want) size /= 2;
  return size;
}

// Length classes: a quarter of an octave each, (top / 1.25, top] with top = 2^e x 5/4, 6/4, 7/4, 8/4;
// every power of two is a class's top, so the path lengths above each end a class. Longest first
// by class is enough to balance the grid, and every row of a class gets the same team (team_want):
// team sizes never grow along the order.
constexpr int kLengthClasses = 128;
struct LengthClass {
  int index;  // 0 for n <= 0, then 1..125, increasing with n
  int top;    // the class's longest length
  __device__ __forceinline__ static LengthClass of(int n) {
    if (n <= 1) return LengthClass{n <= 0 ? 0 : 1, n <= 0 ? 0 : 1};
    const int m = n - 1;
    const int e = 31 - __clz(m);
    const int quarter = e >= 2 ? (m >> (e - 2)) & 3 : (m << (2 - e)) & 3;
    const int top = e >= 2 ? (4 + quarter + 1) << (e - 2) : ((4 + quarter + 1) >> (2 - e));
    return LengthClass{2 + 4 * e + quarter, top > n ? top : n};
  }
};

// How many CTAs a row of n columns wants before the plan widens its team: 0 for a row that is never
// split (short, too short to gain, or in a batch of many rows one that one CTA holds), 1 for one that
// one CTA can hold (a team only when widened), else enough for slices of kTeamSliceKeys of the longest
// row of its class.
__device__ __forceinline__ int team_want(int n, int k, int min_team_length) {
  if (n <= k || n <= min_team_length) return 0;
  if (n <= Policy::kSoloMaxKeys) return 1;
  const int top = LengthClass::of(n).top;
  const int want = (top + Policy::kTeamSliceKeys - 1) / Policy::kTeamSliceKeys;
  return want < 2 ? 2 : want;
}

// The CTAs of a row's team after `widenings` doublings in a launch of clusters of `cluster_size`
// (1 for none): 1 means the row is not a team row.
__device__ __forceinline__ int team_size_of(int n, int k, int min_team_length, int cluster_size, int widenings) {
  const int want = team_want(n, k, min_team_length);
  if (cluster_size < 2 || want == 0) return 1;
  const int widened = want << widenings;
  return widened < 2 ? 1 : team_size_for(widened, cluster_size);
}

// The plan buffer: PlanHeader, then planned lengths [rows], then the order [rows].
struct PlanHeader {
  int32_t rows;
  int32_t team_rows;  // order[0, team_rows) are team rows, the rest follow
  int32_t k;
  int32_t stride;
  int32_t cluster_size;  // the launch the plan was made for (launch.cuh): 1 for plain launches
  int32_t capacity;      // its CTAs
  uint32_t status;  // kPlanFresh, or kPlanStale once a launch saw a live length differ from the plan
  int32_t widenings;  // how often the plan doubled every team (team_size_of)
  int32_t min_team_length;
  int32_t reserved[7];
};
static_assert(sizeof(PlanHeader) == 64, "the header keeps the arrays 16-byte aligned");
constexpr uint32_t kPlanFresh = 0;
constexpr uint32_t kPlanStale = 1;

struct PlanLayout {
  static constexpr int64_t kHeaderWords = sizeof(PlanHeader) / sizeof(int32_t);
  static int64_t bytes(int64_t rows) { return sizeof(int32_t) * (kHeaderWords + 2 * rows); }
};

// An entry of the order: the row, and for team rows the CTAs of its team (minus one) in the bits above
// it. Rows stay below 2^27 (the op checks), so an entry stays a non-negative int32.
struct OrderEntry {
  static constexpr int kRowBits = 27;
  static constexpr int32_t kMaxRows = 1 << kRowBits;
  __host__ __device__ static int32_t of(int row, int team_size) { return row | ((team_size - 1) << kRowBits); }
  __host__ __device__ static int row(int32_t entry) { return entry & (kMaxRows - 1); }
  __host__ __device__ static int team_size(int32_t entry) { return (entry >> kRowBits) + 1; }
};
static_assert(16 - 1 < (1 << (31 - OrderEntry::kRowBits)), "a team size of up to 16 fits an entry's top bits");

// What the persistent kernel reads of a plan.
struct PlanView {
  PlanHeader* header;
  const int32_t* planned_lengths;  // [rows]
  const int32_t* order;            // [rows]
  __host__ __device__ static PlanView of(void* buffer, int rows) {
    int32_t* words = static_cast<int32_t*>(buffer);
    return PlanView{reinterpret_cast<PlanHeader*>(words), words + PlanLayout::kHeaderWords,
                    words + PlanLayout::kHeaderWords + rows};
  }
};

struct PlanParams {
  RowSource source;
  int rows;
  int k;
  int cluster_size;  // the launch's (launch.cuh): 1 for a plain launch, where no row is a team row
  int capacity;      // the launch's CTAs
  // Rows up to this long are never team rows: kTeamMinLength in batches of few rows, where CTAs would
  // idle otherwise; kSoloMaxKeys in batches of many rows, where a solo CTA per row does less work
  // (128 rows of 1K..16K took 26 us with the rows past 4K on teams of 2, 15 us all solo).
  int min_team_length;
  void* plan;        // PlanLayout::bytes(rows)
};

// The plan kernel: one CTA of kPlanThreads. Rows are ordered by a stable counting sort on a key of
// their list (team rows first) and length class (longest first): each warp counts the keys of its
// contiguous chunk of rows, one scan over (key, warp) gives every warp its first position per key,
// and each warp then places its rows in row order. Deterministic, O(rows). Before that, every team's
// size: a row gets the CTAs it needs (team_want), and then every team doubles as often as the launch
// still holds all of the batch's teams and other rows at once (a row's latency falls with its slices;
// a batch that fills the grid keeps the fewest CTAs per row). Team sizes then fall along the order
// with the lengths, which is what lets a cluster split into teams by halving (dispatch.cuh).
constexpr int kPlanThreads = Policy::kPlanThreads;
constexpr int kPlanWarps = kPlanThreads / 32;
constexpr int kCachedLengths = Policy::kPlanCachedLengths;

// A lane's j-th row length (j counts the lane's rows: r = begin + lane + 32 j): in registers for the
// first kCachedLengths, read back from the plan (written by this same lane) for the rest. The unrolled
// compare-and-select keeps the array in registers (a dynamic index would put it in local memory).
struct LaneLengths {
  int cached[kCachedLengths];
  __device__ __forceinline__ void keep(int j, int n) {
#pragma unroll
    for (int c = 0; c < kCachedLengths; ++c) {
      if (c == j) cached[c] = n;
    }
  }
  __device__ __forceinline__ int get(int j, const int32_t* planned, int r) const {
    int n = 0;
#pragma unroll
    for (int c = 0; c < kCachedLengths; ++c) {
      if (c == j) n = cached[c];
    }
    return j < kCachedLengths ? n : planned[r];
  }
};
// Keys: 2 lists x 128 length classes.
constexpr int kPlanKeys = 2 * kLengthClasses;
static_assert(kPlanKeys * kPlanWarps == 8 * kPlanThreads, "the (key, warp) scan gives each thread 8 counts");

__device__ __forceinline__ int plan_key(int team_size, int n) {
  return (team_size > 1 ? 0 : kLengthClasses) + (kLengthClasses - 1 - LengthClass::of(n).index);
}

__global__ void __launch_bounds__(kPlanThreads, 1) make_plan_kernel(PlanParams q) {
  __shared__ uint32_t counts[kPlanKeys][kPlanWarps];  // per (key, warp); then each warp's next position
  __shared__ uint32_t thread_totals[kPlanWarps];
  __shared__ uint32_t team_rows;  // the first solo row's position: key kLengthClasses's first offset
  __shared__ uint32_t ctas_if_widened[Policy::kMaxWidenings + 1];  // CTAs the rows take at once
  const PlanView plan = PlanView::of(q.plan, q.rows);
  int32_t* planned = const_cast<int32_t*>(plan.planned_lengths);
  int32_t* order = const_cast<int32_t*>(plan.order);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int per_warp = (q.rows + kPlanWarps - 1) / kPlanWarps;
  const int begin = min(q.rows, warp * per_warp), end = min(q.rows, begin + per_warp);
  uint32_t* flat = &counts[0][0];
  for (int i = threadIdx.x; i < kPlanKeys * kPlanWarps; i += kPlanThreads) flat[i] = 0;
  if (threadIdx.x <= Policy::kMaxWidenings) ctas_if_widened[threadIdx.x] = 0;
  __syncthreads();
  // PDL: the lengths (and the plan buffer, which a top-k kernel still running may read) are the
  // previous kernels'; the top-k kernel behind this one may start its prologue.
  wait_for_previous_grid();
  allow_next_grid();
  // Each row's live length, and the CTAs every row that needs a selection would take at once after
  // each number of widenings (integer sums: the same whatever order the atomics land in).
  uint32_t ctas[Policy::kMaxWidenings + 1] = {};
  LaneLengths lengths;  // read again below without a round trip
  for (int r = begin + lane, j = 0; r < end; r += 32, ++j) {
    const int n = q.source.window(r).n;
    planned[r] = n;
    lengths.keep(j, n);
    if (n <= q.k) continue;
#pragma unroll
    for (int w = 0; w <= Policy::kMaxWidenings; ++w) ctas[w] += team_size_of(n, q.k, q.min_team_length, q.cluster_size, w);
  }
#pragma unroll
  for (int w = 0; w <= Policy::kMaxWidenings; ++w) {
    const uint32_t sum = __reduce_add_sync(0xFFFFFFFFu, ctas[w]);
    if (lane == 0 && sum != 0u) atomicAdd(&ctas_if_widened[w], sum);
  }
  __syncthreads();
  // The most widenings whose teams the launch holds at once (none if not even the plain sizes fit).
  int widenings = 0;
  for (int w = 1; w <= Policy::kMaxWidenings; ++w) {
    if (ctas_if_widened[w] <= static_cast<uint32_t>(q.capacity)) widenings = w;
  }
  // Count each warp's keys (every group of equal keys counted by its lowest lane). The lengths were
  // written by this same lane.
  for (int base = begin, j = 0; base < end; base += 32, ++j) {
    const int r = base + lane;
    const bool live = r < end;
    const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, live);
    if (live) {
      const int n = lengths.get(j, planned, r);
      const int key = plan_key(team_size_of(n, q.k, q.min_team_length, q.cluster_size, widenings), n);
      const uint32_t same = __match_any_sync(lanes, key);
      if (lane == __ffs(same) - 1) counts[key][warp] += __popc(same);
    }
    __syncwarp();  // the next 32 rows' lanes read the counts this one's lanes added (racecheck)
  }
  __syncthreads();
  // Exclusive scan over (key, warp) in that order: thread t owns the 8 consecutive counts from 8t.
  uint32_t mine[8], sum = 0;
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    mine[j] = flat[8 * threadIdx.x + j];
    sum += mine[j];
  }
  uint32_t inclusive = sum;
#pragma unroll
  for (int offset = 1; offset < 32; offset <<= 1) {
    const uint32_t other = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
    if (lane >= offset) inclusive += other;
  }
  if (lane == 31) thread_totals[warp] = inclusive;
  __syncthreads();
  uint32_t before = 0;
  for (int w = 0; w < warp; ++w) before += thread_totals[w];
  uint32_t running = before + inclusive - sum;
  if (8 * threadIdx.x == kLengthClasses * kPlanWarps) team_rows = running;
  __syncthreads();  // every thread has read its counts
#pragma unroll
  for (int j = 0; j < 8; ++j) {
    flat[8 * threadIdx.x + j] = running;
    running += mine[j];
  }
  __syncthreads();
  // Place the rows: within a key, warps in order and each warp's rows in row order.
  for (int base = begin, j = 0; base < end; base += 32, ++j) {
    const int r = base + lane;
    const bool live = r < end;
    const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, live);
    if (live) {
      const int n = lengths.get(j, planned, r);
      const int team_size = team_size_of(n, q.k, q.min_team_length, q.cluster_size, widenings);
      const int key = plan_key(team_size, n);
      const uint32_t same = __match_any_sync(lanes, key);
      order[counts[key][warp] + __popc(same & ((1u << lane) - 1u))] = OrderEntry::of(r, team_size);
      __syncwarp(lanes);
      if (lane == __ffs(same) - 1) counts[key][warp] += __popc(same);
    }
    __syncwarp();
  }
  if (threadIdx.x == 0) {
    PlanHeader* h = plan.header;
    h->rows = q.rows;
    h->team_rows = static_cast<int32_t>(team_rows);
    h->k = q.k;
    h->stride = q.source.stride;
    h->cluster_size = q.cluster_size;
    h->capacity = q.capacity;
    h->status = kPlanFresh;
    h->widenings = widenings;
    h->min_team_length = q.min_team_length;
  }
}

}  // namespace persistent_topk
