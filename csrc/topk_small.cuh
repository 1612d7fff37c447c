// Rows that need no selection, and the write-out every path ends in: the output sink (a row's
// indices with optional values and the fused page-table transform), -1 padding, and the sort behind
// sorted=True.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"

namespace persistent_topk {

// Where a selection goes. One type for every path keeps one copy of the selection code in the binary
// (the kernel runs cold out of a flushed L2, so code size is latency).
template <typename T>
struct Sink {
  int32_t* out;                 // [k] this row's indices
  T* values;                    // [k] or null
  const T* row;                 // the row's first valid logit, for values and sorting
  const int32_t* page_table;    // this row's pages, or null
  int page_size;
  bool raw;                     // sorted=True: bare indices now, transform and values after the sort

  __device__ __forceinline__ int32_t transform(int32_t index) const {
    if (page_table == nullptr) return index;
    return page_table[index / page_size] * page_size + index % page_size;
  }
  __device__ __forceinline__ void put(int position, int32_t index, uint32_t /*key*/) const {
    if (raw || (page_table == nullptr && values == nullptr)) {
      out[position] = index;
    } else {
      put_transformed(out, values, row, page_table, page_size, position, index);
    }
  }
  __device__ __forceinline__ static void put_transformed(int32_t* out, T* values, const T* row,
                                                      const int32_t* page_table, int page_size, int position,
                                                      int32_t index) {
    out[position] = page_table == nullptr ? index : page_table[index / page_size] * page_size + index % page_size;
    if (values != nullptr) copy_logit(values + position, row + index);
  }
  // Positions [m, k): -1 and -inf. The only place -1 is ever written.
  template <int kThreads>
  __device__ __forceinline__ void pad(int m, int k) const {
    for (int j = m + static_cast<int>(threadIdx.x); j < k; j += kThreads) {
      out[j] = -1;
      if (values != nullptr) values[j] = KeyTraits<T>::minus_inf();  // a bit pattern, no conversion
    }
  }
};

template <int kThreads, typename T>
struct ShortRowAgent {
  // n <= k and index order wanted: the answer is 0..n-1 and no logit needs reading (but for values).
  __device__ __forceinline__ static void run(int n, int k, const Sink<T>& sink) {
    for (int j = threadIdx.x; j < n; j += kThreads) sink.put(j, j, 0u);
    sink.template pad<kThreads>(n, k);
  }
};

// sorted=True: the m selected indices (already in out, ascending) are re-keyed from the logits, packed
// as (~key, index) so one ascending sort orders by value descending and ties by index ascending, and
// written back with the transform and values. `scratch` holds next_pow2(m) words.
template <int kThreads, typename T>
__device__ __noinline__ void finish_sorted(int m, Sink<T> sink, uint64_t* scratch) {
  int count = 1;
  while (count < m) count <<= 1;
  for (int j = threadIdx.x; j < count; j += kThreads) {
    uint64_t word = ~0ull;
    if (j < m) {
      // Other CTAs of a team wrote parts of out: read through L2, never a stale L1 line.
      const uint32_t index = static_cast<uint32_t>(__ldcg(sink.out + j));
      word = (static_cast<uint64_t>(~to_key(sink.row[index])) << 32) | index;
    }
    scratch[j] = word;
  }
  __syncthreads();
  BlockSelect<kThreads>::bitonic_sort(scratch, count);
  sink.raw = false;
  for (int j = threadIdx.x; j < m; j += kThreads) {
    const int32_t index = static_cast<int32_t>(scratch[j] & 0xFFFFFFFFu);
    sink.put(j, index, 0u);
  }
  __syncthreads();  // scratch is the keys buffer of the next item
}

}  // namespace persistent_topk
