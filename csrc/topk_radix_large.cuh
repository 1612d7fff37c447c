// Rows longer than shared memory.
//
// Split rows: each chunk is one work item. A CTA selects its chunk's own top min(k, chunk) exactly
// (same total order: value, then lowest index), so every element of the row's answer survives in its
// chunk's candidates, and writes them in index order to the row's candidate list in the workspace.
// The CTA that arrives last on the row's counter (nobody waits for anybody) loads all candidates,
// which fit in shared memory by construction, selects the row's answer from them and resets the
// counter for the next launch. Chunks are in column order and each chunk's candidates are too, so
// the candidate list is in column order and the lowest-index rule carries through the merge.
//
// Global rows: when the candidates would not fit (k close to the chunk size), one CTA runs the radix
// passes straight over global memory. Slower, exact, and needs no scratch at all.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"
#include "topk_medium.cuh"
#include "topk_small.cuh"

namespace persistent_topk {

// One split row's geometry: `chunks` chunks of `chunk_len` columns (the last one shorter), each
// leaving min(k, its length) candidates at a stride of `slot` = min(k, chunk_len).
struct SplitGeometry {
  int chunks;
  int chunk_len;
  __host__ __device__ __forceinline__ int length_of(int chunk, int n) const {
    return min(chunk_len, n - chunk * chunk_len);
  }
  __host__ __device__ __forceinline__ int slot(int k) const { return min(k, chunk_len); }
  __host__ __device__ __forceinline__ int candidates(int k, int n) const {
    return (chunks - 1) * slot(k) + min(k, length_of(chunks - 1, n));
  }
};

template <int kThreads>
struct SplitRowArrival {
  // After a chunk's candidates are written: count in on the row's counter. True for the last chunk's
  // CTA, which has then reset the counter and may read every chunk's candidates.
  __device__ __forceinline__ static bool last_to_arrive(uint32_t* arrivals, int chunks, uint32_t* is_last) {
    // The fence in every writing thread orders its candidate stores before the arrival that the last
    // CTA will observe.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      const uint32_t arrived = atomicAdd(arrivals, 1u);
      *is_last = arrived == static_cast<uint32_t>(chunks - 1);
      if (*is_last) *arrivals = 0u;  // every chunk has counted in: reset for the next launch
    }
    __syncthreads();
    const bool last = *is_last != 0u;
    if (last) __threadfence();
    return last;
  }

};

template <typename T>
struct GlobalKeys {
  const T* row;
  __device__ __forceinline__ uint32_t operator()(int i) const { return to_key(row[i]); }
};

// The whole row by one CTA, every pass over global memory (L2 usually holds the row after the first).
template <int kThreads, typename T>
__device__ __noinline__ void select_in_global(const T* row, int n, int m,
                                              typename BlockSelect<kThreads>::TempStorage& ts, Sink<T> sink) {
  using Select = BlockSelect<kThreads>;
  const GlobalKeys<T> key_at{row};
  Select::zero_histogram(ts);
  __syncthreads();
  Select::count_digits(ts, n, key_at, Threshold{0u, 0, 0, true}, Select::kFirstShift, Select::kBins - 1);
  __syncthreads();
  const Threshold t = Select::refine(ts, n, m, KeyTraits<T>::kSignificantBits,
                                     [&](const Threshold& prefix, int shift, uint32_t digit_mask) {
                                       Select::count_digits(ts, n, key_at, prefix, shift, digit_mask);
                                     });
  Select::emit(ts, n, key_at, ColumnOf{0, nullptr}, t, sink);
}

}  // namespace persistent_topk
