// Rows longer than one CTA's shared memory.
//
// Team rows: the CTAs of one thread-block cluster take one slice each (TeamSlices), load it into their
// own shared memory, and select the row together (team.cuh): every digit is chosen from the sum of the
// team's histograms, and each CTA writes its part of the answer at the offset the lower-rank CTAs
// leave. Slices are in column order, so ties at the threshold go to the lowest columns across the
// team as within a CTA, and the output is in index order without a merge.
//
// Slices too long for shared memory (a solo row past it, or a team row past what the largest team holds
// there): the radix passes run straight over global memory, with the same team exchanges.
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

// This CTA's slice (n keys from column first_column of a row of row_n) selected with its team (or
// alone), every pass over global memory (L2 usually holds the slice after the first): for slices too
// long for shared memory. The same exchanges as select_in_shared() in the same order, so one team may
// not mix the two. Slower, exact, and needs no scratch at all. The team goes in and out by value, so
// that it stays in registers across the call.
template <class Select, typename T>
__device__ __noinline__ Team select_in_global(const T* slice, int n, int row_n, int m, int first_column,
                                              typename Select::TempStorage& ts, IndexSink sink, Team team) {
  const GlobalKeys<T> key_at{slice};
  const typename Select::EvenSpans spans{n};
  Threshold t{0u, 0, m, true};  // m >= row_n: every key, a zero-bit prefix they all share
  if (m < row_n) {
    Select::zero_histogram(ts);
    __syncthreads();
    Select::count_digits(ts, spans, key_at, t, Select::kFirstShift, Select::kBins - 1);
    Select::publish_histogram(ts, team);
    t = Select::refine(ts, t, KeyTraits<T>::kSignificantBits, team,
                       [&](const Threshold& prefix, int shift, uint32_t digit_mask) {
                         Select::count_digits(ts, spans, key_at, prefix, shift, digit_mask);
                       });
  }
  Select::emit(ts, spans, key_at, ColumnOf{first_column}, t, sink, team);
  return team;
}

}  // namespace persistent_topk
