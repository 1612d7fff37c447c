// Long rows: split over the CTAs of a team, streamed from global memory by one CTA, and passes over
// global memory.
//
// Team rows: the CTAs of one thread-block cluster (or a part of one) take one slice each (TeamSlices),
// load it into their own shared memory (topk_medium.cuh), and select the row together: every digit is
// chosen from the sum of the team's histograms (TeamCombine over team.cuh's exchanges), and each CTA
// writes its part of the answer at the offset the lower-rank CTAs leave. Slices are in column order,
// so ties at the threshold go to the lowest columns across the team as within a CTA, and the output
// is in index order without a merge.
//
// Long rows alone (in batches of many rows, Policy::streams): streamed once: a sampled bound
// and one pass copy the row's candidates into shared memory (StreamingRowAgent).
//
// Slices too long for shared memory otherwise (a team row past what its team holds there: a stale
// plan), and streamed rows whose candidates do not fit: the radix passes run straight over global
// memory, with the same team exchanges.
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

// A team CTA's group counts on their way out (TeamCombine::publish), four words per warp.
__shared__ alignas(16) uint32_t team_groups_staged[TeamMailbox::kWords];

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
    // Each warp's four groups (in lanes 0, 8, 16 and 24) in two 8-byte messages to each CTA, staged in
    // shared memory: lanes 0..15 send the first pair, 16..31 the second. (16-byte messages, or pairs
    // gathered by shuffles, held more registers, and the kernel spilled.)
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    if (lane % (kGroupBins / 4) == 0) team_groups_staged[4 * warp + lane / (kGroupBins / 4)] = sum;
    __syncwarp();
    const Exchange groups = team.begin_exchange(kGroups);
    const int pair = 4 * warp + 2 * (lane / 16);
    if (lane % 16 < team.size) {
      team.send_to(groups, lane % 16, pair, *reinterpret_cast<const uint2*>(&team_groups_staged[pair]));
    }
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
      // The group's 32 bins, in ascending order, as eight 16-byte messages to each CTA: lane l sends
      // messages l / 16, + 2, + 4, + 6 to CTA l % 16.
      const uint32_t* group_bins = &ts.hist[group * kGroupBins];
#pragma unroll 1
      for (int message = lane / 16; message < kGroupBins / 4; message += 2) {
        if (lane % 16 < team.size) {
          team.send_to(bins_exchange, lane % 16, 4 * message, *reinterpret_cast<const uint4*>(group_bins + 4 * message));
        }
      }
      // Lane l: bin group * 32 + 31 - l (from the top).
      const uint32_t bin = group * kGroupBins + kGroupBins - 1 - lane;
      team.wait(bins_exchange);
      uint32_t count = 0;
#pragma unroll
      for (int r = 0; r < Team::kMaxSize; ++r) count += r < team.size ? Team::received(bins_exchange, r)[kGroupBins - 1 - lane] : 0u;
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

// A solo row too long for shared memory, streamed from global memory instead of held there. A sample
// of the row (one 16-byte vector per thread, spread over it: one round trip) bounds the threshold from
// below with a margin; one pass over the row (from HBM) then copies the keys at or above that bound,
// with their columns, into shared memory, one segment per warp in index order (what select_in_shared()
// makes of a row it holds when it compacts). If at least m keys made the list, the row's top m are all
// in it, and the selection runs over the list alone: its first digit, every later pass and the
// write-out. Otherwise (the sample misled, or a segment overflowed: adversarial input) the caller
// selects the row by passes over global memory instead (select_in_global), exact and slower. In batches
// of many long rows this gives every row one CTA and one read of HBM, where a team row costs its team's
// exchanges and a round of the grid per team (b256-64k: 42 us against 65 on teams of three).
struct StreamedRow {
  const void* row;
  uint32_t bound;  // the first pass copied the keys >= bound
  int complete;    // the list holds the row's top m (the first digit is counted over it)
};
// A streamed row's state between StreamingRowAgent's steps (and for the caller, complete): in shared
// memory rather than in registers held across the threshold search (the kernel has none to spare).
__shared__ StreamedRow streamed_row;

