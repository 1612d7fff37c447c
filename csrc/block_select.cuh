// Block-level primitives shared by every path: exact radix threshold search, emission in index order,
// and the small sort behind sorted=True. Each works on any "key source" (a functor i -> key), so the
// same code selects from registers, shared memory and global memory.
//
// A CTA may be one of several that select one row together (a long row's team, topk_radix_large.cuh).
// These primitives do not know how such CTAs talk to each other: every step that combines counts goes
// through a Combine, which a caller passes in:
//   combine.publish(ts)            this CTA's histogram (ts.hist) is counted: a block barrier, and the
//                                  CTA's counts handed to the others;
//   combine.find_digit(ts, need)   the digit whose bin holds the need-th largest key of the combined
//                                  histograms, into ts.digit / count_above / count_at (then a barrier);
//   combine.lower_ranks(total)     (above, at) summed over the CTAs that hold lower columns, given
//                                  total() = this CTA's own (called only when it is needed).
// BlockSelect::Alone is the Combine of a CTA that selects its row alone.
#pragma once
#include <cstdint>

#include "keys.cuh"
#include "stamps.cuh"

namespace persistent_topk {

// The exact selection of one list, once found: every key whose top `bits` bits exceed `prefix` is
// selected, and of the keys whose top bits equal it, the first `need` in index order. When all
// significant bits are decided the prefix is the pivot key itself; the search also stops early when
// the whole threshold bin is selected, which this form expresses without knowing the pivot.
struct Threshold {
  uint32_t prefix;
  int bits;
  int need;
  bool all_at_selected;  // need equals the number of keys with this prefix: no tie is cut
  __device__ __forceinline__ uint32_t mask() const { return bits ? (~0u << (32 - bits)) : 0u; }
};

// The sum of v over the warp, in every lane: one REDUX instruction (sm_80 and up) where a butterfly of
// shuffles was a chain of five.
__device__ __forceinline__ uint32_t warp_sum(uint32_t v) { return __reduce_add_sync(0xFFFFFFFFu, v); }

// The 32-bit shared-window address of a shared object: what the asm helpers below take.
__device__ __forceinline__ uint32_t shared_address(const void* local) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(local));
}
__device__ __forceinline__ void store_shared(uint32_t address, uint32_t value) {
  asm volatile("st.shared.u32 [%0], %1;" ::"r"(address), "r"(value) : "memory");
}
// The store only where `predicate` holds, as one predicated instruction (no branch around it).
__device__ __forceinline__ void store_shared_if(bool predicate, uint32_t address, uint32_t value) {
  asm volatile(
      "{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %2, 0;\n\t@p st.shared.u32 [%0], %1;\n\t}" ::"r"(address), "r"(value),
      "r"(static_cast<uint32_t>(predicate))
      : "memory");
}
// One more in the shared counter at `address` where `predicate` holds, as one predicated reduction.
__device__ __forceinline__ void count_shared_if(bool predicate, uint32_t address) {
  asm volatile(
      "{\n\t.reg .pred p;\n\tsetp.ne.u32 p, %1, 0;\n\t@p red.shared.add.u32 [%0], 1;\n\t}" ::"r"(address),
      "r"(static_cast<uint32_t>(predicate))
      : "memory");
}
__device__ __forceinline__ int32_t load_shared(uint32_t address) {
  int32_t value;
  asm volatile("ld.shared.s32 %0, [%1];" : "=r"(value) : "r"(address) : "memory");
  return value;
}
__device__ __forceinline__ int4 load_shared_v4(uint32_t address) {
  int4 v;
  asm volatile("ld.shared.v4.s32 {%0, %1, %2, %3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(address)
               : "memory");
  return v;
}

// kThreads threads select together; every digit has kDigitBits bits (the first is the key's top digit).
template <int kThreads_, int kDigitBits_>
struct BlockSelect {
  static constexpr int kThreads = kThreads_;
  static constexpr int kWarps = kThreads / 32;
  static constexpr int kDigitBits = kDigitBits_;
  static constexpr int kBins = 1 << kDigitBits;
  // The first pass always takes the top digit, so loads can count it while they fill shared memory.
  static constexpr int kFirstShift = 32 - kDigitBits;

