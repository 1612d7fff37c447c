// Host side of the launch, free of torch so that the product binding (persistent_topk.cu) and the
// ctypes harness (benchmarks/harness) launch the kernel the same way.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#include "dispatch.cuh"

namespace persistent_topk {

constexpr size_t kDynamicSmemBytes = sizeof(uint32_t) * Policy::kSmemKeys;

// The register-rows CTAs (Policy::RegisterRowsNarrow, Medium, Wide), by Policy::register_rows_cta.
constexpr int kRegisterRowsCtas = 3;
constexpr int kRegisterRowsThreads[kRegisterRowsCtas] = {
    Policy::RegisterRowsNarrow::kThreads, Policy::RegisterRowsMedium::kThreads, Policy::RegisterRowsWide::kThreads};

// How many CTAs / clusters of the persistent kernel are resident at once on a device: the most a grid
// ever has. Depends only on the device and the kernel, so callers compute it once per device.
struct ResidentLimits {
  int ctas;                                    // plain launch
  int clusters[Policy::kMaxClusterSize + 1];   // cluster launch, by cluster size (from kMinClusterSize)
  int register_rows_ctas[kRegisterRowsCtas];   // register_rows_kernel, by Policy::register_rows_cta
  __host__ int clusters_of(int size) const { return clusters[size]; }
};

// register_rows_kernel for the stride's CTA (Policy::register_rows_cta).
template <typename T>
auto register_rows_kernel_of(int cta) {
  return cta == 0 ? register_rows_kernel<T, Policy::RegisterRowsNarrow>
         : cta == 1 ? register_rows_kernel<T, Policy::RegisterRowsMedium>
                    : register_rows_kernel<T, Policy::RegisterRowsWide>;
}

// A launch's attributes: its cluster shape (cluster launches only) and programmatic dependent launch
// (PDL: the kernel may start while the one ahead of it in the stream finishes; both kernels of this
// library wait before reading what earlier kernels write, plan.cuh wait_for_previous_grid).
struct LaunchAttributes {
  cudaLaunchAttribute items[2];
  unsigned count = 0;
  LaunchAttributes(int cluster_size, bool pdl) {
    if (cluster_size > 1) {
      cudaLaunchAttribute& cluster = items[count++];
      cluster.id = cudaLaunchAttributeClusterDimension;
      cluster.val.clusterDim.x = static_cast<unsigned>(cluster_size);
      cluster.val.clusterDim.y = 1;
      cluster.val.clusterDim.z = 1;
    }
    if (pdl) {
      cudaLaunchAttribute& programmatic = items[count++];
      programmatic.id = cudaLaunchAttributeProgrammaticStreamSerialization;
      programmatic.val.programmaticStreamSerializationAllowed = 1;
    }
  }
};

template <typename T>
cudaLaunchConfig_t launch_config(int ctas, cudaStream_t stream, LaunchAttributes* attributes,
                                 int threads = Policy::kThreads) {
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(ctas));
  config.blockDim = dim3(static_cast<unsigned>(threads));
  config.dynamicSmemBytes = kDynamicSmemBytes;
  config.stream = stream;
  config.attrs = attributes->items;
  config.numAttrs = attributes->count;
  return config;
}

