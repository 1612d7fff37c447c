// Short rows. Rows that need no selection (n <= k: the answer is 0..n-1 and no logit is read), and
// rows a CTA selects from its threads' registers (RegisterRowAgent): read once, straight from global
// memory, every radix pass and the write-out run over registers, with no copy in shared memory.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "epilogue.cuh"
#include "keys.cuh"
#include "stamps.cuh"

namespace persistent_topk {

template <int kThreads>
struct ShortRowAgent {
  // n <= k and index order wanted: the answer is 0..n-1 and no logit needs reading (but for values,
  // which finish_row adds).
  __device__ __forceinline__ static void run(int n, const IndexSink& sink) {
    for (int j = threadIdx.x; j < n; j += kThreads) sink.put(j, j, 0u);
  }
  // The same when bare indices are all the caller wants: the whole row, 0..n-1 then the -1 padding,
  // in one pass of 16-byte stores where out[0] is 16-byte aligned (k = 2048: one store per thread),
  // with no finish_row() after it.
  __device__ __forceinline__ static void run_bare(int n, int k, int32_t* out) {
    auto index_or_pad = [n](int j) { return j < n ? j : -1; };
    int head = static_cast<int>(((16u - (reinterpret_cast<uintptr_t>(out) & 15u)) & 15u) / sizeof(int32_t));
    head = min(head, k);
    for (int j = threadIdx.x; j < head; j += kThreads) out[j] = index_or_pad(j);
    const int vectors = (k - head) / 4;
    int4* aligned = reinterpret_cast<int4*>(out + head);
    for (int v = threadIdx.x; v < vectors; v += kThreads) {
      const int j = head + 4 * v;
      aligned[v] = make_int4(index_or_pad(j), index_or_pad(j + 1), index_or_pad(j + 2), index_or_pad(j + 3));
    }
    for (int j = head + 4 * vectors + static_cast<int>(threadIdx.x); j < k; j += kThreads) out[j] = index_or_pad(j);
  }
};

// A row of k < n <= kMaxKeys logits selected by one CTA from registers. Thread t holds the keys of
// columns [kKeysPerThread t, kKeysPerThread (t + 1)) (a blocked arrangement: 16-byte loads, and each
// thread's keys are consecutive in index order, so one block scan of per-thread counts gives every
// selected key its output position). The first digit is counted as the keys arrive; later digits
// only while the threshold bin is cut (BlockSelect::refine, counting over registers); the write-out
// is one block scan, each selected column staged at its position in shared memory, then whole lines
// stored in order. Against the shared-memory path this drops the copy of the row into shared memory,
// every pass over it and the write-out's counting pass (one 4K row: 0.2-0.9 us less, the perf notes).
// In the persistent kernel only 4-byte logits take it (Policy::register_path); launches of a stride
// that fits registers (register_rows_kernel) take it for every dtype, loading the whole stride and
// keeping the row's window (keep_window).
//
// Columns past n hold key 0, which no logit has (keys.cuh: 0 would be a NaN, and every NaN is the
// top key). The first digit counts them in bin 0 with the rest (a test per key made each count a
// branch of its own), below every logit's bin (-inf's key is 0x007FFFFF): the search from the top
// finds its m < n keys before it, so no threshold falls there and key 0 is never selected.
template <class Select, typename T, int kKeysPerThread>
struct RegisterRowAgent {
  static constexpr int kThreads = Select::kThreads;
  static constexpr int kMaxKeys = kThreads * kKeysPerThread;
  static constexpr int kPerVector = 16 / static_cast<int>(sizeof(T));
  static_assert(kKeysPerThread % kPerVector == 0, "a thread's keys are whole 16-byte vectors");
  static constexpr int kVectors = kKeysPerThread / kPerVector;
  static constexpr int kBits = KeyTraits<T>::kSignificantBits;
  // Per-thread counts of keys above the threshold and at it, packed into one word for one scan.
  static constexpr int kAtBits = 16;
  static_assert(kMaxKeys < (1 << kAtBits) && (static_cast<int64_t>(kMaxKeys) << kAtBits) < (1ll << 32),
                "both counts of a whole row fit their halves of the scanned word");

  using Keys = uint32_t[kKeysPerThread];

