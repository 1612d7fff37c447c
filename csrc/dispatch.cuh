// The dispatch layer: tuning policy, the row windows of each op, the per-row path choice, the
// workspace layout, the work queue, and the persistent kernel that ties them together.
//
// One launch, grid fixed by (device, occupancy), never by the lengths: the same launch serves any
// lengths <= stride and can be captured in a CUDA graph once. CTAs take work items from an atomic
// counter until none is left; every row's path is chosen on the device from its own length.
#pragma once
#include <cstdint>
#include <cub/block/block_scan.cuh>

#include "block_select.cuh"
#include "keys.cuh"
#include "topk_medium.cuh"
#include "topk_radix_large.cuh"
#include "topk_small.cuh"

namespace persistent_topk {

// Every tuning constant, with its reason.
struct Policy {
  // Two CTAs of 16 warps per SM: one streams its next row from HBM while the other runs its passes
  // out of shared memory (measured against one 32-warp CTA per SM: 1.3-1.5x faster on batches of
  // many rows, equal on small ones; docs/perf-notes.md).
  static constexpr int kThreads = 512;
  static constexpr int kMinBlocksPerSM = 2;
  // Keys a CTA holds in shared memory: 24K x 4 B = 96 KB; with ~15 KB of histogram, scan and item
  // state two CTAs fit in Hopper's 228 KB per SM. Holds a medium row, a chunk (and the chunk's
  // compacted candidates behind it), or a split row's candidates.
  static constexpr int kSmemKeys = 24576;
  // Rows longer than this are split into chunks of at most this many columns, one work item each, so
  // a long row is read by many SMs at once. 16K leaves 8K words behind a chunk for its compacted
  // candidates (about k plus one histogram bin), and lets rows up to 12 chunks (196K columns) merge
  // their k=2048 candidates in shared memory; longer rows take the global path.
  static constexpr int kChunkKeys = 16384;
  // Chunk lengths are rounded to this many columns so every chunk starts 16-byte aligned whenever the
  // row does (16 covers 4-byte and 2-byte logits).
  static constexpr int kChunkAlign = 16;
  // sorted=True sorts the selection in the keys buffer as 64-bit words, padded to a power of two.
  static constexpr int kMaxSortedK = 8192;
  static_assert(kMaxSortedK * 2 <= kSmemKeys, "the sorted selection fits the keys buffer");
  static_assert(kChunkKeys <= kSmemKeys, "a chunk fits the keys buffer");
  // Rows are grouped for the item map: at most this many groups, one per thread of the block scan.
  static constexpr int kMaxItemGroups = kThreads;
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
  // Workspace (WorkspaceLayout)
  uint32_t* queue;  // [0]: work items claimed beyond the first grid's worth; 0 between launches
  uint32_t* arrivals;  // [rows]: chunks of the row finished; 0 between launches
  uint32_t* candidate_keys;  // [rows * candidates_per_row]
  int32_t* candidate_columns;
  int64_t candidates_per_row;
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

enum class RowPath { kShort, kMedium, kSplit, kGlobal };

struct RowPlan {
  RowPath path;
  SplitGeometry split;  // kSplit only
};

// The per-row path choice, a pure function of (n, k, sorted) shared by the host (workspace sizing)
// and the device.
__host__ __device__ inline RowPlan plan_row(int n, int k, bool by_value) {
  if (n <= k && !by_value) return RowPlan{RowPath::kShort, {1, n}};
  if (n <= Policy::kChunkKeys) return RowPlan{RowPath::kMedium, {1, n}};
  int chunks = (n + Policy::kChunkKeys - 1) / Policy::kChunkKeys;
  int chunk_len = (n + chunks - 1) / chunks;
  chunk_len = (chunk_len + Policy::kChunkAlign - 1) / Policy::kChunkAlign * Policy::kChunkAlign;
  chunks = (n + chunk_len - 1) / chunk_len;
  const int64_t slot = k < chunk_len ? k : chunk_len;
  if (chunks * slot <= Policy::kSmemKeys) return RowPlan{RowPath::kSplit, {chunks, chunk_len}};
  if (n <= Policy::kSmemKeys) return RowPlan{RowPath::kMedium, {1, n}};
  return RowPlan{RowPath::kGlobal, {1, n}};
}

// The most work items a call of this shape can have: every row at the stride, split as such a row is.
// A grid larger than this would only start CTAs that find nothing to do (and they are not free: their
// start, item map and exit cost microseconds on small batches). Shapes, not lengths: a captured graph
// stays valid for any lengths.
__host__ __device__ inline int64_t max_work_items(int64_t rows, int64_t stride, int k, bool by_value) {
  const RowPlan widest = plan_row(static_cast<int>(stride), k, by_value);
  return rows * (widest.path == RowPath::kSplit ? widest.split.chunks : 1);
}

// Byte offsets of the workspace's parts, each 256-byte aligned. The layout follows the workspace's
// capacity (rows, stride, k), never a call's shape, so the arrival counters sit at the same place for
// every call that uses the workspace.
struct WorkspaceLayout {
  static constexpr int64_t kAlign = 256;
  int64_t arrivals_offset, candidate_keys_offset, candidate_columns_offset, candidates_per_row, bytes;