template <typename T>
cudaError_t resident_limits(ResidentLimits* limits) {
  cudaError_t status = cudaFuncSetAttribute(persistent_topk_kernel<T, true, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                            static_cast<int>(kDynamicSmemBytes));
  if (status == cudaSuccess) {
    status = cudaFuncSetAttribute(persistent_topk_kernel<T, false, false>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kDynamicSmemBytes));
  }
  if (status == cudaSuccess) {
    status = cudaFuncSetAttribute(persistent_topk_kernel<T, false, true>, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kDynamicSmemBytes));
  }
  for (int cta = 0; cta < kRegisterRowsCtas && status == cudaSuccess; ++cta) {
    status = cudaFuncSetAttribute(register_rows_kernel_of<T>(cta), cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(kDynamicSmemBytes));
  }
  // Clusters past the portable 8 CTAs: allowed on Hopper, counted below like the others.
  if (status == cudaSuccess) {
    status = cudaFuncSetAttribute(persistent_topk_kernel<T, true, false>, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  }
  int device = 0, sms = 0, per_sm = 0;
  if (status == cudaSuccess) status = cudaGetDevice(&device);
  if (status == cudaSuccess) status = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  if (status == cudaSuccess) {
    status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, persistent_topk_kernel<T, false, false>, Policy::kThreads,
                                                           kDynamicSmemBytes);
  }
  limits->ctas = sms * per_sm;
  for (int cta = 0; cta < kRegisterRowsCtas; ++cta) {
    int resident = 0;
    if (status == cudaSuccess) {
      status = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&resident, register_rows_kernel_of<T>(cta),
                                                             kRegisterRowsThreads[cta], kDynamicSmemBytes);
    }
    limits->register_rows_ctas[cta] = sms * resident;
  }
  for (int size = 0; size <= Policy::kMaxClusterSize; ++size) limits->clusters[size] = 0;
  for (int size = Policy::kMinClusterSize; size <= Policy::kMaxClusterSize && status == cudaSuccess; ++size) {
    LaunchAttributes cluster(size, /*pdl=*/false);
    const cudaLaunchConfig_t config = launch_config<T>(size, nullptr, &cluster);
    int clusters = 0;
    const cudaError_t query = cudaOccupancyMaxActiveClusters(&clusters, persistent_topk_kernel<T, true, false>, &config);
    if (query != cudaSuccess) {
      (void)cudaGetLastError();  // a size this device cannot run: left at 0 and never chosen
      if (size <= Policy::kPortableClusterSize) status = query;
      clusters = 0;
    }
    limits->clusters[size] = clusters;
  }
  for (int cta = 0; cta < kRegisterRowsCtas; ++cta) {
    if (status == cudaSuccess && limits->register_rows_ctas[cta] < 1) status = cudaErrorInvalidConfiguration;
  }
  if (status == cudaSuccess && (limits->ctas < 1 || limits->clusters[Policy::kPortableClusterSize] < 1)) {
    status = cudaErrorInvalidConfiguration;
  }
  return status;
}

// The launch's shape, from (rows, stride) and the device only (never the lengths, so a captured graph
// stays valid for any lengths; the plan kernel is told the same shape and sizes every team row's team
// within a cluster from the live lengths):
//  - few rows (no more than the resident clusters of 8): rows longer than kTeamMinLength may be team
//    rows; clusters of 8, or of 16 where the device runs them and slices of 8 would not leave room
//    for compaction (kTeamSliceKeys);
//  - many rows: rows longer than a solo CTA holds are team rows; clusters of the smallest size
//    (among Policy::kClusterSizes) whose slices hold a row as long as the stride in shared memory: the most
//    clusters at once, and rows as long as the stride in the fewest rounds;
//  - rows for at least half the grid's CTAs and a stride past Policy::kStreamMinStride: a plain launch,
//    every row on one CTA, the long ones streamed from global memory (StreamingRowAgent);
//  - either way a plain launch (no cluster) where the stride leaves no row long enough to split;
//  - a stride that fits registers (LaunchShape::register_rows: up to 4,096; 8,192 with a wave of rows;
//    16,384 with few rows): a plain launch of register_rows_kernel, on the narrowest CTA that holds the
//    stride.
// The grid: min(resident clusters, rows) clusters, else min(resident CTAs, rows) plain CTAs, spread
// by the hardware over all SMs; a larger grid would only start CTAs with nothing to do.
struct LaunchShape {
  int cluster_size;     // 1: a plain launch
  int units;            // clusters (or plain CTAs) in the grid
  int min_team_length;  // rows up to this long are never team rows (PlanParams)
  __host__ int ctas() const { return units * cluster_size; }

