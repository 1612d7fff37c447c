// Rows longer than one CTA's shared memory.
//
// Team rows: the CTAs of one thread-block cluster take one slice each (TeamSlices), load it into their
// own shared memory, and select the row together (team.cuh): every digit is chosen from the sum of the
// team's histograms, and each CTA writes its part of the answer at the offset the lower-rank CTAs
// leave. Slices are in column order, so ties at the threshold go to the lowest columns across the
// team as within a CTA, and the output is in index order without a merge.
//
// Global rows: rows so long that a slice would not fit in shared memory. One CTA runs the radix
// passes straight over global memory. Slower, exact, and needs no scratch at all.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"
#include "topk_medium.cuh"
#include "topk_small.cuh"

namespace persistent_topk {

// A team row's cut: `size` slices of `slice_len` columns (the last ones shorter, possibly empty).
struct TeamSlices {
  int size;
  int slice_len;
  __host__ __device__ __forceinline__ static TeamSlices of(int n, int size, int align) {
    const int per_cta = (n + size - 1) / size;
    return TeamSlices{size, (per_cta + align - 1) / align * align};
  }
  __host__ __device__ __forceinline__ int first(int rank) const { return rank * slice_len; }
  __host__ __device__ __forceinline__ int length(int rank, int n) const {
    const int rest = n - first(rank);
    return rest <= 0 ? 0 : (rest < slice_len ? rest : slice_len);
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
                                              typename BlockSelect<kThreads>::TempStorage& ts, IndexSink sink) {
  using Select = BlockSelect<kThreads>;
  const GlobalKeys<T> key_at{row};
  Team solo = Team::solo();
  Threshold t{0u, 0, m, true};  // m >= n: every key, a zero-bit prefix they all share
  if (m < n) {
    Select::zero_histogram(ts);
    __syncthreads();
    Select::count_digits(ts, typename Select::EvenSpans{n}, key_at, t, Select::kFirstShift, Select::kBins - 1);
    __syncthreads();
    t = Select::refine(ts, t, KeyTraits<T>::kSignificantBits, solo,
                       [&](const Threshold& prefix, int shift, uint32_t digit_mask) {
                         Select::count_digits(ts, typename Select::EvenSpans{n}, key_at, prefix, shift, digit_mask);
                       });
  }
  Select::emit(ts, typename Select::EvenSpans{n}, key_at, ColumnOf{0}, t, sink, solo);
}

}  // namespace persistent_topk
