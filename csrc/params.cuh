// The persistent kernel's parameters (one struct, filled by the binding, persistent_topk.cu, and by
// the ctypes harness), and what a row reads of them: its output, its fused index transform, and
// whether finishing it reads the output back.
#pragma once
#include <cstdint>

#include "epilogue.cuh"
#include "plan.cuh"

namespace persistent_topk {

struct Params {
  const void* logits;
  int64_t row_pitch;  // elements between rows: logits.stride(0), not the width (vLLM #42169)
  int rows;
  RowSource source;  // the rows' windows
  int k;
  int by_value;  // sorted=True
  IndexTransform transform;  // how indices are written into out (bare unless a transform is fused)
  int32_t* out;
  int64_t out_pitch;  // elements between rows of out (>= k: out may be a slice of a wider buffer)
  int32_t* raw_out;   // the bare indices beside a transform, or null
  int64_t raw_pitch;
  void* values;  // null unless values are wanted ([rows, k], contiguous)
  // CTAs per cluster (1: a plain launch), chosen on the host from the shape alone (launch.cuh); team
  // rows are those the plan lists as such, each with its team's size.
  int cluster_size;
  PlanView plan;    // made for this shape (the op checks rows, stride and k); the kernel sets its status.
                    // All null in a register-rows launch without a plan (persistent_topk.cu).
  uint32_t* queue;  // the work queue's counters (QueueCounter) in the workspace; 0 between launches
};

// Whether the index transform (and raw indices) are written as the selection emits each index: unless
// sorted=True or values read the bare indices back from out.
__device__ __forceinline__ bool fuses_transform(const Params& p) {
  return p.transform.any() && p.by_value == 0 && p.values == nullptr;
}

__device__ __forceinline__ int32_t* row_out(const Params& p, int r) { return p.out + static_cast<int64_t>(r) * p.out_pitch; }

template <typename T>
__device__ __forceinline__ RowOutput<T> row_output(const Params& p, int r, const RowWindow& w) {
  RowOutput<T> output;
  output.out = row_out(p, r);
  output.raw = p.raw_out ? p.raw_out + static_cast<int64_t>(r) * p.raw_pitch : nullptr;
  output.values = p.values ? static_cast<T*>(p.values) + static_cast<int64_t>(r) * p.k : nullptr;
  output.row = static_cast<const T*>(p.logits) + static_cast<int64_t>(r) * p.row_pitch + w.start;
  output.map = p.transform.of_row(r);
  output.by_value = p.by_value != 0;
  output.written = fuses_transform(p);
  return output;
}

// The row's transform as FusedIndexWrite (thread 0, as it picks the row): its per-row words are read
// beside the row's bounds, so they add no round trip.
__device__ __forceinline__ void set_fused_write(const Params& p, int r, FusedIndexWrite& fused) {
  fused.map = p.transform.of_row(r);
  fused.raw = p.raw_out ? p.raw_out + static_cast<int64_t>(r) * p.raw_pitch : nullptr;
}

__device__ __forceinline__ IndexSink index_sink(const Params& p, int r, const FusedIndexWrite* fused) {
  return IndexSink{row_out(p, r), fuses_transform(p) ? fused : nullptr};
}

// Whether finishing a row reads what other CTAs of its team wrote (else rank 0 only pads).
__device__ __forceinline__ bool finish_reads_output(const Params& p) {
  return !fuses_transform(p) && (p.by_value != 0 || p.values != nullptr || p.raw_out != nullptr || p.transform.any());
}

}  // namespace persistent_topk
