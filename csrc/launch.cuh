// Host side of the launch, free of torch so that the product binding (persistent_topk.cu) and the
// ctypes harness (benchmarks/harness) launch the kernel the same way.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#include "dispatch.cuh"

namespace persistent_topk {

constexpr size_t kDynamicSmemBytes = sizeof(uint32_t) * Policy::kSmemKeys;

// How many CTAs / clusters of the persistent kernel are resident at once on a device: the most a grid
// ever has. Depends only on the device and the kernel, so callers compute it once per device.
struct ResidentLimits {
  int ctas;                                    // plain launch
  int clusters[Policy::kMaxClusterSize + 1];   // cluster launch, by cluster size (from kMinClusterSize)
  __host__ int clusters_of(int size) const { return clusters[size]; }
};

template <typename T>
cudaLaunchConfig_t launch_config(int ctas, int cluster_size, cudaStream_t stream, cudaLaunchAttribute* cluster_dims) {
  cluster_dims->id = cudaLaunchAttributeClusterDimension;
  cluster_dims->val.clusterDim.x = static_cast<unsigned>(cluster_size);
  cluster_dims->val.clusterDim.y = 1;
  cluster_dims->val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(ctas));
  config.blockDim = dim3(Policy::kThreads);
  config.dynamicSmemBytes = kDynamicSmemBytes;
  config.stream = stream;
  config.attrs = cluster_dims;
  config.numAttrs = cluster_size > 1 ? 1 : 0;
  return config;
}

template <typename T>
cudaError_t resident_limits(ResidentLimits* limits) {
  cudaError_t status = cudaFuncSetAttribute(persistent_topk_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kDynamicSmemBytes));
  // Clusters past the portable 8 CTAs: allowed on Hopper, counted below like the others.
  if (status == cudaSuccess) {
    status = cudaFuncSetAttribute(persistent_topk_kernel<T>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }
  int device = 0, sms = 0, per_sm = 0;
  if (status == cudaSuccess) status = cudaGetDevice(&device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess) {
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_topk_kernel<T>, Policy::kThreads,
                                                           kDynamicSmemBytes);
  }
  limits->ctas = sms * per_sm;
  for (int size = 0; size <= Policy::kMaxClusterSize; ++size) limits->clusters[size] = 0;
  for (int size = Policy::kMinClusterSize; size <= Policy::kMaxClusterSize && status == cudaSuccess; ++size) {
    cudaLaunchAttribute cluster_dims;
    const cudaLaunchConfig_t config = launch_config<T>(size, size, nullptr, &cluster_dims);
    int clusters = 0;
    const cudaError_t query = cudaOccupancyMaxActiveClusters(&clusters, persistent_topk_kernel<T>, &config);
    if (query != cudaSuccess) {
      (void)cudaGetLastError();  // a size this device cannot run: left at 0 and never chosen
      if (size <= Policy::kPortableClusterSize) status = query;
      clusters = 0;
    }
    limits->clusters[size] = clusters;
  }
  if (status == cudaSuccess && (limits->ctas < 1 || limits->clusters[Policy::kPortableClusterSize] < 1)) {
    status = cudaErrorInvalidConfiguration;
  }
  return status;
}

// The launch's team policy, from the shape and the device only (never the lengths, so a captured
// graph stays valid for any lengths; the plan kernel is told the same policy):
//  - few rows (no more than the resident clusters of 8): rows longer than kTeamMinFewRows are team
//    rows, selected by teams of 8, or of the largest size the device runs when slices of 8 would not
//    leave room for compaction (kFewRowsSliceMaxKeys; a row's latency falls with its slices);
//  - many rows: rows longer than a solo CTA holds are team rows, with the smallest team size whose
//    slices hold a row as long as the stride: the most clusters at once. Rows as long as the stride
//    then take the fewest rounds (fewer clusters of a larger size are resident), and a batch of
//    shorter rows (a decode batch's stride is its longest row) has the most clusters for its team rows
//    and the most CTAs left for the rest: 64 rows of 1K..128K take 22.2 us on teams of 6 against 24.7
//    on teams of 7, which a model of full-length rows preferred (docs/perf-notes.md, session 6).
struct TeamPolicy {
  int team_min_length;
  int team_size;  // 1: no row can be a team row (plain launch)