  static int64_t align(int64_t bytes) { return (bytes + kAlign - 1) / kAlign * kAlign; }

  // Candidate room per row: what the longest possible row leaves (a shorter row never has more
  // chunks, nor longer ones), at most kSmemKeys.
  static WorkspaceLayout make(int64_t rows, int64_t stride, int64_t k) {
    WorkspaceLayout layout;
    const int64_t chunks = (stride + Policy::kChunkKeys - 1) / Policy::kChunkKeys;
    const int64_t per_chunk = k < Policy::kChunkKeys ? k : Policy::kChunkKeys;
    layout.candidates_per_row = stride > Policy::kChunkKeys ? chunks * per_chunk : 0;
    if (layout.candidates_per_row > Policy::kSmemKeys) layout.candidates_per_row = Policy::kSmemKeys;
    layout.arrivals_offset = kAlign;  // the queue counters live in the first 256 bytes
    layout.candidate_keys_offset = layout.arrivals_offset + align(rows * 4);
    layout.candidate_columns_offset = layout.candidate_keys_offset + align(rows * layout.candidates_per_row * 4);
    layout.bytes = layout.candidate_columns_offset + align(rows * layout.candidates_per_row * 4);
    return layout;
  }
};

// Work items: item r < rows is row r (its chunk 0 when split); items rows.. are the other chunks of
// split rows, in row order. Each CTA starts on item blockIdx.x without touching the queue, and the
// queue hands out items gridDim.x and up. The map of the extra items is built from the lengths (a few
// KB from L2) only by a CTA that reaches an item >= rows, so rows need no map and no helper kernel.
template <int kThreads>
struct WorkItems {
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kMaxGroups = Policy::kMaxItemGroups;
  using Scan = cub::BlockScan<uint32_t, kThreads>;

  struct TempStorage {
    uint32_t group_first[kMaxGroups + 1];  // first extra item of each group of rows_per_group rows
    typename Scan::TempStorage scan;
    int rows_per_group, groups;
    uint32_t item;
    int row, chunk;
  };

  __device__ __forceinline__ static int extra_chunks(const Params& p, int r) {
    const RowPlan plan = plan_row(row_window(p, r).n, p.k, p.by_value != 0);
    return plan.path == RowPath::kSplit ? plan.split.chunks - 1 : 0;
  }

  __device__ static uint32_t build(const Params& p, TempStorage& ts) {
    const int per_group = 32 * ((p.rows + 32 * kMaxGroups - 1) / (32 * kMaxGroups));
    const int groups = (p.rows + per_group - 1) / per_group;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int g = warp; g < groups; g += kWarps) {
      uint32_t count = 0;
      for (int r = g * per_group + lane; r < min(p.rows, (g + 1) * per_group); r += 32) count += extra_chunks(p, r);
#pragma unroll
      for (int offset = 16; offset > 0; offset >>= 1) count += __shfl_xor_sync(0xFFFFFFFFu, count, offset);
      if (lane == 0) ts.group_first[g] = count;
    }
    __syncthreads();
    const uint32_t mine = threadIdx.x < groups ? ts.group_first[threadIdx.x] : 0u;
    uint32_t first, total;
    Scan(ts.scan).ExclusiveSum(mine, first, total);
    __syncthreads();
    if (threadIdx.x < groups) ts.group_first[threadIdx.x] = first;
    if (threadIdx.x == 0) {
      ts.group_first[groups] = total;
      ts.rows_per_group = per_group;
      ts.groups = groups;
    }
    __syncthreads();
    return total;
  }

