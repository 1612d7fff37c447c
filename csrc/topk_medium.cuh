// Rows (and chunks of rows) that fit in shared memory: read from global memory exactly once, with
// 16-byte loads, converted to keys on the way in while the first radix digit is counted; every later
// pass and the write-out run from shared memory.
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

  __device__ __forceinline__ static void put(uint32_t* keys, typename Select::TempStorage& ts, int i,
                                             uint32_t key) {
    keys[i] = key;
    Select::count_first_digit(ts, key);
  }

  // keys[0, n) <- keys of src[0, n); ts.hist must be zero and counts the first digit of all n.
  __device__ static void load(const T* __restrict__ src, int n, uint32_t* keys, typename Select::TempStorage& ts) {
    const uintptr_t address = reinterpret_cast<uintptr_t>(src);
    const int head = min(n, static_cast<int>(((16u - (address & 15u)) & 15u) / sizeof(T)));
    for (int i = threadIdx.x; i < head; i += kThreads) put(keys, ts, i, to_key(src[i]));

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
    for (int i = head + vector_count * kPerVector + threadIdx.x; i < n; i += kThreads)
      put(keys, ts, i, to_key(src[i]));
  }
};

// Reads keys straight from shared memory.
struct SharedKeys {
  const uint32_t* keys;
  __device__ __forceinline__ uint32_t operator()(int i) const { return keys[i]; }
};

// Index of the i-th element of a contiguous run that starts at column `first`.
struct ColumnFrom {
  int first;
  __device__ __forceinline__ int32_t operator()(int i) const { return first + i; }
};

template <int kThreads, typename T>
struct MediumRowAgent {
  using Select = BlockSelect<kThreads>;

  // Select the top m of src[0, n) (m = min(k, n)) into `sink`, in index order. Returns m; the caller
  // pads and, for sorted=True, sorts.
  template <class Sink>
  __device__ static int run(const T* src, int n, int k, int first_column, uint32_t* keys,
                            typename Select::TempStorage& ts, Sink& sink) {
    Select::zero_histogram(ts);
    __syncthreads();
    SharedRowLoader<kThreads, T>::load(src, n, keys, ts);
    __syncthreads();
    const int m = min(k, n);
    const SharedKeys key_at{keys};
    const Threshold t = Select::refine(ts, n, key_at, m, KeyTraits<T>::kSignificantBits);
    Select::emit(ts, n, key_at, ColumnFrom{first_column}, t, sink);
    return m;
  }
};

}  // namespace persistent_topk
