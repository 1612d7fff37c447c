// A torch-free entry point to the kernel for fast iteration on the device: compiled here with plain
// nvcc (no torch headers, seconds instead of minutes), loaded there through ctypes by
// benchmarks/harness/diag.py. Tuning variants are built from the same headers with -D overrides.
// Not part of the package: the product binding is csrc/persistent_topk.cu.
#include <cstdint>
#include <cuda_runtime.h>

#include "launch.cuh"

using namespace persistent_topk;

extern "C" int64_t pt_workspace_bytes(int64_t rows, int64_t stride) { return WorkspaceLayout::bytes(rows, stride, 2048); }

static ResidentLimits& resident() {
  static ResidentLimits limits{};
  if (limits.ctas == 0 && resident_limits<float>(&limits) != cudaSuccess) limits.ctas = 0;
  return limits;
}

// Params for `rows` rows of float32 logits with their lengths, the plan in the workspace.
static Params params_of(const float* logits, int64_t row_pitch, int rows, int stride, const int32_t* lengths, int k,
                        int32_t* out, void* workspace) {
  Params p{};
  p.logits = logits;
  p.row_pitch = row_pitch;
  p.rows = rows;
  p.source = RowSource{lengths, nullptr, kWindowLengths, 1, stride};
  p.k = k;
  p.out = out;
  p.out_pitch = k;
  p.queue = static_cast<uint32_t*>(workspace);
  p.plan = PlanView::of(WorkspaceLayout::own_plan(workspace), rows);
  return p;
}

// The plan kernel alone, into the workspace.
extern "C" int pt_make_plan(int rows, int stride, const int32_t* lengths, int k, void* workspace, void* stream) {
  if (resident().ctas == 0) return -1;
  PlanParams q{};
  q.source = RowSource{lengths, nullptr, kWindowLengths, 1, stride};
  q.rows = rows;
  q.k = k;
  q.plan = WorkspaceLayout::own_plan(workspace);
  const cudaError_t status = launch_make_plan(q, resident(), /*pdl=*/false, static_cast<cudaStream_t>(stream));
  return static_cast<int>(status != cudaSuccess ? status : cudaGetLastError());
}

// Whether pt_select launches with programmatic dependent launch (the op's pdl=; behind pt_make_plan the
// op always does).
static bool launch_pdl = true;
extern "C" void pt_set_pdl(int on) { launch_pdl = on != 0; }

// The persistent kernel alone, with the plan pt_make_plan left in the workspace.
extern "C" int pt_select(const float* logits, int64_t row_pitch, int rows, int stride, const int32_t* lengths, int k,
                         int32_t* out, void* workspace, void* stream) {
  if (resident().ctas == 0) return -1;
  const Params p = params_of(logits, row_pitch, rows, stride, lengths, k, out, workspace);
  const cudaError_t status = launch_persistent_topk<float>(p, resident(), launch_pdl, static_cast<cudaStream_t>(stream));
  return static_cast<int>(status != cudaSuccess ? status : cudaGetLastError());
}

// One call as the op makes it without a plan: the plan kernel into the workspace, then the kernel; a
// stride that fits registers launches register_rows_kernel alone, with no plan (persistent_topk.cu).
extern "C" int pt_launch(const float* logits, int64_t row_pitch, int rows, int stride, const int32_t* lengths, int k,
                         int32_t* out, void* workspace, void* stream) {
  if (LaunchShape::register_rows(rows, stride, resident())) {
    if (resident().ctas == 0) return -1;
    Params p = params_of(logits, row_pitch, rows, stride, lengths, k, out, workspace);
    p.plan = PlanView{};
    const cudaError_t status =
        launch_persistent_topk<float>(p, resident(), launch_pdl, static_cast<cudaStream_t>(stream));
    return static_cast<int>(status != cudaSuccess ? status : cudaGetLastError());
  }
  const int status = pt_make_plan(rows, stride, lengths, k, workspace, stream);
  return status != 0 ? status : pt_select(logits, row_pitch, rows, stride, lengths, k, out, workspace, stream);
}

// Phase timestamps of the first CTAs (csrc/stamps.cuh), when built with -DPERSISTENT_TOPK_STAMPS.
extern "C" int pt_stamps(long long* host, int count) {
#ifdef PERSISTENT_TOPK_STAMPS
  const int all = kStampCtas * kStampSlots;
  return static_cast<int>(cudaMemcpyFromSymbol(host, stamps, sizeof(long long) * (count < all ? count : all)));
#else
  return -1;
#endif
}

// The launch's span on the global timer (csrc/stamps.cuh): reset before a launch, read after it.
extern "C" int pt_span(unsigned long long* host, int reset) {
#ifdef PERSISTENT_TOPK_STAMPS
  if (reset) {
    const unsigned long long init[2] = {~0ull, 0ull};
    return static_cast<int>(cudaMemcpyToSymbol(span, init, sizeof(init)));
  }
  return static_cast<int>(cudaMemcpyFromSymbol(host, span, 2 * sizeof(unsigned long long)));
#else
  return -1;
#endif
}

extern "C" int pt_resident(int* ctas, int* clusters) {
  ResidentLimits limits{};
  const cudaError_t status = resident_limits<float>(&limits);
  *ctas = limits.ctas;
  *clusters = limits.clusters_of(Policy::kPortableClusterSize);
  return static_cast<int>(status);
}

// Resident clusters of every size (clusters[size] for size 2..Policy::kMaxClusterSize; 0 elsewhere).
extern "C" int pt_resident_clusters(int* clusters, int count) {
  ResidentLimits limits{};
  const cudaError_t status = resident_limits<float>(&limits);
  for (int size = 0; size < count; ++size) {
    clusters[size] = size >= Policy::kMinClusterSize && size <= Policy::kMaxClusterSize ? limits.clusters_of(size) : 0;
  }
  return static_cast<int>(status);
}