  __host__ static bool few_rows(int64_t rows, const ResidentLimits& resident) {
    return rows <= resident.clusters_of(Policy::kPortableClusterSize);
  }
  // Whether a launch of (rows, stride) runs register_rows_kernel: every stride up to
  // Policy::kRegisterRowsMaxStride; up to kWaveRegisterRowsMaxStride as many rows as its CTA holds at
  // once; up to kFewRegisterRowsMaxStride few rows.
  __host__ static bool register_rows(int64_t rows, int64_t stride, const ResidentLimits& resident) {
    if (stride <= Policy::kRegisterRowsMaxStride) return true;
    if (stride > Policy::kFewRegisterRowsMaxStride) return false;
    return few_rows(rows, resident) || (stride <= Policy::kWaveRegisterRowsMaxStride &&
                                        rows <= resident.register_rows_ctas[Policy::register_rows_cta(stride)]);
  }
  __host__ static int cluster_size_of(int64_t rows, int64_t stride, const ResidentLimits& resident) {
    const bool few = few_rows(rows, resident);
    if (register_rows(rows, stride, resident) || stride <= (few ? Policy::kTeamMinLength : Policy::kSoloMaxKeys)) {
      return 1;
    }
    if (2 * rows >= resident.ctas && stride > Policy::kStreamMinStride) return 1;  // long rows streamed
    const int largest = resident.clusters_of(Policy::kMaxClusterSize) >= 1 ? Policy::kMaxClusterSize
                                                                            : Policy::kPortableClusterSize;
    if (few) {
      const int slice = TeamSlices::of(static_cast<int>(stride), Policy::kPortableClusterSize, Policy::kSliceAlign).slice_len;
      return slice <= Policy::kTeamSliceKeys ? Policy::kPortableClusterSize : largest;
    }
    for (int size : Policy::kClusterSizes) {
      if (size > largest || resident.clusters_of(size) < 1) continue;
      if (TeamSlices::of(static_cast<int>(stride), size, Policy::kSliceAlign).slice_len <= Policy::kSmemKeys) {
        return size;
      }
    }
    return largest;
  }
  __host__ static LaunchShape of(int64_t rows, int64_t stride, const ResidentLimits& resident) {
    const int size = cluster_size_of(rows, stride, resident);
    const int64_t most = register_rows(rows, stride, resident)
                             ? resident.register_rows_ctas[Policy::register_rows_cta(stride)]
                             : (size > 1 ? resident.clusters_of(size) : resident.ctas);
    const int min_team_length = few_rows(rows, resident) ? Policy::kTeamMinLength : Policy::kSoloMaxKeys;
    return LaunchShape{size, static_cast<int>(rows < most ? rows : most), min_team_length};
  }
};

// The plan for `source`'s rows (PlanParams::plan must point at PlanLayout::bytes(rows)), made for the
// launch of this shape: one small kernel, capturable, no host sync. pdl: may overlap the kernel ahead.
inline cudaError_t launch_make_plan(PlanParams q, const ResidentLimits& resident, bool pdl, cudaStream_t stream) {
  const LaunchShape shape = LaunchShape::of(q.rows, q.source.stride, resident);
  q.cluster_size = shape.cluster_size;
  q.capacity = shape.ctas();
  q.min_team_length = shape.min_team_length;
  LaunchAttributes attributes(1, pdl);
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(1);
  config.blockDim = dim3(kPlanThreads);
  config.stream = stream;
  config.attrs = attributes.items;
  config.numAttrs = attributes.count;
  return cudaLaunchKernelEx(&config, make_plan_kernel, q);
}

// Launch for `p` (p.cluster_size is set here; p.plan must hold a plan made for this shape). pdl: may
// overlap the kernel ahead in the stream (always safe behind this library's own plan kernel).
template <typename T>
cudaError_t launch_persistent_topk(Params p, const ResidentLimits& resident, bool pdl, cudaStream_t stream) {
  const LaunchShape shape = LaunchShape::of(p.rows, p.source.stride, resident);
  p.cluster_size = shape.cluster_size;
  LaunchAttributes attributes(shape.cluster_size, pdl);
  if (LaunchShape::register_rows(p.rows, p.source.stride, resident)) {
    const int cta = Policy::register_rows_cta(p.source.stride);
    const cudaLaunchConfig_t config = launch_config<T>(shape.ctas(), stream, &attributes, kRegisterRowsThreads[cta]);
    return cudaLaunchKernelEx(&config, register_rows_kernel_of<T>(cta), p);
  }
  const cudaLaunchConfig_t config = launch_config<T>(shape.ctas(), stream, &attributes);
  if (shape.cluster_size > 1) return cudaLaunchKernelEx(&config, persistent_topk_kernel<T, true, false>, p);
  // More rows than CTAs: each CTA looks its next row up during the current one (kPrefetchNext).
  if (p.rows > shape.ctas()) return cudaLaunchKernelEx(&config, persistent_topk_kernel<T, false, true>, p);
  return cudaLaunchKernelEx(&config, persistent_topk_kernel<T, false, false>, p);
}

}  // namespace persistent_topk