  // Extra item e -> (row, chunk >= 1), found by warp 0: binary search for the group, then a warp
  // scan over the group's rows. Result in ts.row/ts.chunk after the caller's __syncthreads().
  __device__ static void find_extra(const Params& p, TempStorage& ts, uint32_t e) {
    if (threadIdx.x >= 32) return;
    const int lane = threadIdx.x;
    int lo = 0, hi = ts.groups;  // last g with group_first[g] <= e
    while (hi - lo > 1) {
      const int mid = (lo + hi) / 2;
      if (ts.group_first[mid] <= e) lo = mid; else hi = mid;
    }
    uint32_t before = ts.group_first[lo];
    const int end = min(p.rows, (lo + 1) * ts.rows_per_group);
    for (int base = lo * ts.rows_per_group; base < end; base += 32) {
      const int r = base + lane;
      const uint32_t mine = r < end ? static_cast<uint32_t>(extra_chunks(p, r)) : 0u;
      uint32_t inclusive = mine;
#pragma unroll
      for (int offset = 1; offset < 32; offset <<= 1) {
        const uint32_t other = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
        if (lane >= offset) inclusive += other;
      }
      const uint32_t exclusive = before + inclusive - mine;
      if (mine != 0 && exclusive <= e && e < exclusive + mine) {
        ts.row = r;
        ts.chunk = 1 + static_cast<int>(e - exclusive);
      }
      before += __shfl_sync(0xFFFFFFFFu, inclusive, 31);
    }
  }
};

// Where the free part of the keys buffer starts after n keys (16-byte aligned).
__device__ __forceinline__ int spare_offset(int n) { return (n + 3) & ~3; }

template <typename T>
__device__ __forceinline__ Sink<T> row_sink(const Params& p, int r, const RowWindow& w) {
  Sink<T> sink;
  sink.out = p.out + static_cast<int64_t>(r) * p.k;
  sink.values = p.values ? static_cast<T*>(p.values) + static_cast<int64_t>(r) * p.k : nullptr;
  sink.row = static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start;
  sink.page_table = p.page_table ? p.page_table + static_cast<int64_t>(r) * p.page_table_pitch : nullptr;
  sink.page_size = p.page_size;
  sink.raw = p.by_value != 0;
  sink.candidate_keys = nullptr;
  sink.candidate_columns = nullptr;
  return sink;
}

template <typename T>
__global__ void __launch_bounds__(Policy::kThreads, Policy::kMinBlocksPerSM) persistent_topk_kernel(Params p) {
  constexpr int kThreads = Policy::kThreads;
  using Select = BlockSelect<kThreads>;
  using Items = WorkItems<kThreads>;
  using Arrival = SplitRowArrival<kThreads>;
  extern __shared__ uint4 dynamic_smem[];
  uint32_t* keys = reinterpret_cast<uint32_t*>(dynamic_smem);  // [Policy::kSmemKeys]
  __shared__ typename Select::TempStorage select_storage;
  __shared__ typename Items::TempStorage item_storage;
  __shared__ uint32_t is_last_chunk;

  // The queue resets itself: every CTA whose first item exists claims one item past each item it
  // processes, so a launch makes exactly `total items` claims (those in range, plus one out-of-range
  // claim per working CTA), and the CTA whose claim is the last one (claim == total - 1) knows that
  // nothing touches the counter again in this launch. No second counter, no fence.
  // The map of extra items is needed only if some row can be split, i.e. the stride exceeds a chunk.
  // (Not "if a row at the stride splits": a long row may take the global path while a shorter one
  // splits, so that test would miss chunks and leave their arrival counters dirty.)
  bool map_built = p.stride <= Policy::kChunkKeys;
  uint32_t extra_items = 0;
  uint32_t item = blockIdx.x;
  uint32_t claim = ~0u;  // thread 0: the counter's answer to this CTA's latest claim
  for (;;) {
    if (item >= static_cast<uint32_t>(p.rows) && !map_built) {
      extra_items = Items::build(p, item_storage);
      map_built = true;
    }
    const uint32_t total_items = static_cast<uint32_t>(p.rows) + extra_items;
    if (threadIdx.x == 0 && claim == total_items - 1) p.queue[0] = 0u;
    if (item >= total_items) break;
    // Claim the next item now; the answer is first read at the end of this item, so its round trip
    // overlaps this item's work.
    if (threadIdx.x == 0) claim = atomicAdd(&p.queue[0], 1u);
    int r = static_cast<int>(item), chunk = 0;
    if (item >= static_cast<uint32_t>(p.rows)) {
      Items::find_extra(p, item_storage, item - p.rows);
      __syncthreads();
      r = item_storage.row;
      chunk = item_storage.chunk;
    }

    const RowWindow w = row_window(p, r);
    const RowPlan plan = plan_row(w.n, p.k, p.by_value != 0);
    const Sink<T> sink = row_sink<T>(p, r, w);
    const int m = min(p.k, w.n);
    bool finished = true;  // this CTA wrote the row's answer (unpadded, in index order)
    if (plan.path == RowPath::kShort) {
      ShortRowAgent<kThreads, T>::run(w.n, p.k, sink);  // complete already: index order, padded
      finished = false;
    } else if (plan.path == RowPath::kGlobal) {
      select_in_global<kThreads, T>(sink.row, w.n, m, select_storage, sink);
    } else {
      // Medium rows are split rows of one chunk that write the answer directly.
      const SplitGeometry split = plan.split;
      const int first = chunk * split.chunk_len;
      const int length = split.length_of(chunk, w.n);
      const int64_t candidates = static_cast<int64_t>(r) * p.candidates_per_row;
      uint32_t* candidate_keys = p.candidate_keys + candidates;
      int32_t* candidate_columns = p.candidate_columns + candidates;
      const bool is_split = plan.path == RowPath::kSplit;
      Select::zero_histogram(select_storage);
      __syncthreads();
      load_row<kThreads, T>(sink.row + first, length, keys, select_storage);
      __syncthreads();
      const int slot = split.slot(p.k);
      select_in_shared<kThreads, T>(length, min(p.k, length), keys, select_storage, ColumnOf{first, nullptr},
                                    is_split ? sink.to_candidates(candidate_keys + chunk * slot,
                                                                  candidate_columns + chunk * slot)
                                             : sink,
                                    keys + spare_offset(length), Policy::kSmemKeys - spare_offset(length));
      finished = !is_split;
      if (is_split && Arrival::last_to_arrive(p.arrivals + r, split.chunks, &is_last_chunk)) {
        const int count = split.candidates(p.k, w.n);
        Select::zero_histogram(select_storage);
        __syncthreads();
        load_words<kThreads>(candidate_keys, count, keys, select_storage, IdentityKey{});
        __syncthreads();
        select_in_shared<kThreads, T>(count, m, keys, select_storage, ColumnOf{0, candidate_columns}, sink,
                                      keys + spare_offset(count), Policy::kSmemKeys - spare_offset(count));
        finished = true;
      }
    }
    if (finished) {  // every path that wrote an answer: padding, then sorted=True's order
      sink.template pad<kThreads>(m, p.k);
      if (p.by_value) finish_sorted<kThreads, T>(m, sink, reinterpret_cast<uint64_t*>(keys));
    }
    __syncthreads();  // this item's shared state (keys, hist, item_storage) is free for the next one
    if (threadIdx.x == 0) item_storage.item = gridDim.x + claim;
    __syncthreads();
    item = item_storage.item;
  }

}

}  // namespace persistent_topk