  struct TempStorage {
    alignas(16) uint32_t hist[kBins];  // read 16 bytes at a time by find_digit
    uint32_t warp_above[kWarps];
    uint32_t segment_count[kWarps];  // compact_by_warp: keys in each warp's segment
    uint32_t warp_at[kWarps];
    uint32_t digit, count_above, count_at;
  };

  __device__ __forceinline__ static void zero_histogram(TempStorage& ts) {
    static_assert(kThreads * 4 == kBins, "one 16-byte store per thread");
    *reinterpret_cast<uint4*>(&ts.hist[4 * threadIdx.x]) = make_uint4(0, 0, 0, 0);
  }

  __device__ __forceinline__ static void count_first_digit(TempStorage& ts, uint32_t key) {
    atomicAdd(&ts.hist[key >> kFirstShift], 1u);
  }

  // A list of n keys cut into one contiguous span per warp (a multiple of 32 long): what every
  // per-warp pass below walks unless the list says otherwise (KeyList's compacted segments).
  struct EvenSpans {
    int n;
    __device__ __forceinline__ int2 operator()(int warp) const {
      const int span = ((n + kWarps - 1) / kWarps + 31) & ~31;
      const int lo = min(n, warp * span);
      return make_int2(lo, min(n, lo + span));
    }
  };

  // One histogram pass over the keys that match the decided prefix; warp w walks spans(w).
  template <class Spans, class KeyAt>
  __device__ static void count_digits(TempStorage& ts, const Spans& spans, const KeyAt& key_at, const Threshold& t,
                                      int shift, uint32_t digit_mask) {
    const uint32_t mask = t.mask();
    const int2 span = spans(static_cast<int>(threadIdx.x) / 32);
#pragma unroll 2
    for (int i = span.x + static_cast<int>(threadIdx.x) % 32; i < span.y; i += 32) {
      const uint32_t key = key_at(i);
      if ((key & mask) == t.prefix) atomicAdd(&ts.hist[(key >> shift) & digit_mask], 1u);
    }
  }

  // count_digits() over keys in shared memory whose spans start at 16-byte boundaries: four keys per
  // load, a quarter of the dependent loads of the pass.
  template <class Spans>
  __device__ static void count_digits_shared(TempStorage& ts, const Spans& spans, const uint32_t* keys,
                                             const Threshold& t, int shift, uint32_t digit_mask) {
    const uint32_t mask = t.mask();
    const int lane = threadIdx.x % 32;
    const int2 span = spans(static_cast<int>(threadIdx.x) / 32);
    auto count = [&](uint32_t key) {
      if ((key & mask) == t.prefix) atomicAdd(&ts.hist[(key >> shift) & digit_mask], 1u);
    };
    int base = span.x;
#pragma unroll 2
    for (; base + 128 <= span.y; base += 128) {
      const uint4 v = *reinterpret_cast<const uint4*>(keys + base + 4 * lane);
      count(v.x);
      count(v.y);
      count(v.z);
      count(v.w);
    }
    for (int i = base + lane; i < span.y; i += 32) count(keys[i]);
  }

