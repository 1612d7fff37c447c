// Rows that need no selection, and the write-out every path ends in: the row's output sink (indices,
// optional values, the fused page-table transform), -1 padding, and the sort behind sorted=True.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"

namespace persistent_topk {

// Where one row's final answer goes. `raw` writes bare column indices only: sorted=True sorts those
// afterwards and applies the transform and values in finish_sorted().
template <typename T>
struct RowSink {
  int32_t* out;                 // [k] this row's indices
  T* values;                    // [k] or null
  const T* row;                 // the row's first valid logit, for values
  const int32_t* page_table;    // this row's pages, or null
  int page_size;
  bool raw;

  __device__ __forceinline__ int32_t transform(int32_t index) const {
    if (page_table == nullptr) return index;
    return page_table[index / page_size] * page_size + index % page_size;
  }
  __device__ __forceinline__ void put(int position, int32_t index, uint32_t /*key*/) const {
    if (raw) {
      out[position] = index;
      return;
    }
    out[position] = transform(index);
    if (values != nullptr) values[position] = row[index];
  }
  // Positions [m, k): -1 and -inf. The only place -1 is ever written.
  template <int kThreads>
  __device__ __forceinline__ void pad(int m, int k) const {
    for (int j = m + static_cast<int>(threadIdx.x); j < k; j += kThreads) {
      out[j] = -1;
      if (values != nullptr) values[j] = KeyTraits<T>::minus_inf();
    }
  }
};

template <int kThreads, typename T>
struct ShortRowAgent {
  // n <= k and index order wanted: the answer is 0..n-1 and no logit needs reading (but for values).
  __device__ static void run(int n, int k, const RowSink<T>& sink) {
    for (int j = threadIdx.x; j < n; j += kThreads) sink.put(j, j, 0u);
    sink.template pad<kThreads>(n, k);
  }
};

// sorted=True: the m selected indices (already in out, ascending) are re-keyed from the logits, packed
// as (~key, index) so one ascending sort orders by value descending and ties by index ascending, and
// written back with the transform and values. `scratch` holds next_pow2(m) words.
template <int kThreads, typename T>
__device__ void finish_sorted(int m, const RowSink<T>& sink, uint64_t* scratch) {
  int count = 1;
  while (count < m) count <<= 1;
  for (int j = threadIdx.x; j < count; j += kThreads) {
    uint64_t word = ~0ull;
    if (j < m) {
      const uint32_t index = static_cast<uint32_t>(sink.out[j]);
      word = (static_cast<uint64_t>(~to_key(sink.row[index])) << 32) | index;
    }
    scratch[j] = word;
  }
  __syncthreads();
  BlockSelect<kThreads>::bitonic_sort(scratch, count);
  RowSink<T> final_sink = sink;
  final_sink.raw = false;
  for (int j = threadIdx.x; j < m; j += kThreads) {
    const int32_t index = static_cast<int32_t>(scratch[j] & 0xFFFFFFFFu);
    final_sink.put(j, index, 0u);
  }
  __syncthreads();  // scratch is the keys buffer of the next item
}

}  // namespace persistent_topk