  // The smallest size from `from` whose slices hold `stride` columns in shared memory, among the sizes
  // the device runs; else the largest it runs.
  __host__ static int size_holding(int64_t stride, int from, const ResidentLimits& resident) {
    int largest = from;
    for (int size = from; size <= Policy::kMaxClusterSize; ++size) {
      if (resident.clusters_of(size) < 1) continue;
      largest = size;
      if (TeamSlices::of(static_cast<int>(stride), size, Policy::kSliceAlign).slice_len <= Policy::kSmemKeys) {
        return size;
      }
    }
    return largest;
  }
  __host__ static int largest_size(const ResidentLimits& resident) {
    int largest = Policy::kPortableClusterSize;
    for (int size = largest + 1; size <= Policy::kMaxClusterSize; ++size) {
      if (resident.clusters_of(size) >= 1) largest = size;
    }
    return largest;
  }
  __host__ static TeamPolicy of(int64_t rows, int64_t stride, const ResidentLimits& resident) {
    if (rows <= resident.clusters_of(Policy::kPortableClusterSize)) {
      if (stride <= Policy::kTeamMinFewRows) return TeamPolicy{Policy::kTeamMinFewRows, 1};
      const bool eight_hold = TeamSlices::of(static_cast<int>(stride), Policy::kPortableClusterSize,
                                             Policy::kSliceAlign).slice_len <= Policy::kFewRowsSliceMaxKeys;
      return TeamPolicy{Policy::kTeamMinFewRows, eight_hold ? Policy::kPortableClusterSize : largest_size(resident)};
    }
    if (stride <= Policy::kSoloMaxKeys) return TeamPolicy{Policy::kSoloMaxKeys, 1};
    return TeamPolicy{Policy::kSoloMaxKeys, size_holding(stride, Policy::kMinClusterSize, resident)};
  }
};

// The plan for `source`'s rows (PlanParams::plan must point at PlanLayout::bytes(rows)), made for the
// launch policy of this shape: one small kernel, capturable, no host sync.
inline cudaError_t launch_make_plan(PlanParams q, const ResidentLimits& resident, cudaStream_t stream) {
  const TeamPolicy policy = TeamPolicy::of(q.rows, q.source.stride, resident);
  q.team_min_length = policy.team_min_length;
  q.team_size = policy.team_size;
  make_plan_kernel<<<1, kPlanThreads, 0, stream>>>(q);
  return cudaGetLastError();
}

// Launch for `p` (p.team_min_length and p.team_size are set here; p.plan must hold a plan made for
// this shape): min(resident clusters, rows) clusters when rows can be team rows, else min(resident
// CTAs, rows) plain CTAs, spread by the hardware over all SMs; a larger grid would only start CTAs
// with nothing to do.
template <typename T>
cudaError_t launch_persistent_topk(Params p, const ResidentLimits& resident, cudaStream_t stream) {
  const TeamPolicy policy = TeamPolicy::of(p.rows, p.source.stride, resident);
  p.team_min_length = policy.team_min_length;
  p.team_size = policy.team_size;
  const bool clustered = p.team_size > 1;
  const int64_t most = clustered ? resident.clusters_of(p.team_size) : resident.ctas;
  const int units = static_cast<int>(p.rows < most ? p.rows : most);
  cudaLaunchAttribute cluster_dims;
  const cudaLaunchConfig_t config =
      launch_config<T>(clustered ? units * p.team_size : units, p.team_size, stream, &cluster_dims);
  return cudaLaunchKernelEx(&config, persistent_topk_kernel<T>, p);
}

}  // namespace persistent_topk
