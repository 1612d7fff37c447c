// What a launch's shape costs before any work: a kernel that writes one row of k indices (the floor
// kernel's job), launched with different grids, block sizes and dynamic shared memory, timed as the
// benchmark times (CUDA-graph replay, L2 flushed by a memset before each replay, median).
//   nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a -o /tmp/launch_cost launch_cost.cu && /tmp/launch_cost
#include <algorithm>
#include <cstdio>
#include <vector>
#include <cuda_runtime.h>

#define CHECK(x)                                                                  \
  do {                                                                            \
    cudaError_t e = (x);                                                          \
    if (e != cudaSuccess) {                                                       \
      std::printf("%s:%d %s\n", __FILE__, __LINE__, cudaGetErrorString(e));       \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

constexpr int kK = 2048;

// The launch's in-GPU span (global timer, ns): the earliest CTA start, the latest CTA end.
__device__ unsigned long long span[2];
__device__ __forceinline__ unsigned long long global_ns() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// The floor kernel's job alone: no shared memory, no span.
__global__ void write_row(int* out, int rows, size_t /*smem_bytes*/) {
  if (blockIdx.x >= rows) return;
  for (int i = threadIdx.x; i < kK; i += blockDim.x) out[blockIdx.x * kK + i] = i;
}

// What a variant carries besides the row's write: nothing, a large body it never runs (does code
// size cost a launch?), or cluster instructions it never runs (is a cluster-capable kernel launched
// differently even as a plain launch?). rows < 0 never holds.
enum UnusedBody { kNothing = 0, kLargeBody = 1, kClusterCode = 2 };
__device__ __noinline__ void never_called(int* out, int i) { out[i] = i * 3 + 1; }

// Uses its shared memory (so the launch cannot skip it): one word per thread, then the row; records
// its span.
template <UnusedBody kBody>
__global__ void __launch_bounds__(512, 2) write_row_smem(int* out, int rows, size_t smem_bytes) {
  extern __shared__ int dynamic[];
  __shared__ int smem[512];
  if (threadIdx.x == 0) atomicMin(&span[0], global_ns());
  smem[threadIdx.x] = threadIdx.x;
  if (smem_bytes >= 4 * 512) dynamic[threadIdx.x] = threadIdx.x;
  __syncthreads();
  if (kBody == kLargeBody && rows < 0) {
    float acc[32];
#pragma unroll
    for (int j = 0; j < 32; ++j) acc[j] = out[j * 97 + threadIdx.x];
#pragma unroll 1
    for (int it = 0; it < 100; ++it) {
#pragma unroll
      for (int j = 0; j < 2000; ++j) acc[(j * 7) & 31] = acc[(j * 13) & 31] * acc[(j * 5) & 31] + float(j);
    }
#pragma unroll
    for (int j = 0; j < 32; ++j) out[j * 97 + threadIdx.x] = int(acc[j]);
    never_called(out, threadIdx.x);
  }
  if (kBody == kClusterCode && rows < 0) {
    unsigned rank, remote;
    asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
    const unsigned local = static_cast<unsigned>(__cvta_generic_to_shared(smem));
    asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(local), "r"(rank ^ 1u));
    asm volatile("st.shared::cluster.u32 [%0], %1;" ::"r"(remote), "r"(rank) : "memory");
    asm volatile("barrier.cluster.arrive.release.aligned;\nbarrier.cluster.wait.acquire.aligned;" ::: "memory");
  }
  if (blockIdx.x >= rows) return;
  for (int i = threadIdx.x; i < kK; i += blockDim.x) out[blockIdx.x * kK + i] = smem[i % blockDim.x];
  __syncthreads();
  if (threadIdx.x == 0) atomicMax(&span[1], global_ns());
}

// A flush that itself asks for the largest carveout, so the next kernel finds the SMs configured so.
__global__ void flush_smem(uint4* p, size_t n) {
  extern __shared__ int smem[];
  smem[threadIdx.x] = 0;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    p[i] = make_uint4(0, 0, 0, 0);
  }
}

