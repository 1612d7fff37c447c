// A torch-free entry point to the kernel for fast iteration on the device: compiled here with plain
// nvcc (no torch headers, seconds instead of minutes), loaded there through ctypes by
// benchmarks/harness/diag.py. Tuning variants are built from the same headers with -D overrides.
// Not part of the package: the product binding is csrc/persistent_topk.cu.
#include <cstdint>
#include <cuda_runtime.h>

#include "dispatch.cuh"

using namespace persistent_topk;

extern "C" int64_t pt_workspace_bytes(int64_t rows, int64_t stride) { return WorkspaceLayout::make(rows, stride, 2048).bytes; }

extern "C" int pt_launch(const float* logits, int64_t row_pitch, int rows, int stride, const int32_t* lengths, int k,
                         int32_t* out, void* workspace, int64_t workspace_rows, int64_t workspace_stride,
                         void* stream) {
  static int grid = 0;
  const size_t smem = sizeof(uint32_t) * Policy::kSmemKeys;
  if (grid == 0) {
    if (cudaFuncSetAttribute(persistent_topk_kernel<float>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                             static_cast<int>(smem)) != cudaSuccess) return -1;
    int blocks = 0, device = 0, sms = 0;
    cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, persistent_topk_kernel<float>, Policy::kThreads, smem);
    cudaGetDevice(&device);
    cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
    grid = sms * blocks;
  }
  const WorkspaceLayout layout = WorkspaceLayout::make(workspace_rows, workspace_stride, k);
  uint8_t* base = static_cast<uint8_t*>(workspace);
  Params p{};
  p.logits = logits;
  p.row_pitch = row_pitch;
  p.rows = rows;
  p.stride = stride;
  p.bounds = lengths;
  p.window_mode = kWindowLengths;
  p.next_n = 1;
  p.k = k;
  p.page_size = 1;
  p.out = out;
  p.queue = reinterpret_cast<uint32_t*>(base);
  p.arrivals = reinterpret_cast<uint32_t*>(base + layout.arrivals_offset);
  p.candidate_keys = reinterpret_cast<uint32_t*>(base + layout.candidate_keys_offset);
  p.candidate_columns = reinterpret_cast<int32_t*>(base + layout.candidate_columns_offset);
  p.candidates_per_row = layout.candidates_per_row;
  const int64_t items = max_work_items(rows, stride, k, false);
  const int launch_grid = static_cast<int>(grid < items ? grid : items);
  persistent_topk_kernel<float><<<launch_grid, Policy::kThreads, smem, static_cast<cudaStream_t>(stream)>>>(p);
  return static_cast<int>(cudaGetLastError());
}