  // The warp's keys[lo, hi) that are >= bound, in order: put(rank, i, key) for each, rank counting
  // them from 0, as long as the rank is below `limit` when kLimited (past it nothing more is put);
  // returns their number. The pass behind compaction and the uncut write-out. Its cost is latency, so keys are
  // ranked by ballots, 32 at a time with one key per lane, which leaves no dependent chain but the
  // running count: a lane's rank is the count so far plus the selected lanes below it. A step loads
  // kKeysPerLane keys per lane before it ranks any; what is left goes 32 at a time, bounds checked.
  static constexpr int kKeysPerLane = 4;
  template <bool kLimited, class Put>
  __device__ __forceinline__ static uint32_t filter_span(const uint32_t* keys, int lo, int hi, uint32_t bound,
                                                         const Put& put, uint32_t limit = 0) {
    const int lane = threadIdx.x % 32;
    const uint32_t lanes_below = (1u << lane) - 1u;
    uint32_t count = 0;
    auto rank = [&](bool selected, int i, uint32_t key) {
      const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, selected);
      const uint32_t r = count + __popc(lanes & lanes_below);
      if (selected && (!kLimited || r < limit)) put(r, i, key);
      count += __popc(lanes);
    };
    int base = lo;
#pragma unroll 1
    for (; base + 32 * kKeysPerLane <= hi; base += 32 * kKeysPerLane) {
      uint32_t k[kKeysPerLane];
#pragma unroll
      for (int q = 0; q < kKeysPerLane; ++q) k[q] = keys[base + 32 * q + lane];
#pragma unroll
      for (int q = 0; q < kKeysPerLane; ++q) rank(k[q] >= bound, base + 32 * q + lane, k[q]);
    }
#pragma unroll 1
    for (; base < hi; base += 32) {
      const int i = base + lane;
      const uint32_t key = i < hi ? keys[i] : 0u;
      rank(i < hi && key >= bound, i, key);
    }
    return count;
  }

  // How many of the warp's keys[lo, hi) are >= bound (every lane gets the count): filter_span()'s
  // counting without its ranks, so one warp reduction at the end instead of a scan per chunk.
  __device__ __forceinline__ static uint32_t count_span(const uint32_t* keys, int lo, int hi, uint32_t bound) {
    const int lane = threadIdx.x % 32;
    uint32_t count = 0;
    int base = lo;
#pragma unroll 2
    for (; base + 128 <= hi; base += 128) {
      const uint4 v = *reinterpret_cast<const uint4*>(keys + base + 4 * lane);
      count += (v.x >= bound) + (v.y >= bound) + (v.z >= bound) + (v.w >= bound);
    }
    for (int i = base + lane; i < hi; i += 32) count += keys[i] >= bound;
    return warp_sum(count);
  }

  // Each warp copies the keys of its span of keys[0, n) that are at or above t, with their
  // positions, to its own segment of `compacted_keys` and `positions` (segment_capacity words each),
  // in index order, and their number to ts.segment_count[warp]. One pass: no block-wide count first,
  // since every warp writes only its own segment; later passes read the keys contiguously, without
  // bank conflicts. False if some warp's segment overflowed (then its segment is incomplete and must
  // not be used). t.prefix is zero below its bits, so "top bits >= prefix" is "key >= prefix".
  __device__ static bool compact_by_warp(TempStorage& ts, const uint32_t* keys, int n, const Threshold& t,
                                         uint32_t* compacted_keys, uint32_t* positions, int segment_capacity) {
    const int warp = threadIdx.x / 32;
    const int2 span = EvenSpans{n}(warp);
    // 32-bit shared addresses: with generic pointers the compiler rebuilt the shared window's base
    // before every store.
    const uint32_t segment_keys =
        static_cast<uint32_t>(__cvta_generic_to_shared(compacted_keys + warp * segment_capacity));
    const uint32_t segment_positions =
        static_cast<uint32_t>(__cvta_generic_to_shared(positions + warp * segment_capacity));
    const uint32_t capacity = static_cast<uint32_t>(segment_capacity);
    const uint32_t count = filter_span<true>(
        keys, span.x, span.y, t.prefix,
        [&](uint32_t slot, int i, uint32_t key) {
          store_shared(segment_keys + 4 * slot, key);
          store_shared(segment_positions + 4 * slot, static_cast<uint32_t>(i));
        },
        capacity);
    if (threadIdx.x % 32 == 0) ts.segment_count[warp] = count;
    return __syncthreads_or(count > capacity) == 0;
  }

  // Sum of `value` over the lanes below this one (lane 0 is the top of the order).
  __device__ __forceinline__ static uint32_t exclusive_from_top(uint32_t value, int lane) {
    uint32_t inclusive = value;
#pragma unroll
    for (int offset = 1; offset < 32; offset <<= 1) {
      const uint32_t other = __shfl_up_sync(0xFFFFFFFFu, inclusive, offset);
      if (lane >= offset) inclusive += other;
    }
    return inclusive - value;
  }

  // find_digit() over this CTA's own histogram. Bins are walked from the top: warp w owns
  // kBinsPerWarp consecutive bins (lane 0 the highest four, read with one 16-byte load), a warp scan
  // gives each lane the count above its bins within the warp, and the warps' totals the count above
  // each warp. Exactly one lane sees the running count cross `need`.
  static constexpr int kBinsPerWarp = kBins / kWarps;
  static constexpr int kBinsPerLane = kBinsPerWarp / 32;
  static_assert(kBinsPerLane == 4 && kWarps <= 32, "find_digit reads four bins per lane, one total per warp");
  __device__ static void find_digit_local(TempStorage& ts, int need) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int lowest = kBins - (warp + 1) * kBinsPerWarp + kBinsPerWarp - (lane + 1) * kBinsPerLane;
    const uint4 c = *reinterpret_cast<const uint4*>(&ts.hist[lowest]);
    const uint32_t mine = c.x + c.y + c.z + c.w;
    const uint32_t inclusive = exclusive_from_top(mine, lane) + mine;
    if (lane == 31) ts.warp_above[warp] = inclusive;
    __syncthreads();
    const uint32_t above_warp = warp_sum(lane < warp ? ts.warp_above[lane] : 0u);
    uint32_t running = above_warp + inclusive - mine;
    const uint32_t counts[4] = {c.w, c.z, c.y, c.x};  // highest bin first
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      if (running < static_cast<uint32_t>(need) && running + counts[j] >= static_cast<uint32_t>(need)) {
        ts.digit = static_cast<uint32_t>(lowest + 3 - j);
        ts.count_above = running;
        ts.count_at = counts[j];
      }
      running += counts[j];
    }
    __syncthreads();
  }

  // The Combine of a CTA that selects its row alone: its own histogram is the whole row's.
  struct Alone {
    __device__ __forceinline__ void publish(TempStorage&) const { __syncthreads(); }
    __device__ __forceinline__ void find_digit(TempStorage& ts, int need) const { find_digit_local(ts, need); }
    template <class Total>
    __device__ __forceinline__ uint2 lower_ranks(const Total&) const {
      return make_uint2(0, 0);
    }
  };

  // Decide the next digit of t (whose prefix the combined histograms in ts.hist count, published) and,
  // while the threshold bin is only partly selected, count the digit after it and go on. The result
  // is exact: either every key of the threshold bin is selected, or all significant bits are decided
  // (the pivot key itself) and the first t.need keys equal to it in index order are. recount(t,
  // shift, digit_mask) adds this CTA's keys that match t's prefix to ts.hist.
  template <class Combine, class Recount>
  __device__ __forceinline__ static Threshold refine(TempStorage& ts, Threshold t, int significant_bits,
                                                     Combine& combine, const Recount& recount) {
    for (;;) {
      const int width = min(kDigitBits, significant_bits - t.bits);
      const int shift = 32 - t.bits - width;
      combine.find_digit(ts, t.need);
      const uint32_t digit = ts.digit, above = ts.count_above, at = ts.count_at;
      t.need -= static_cast<int>(above);
      t.prefix |= digit << shift;
      t.bits += width;
      t.all_at_selected = at == static_cast<uint32_t>(t.need);
      if (t.all_at_selected || t.bits >= significant_bits) break;
      __syncthreads();  // every thread has read digit/count_* before the next pass overwrites hist
      zero_histogram(ts);
      __syncthreads();
      const int next_width = min(kDigitBits, significant_bits - t.bits);
      recount(t, 32 - t.bits - next_width, (1u << next_width) - 1u);
      combine.publish(ts);
    }
    // No barrier: find_digit() ended with one, and nothing writes ts.digit/count_* before the next
    // search, which is behind several more.
    return t;
  }

  // Sums of per-warp counts (already in ts.warp_above/warp_at) over the warps before this one, plus
  // what the CTAs holding lower columns select (combine): this warp's first output positions.
  template <class Combine>
  __device__ __forceinline__ static uint2 offsets_before_warp(TempStorage& ts, Combine& combine) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    static_assert(kWarps <= 32, "one lane per warp");
    const uint32_t above = lane < kWarps ? ts.warp_above[lane] : 0u, at = lane < kWarps ? ts.warp_at[lane] : 0u;
    const uint32_t above_before = warp_sum(lane < warp ? above : 0u), at_before = warp_sum(lane < warp ? at : 0u);
    const uint2 lower = combine.lower_ranks([&] { return make_uint2(warp_sum(above), warp_sum(at)); });
    return make_uint2(above_before + lower.x, at_before + lower.y);
  }

  // Emission when no tie is cut (t.all_at_selected, the usual case): a key is selected iff it is >=
  // t.prefix (zero below its bits), one predicate. Each warp counts what its span (spans(warp) of
  // keys[]) selects, learns how much the warps (and the combined CTAs) before it select, and writes its
  // keys at those positions through filter_span(), in index order: index_of(i) for keys[i].
  template <class Spans, class IndexOf, class Sink, class Combine>
  __device__ static void emit_uncut(TempStorage& ts, const Spans& spans, const uint32_t* keys,
                                    const IndexOf& index_of, const Threshold& t, const Sink& sink, Combine& combine) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int2 span = spans(warp);
    const uint32_t count = count_span(keys, span.x, span.y, t.prefix);
    if (lane == 0) {
      ts.warp_above[warp] = count;
      ts.warp_at[warp] = 0;
    }
    __syncthreads();
    // CTAs holding lower columns emit the same way (every CTA sees the same t): their counts are all
    // "above".
    const uint2 before = offsets_before_warp(ts, combine);
    const uint32_t position = before.x + before.y;
    filter_span<false>(keys, span.x, span.y, t.prefix,
                       [&](uint32_t rank, int i, uint32_t key) { sink.put(position + rank, index_of(i), key); });
    __syncthreads();  // the sink's writes are visible to the whole block; ts.warp_* free for reuse
  }

  // Emit the selection in ascending index order: each warp owns a contiguous span of the list (in
  // list order, warp after warp), counts what it selects, learns how much the warps (and the combined
  // CTAs) before it select, then walks its span again writing sink.put(position, index_of(i), key).
  // Positions are dense in [0, m). Cuts ties: of the keys equal to the threshold, the first t.need of
  // the row in index order are selected.
  template <class Spans, class KeyAt, class IndexOf, class Sink, class Combine>
  __device__ static void emit(TempStorage& ts, const Spans& spans, const KeyAt& key_at, const IndexOf& index_of,
                              const Threshold& t, const Sink& sink, Combine& combine) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int2 span = spans(warp);
    const int lo = span.x, hi = span.y;
    const uint32_t mask = t.mask();

    uint32_t above = 0, at = 0;