int main() {
  const size_t flush_bytes = 256u << 20;
  void* flush = nullptr;
  int* out = nullptr;
  CHECK(cudaMalloc(&flush, flush_bytes));
  CHECK(cudaMalloc(&out, 512 * kK * sizeof(int)));
  using Kernel = void (*)(int*, int, size_t);
  struct Variant { const char* name; Kernel kernel; };
  const Variant plain{"write_row", write_row}, smem{"write_row_smem", write_row_smem<kNothing>},
      large{"write_row_big", write_row_smem<kLargeBody>}, cluster{"write_row_cluster", write_row_smem<kClusterCode>};
  for (const Variant& v : {plain, smem, large, cluster}) {
    CHECK(cudaFuncSetAttribute(v.kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 220 * 1024));
  }
  CHECK(cudaFuncSetAttribute(cluster.kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  CHECK(cudaFuncSetAttribute(flush_smem, cudaFuncAttributeMaxDynamicSharedMemorySize, 113 * 1024));
  cudaStream_t stream;
  CHECK(cudaStreamCreateWithFlags(&stream, cudaStreamNonBlocking));
  cudaEvent_t a, b;
  CHECK(cudaEventCreate(&a));
  CHECK(cudaEventCreate(&b));
  cudaFuncAttributes big{};
  CHECK(cudaFuncGetAttributes(&big, large.kernel));
  std::printf("write_row_big: %d registers, %zu local bytes\n", big.numRegs, big.localSizeBytes);

  struct Shape { Variant variant; int grid, threads, rows; size_t smem; int flush_kind; int pdl = 0; };
  std::vector<Shape> shapes;
  for (int flush_kind = 0; flush_kind < 2; ++flush_kind) {
    for (size_t bytes : {size_t(0), size_t(16) << 10, size_t(32) << 10, size_t(48) << 10, size_t(64) << 10,
                         size_t(96) << 10, size_t(112) << 10, size_t(200) << 10}) {
      shapes.push_back({smem, 1, 512, 1, bytes, flush_kind});
    }
    shapes.push_back({plain, 1, 512, 1, 0, flush_kind});
    shapes.push_back({plain, 132, 512, 1, 0, flush_kind});
    shapes.push_back({smem, 264, 512, 1, size_t(96) << 10, flush_kind});
    shapes.push_back({smem, 264, 512, 256, size_t(96) << 10, flush_kind});
    shapes.push_back({smem, 264, 512, 256, size_t(16) << 10, flush_kind});
    shapes.push_back({smem, 256, 512, 256, size_t(0), flush_kind});
    shapes.push_back({smem, 1, 512, 1, size_t(96) << 10, flush_kind, 1});
    shapes.push_back({smem, 256, 512, 256, size_t(96) << 10, flush_kind, 1});
    shapes.push_back({large, 1, 512, 1, size_t(96) << 10, flush_kind});
    shapes.push_back({large, 256, 512, 256, size_t(96) << 10, flush_kind});
    shapes.push_back({large, 1, 512, 1, size_t(96) << 10, flush_kind, 1});
    shapes.push_back({cluster, 1, 512, 1, size_t(96) << 10, flush_kind, 1});
    shapes.push_back({cluster, 256, 512, 256, size_t(96) << 10, flush_kind, 1});
  }
  std::printf("%-18s %5s %5s %5s %8s %-10s %4s %8s %8s\n", "kernel", "grid", "thr", "rows", "smem_KB", "flush",
              "pdl", "us", "span_us");
  for (const Shape& s : shapes) {
    cudaGraph_t graph;
    cudaGraphExec_t exec;
    CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeGlobal));
    cudaLaunchAttribute attribute{};
    attribute.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attribute.val.programmaticStreamSerializationAllowed = 1;
    cudaLaunchConfig_t config{};
    config.gridDim = dim3(s.grid);
    config.blockDim = dim3(s.threads);
    config.dynamicSmemBytes = s.smem;
    config.stream = stream;
    config.attrs = &attribute;
    config.numAttrs = s.pdl ? 1 : 0;
    CHECK(cudaLaunchKernelEx(&config, s.variant.kernel, out, s.rows, s.smem));
    CHECK(cudaStreamEndCapture(stream, &graph));
    CHECK(cudaGraphInstantiate(&exec, graph, 0));
    std::vector<float> times, spans;
    for (int it = 0; it < 300; ++it) {
      const unsigned long long init[2] = {~0ull, 0ull};
      CHECK(cudaMemcpyToSymbolAsync(span, init, sizeof(init), 0, cudaMemcpyHostToDevice, stream));
      if (s.flush_kind == 0) {
        CHECK(cudaMemsetAsync(flush, 0, flush_bytes, stream));
      } else {
        flush_smem<<<264, 512, 113 * 1024, stream>>>(static_cast<uint4*>(flush), flush_bytes / 16);
      }
      CHECK(cudaEventRecord(a, stream));
      CHECK(cudaGraphLaunch(exec, stream));
      CHECK(cudaEventRecord(b, stream));
      CHECK(cudaEventSynchronize(b));
      float ms = 0;
      CHECK(cudaEventElapsedTime(&ms, a, b));
      unsigned long long got[2];
      CHECK(cudaMemcpyFromSymbol(got, span, sizeof(got)));
      if (it >= 20) times.push_back(ms * 1e3f);
      if (it >= 20) spans.push_back(got[1] > got[0] ? (got[1] - got[0]) * 1e-3f : 0.f);
    }
    std::sort(times.begin(), times.end());
    std::sort(spans.begin(), spans.end());
    std::printf("%-18s %5d %5d %5d %8zu %-10s %4d %8.2f %8.2f\n", s.variant.name, s.grid, s.threads, s.rows,
                s.smem >> 10,
                s.flush_kind == 0 ? "memset" : "smem-flush", s.pdl, times[times.size() / 2], spans[spans.size() / 2]);
    CHECK(cudaGraphExecDestroy(exec));
    CHECK(cudaGraphDestroy(graph));
  }
  return 0;
}
