// Rows (and chunks of rows, and the candidates of split rows) that fit in shared memory: read from
// global memory exactly once, with 16-byte loads, converted to keys on the way in while the first
// radix digit is counted; every later pass and the write-out run from shared memory.
#pragma once
#include <cstdint>

#include "block_select.cuh"
#include "keys.cuh"
#include "topk_small.cuh"

namespace persistent_topk {

template <int kThreads, typename T>
struct SharedRowLoader {
  using Select = BlockSelect<kThreads>;
  static constexpr int kPerVector = 16 / sizeof(T);
  // Four 16-byte loads in flight per thread before the first is used: enough bytes in flight per SM
  // (2 CTAs x 512 threads x 64 B) to cover HBM latency at this SM's share of bandwidth.
  static constexpr int kLoadsInFlight = 4;

  // keys[0, n) <- keys of src[0, n); ts.hist must be zero and counts the first digit of all n.
  __device__ __forceinline__ static void load(const T* __restrict__ src, int n, uint32_t* keys,
                                              typename Select::TempStorage& ts) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(src);
    const int head = min(n, static_cast<int>(((16u - (address & 15u)) & 15u) / sizeof(T)));
    for (int i = threadIdx.x; i < head; i += kThreads) {
      keys[i] = to_key(src[i]);
      Select::count_first_digit(ts, keys[i]);
    }
    const uint4* vectors = reinterpret_cast<const uint4*>(src + head);
    const int vector_count = (n - head) / kPerVector;
    const bool aligned_store = (head % 4) == 0;  // shared stores of 4 keys need a 16-byte boundary too
    for (int v0 = threadIdx.x; v0 < vector_count; v0 += kThreads * kLoadsInFlight) {
      uint4 loaded[kLoadsInFlight];
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u) {
        const int v = v0 + u * kThreads;
        if (v < vector_count) loaded[u] = __ldg(vectors + v);
      }
#pragma unroll
      for (int u = 0; u < kLoadsInFlight; ++u) {
        const int v = v0 + u * kThreads;
        if (v >= vector_count) break;
        uint32_t unpacked[kPerVector];
        unpack_keys<T>(loaded[u], unpacked);
        const int first = head + v * kPerVector;
#pragma unroll
        for (int j = 0; j < kPerVector; ++j) Select::count_first_digit(ts, unpacked[j]);
        if (aligned_store) {
#pragma unroll
          for (int j = 0; j < kPerVector; j += 4)
            *reinterpret_cast<uint4*>(keys + first + j) =
                make_uint4(unpacked[j], unpacked[j + 1], unpacked[j + 2], unpacked[j + 3]);
        } else {
#pragma unroll
          for (int j = 0; j < kPerVector; ++j) keys[first + j] = unpacked[j];
        }
      }
    }
    for (int i = head + vector_count * kPerVector + threadIdx.x; i < n; i += kThreads) {
      keys[i] = to_key(src[i]);
      Select::count_first_digit(ts, keys[i]);
    }
  }
};

// Reads keys straight from shared memory.
struct SharedKeys {
  const uint32_t* keys;
  __device__ __forceinline__ uint32_t operator()(int i) const { return keys[i]; }
};

// Column of the i-th listed element: `first + i` for a run of consecutive columns, or the column
// stored beside a candidate. Candidates are written by other CTAs of this launch, so they are read
// through L2 (ld.global.cg), never from a possibly stale L1 line.
struct ColumnOf {
  int first;
  const int32_t* columns;
  __device__ __forceinline__ int32_t operator()(int i) const { return columns ? __ldcg(columns + i) : first + i; }
};

// The top m of the n keys in shared memory (ts.hist already counts their first digit) into `sink`,
// in index order. Out of line: medium rows, chunks and merges all run this one copy.
template <int kThreads, typename T>
__device__ __noinline__ void select_in_shared(int n, int m, const uint32_t* keys,
                                              typename BlockSelect<kThreads>::TempStorage& ts, ColumnOf column_of,
                                              Sink<T> sink) {
  using Select = BlockSelect<kThreads>;
  const SharedKeys key_at{keys};
  const Threshold t = Select::refine(ts, n, key_at, m, KeyTraits<T>::kSignificantBits);
  Select::emit(ts, n, key_at, column_of, t, sink);
}

}  // namespace persistent_topk