#pragma unroll 2
    for (int i = lo + lane; i < hi; i += 32) {
      const uint32_t masked = key_at(i) & mask;
      above += masked > t.prefix;
      at += masked == t.prefix;
    }
    above = warp_sum(above);
    at = warp_sum(at);
    if (lane == 0) {
      ts.warp_above[warp] = above;
      ts.warp_at[warp] = at;
    }
    PERSISTENT_TOPK_STAMP(12);
    __syncthreads();
    const uint2 before = offsets_before_warp(ts, combine);
    PERSISTENT_TOPK_STAMP(13);
    uint32_t above_before = before.x, at_before = before.y;
    const uint32_t need = static_cast<uint32_t>(t.need);
    const uint32_t lanes_below = (1u << lane) - 1u;
#pragma unroll 2
    for (int base = lo; base < hi; base += 32) {
      const int i = base + lane;
      uint32_t key = 0;
      bool is_above = false, is_at = false;
      if (i < hi) {
        key = key_at(i);
        is_above = (key & mask) > t.prefix;
        is_at = (key & mask) == t.prefix;
      }
      const uint32_t above_lanes = __ballot_sync(0xFFFFFFFFu, is_above);
      const uint32_t at_lanes = __ballot_sync(0xFFFFFFFFu, is_at);
      const uint32_t my_above = above_before + __popc(above_lanes & lanes_below);
      const uint32_t my_at = at_before + __popc(at_lanes & lanes_below);
      if (is_above) sink.put(my_above + min(my_at, need), index_of(i), key);
      if (is_at && my_at < need) sink.put(my_above + my_at, index_of(i), key);
      above_before += __popc(above_lanes);
      at_before += __popc(at_lanes);
    }
    PERSISTENT_TOPK_STAMP(14);
    __syncthreads();  // the sink's writes are visible to the whole block; ts.warp_* free for reuse
  }
};

// Ascending bitonic sort of `count` (a power of two) 64-bit words in shared memory, by a block of
// kThreads threads.
template <int kThreads>
__device__ void block_bitonic_sort(uint64_t* words, int count) {
  for (int size = 2; size <= count; size <<= 1) {
    for (int stride = size >> 1; stride > 0; stride >>= 1) {
      for (int i = threadIdx.x; i < count / 2; i += kThreads) {
        const int lo = 2 * i - (i & (stride - 1));
        const int hi = lo + stride;
        const bool ascending = (lo & size) == 0;
        const uint64_t a = words[lo], b = words[hi];
        if ((a > b) == ascending) {
          words[lo] = b;
          words[hi] = a;
        }
      }
      __syncthreads();
    }
  }
}

}  // namespace persistent_topk