template <class Select, typename T>
struct StreamingRowAgent {
  static constexpr int kThreads = Select::kThreads;
  static constexpr int kWarps = Select::kWarps;
  static constexpr int kPerVector = 16 / static_cast<int>(sizeof(T));
  // Keys a warp ranks per step: one 16-byte vector per lane.
  static constexpr int kChunk = 32 * kPerVector;
  static constexpr int kRingSlots = Policy::kStreamRingSlots;
  // Shared memory a pass stages its copies in, ahead of the list.
  static constexpr int kRingWords = kWarps * 32 * kRingSlots * 4;
  using TempStorage = typename Select::TempStorage;

  // Columns before the row's first 16-byte boundary (the rest is read as whole vectors).
  __device__ __forceinline__ static int head_of(const T* row, int n) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(row);
    return min(n, static_cast<int>(((16u - (address & 15u)) & 15u) / sizeof(T)));
  }

  // The bound the first pass copies from: the key that ranks r in a sample of the row (one 16-byte
  // vector per thread, spread over the row), to two digits (22 bits), where the row's m-th key ranks
  // about m x sample / n and r adds a margin of a quarter and three standard deviations. The list then
  // holds about r / sample of the row. ts.hist must be zero; it is zero again on return, behind a
  // barrier.
  __device__ __forceinline__ static void sample_bound(const T* __restrict__ row, int n, int m, TempStorage& ts) {
    const int head = head_of(row, n);
    const int vectors = (n - head) / kPerVector;
    const int sampled = min(vectors, kThreads);
    uint32_t keys[kPerVector];
#pragma unroll
    for (int j = 0; j < kPerVector; ++j) keys[j] = 0u;
    if (static_cast<int>(threadIdx.x) < sampled) {
      const int v = static_cast<int>(static_cast<int64_t>(threadIdx.x) * vectors / sampled);
      unpack_keys<T>(__ldcg(reinterpret_cast<const uint4*>(row + head) + v), keys);
#pragma unroll
      for (int j = 0; j < kPerVector; ++j) Select::count_first_digit(ts, keys[j]);
    }
    const int sample = sampled * kPerVector;
    const float expected = static_cast<float>(m) * static_cast<float>(sample) / static_cast<float>(n);
    const int rank = static_cast<int>(ceilf(1.25f * expected + 3.0f * sqrtf(expected))) + 8;
    __syncthreads();
    uint32_t bound = 0u;  // a rank past the sample: every key
    if (rank <= sample) {
      Select::find_digit_local(ts, rank);  // ends with a barrier
      const uint32_t digit = ts.digit, above = ts.count_above;
      __syncthreads();  // every thread has read the digit before the histogram is zeroed
      Select::zero_histogram(ts);
      __syncthreads();
      constexpr int kSecondShift = Select::kFirstShift - Select::kDigitBits;
#pragma unroll
      for (int j = 0; j < kPerVector; ++j) {
        if (static_cast<int>(threadIdx.x) < sampled && (keys[j] >> Select::kFirstShift) == digit)
          atomicAdd(&ts.hist[(keys[j] >> kSecondShift) & (Select::kBins - 1)], 1u);
      }
      __syncthreads();
      Select::find_digit_local(ts, rank - static_cast<int>(above));
      bound = (digit << Select::kFirstShift) | (ts.digit << kSecondShift);
    }
    if (threadIdx.x == 0) {
      streamed_row.row = row;
      streamed_row.bound = bound;
    }
    __syncthreads();  // every thread has read the digit
    Select::zero_histogram(ts);
    __syncthreads();
  }

  // A pass over row[0, n): warp w copies the keys >= bound of its span, with their columns, to its
  // segment of `compacted_keys` / `positions` (segment_capacity words each), in index order, and their
  // number to ts.segment_count[w]. A warp's span is a run of whole steps of kChunk columns counted from the row's first 16-byte
  // boundary (warp 0 also takes the columns before it); each lane streams its 16 bytes of every step
  // through its own kRingSlots slots of `ring` (cp.async, one commit group per step), kRingSlots x 16
  // bytes in flight per thread without holding them in registers, and no barrier, since a lane reads
  // back only what it copied. False if a segment overflowed (that list is then unusable).
  __device__ __forceinline__ static bool pass(int n, uint32_t bound, uint32_t ring, uint32_t compacted_keys,
                                              uint32_t positions, int segment_capacity, TempStorage& ts) {
    const T* __restrict__ row = static_cast<const T*>(streamed_row.row);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const uint32_t lanes_below = (1u << lane) - 1u;
    const int head = head_of(row, n);
    const uint4* vectors = reinterpret_cast<const uint4*>(row + head);
    // Step c covers columns [head + c kChunk, head + (c + 1) kChunk); step -1 the head. Whole steps
    // (every column inside the row) are copied; the head and a last partial step are read directly.
    const int first_step = head > 0 ? -1 : 0;
    const int steps = (n - head + kChunk - 1) / kChunk;
    const int whole_steps = (n - head) / kChunk;
    const int per_warp = (steps - first_step + kWarps - 1) / kWarps;
    const int lo = first_step + warp * per_warp, hi = min(lo + per_warp, steps);
    const uint32_t segment_keys = compacted_keys + 4u * static_cast<uint32_t>(warp * segment_capacity);
    const uint32_t segment_positions = positions + 4u * static_cast<uint32_t>(warp * segment_capacity);
    const uint32_t capacity = static_cast<uint32_t>(segment_capacity);
    const uint32_t mine = ring + 16u * (warp * 32 * kRingSlots + lane);  // slot s at + 512 s
    auto issue = [&](int c, int s) {
      if (c >= 0 && c < hi && c < whole_steps) copy_async_16(mine + 512u * s, vectors + static_cast<int64_t>(c) * 32 + lane);
      commit_async_copies();
    };
#pragma unroll
    for (int s = 0; s < kRingSlots; ++s) issue(lo + s, s);
    uint32_t count = 0;
    int slot = 0;
#pragma unroll 1
    for (int c = lo; c < hi; ++c) {
      const int first = head + c * kChunk + lane * kPerVector;  // this lane's first column
      uint32_t keys[kPerVector];
      bool valid[kPerVector];
      wait_async_copies<kRingSlots - 1>();  // step c (kRingSlots groups ago) has landed
      if (c >= 0 && c < whole_steps) {
        const int4 loaded = load_shared_v4(mine + 512u * slot);
        unpack_keys<T>(make_uint4(loaded.x, loaded.y, loaded.z, loaded.w), keys);
#pragma unroll
        for (int j = 0; j < kPerVector; ++j) valid[j] = true;
      } else {  // the head or the last, partial step
#pragma unroll
        for (int j = 0; j < kPerVector; ++j) {
          const int i = first + j;
          valid[j] = i >= 0 && i < n;
          keys[j] = valid[j] ? to_key(row[i]) : 0u;
        }
      }
      issue(c + kRingSlots, slot);  // the slot's words are in registers
      slot = slot == kRingSlots - 1 ? 0 : slot + 1;
      // Ranks in index order: lane l's j-th key follows every selected key of the lanes below it.
      bool selected[kPerVector];
      uint32_t below = 0, total = 0;
#pragma unroll
      for (int j = 0; j < kPerVector; ++j) {
        selected[j] = valid[j] && keys[j] >= bound;
        const uint32_t lanes = __ballot_sync(0xFFFFFFFFu, selected[j]);
        below += __popc(lanes & lanes_below);
        total += __popc(lanes);
      }
      if (total != 0u) {
        uint32_t rank = count + below;
#pragma unroll
        for (int j = 0; j < kPerVector; ++j) {
          if (selected[j]) {
            if (rank < capacity) {
              store_shared(segment_keys + 4u * rank, keys[j]);
              store_shared(segment_positions + 4u * rank, static_cast<uint32_t>(first + j));
            }
            ++rank;
          }
        }
        count += total;
      }
    }
    wait_async_copies<0>();  // (only empty groups are left)
    if (lane == 0) ts.segment_count[warp] = count;
    return __syncthreads_or(count > capacity) == 0;
  }

  // The first pass, after sample_bound(): copies the keys >= the sampled bound into the list in
  // `buffer` (kSmemKeys words: the ring, then the list). If at least m keys made it (and no segment
  // overflowed), the list holds the row's top m, since no key below the bound can be selected: its
  // keys' first digit is counted into ts.hist (zero), and streamed_row.complete says so. Otherwise (the
  // sample misled, or most keys share a value: adversarial input) the row needs other means.
  __device__ __forceinline__ static void first_pass(int n, int m, uint32_t* buffer, TempStorage& ts) {
    const List list = List::in(buffer);
    const bool overflowed =
        !pass(n, streamed_row.bound, list.ring, list.keys, list.positions, List::kCapacity, ts);
    const int lane = threadIdx.x % 32;
    const uint32_t listed = warp_sum(lane < kWarps ? ts.segment_count[lane] : 0u);
    const bool complete = !overflowed && listed >= static_cast<uint32_t>(m);
    if (complete) {
      const KeyList<Select> keys{List::keys_at(buffer), List::positions_at(buffer), n, List::kCapacity,
                                 ts.segment_count, 0};
      Select::count_digits_shared(ts, typename KeyList<Select>::Spans{keys}, keys.keys, Threshold{0u, 0, m, false},
                                  Select::kFirstShift, Select::kBins - 1);
    }
    if (threadIdx.x == 0) streamed_row.complete = complete;
    __syncthreads();  // the caller reads streamed_row
  }

  // The row, selected into `sink`: its list (sample_bound(), first_pass()), then select_in_shared() over
  // the list; unless the list is not complete (adversarial input: streamed_row), which leaves the row
  // to the caller. Out of the kernel's line, so that the calling convention keeps the registers of the
  // kernel's own selection code apart from this one's; one copy per instance of the kernel
  // (kClusterKernel: persistent_topk_kernel's kClusters), since one copy shared by both spilled 16
  // bytes for 16-bit logits.
  template <bool kClusterKernel>
  __device__ __noinline__ static void select(const T* row, int n, int m, uint32_t* buffer, TempStorage& ts,
                                             IndexSink sink) {
    Select::zero_histogram(ts);
    __syncthreads();  // (also: every thread has read what the work queue read of the state)
    sample_bound(row, n, m, ts);
    first_pass(n, m, buffer, ts);
    if (!streamed_row.complete) return;
    typename Select::Alone alone;
    select_in_shared<Select, T, typename Select::Alone, true>(n, n, m, buffer, ts, ColumnOf{0}, sink,
                                                              buffer + kRingWords, Policy::kSmemKeys - kRingWords,
                                                              true, alone);
  }

  // Where the first pass stages its copies (the start of the keys buffer) and writes the list.
  struct List {
    // Words per warp's segment, in the keys and in the positions (16-byte multiples).
    static constexpr int kCapacity = ((Policy::kSmemKeys - kRingWords) / (2 * kWarps)) & ~3;
    uint32_t ring, keys, positions;
    __device__ __forceinline__ static List in(uint32_t* buffer) {
      const uint32_t base = static_cast<uint32_t>(__cvta_generic_to_shared(buffer));
      const uint32_t keys = base + 4u * kRingWords;
      return List{base, keys, keys + 4u * static_cast<uint32_t>(kCapacity * kWarps)};
    }
    __device__ __forceinline__ static uint32_t* keys_at(uint32_t* buffer) { return buffer + kRingWords; }
    __device__ __forceinline__ static uint32_t* positions_at(uint32_t* buffer) {
      return buffer + kRingWords + kCapacity * kWarps;
    }
  };
};

}  // namespace persistent_topk