  // Thread t's keys of row[0, n): 16-byte loads where the row is 16-byte aligned and the thread's
  // columns are all inside it, else one logit at a time.
  __device__ __forceinline__ static void load(const T* __restrict__ row, int n, Keys& keys) {
    const int first = kKeysPerThread * static_cast<int>(threadIdx.x);
    if ((reinterpret_cast<uintptr_t>(row) & 15u) == 0 && first + kKeysPerThread <= n) {
      const uint4* vectors = reinterpret_cast<const uint4*>(row + first);
      uint4 loaded[kVectors];
#pragma unroll
      for (int v = 0; v < kVectors; ++v) loaded[v] = __ldg(vectors + v);
#pragma unroll
      for (int v = 0; v < kVectors; ++v) unpack_keys<T>(loaded[v], keys + v * kPerVector);
    } else {
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) keys[j] = first + j < n ? to_key(row[first + j]) : 0u;
    }
  }

  // Of the keys load() read of a whole row, only columns [start, start + n) stay: key 0 elsewhere.
  __device__ __forceinline__ static void keep_window(Keys& keys, int start, int n) {
    const int first = kKeysPerThread * static_cast<int>(threadIdx.x);
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) {
      if (static_cast<uint32_t>(first + j - start) >= static_cast<uint32_t>(n)) keys[j] = 0u;
    }
  }

  // The top m < n of row[0, n) into `sink`, in index order (positions 0..m-1). ts.hist must be zero
  // (with a barrier after the zeroing); `staged` is the shared address of m free words, 16-byte
  // aligned. record_claim() runs in thread 0 once the loads are issued.
  template <class RecordClaim>
  __device__ __forceinline__ static void run(const T* __restrict__ row, int n, int m,
                                             typename Select::TempStorage& ts, uint32_t staged,
                                             const IndexSink& sink, const RecordClaim& record_claim) {
    Keys keys;
    load(row, n, keys);
    if (threadIdx.x == 0) record_claim();
    select(keys, kKeysPerThread * static_cast<int>(threadIdx.x), m, ts, staged, sink);
  }

  // The top m of the n > m columns whose keys the CTA holds (thread t's first key is column `first` of
  // the row; every other key is 0) into `sink`, as run() says.
  __device__ __forceinline__ static void select(Keys& keys, int first, int m, typename Select::TempStorage& ts,
                                                uint32_t staged, const IndexSink& sink) {
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) Select::count_first_digit(ts, keys[j]);  // key 0 too: see above
    PERSISTENT_TOPK_STAMP(2);
    __syncthreads();
    Select::find_digit_local(ts, m);  // ends with a barrier
    PERSISTENT_TOPK_STAMP(4);
    const uint32_t above = ts.count_above, at = ts.count_at;
    Threshold t{ts.digit << Select::kFirstShift, Select::kDigitBits, m - static_cast<int>(above),
                at == static_cast<uint32_t>(m) - above};
    if (!t.all_at_selected) {
      // Predicated counts, as in the first digit's: no branch per key.
      const uint32_t hist = shared_address(ts.hist);
      auto recount = [&](const Threshold& prefix, int shift, uint32_t digit_mask) {
        const uint32_t mask = prefix.mask();
#pragma unroll
        for (int j = 0; j < kKeysPerThread; ++j) {
          count_shared_if((keys[j] & mask) == prefix.prefix, hist + 4u * ((keys[j] >> shift) & digit_mask));
        }
      };
      typename Select::Alone alone;
      Select::zero_histogram(ts);  // find_digit_local() has read it
      __syncthreads();
      const int next_width = min(Select::kDigitBits, kBits - t.bits);
      recount(t, 32 - t.bits - next_width, (1u << next_width) - 1u);
      __syncthreads();
      t = Select::refine(ts, t, kBits, alone, recount);
    }
    PERSISTENT_TOPK_STAMP(7);
    emit(keys, first, t, m, ts, staged, sink);
    PERSISTENT_TOPK_STAMP(8);
  }

  // Every key above t, and of those at it the first t.need in index order, at its position in the
  // row's selection: one block-wide exclusive scan of (above, at) per thread gives each thread the
  // position of its first selected key. The columns are staged at their positions in shared memory
  // (`staged`, m words) and then written out in order, so that every warp's global stores are whole
  // lines (stored straight from the threads, the j-th selected keys of a warp's lanes lie about
  // n / m words apart: several partial lines per store).
  __device__ __forceinline__ static void emit(const Keys& keys, int first, const Threshold& t, int m,
                                              typename Select::TempStorage& ts, uint32_t staged,
                                              const IndexSink& sink) {
    // Each key's verdict as one bit of two masks (bit j: keys[j]), computed once: the counts are their
    // population counts and the staging below reads the bits back. Left to the compiler, the count
    // pass saved both predicates of every key into a register anyway, two instructions per bit
    // (SASS), and the staging recomputed the rest. With every key at the threshold selected (the usual
    // case) they all join `selected` and no tie is cut.
    const uint32_t mask = t.mask();
    uint32_t selected = 0, ties = 0;
#pragma unroll
    for (int j = 0; j < kKeysPerThread; ++j) {
      const uint32_t masked = keys[j] & mask;
      selected |= static_cast<uint32_t>(masked > t.prefix) << j;
      ties |= static_cast<uint32_t>(masked == t.prefix) << j;
    }
    if (t.all_at_selected) {
      selected |= ties;
      ties = 0;
    }
    const uint32_t counts = (static_cast<uint32_t>(__popc(selected)) << kAtBits) | static_cast<uint32_t>(__popc(ties));
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    uint32_t inclusive = counts;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const uint32_t other = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    if (lane == 31) ts.warp_above[warp] = inclusive;
    __syncthreads();
    PERSISTENT_TOPK_STAMP(12);
    static_assert(Select::kWarps <= 32, "one lane per warp's total");
    const uint32_t before = warp_sum(lane < warp ? ts.warp_above[lane] : 0u) + inclusive - counts;
    uint32_t above_before = before >> kAtBits, at_before = before & ((1u << kAtBits) - 1u);
    const uint32_t need = static_cast<uint32_t>(t.need);
    // Predicated stores: as branches, each key's store was a block of its own that rebuilt the thread's
    // column from its index (SASS).
    if (t.all_at_selected) {  // uniform: no tie to cut, a key's position is the selected keys before it
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) {
        const bool is_selected = (selected >> j) & 1u;
        store_shared_if(is_selected, staged + 4u * above_before, static_cast<uint32_t>(first + j));
        above_before += is_selected;
      }
    } else {
      // A selected tie is one of the first `need`, so min(at_before, need) is its rank too.
#pragma unroll
      for (int j = 0; j < kKeysPerThread; ++j) {
        const bool is_above = (selected >> j) & 1u, is_at = (ties >> j) & 1u;
        store_shared_if(is_above || (is_at && at_before < need), staged + 4u * (above_before + min(at_before, need)),
                        static_cast<uint32_t>(first + j));
        above_before += is_above;
        at_before += is_at;
      }
    }
    __syncthreads();
    PERSISTENT_TOPK_STAMP(13);
    // 16-byte stores of bare columns where out is aligned; otherwise (a transform, or the last m % 4)
    // a few positions per thread at a time, so that the page-table reads of a fused transform overlap.
    const bool vectors = sink.fused == nullptr && (reinterpret_cast<uintptr_t>(sink.out) & 15u) == 0;
    const int vectored = vectors ? m & ~3 : 0;
    for (int j = 4 * static_cast<int>(threadIdx.x); j < vectored; j += 4 * kThreads) {
      *reinterpret_cast<int4*>(sink.out + j) = load_shared_v4(staged + 4u * j);
    }
    for (int j = vectored + static_cast<int>(threadIdx.x); j < m; j += 4 * kThreads) {
      auto column = [&](int q) { return j + q * kThreads < m ? load_shared(staged + 4u * (j + q * kThreads)) : 0; };
      sink.put4(static_cast<uint32_t>(j), kThreads, static_cast<uint32_t>(m),
                make_int4(column(0), column(1), column(2), column(3)));
    }
    PERSISTENT_TOPK_STAMP(14);
    __syncthreads();  // the sink's writes are visible to the whole block; ts and staged are free
  }
};

}  // namespace persistent_topk
