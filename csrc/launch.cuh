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
  int device = 0, sms = 0, per_sm = 0;
  if (status == cudaSuccess) status = cudaGetDevice(&device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess) {
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_topk_kernel<T>, Policy::kThreads,
                                                           kDynamicSmemBytes);
  }
  limits->ctas = sms * per_sm;
  for (int size = Policy::kMinClusterSize; size <= Policy::kMaxClusterSize && status == cudaSuccess; ++size) {
    cudaLaunchAttribute cluster_dims;
    const cudaLaunchConfig_t config = launch_config<T>(size, size, nullptr, &cluster_dims);
    status = cudaOccupancyMaxActiveClusters(&limits->clusters[size], persistent_topk_kernel<T>, &config);
    if (status == cudaSuccess && limits->clusters[size] < 1) status = cudaErrorInvalidConfiguration;
  }
  if (status == cudaSuccess && limits->ctas < 1) status = cudaErrorInvalidConfiguration;
  return status;
}

// The launch's team policy, from the shape and the device only (never the lengths, so a captured
// graph stays valid for any lengths):
//  - few rows (no more than the largest clusters resident): rows longer than kTeamMinFewRows are team
//    rows, selected by teams of the largest size;
//  - many rows: rows longer than a solo CTA holds are team rows, with the smallest team size (2..8)
//    whose slices hold a row as long as the stride: the most clusters at once. Rows as long as the
//    stride then take the fewest rounds (fewer clusters of a larger size are resident), and a batch of
//    shorter rows (a decode batch's stride is its longest row) has the most clusters for its team rows
//    and the most CTAs left for the rest: 64 rows of 1K..128K take 22.2 us on teams of 6 against 24.7
//    on teams of 7, which a model of full-length rows preferred (docs/perf-notes.md, session 6).
struct TeamPolicy {
  int team_min_length;
  int team_size;  // 1: no row can be a team row (plain launch)
  __host__ static TeamPolicy of(int64_t rows, int64_t stride, const ResidentLimits& resident) {
    if (rows <= resident.clusters_of(Policy::kMaxClusterSize)) {
      const int team_size = stride > Policy::kTeamMinFewRows ? Policy::kMaxClusterSize : 1;
      return TeamPolicy{Policy::kTeamMinFewRows, team_size};
    }
    if (stride <= Policy::kSoloMaxKeys) return TeamPolicy{Policy::kSoloMaxKeys, 1};
    int team_size = Policy::kMinClusterSize;
    while (team_size < Policy::kMaxClusterSize &&
           TeamSlices::of(static_cast<int>(stride), team_size, Policy::kSliceAlign).slice_len > Policy::kSmemKeys) {
      ++team_size;
    }
    return TeamPolicy{Policy::kSoloMaxKeys, team_size};
  }
  // Whether a launch of this stride is of clusters (some row can be a team row).
  __host__ bool clustered(int64_t stride) const { return team_size > 1 && stride > team_min_length; }
};

// Launch for `p` (p.team_min_length and p.team_size are set here): min(resident clusters, rows)
// clusters when rows can be team rows, else min(resident CTAs, rows) plain CTAs, spread by the
// hardware over all SMs; a larger grid would only start CTAs with nothing to do.
// `forced_team_min_length` >= 0 and `forced_team_size` > 0 override the policy (the ctypes harness
// times the choices against each other).
template <typename T>
cudaError_t launch_persistent_topk(Params p, const ResidentLimits& resident, cudaStream_t stream,
                                   int forced_team_min_length = -1, int forced_team_size = 0) {
  TeamPolicy policy = TeamPolicy::of(p.rows, p.stride, resident);
  if (forced_team_min_length >= 0) {
    policy.team_min_length = forced_team_min_length;
    if (policy.team_size == 1 && p.stride > forced_team_min_length) policy.team_size = Policy::kMaxClusterSize;
  }
  if (forced_team_size > 0) policy.team_size = forced_team_size;
  p.team_min_length = policy.team_min_length;
  p.team_size = policy.team_size;
  const bool clustered = policy.clustered(p.stride);
  if (!clustered) p.team_size = 1;
  const int64_t most = clustered ? resident.clusters_of(policy.team_size) : resident.ctas;
  const int units = static_cast<int>(p.rows < most ? p.rows : most);
  cudaLaunchAttribute cluster_dims;
  const cudaLaunchConfig_t config =
      launch_config<T>(clustered ? units * p.team_size : units, p.team_size, stream, &cluster_dims);
  return cudaLaunchKernelEx(&config, persistent_topk_kernel<T>, p);
}

}  // namespace persistent_topk
