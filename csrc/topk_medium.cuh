// A row in one CTA's shared memory: read from global memory exactly once, with 16-byte loads,
// converted to keys on the way in while the first radix digit is counted; every later pass and the
// write-out run from shared memory. The same code selects one CTA's slice of a long row, whose CTAs
// combine their counts through the Combine they pass in (topk_radix_large.cuh); this file does not
// know how.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "epilogue.cuh"
#include "keys.cuh"
#include "policy.cuh"
#include "stamps.cuh"

namespace persistent_topk {

template <class Select, typename T>
struct SharedRowLoader {
  static constexpr int kThreads = Select::kThreads;
  static constexpr int kPerVector = 16 / sizeof(T);
  static constexpr int kLoadsInFlight = Policy::kLoadsInFlight;

  // keys[0, n) <- keys of src[0, n); ts.hist must be zero and counts the first digit of all n.
  __device__ __forceinline__ static void load(const T* __restrict__ src, int n, uint32_t* keys,
                                              typename Select::TempStorage& ts) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(src);
    const int head = min(n, static_cast<int>(((16u - (address & 15u)) & 15u) / sizeof(T)));
    for (int i = threadIdx.x; i < head; i += kThreads) {
      keys[i] = to_key(src[i]);
      Select::count_first_digit(ts, keys[i]);
    }
    const uint4* vectors = reinterpret_cast<const uint4*>(src + head);
    const int vector_count = (n - head) / kPerVector;
    const bool aligned_store = (head % 4) == 0;  // shared stores of 4 keys need a 16-byte boundary too
    for (int v0 = threadIdx.x; v0 < vector_count; v0 += kThreads * kLoadsInFlight) {
      uint4 loaded[kLoadsInFlight];
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u) {
        const int v = v0 + u * kThreads;
        if (v < vector_count) loaded[u] = __ldg(vectors + v);
      }
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u) {
        const int v = v0 + u * kThreads;
        if (v >= vector_count) break;
        uint32_t unpacked[kPerVector];
        unpack_keys<T>(loaded[u], unpacked);
        const int first = head + v * kPerVector;
#pragma unroll
        for (int j = 0; j < kPerVector; ++j) Select::count_first_digit(ts, unpacked[j]);
        if (aligned_store) {
#pragma unroll
          for (int j = 0; j < kPerVector; j += 4)
            *reinterpret_cast<uint4*>(keys + first + j) =
                make_uint4(unpacked[j], unpacked[j + 1], unpacked[j + 2], unpacked[j + 3]);
        } else {
#pragma unroll
          for (int j = 0; j < kPerVector; ++j) keys[first + j] = unpacked[j];
        }
      }
    }
    for (int i = head + vector_count * kPerVector + threadIdx.x; i < n; i += kThreads) {
      keys[i] = to_key(src[i]);
      Select::count_first_digit(ts, keys[i]);
    }
  }
};

// Asynchronous 16-byte global->shared copies (cp.async, L1 bypassed): a whole row in flight at once
// without holding it in registers.
__device__ __forceinline__ void copy_async_16(void* shared_dst, const void* global_src) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(dst), "l"(global_src));
}
__device__ __forceinline__ void copy_async_16(uint32_t shared_dst, const void* global_src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(shared_dst), "l"(global_src));
}
// A 4-byte copy (cp.async.ca: sizes under 16 bytes go through L1).
__device__ __forceinline__ void copy_async_4(void* shared_dst, const void* global_src) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(shared_dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(dst), "l"(global_src));
}
__device__ __forceinline__ void commit_async_copies() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
// Until at most kPending of this thread's latest commit groups are in flight.
template <int kPending>
__device__ __forceinline__ void wait_async_copies() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
}
// Until at most `pending` of this thread's latest commit groups are in flight (fewer if it is above
// the largest immediate spelled out: waiting longer is still correct).
__device__ __forceinline__ void wait_async_copies_but(int pending) {
  if (pending >= 4) {
    asm volatile("cp.async.wait_group 4;\n" ::: "memory");
  } else if (pending == 3) {
    asm volatile("cp.async.wait_group 3;\n" ::: "memory");
  } else if (pending == 2) {
    asm volatile("cp.async.wait_group 2;\n" ::: "memory");
  } else if (pending == 1) {
    asm volatile("cp.async.wait_group 1;\n" ::: "memory");
  } else {
    asm volatile("cp.async.wait_group 0;\n" ::: "memory");
  }
}

