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

struct CandidateSink {
  uint32_t* keys;
  int32_t* columns;
  __device__ __forceinline__ void put(int position, int32_t column, uint32_t key) const {
    keys[position] = key;
    columns[position] = column;
  }
};

// Candidates are written by other CTAs of this launch: read them through L2 (ld.global.cg), never
// from a possibly stale L1 line.
struct CandidateColumns {
  const int32_t* columns;
  __device__ __forceinline__ int32_t operator()(int i) const { return __ldcg(columns + i); }
};

template <typename T>
struct GlobalKeys {
  const T* row;
  __device__ __forceinline__ uint32_t operator()(int i) const { return to_key(row[i]); }
};

// One split row's geometry: `chunks` chunks of `chunk_len` columns (the last one shorter), each
// leaving min(k, its length) candidates at a stride of `slot` = min(k, chunk_len).
struct SplitGeometry {
  int chunks;
  int chunk_len;
  __device__ __forceinline__ int length_of(int chunk, int n) const { return min(chunk_len, n - chunk * chunk_len); }
  __device__ __forceinline__ int slot(int k) const { return min(k, chunk_len); }
  __device__ __forceinline__ int candidates(int k, int n) const {
    return (chunks - 1) * slot(k) + min(k, length_of(chunks - 1, n));
  }
};

template <int kThreads, typename T>
struct SplitRowAgent {
  using Select = BlockSelect<kThreads>;

  // Returns true when this CTA was the last of the row's chunks and has written the row's answer
  // (unpadded, unsorted: the caller finishes it, as for a medium row; *m_out gets the count).
  __device__ static bool run_chunk(const T* row, int n, int k, int chunk, SplitGeometry geometry,
                                   uint32_t* candidate_keys, int32_t* candidate_columns, uint32_t* arrivals,
                                   uint32_t* keys, typename Select::TempStorage& ts, const RowSink<T>& sink,
                                   int* m_out, uint32_t* is_last) {
    const int first = chunk * geometry.chunk_len;
    const int slot = geometry.slot(k);
    CandidateSink chunk_sink{candidate_keys + chunk * slot, candidate_columns + chunk * slot};
    MediumRowAgent<kThreads, T>::run(row + first, geometry.length_of(chunk, n), k, first, keys, ts, chunk_sink);

    // Publish this chunk's candidates, then count in. The fence in every writing thread orders its
    // candidate stores before the arrival that the last CTA will observe.
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) {
      const uint32_t arrived = atomicAdd(arrivals, 1u);
      *is_last = arrived == static_cast<uint32_t>(geometry.chunks - 1);
      if (*is_last) *arrivals = 0u;  // every chunk has counted in: reset for the next launch
    }
    __syncthreads();
    if (!*is_last) return false;
    __threadfence();

    const int count = geometry.candidates(k, n);
    Select::zero_histogram(ts);
    __syncthreads();
    for (int i = threadIdx.x; i < count; i += kThreads) {
      const uint32_t key = __ldcg(candidate_keys + i);
      keys[i] = key;
      Select::count_first_digit(ts, key);
    }
    __syncthreads();
    const int m = min(k, n);
    const SharedKeys key_at{keys};
    const Threshold t = Select::refine(ts, count, key_at, m, KeyTraits<T>::kSignificantBits);
    RowSink<T> row_sink = sink;
    Select::emit(ts, count, key_at, CandidateColumns{candidate_columns}, t, row_sink);
    *m_out = m;
    return true;
  }
};

template <int kThreads, typename T>
struct GlobalRowAgent {
  using Select = BlockSelect<kThreads>;

  template <class Sink>
  __device__ static int run(const T* row, int n, int k, typename Select::TempStorage& ts, Sink& sink) {
    const GlobalKeys<T> key_at{row};
    Select::zero_histogram(ts);
    __syncthreads();
    Select::count_digits(ts, n, key_at, Threshold{0u, 0, 0}, Select::kFirstShift, Select::kBins - 1);
    __syncthreads();
    const int m = min(k, n);
    const Threshold t = Select::refine(ts, n, key_at, m, KeyTraits<T>::kSignificantBits);
    Select::emit(ts, n, key_at, ColumnFrom{0}, t, sink);
    return m;
  }
};

}  // namespace persistent_topk
