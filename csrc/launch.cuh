// Host side of the launch, free of torch so that the product binding (persistent_topk.cu) and the
// ctypes harness (benchmarks/harness) launch the kernel the same way.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#include "dispatch.cuh"

namespace persistent_topk {

constexpr size_t kDynamicSmemBytes = sizeof(uint32_t) * Policy::kSmemKeys;

template <typename T>
cudaLaunchConfig_t launch_config(int clusters, cudaStream_t stream, cudaLaunchAttribute* cluster_dims) {
  cluster_dims->id = cudaLaunchAttributeClusterDimension;
  cluster_dims->val.clusterDim.x = Policy::kClusterSize;
  cluster_dims->val.clusterDim.y = 1;
  cluster_dims->val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(clusters * Policy::kClusterSize));
  config.blockDim = dim3(Policy::kThreads);
  config.dynamicSmemBytes = kDynamicSmemBytes;
  config.stream = stream;
  config.attrs = cluster_dims;
  config.numAttrs = 1;
  return config;
}

// Clusters of the persistent kernel that are resident at once on the current device: the most the
// grid ever has. Depends only on the device and the kernel, so callers compute it once per device.
template <typename T>
cudaError_t resident_clusters(int* clusters) {
  cudaError_t status = cudaFuncSetAttribute(persistent_topk_kernel<T>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kDynamicSmemBytes));
  if (status != cudaSuccess) return status;
  cudaLaunchAttribute cluster_dims;
  const cudaLaunchConfig_t config = launch_config<T>(1, nullptr, &cluster_dims);
  status = cudaOccupancyMaxActiveClusters(clusters, persistent_topk_kernel<T>, &config);
  if (status == cudaSuccess && *clusters < 1) status = cudaErrorInvalidConfiguration;
  return status;
}

// Launch for `p` (p.team_min_length is set here). The grid has min(resident clusters, rows) clusters:
// a shape, never the lengths, so a captured graph stays valid for any lengths; more would only start
// CTAs that find nothing to do.
// `forced_team_min_length` >= 0 overrides the policy's choice (the ctypes harness times the paths).
template <typename T>
cudaError_t launch_persistent_topk(Params p, int resident, cudaStream_t stream, int forced_team_min_length = -1) {
  const int clusters = static_cast<int>(p.rows < resident ? p.rows : resident);
  p.team_min_length = forced_team_min_length >= 0 ? forced_team_min_length : team_min_length(p.rows, resident);
  cudaLaunchAttribute cluster_dims;
  const cudaLaunchConfig_t config = launch_config<T>(clusters, stream, &cluster_dims);
  return cudaLaunchKernelEx(&config, persistent_topk_kernel<T>, p);
}

}  // namespace persistent_topk