// 4-byte words (float32 logits) -> keys[0, n), counting the first digit. A 16-byte aligned source is
// copied asynchronously as raw words and converted in place; otherwise each word goes through
// registers. `to_key_of(word)` converts one word.
template <class Select, class ToKey>
__device__ __forceinline__ void load_words(const uint32_t* __restrict__ src, int n, uint32_t* keys,
                                           typename Select::TempStorage& ts, const ToKey& to_key_of) {
  constexpr int kThreads = Select::kThreads;
  if ((reinterpret_cast<uintptr_t>(src) & 15u) != 0) {
    for (int i = threadIdx.x; i < n; i += kThreads) {
      const uint32_t key = to_key_of(__ldcg(src + i));
      keys[i] = key;
      Select::count_first_digit(ts, key);
    }
    return;
  }
  // A thread converts and counts exactly the vectors it copied (v = threadIdx.x + j * kThreads), each
  // one as soon as it has landed (its own commit group) while the later ones are still in flight:
  // counting only once the whole row had landed left HBM idle meanwhile. A thread reads only its own
  // copies, so no barrier is needed before the row is complete (select_in_shared() starts with one).
  const int vector_count = n / 4;
  int copies = 0;
  for (int v = threadIdx.x; v < vector_count; v += kThreads, ++copies) {
    copy_async_16(keys + 4 * v, src + 4 * v);
    commit_async_copies();
  }
  for (int i = 4 * vector_count + threadIdx.x; i < n; i += kThreads) keys[i] = __ldcg(src + i);
  uint4* vectors = reinterpret_cast<uint4*>(keys);
  auto convert4 = [&](int v, uint4 w) {
    w.x = to_key_of(w.x);
    w.y = to_key_of(w.y);
    w.z = to_key_of(w.z);
    w.w = to_key_of(w.w);
    vectors[v] = w;
    Select::count_first_digit(ts, w.x);
    Select::count_first_digit(ts, w.y);
    Select::count_first_digit(ts, w.z);
    Select::count_first_digit(ts, w.w);
  };
  int landed = 0;
  for (int v = threadIdx.x; v < vector_count; v += kThreads, ++landed) {
    wait_async_copies_but(copies - 1 - landed);
    convert4(v, vectors[v]);
  }
  for (int i = 4 * vector_count + threadIdx.x; i < n; i += kThreads) {
    const uint32_t key = to_key_of(keys[i]);
    keys[i] = key;
    Select::count_first_digit(ts, key);
  }
}

struct Float32BitsToKey {
  __device__ __forceinline__ uint32_t operator()(uint32_t bits) const { return to_key(__uint_as_float(bits)); }
};

// A row's (or slice's) logits -> keys in shared memory, first digit counted (ts.hist must be zero).
template <class Select, typename T>
__device__ __forceinline__ void load_row(const T* src, int n, uint32_t* keys, typename Select::TempStorage& ts) {
  if constexpr (sizeof(T) == 4) {
    load_words<Select>(reinterpret_cast<const uint32_t*>(src), n, keys, ts, Float32BitsToKey{});
  } else {
    SharedRowLoader<Select, T>::load(src, n, keys, ts);
  }
}

// Column (relative to the row's window) of the i-th key in shared memory: a run of consecutive columns.
struct ColumnOf {
  int first;
  __device__ __forceinline__ int32_t operator()(int i) const { return first + i; }
};

// The keys one CTA selects from: all n keys of its row or slice in shared memory, or, once compacted,
// copies of those at or above the threshold bin with their positions, one segment per warp
// (compact_by_warp). One type for both keeps one copy of the refine and write-out code; the branch is
// uniform. Passed by value everywhere (a small struct in registers, never in local memory).
template <class Select>
struct KeyList {
  const uint32_t* keys;       // the list's keys, contiguous within each warp's span
  const uint32_t* positions;  // null: keys are the row's own keys[0, n); else each key's position
  int n;
  int segment_capacity;       // positions: warp w's segment starts at w * segment_capacity
  const uint32_t* segment_counts;  // positions: [warps] keys in each segment
  int first_column;           // column of the row's keys[0]

  struct Spans {  // the warp's span of list indices
    KeyList list;
    __device__ __forceinline__ int2 operator()(int warp) const {
      if (list.positions == nullptr) return typename Select::EvenSpans{list.n}(warp);
      const int lo = warp * list.segment_capacity;
      return make_int2(lo, lo + static_cast<int>(list.segment_counts[warp]));
    }
  };
  struct Keys {
    const uint32_t* keys;
    __device__ __forceinline__ uint32_t operator()(int i) const { return keys[i]; }
  };
  struct Columns {
    KeyList list;
    __device__ __forceinline__ int32_t operator()(int i) const {
      return list.first_column + (list.positions ? static_cast<int>(list.positions[i]) : i);
    }
  };
};

// What select_in_shared() calls between its phases when the caller has nothing to do there.
struct NoPhaseHook {
  __device__ __forceinline__ void operator()(int) const {}
};

