// Rows that need no selection (n <= k in index order): their answer is 0..n-1 and no logit is read.
// (The register-sort path for short rows that do need one is issue 12's.)
#pragma once
#include <cstdint>

#include "epilogue.cuh"

namespace persistent_topk {

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

}  // namespace persistent_topk
