// The plan (SPEC §5): made once per decode step by a small device kernel from the live lengths,
// read by every layer's launch of the persistent kernel, and checked by it row by row.
//
// It holds, in one int32 buffer: a header (the shape and launch policy it was made for, and the
// status word the kernel sets to STALE), each row's planned length, and the order in which the
// kernel hands rows out: the team rows (selected by a cluster's CTAs together) longest first, then
// every other row longest first (short rows, which need no selection, last). Longest first (LPT)
// keeps the long rows off the end of the launch, where they would run with the grid idle beside
// them. The plan only orders work: every path decision is made again from the live length, so a
// stale plan still gives the exact answer, just possibly in a slower order.
#pragma once
#include <cstdint>

namespace persistent_topk {

enum WindowMode : int { kWindowLengths = 0, kWindowDecode = 1, kWindowPrefill = 2 };

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
  const int32_t* row_starts;  // kWindowPrefill only
  int window_mode;
  int next_n;
  int stride;  // columns per row (SPEC's stride): windows are clamped to it

  // Through the read-only data path: no kernel of this library writes the bounds.
  __device__ __forceinline__ RowWindow window(int r) const {
    int64_t start = 0, length;
    if (window_mode == kWindowDecode) {
      length = static_cast<int64_t>(__ldg(bounds + r / next_n)) - next_n + (r % next_n) + 1;
    } else if (window_mode == kWindowPrefill) {
      const int32_t row_start = __ldg(row_starts + r);
      start = row_start < 0 ? 0 : (row_start > stride ? stride : row_start);
      length = static_cast<int64_t>(__ldg(bounds + r)) - row_start;
    } else {
      length = __ldg(bounds + r);
    }
    length = length < 0 ? 0 : length;
    length = length > stride - start ? stride - start : length;
    return RowWindow{static_cast<int>(start), static_cast<int>(length)};
  }
};

enum class RowPath { kShort, kSolo, kTeam };

// The per-row path choice, a pure function of the row's own length and the launch's constants, made
// on the device for every row from its live length (a captured graph serves any lengths):
//   short: n <= k, the answer is 0..n-1 (no logit read);
//   solo:  one CTA (its shared memory when the row fits, else passes over global memory);
//   team:  the CTAs of one cluster, one slice of the row each.
__host__ __device__ inline RowPath plan_row(int n, int k, bool by_value, int team_min_length, int team_size) {
  if (n <= k && !by_value) return RowPath::kShort;
  if (team_size > 1 && n > team_min_length) return RowPath::kTeam;
  return RowPath::kSolo;
}

// The plan buffer: PlanHeader, then planned lengths [rows], then the order [rows].
struct PlanHeader {
  int32_t rows;
  int32_t team_rows;  // order[0, team_rows) are team rows, the rest follow
  int32_t k;
  int32_t stride;
  int32_t team_min_length;  // the launch policy the plan was made for (launch.cuh)
  int32_t team_size;
  uint32_t status;  // kPlanFresh, or kPlanStale once a launch saw a live length differ from the plan
  int32_t reserved[9];
};
static_assert(sizeof(PlanHeader) == 64, "the header keeps the arrays 16-byte aligned");
constexpr uint32_t kPlanFresh = 0;
constexpr uint32_t kPlanStale = 1;

struct PlanLayout {
  static constexpr int64_t kHeaderWords = sizeof(PlanHeader) / sizeof(int32_t);
  static int64_t bytes(int64_t rows) { return sizeof(int32_t) * (kHeaderWords + 2 * rows); }
};

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
  int team_min_length;
  int team_size;
  void* plan;  // PlanLayout::bytes(rows)
};

// The plan kernel: one CTA of kPlanThreads. Rows are ordered by a stable counting sort on a key of
// their list (team rows first) and length class (longest first): each warp counts the keys of its
// contiguous chunk of rows, one scan over (key, warp) gives every warp its first position per key,
// and each warp then places its rows in row order. Deterministic, O(rows), no atomics.
constexpr int kPlanThreads = 1024;
constexpr int kPlanWarps = kPlanThreads / 32;
// Length classes: a quarter octave each (lengths within ~19% of each other share one), enough for
// longest-first to balance the grid; 2 lists x 128 classes.
constexpr int kLengthClasses = 128;
constexpr int kPlanKeys = 2 * kLengthClasses;
static_assert(kPlanKeys * kPlanWarps == 8 * kPlanThreads, "the (key, warp) scan gives each thread 8 counts");

__device__ __forceinline__ int length_class(int n) {
  if (n <= 0) return 0;
  const int e = 31 - __clz(n);
  const int quarter = e >= 2 ? (n >> (e - 2)) & 3 : (n << (2 - e)) & 3;
  return 1 + 4 * e + quarter;  // 1..124, increasing with n
}

__device__ __forceinline__ int plan_key(const PlanParams& q, int n) {
  const bool team = plan_row(n, q.k, false, q.team_min_length, q.team_size) == RowPath::kTeam;
  return (team ? 0 : kLengthClasses) + (kLengthClasses - 1 - length_class(n));
}

__global__ void __launch_bounds__(kPlanThreads, 1) make_plan_kernel(PlanParams q) {
  __shared__ uint32_t counts[kPlanKeys][kPlanWarps];  // per (key, warp); then each warp's next position
  __shared__ uint32_t thread_totals[kPlanWarps];
  __shared__ uint32_t team_rows;  // the first solo row's position: key kLengthClasses's first offset
  const PlanView plan = PlanView::of(q.plan, q.rows);
  int32_t* planned = const_cast<int32_t*>(plan.planned_lengths);
  int32_t* order = const_cast<int32_t*>(plan.order);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int per_warp = (q.rows + kPlanWarps - 1) / kPlanWarps;
  const int begin = min(q.rows, warp * per_warp), end = min(q.rows, begin + per_warp);
  uint32_t* flat = &counts[0][0];
  for (int i = threadIdx.x; i < kPlanKeys * kPlanWarps; i += kPlanThreads) flat[i] = 0;
  __syncthreads();
  // Count each warp's keys (every group of equal keys counted by its lowest lane).
  for (int base = begin; base < end; base += 32) {
    const int r = base + lane;
    const bool live = r < end;
    const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, live);
    if (live) {
      const int n = q.source.window(r).n;
      planned[r] = n;
      const int key = plan_key(q, n);
      const uint32_t same = __match_any_sync(lanes, key);
      if (lane == __ffs(same) - 1) counts[key][warp] += __popc(same);
    }
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
  for (int base = begin; base < end; base += 32) {
    const int r = base + lane;
    const bool live = r < end;
    const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, live);
    if (live) {
      const int key = plan_key(q, planned[r]);
      const uint32_t same = __match_any_sync(lanes, key);
      order[counts[key][warp] + __popc(same & ((1u << lane) - 1u))] = r;
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
    h->team_min_length = q.team_min_length;
    h->team_size = q.team_size;
    h->status = kPlanFresh;
  }
}

}  // namespace persistent_topk
