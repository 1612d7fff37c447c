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
  int ctas;      // plain launch
  int clusters;  // cluster launch
};

template <typename T>
cudaLaunchConfig_t launch_config(int ctas, bool clustered, cudaStream_t stream, cudaLaunchAttribute* cluster_dims) {
  cluster_dims->id = cudaLaunchAttributeClusterDimension;
  cluster_dims->val.clusterDim.x = Policy::kClusterSize;
  cluster_dims->val.clusterDim.y = 1;
  cluster_dims->val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(ctas));
  config.blockDim = dim3(Policy::kThreads);
  config.dynamicSmemBytes = kDynamicSmemBytes;
  config.stream = stream;
  config.attrs = cluster_dims;
  config.numAttrs = clustered ? 1 : 0;
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
  if (status == cudaSuccess) {
    cudaLaunchAttribute cluster_dims;
    const cudaLaunchConfig_t config = launch_config<T>(Policy::kClusterSize, true, nullptr, &cluster_dims);
    status = cudaOccupancyMaxActiveClusters(&limits->clusters, persistent_topk_kernel<T>, &config);
  }
  if (status == cudaSuccess && (limits->ctas < 1 || limits->clusters < 1)) status = cudaErrorInvalidConfiguration;
  return status;
}

// Launch for `p` (p.team_min_length is set here). A call whose shape admits team rows (stride above
// the team threshold) launches min(resident clusters, rows) clusters; any other launches plain CTAs,
// min(resident CTAs, rows) of them, spread by the hardware over all SMs. Shapes, never the lengths, so
// a captured graph stays valid for any lengths; a larger grid would only start CTAs with nothing to do.
// `forced_team_min_length` >= 0 overrides the policy's threshold (the ctypes harness times the paths).
template <typename T>
cudaError_t launch_persistent_topk(Params p, const ResidentLimits& resident, cudaStream_t stream,
                                   int forced_team_min_length = -1) {
  p.team_min_length =
      forced_team_min_length >= 0 ? forced_team_min_length : team_min_length(p.rows, resident.clusters);
  const bool clustered = p.stride > p.team_min_length;
  const int64_t most = clustered ? resident.clusters : resident.ctas;
  const int units = static_cast<int>(p.rows < most ? p.rows : most);
  cudaLaunchAttribute cluster_dims;
  const cudaLaunchConfig_t config =
      launch_config<T>(clustered ? units * Policy::kClusterSize : units, clustered, stream, &cluster_dims);
  return cudaLaunchKernelEx(&config, persistent_topk_kernel<T>, p);
}

}  // namespace persistent_topk