// The top m of a row (row_n keys in all) into `sink`, in index order. This CTA holds n of them in
// shared memory (the whole row, or its slice when `combine` joins it with the CTAs holding the rest),
// and ts.hist counts their first digit. `spare` (capacity words) is free shared memory after the keys.
//
// After the first digit, the keys above the threshold bin are selected and those below are out; only
// the bin itself is undecided. Unless the whole bin is selected, each CTA compacts its keys at or above
// the bin (about k plus one bin over the row) into `spare`, in index order (one segment per warp),
// and every later pass and the write-out run over that short list. If a segment overflows
// (adversarial input: most keys share the bin), the passes run over all n keys instead: exactness
// never depends on a buffer's size. Without `compact` (few keys: the list would be much of them) they
// run over all n keys from the start. The write-out is one predicate (key >= threshold) unless a tie is
// cut at the pivot key.
//
// kStreamed: a row streamed from global memory (topk_radix_large.cuh: keys unused) comes with a list of
// its keys already in `spare`, laid out as compaction lays it out and holding the row's top m, and with
// its first digit counted over that list; the later passes and the write-out run over it.
//
// phase_hook(1) and phase_hook(2) run in thread 0 after the first digit and after the compaction
// (the persistent kernel's lookup of the next row: dispatch.cuh prefetch_next_row).
template <class Select, typename T, class Combine, bool kStreamed = false, class PhaseHook = NoPhaseHook>
__device__ __forceinline__ void select_in_shared(int n, int row_n, int m, const uint32_t* keys,
                                                 typename Select::TempStorage& ts, ColumnOf column_of,
                                                 const IndexSink& sink, uint32_t* spare, int capacity, bool compact,
                                                 Combine& combine, const PhaseHook& phase_hook = PhaseHook{}) {
  constexpr int kBits = KeyTraits<T>::kSignificantBits;
  Threshold t{0u, 0, m, true};  // m >= row_n: every key, a zero-bit prefix they all share
  if (m < row_n) {
    combine.publish(ts);  // every CTA's first-digit histogram is complete
    PERSISTENT_TOPK_STAMP(3);
    combine.find_digit(ts, m);
    PERSISTENT_TOPK_STAMP(4);
    if (threadIdx.x == 0) phase_hook(1);
    const uint32_t digit = ts.digit, above = ts.count_above, at = ts.count_at;
    t = Threshold{digit << Select::kFirstShift, Select::kDigitBits, m - static_cast<int>(above),
                  at == static_cast<uint32_t>(m) - above};
    // No barrier: nothing writes ts.digit/count_* before the next search, behind several barriers.
  } else {
    __syncthreads();  // the keys are in shared memory (publish() is this barrier otherwise)
  }
  using List = KeyList<Select>;
  List list{keys, nullptr, n, 0, ts.segment_count, column_of.first};  // all n keys
  if (kStreamed) {  // the list is there already (StreamingRowAgent), laid out as compaction lays it out
    const int segment_capacity = (capacity / (2 * Select::kWarps)) & ~3;
    list = List{spare, spare + segment_capacity * Select::kWarps, n, segment_capacity, ts.segment_count,
                column_of.first};
  }
  if (!t.all_at_selected) {
    // Compact: warp w's keys at or above the bin, and their positions, into segment w of the two
    // halves of `spare`, in index order. Segments start at 16-byte boundaries (the write-out reads
    // them 16 bytes at a time).
    const int segment_capacity = (capacity / (2 * Select::kWarps)) & ~3;
    uint32_t* compacted_keys = spare;
    uint32_t* positions = spare + segment_capacity * Select::kWarps;
    if (!kStreamed && compact &&
        Select::compact_by_warp(ts, keys, n, t, compacted_keys, positions, segment_capacity)) {
      list = List{compacted_keys, positions, n, segment_capacity, ts.segment_count, column_of.first};
    }
    PERSISTENT_TOPK_STAMP(5);
    if (threadIdx.x == 0) phase_hook(2);
    const int next_width = min(Select::kDigitBits, kBits - t.bits);
    auto recount = [&](const Threshold& prefix, int shift, uint32_t digit_mask) {
      Select::count_digits_shared(ts, typename List::Spans{list}, list.keys, prefix, shift, digit_mask);
    };
    Select::zero_histogram(ts);  // find_digit() has read it (other CTAs read what was sent)
    __syncthreads();
    recount(t, 32 - t.bits - next_width, (1u << next_width) - 1u);
    combine.publish(ts);
    PERSISTENT_TOPK_STAMP(6);
    t = Select::refine(ts, t, kBits, combine, recount);
    PERSISTENT_TOPK_STAMP(7);
  }
  // One call site each: the write-outs are the largest code of the kernel. Every CTA combined sees
  // the same t, so all of them write out the same way.
  if (t.all_at_selected) {  // no tie is cut: one predicate
    Select::emit_uncut(ts, typename List::Spans{list}, list.keys, typename List::Columns{list}, t, sink, combine);
  } else {  // the pivot key itself is decided; of the keys equal to it, the first t.need are selected
    Select::emit(ts, typename List::Spans{list}, typename List::Keys{list.keys}, typename List::Columns{list}, t,
                 sink, combine);
  }
  PERSISTENT_TOPK_STAMP(8);
}

}  // namespace persistent_topk
