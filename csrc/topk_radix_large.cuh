// Long rows: split over the CTAs of a team, and passes over global memory.
//
// Team rows: the CTAs of one thread-block cluster (or a part of one) take one slice each (TeamSlices),
// load it into their own shared memory (topk_medium.cuh), and select the row together: every digit is
// chosen from the sum of the team's histograms (TeamCombine over team.cuh's exchanges), and each CTA
// writes its part of the answer at the offset the lower-rank CTAs leave. Slices are in column order,
// so ties at the threshold go to the lowest columns across the team as within a CTA, and the output
// is in index order without a merge.
//
// Slices too long for shared memory (a solo row past it, or a team row past what the largest team holds
// there): the radix passes run straight over global memory, with the same team exchanges.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"
#include "team.cuh"
#include "topk_medium.cuh"

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

// How the CTAs of a team combine what they count: BlockSelect's Combine (block_select.cuh) over the
// team's exchanges (team.cuh). A team of one (a solo row, or a team row a stale plan left to one CTA)
// combines nothing, with one runtime branch, so that solo rows and team rows share one copy of the
// selection code. A team searches its histograms in two levels, so that little crosses distributed
// shared memory (every CTA reading all of the others' 2048 bins cost ~3.5 us per digit): 64 groups of
// 32 bins, summed by each CTA before it sends them, then the 32 bins of the one group that holds the
// need-th key. One warp does the search.
template <class Select>
struct TeamCombine {
  using TempStorage = typename Select::TempStorage;
  static constexpr int kGroupBins = 32;
  static constexpr int kGroups = Select::kBins / kGroupBins;
  static_assert(kGroups == 64 && Select::kThreads * 4 == Select::kBins, "two groups per lane; four bins per thread");
  static_assert(kGroups == TeamMailbox::kWords, "one exchange carries a histogram's group counts");

  Team& team;

  // This CTA's histogram (ts.hist, counted) is complete (a barrier): for a team, its group counts go
  // to every CTA of the team (one exchange, which find_digit() waits for).
  __device__ __forceinline__ void publish(TempStorage& ts) {
    __syncthreads();
    if (team.size == 1) return;
    const uint4 c = *reinterpret_cast<const uint4*>(&ts.hist[4 * threadIdx.x]);
    uint32_t sum = c.x + c.y + c.z + c.w;
#pragma unroll
    for (int offset = 1; offset < kGroupBins / 4; offset <<= 1) sum += __shfl_xor_sync(0xFFFFFFFFu, sum, offset);
    const Exchange groups = team.begin_exchange(kGroups);
    if (threadIdx.x % (kGroupBins / 4) == 0) team.send(groups, threadIdx.x / (kGroupBins / 4), sum);
  }

  // The digit whose bin holds the need-th largest key of the team's histogram (ts.hist of every CTA
  // of the team, their group counts exchanged by publish()), into ts.digit / count_above (keys in
  // higher bins) / count_at. A team exchanges the 32 bins of the group that holds the key.
  __device__ void find_digit(TempStorage& ts, int need) {
    if (team.size == 1) {
      Select::find_digit_local(ts, need);
      return;
    }
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const Exchange groups_exchange = team.latest();
    const Exchange bins_exchange = team.begin_exchange(kGroupBins);
    if (warp == 0) {
      // Groups from the top: lane l holds groups 63 - 2l (upper) and 62 - 2l, summed over the team.
      team.wait(groups_exchange);
      uint2 groups = make_uint2(0, 0);
#pragma unroll
      for (int r = 0; r < Team::kMaxSize; ++r) {
        if (r < team.size) {
          const uint2 g = *reinterpret_cast<const uint2*>(Team::received(groups_exchange, r) + kGroups - 2 - 2 * lane);
          groups.x += g.x;
          groups.y += g.y;
        }
      }
      const uint32_t pair = groups.x + groups.y;
      const uint32_t before = Select::exclusive_from_top(pair, lane);
      uint32_t group = 0, above = 0;
      const bool upper = before < static_cast<uint32_t>(need) && before + groups.y >= static_cast<uint32_t>(need);
      const bool lower = !upper && before + pair >= static_cast<uint32_t>(need) && before < static_cast<uint32_t>(need);
      if (upper) {
        group = kGroups - 1 - 2 * lane;
        above = before;
      } else if (lower) {
        group = kGroups - 2 - 2 * lane;
        above = before + groups.y;
      }
      const int owner = __ffs(__ballot_sync(0xFFFFFFFFu, upper || lower)) - 1;
      group = __shfl_sync(0xFFFFFFFFu, group, owner);
      above = __shfl_sync(0xFFFFFFFFu, above, owner);
      // Bins of that group from the top: lane l holds bin group * 32 + 31 - l.
      const uint32_t bin = group * kGroupBins + kGroupBins - 1 - lane;
      team.send(bins_exchange, lane, ts.hist[bin]);
      team.wait(bins_exchange);
      uint32_t count = 0;
#pragma unroll
      for (int r = 0; r < Team::kMaxSize; ++r) count += r < team.size ? Team::received(bins_exchange, r)[lane] : 0u;
      const uint32_t running = above + Select::exclusive_from_top(count, lane);
      if (running < static_cast<uint32_t>(need) && running + count >= static_cast<uint32_t>(need)) {
        ts.digit = bin;
        ts.count_above = running;
        ts.count_at = count;
      }
    }
    __syncthreads();
  }

  // (above, at) of the CTAs of lower rank (lower columns): one exchange of total(), this CTA's own.
  template <class Total>
  __device__ __forceinline__ uint2 lower_ranks(const Total& total) {
    if (team.size == 1) return make_uint2(0, 0);
    const uint2 mine = total();
    return team.lower_ranks_total(mine.x, mine.y);
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
  TeamCombine<Select> combine{team};
  Threshold t{0u, 0, m, true};  // m >= row_n: every key, a zero-bit prefix they all share
  if (m < row_n) {
    Select::zero_histogram(ts);
    __syncthreads();
    Select::count_digits(ts, spans, key_at, t, Select::kFirstShift, Select::kBins - 1);
    combine.publish(ts);
    t = Select::refine(ts, t, KeyTraits<T>::kSignificantBits, combine,
                       [&](const Threshold& prefix, int shift, uint32_t digit_mask) {
                         Select::count_digits(ts, spans, key_at, prefix, shift, digit_mask);
                       });
  }
  Select::emit(ts, spans, key_at, ColumnOf{first_column}, t, sink, combine);
  return team;
}

}  // namespace persistent_topk
