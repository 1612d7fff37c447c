// Rows that need no selection, and the end of every row: the selection writes bare column indices
// (IndexSink); one CTA then finishes the row as the caller asked (RowOutput, finish_row): sorted=True's
// order, the fused page-table transform, values, and the -1 padding.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"

namespace persistent_topk {

// Where a selection's indices go while it runs: the row's out, bare columns in index order. One store
// per index keeps every emission loop small (the kernel runs cold out of a flushed L2, so code size
// is latency) and its registers few.
struct IndexSink {
  int32_t* out;
  // Unsigned positions: one wide multiply-add per address, no sign extension.
  __device__ __forceinline__ void put(uint32_t position, int32_t index, uint32_t /*key*/) const {
    out[position] = index;
  }
};

// A row's output as the caller asked for it.
template <typename T>
struct RowOutput {
  int32_t* out;               // [k] this row's indices
  T* values;                  // [k] or null
  const T* row;               // the row's first valid logit, for values and sorting
  const int32_t* page_table;  // this row's pages, or null
  int page_size;
  bool by_value;              // sorted=True

  // Whether the bare indices in out need a second look (else only padding is left to write).
  __device__ __forceinline__ bool needs_finish() const { return by_value || values != nullptr || page_table != nullptr; }
  __device__ __forceinline__ void write(int position, int32_t index) const {
    out[position] = page_table == nullptr ? index : page_table[index / page_size] * page_size + index % page_size;
    if (values != nullptr) copy_logit(values + position, row + index);
  }
};

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

// The row's m bare indices are in out[0, m), ascending (written by this CTA or, for a team row, by
// every CTA of the team before a cluster barrier): finish it. sorted=True re-keys them from the logits,
// packed as (~key, index) so one ascending sort orders by value descending and ties by index
// ascending (`scratch` holds next_pow2(m) words); the transform and values follow; then positions
// [m, k) get -1 and -inf, the only place -1 is ever written. Out of line: once per row, one copy.
template <int kThreads, typename T>
__device__ __noinline__ void finish_row(int m, int k, RowOutput<T> output, uint64_t* scratch) {
  if (output.by_value) {
    int count = 1;
    while (count < m) count <<= 1;
    for (int j = threadIdx.x; j < count; j += kThreads) {
      uint64_t word = ~0ull;
      if (j < m) {
        // Other CTAs of a team wrote parts of out: read through L2, never a stale L1 line.
        const uint32_t index = static_cast<uint32_t>(__ldcg(output.out + j));
        word = (static_cast<uint64_t>(~to_key(output.row[index])) << 32) | index;
      }
      scratch[j] = word;
    }
    __syncthreads();
    BlockSelect<kThreads>::bitonic_sort(scratch, count);
    for (int j = threadIdx.x; j < m; j += kThreads) output.write(j, static_cast<int32_t>(scratch[j] & 0xFFFFFFFFu));
  } else if (output.needs_finish()) {
    for (int j = threadIdx.x; j < m; j += kThreads) output.write(j, __ldcg(output.out + j));
  }
  for (int j = m + static_cast<int>(threadIdx.x); j < k; j += kThreads) {
    output.out[j] = -1;
    if (output.values != nullptr) output.values[j] = KeyTraits<T>::minus_inf();  // a bit pattern, no conversion
  }
  __syncthreads();  // scratch is the keys buffer of the next row
}

}  // namespace persistent_topk
