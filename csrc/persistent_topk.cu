// The thin binding: checks what only C++ knows, fills Params, launches the persistent kernel on the
// current stream. The only file that includes torch headers (the kernels stay in csrc/*.cuh).
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include <algorithm>
#include <array>
#include <climits>
#include <mutex>

#include "launch.cuh"

namespace persistent_topk {
namespace {

constexpr int kMaxDevices = 64;

template <typename T>
ResidentLimits limits_for_device(int device) {
  // Depends only on the device and the kernel's occupancy: computed once per device.
  static std::array<ResidentLimits, kMaxDevices> limits{};
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  TORCH_CHECK(device >= 0 && device < kMaxDevices, "persistent_topk: device index ", device, " out of range");
  if (limits[device].ctas == 0) C10_CUDA_CHECK(resident_limits<T>(&limits[device]));
  return limits[device];
}

template <typename T>
void launch(const Params& params, int device, bool pdl, cudaStream_t stream) {
  C10_CUDA_CHECK(launch_persistent_topk<T>(params, limits_for_device<T>(device), pdl, stream));
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

int64_t workspace_bytes(int64_t rows, int64_t stride, int64_t k) { return WorkspaceLayout::bytes(rows, stride, k); }
int64_t plan_bytes(int64_t rows) { return PlanLayout::bytes(rows); }

int64_t launch_grid(const at::Tensor& logits) {
  const c10::cuda::CUDAGuard guard(logits.device());
  ResidentLimits limits{};
  switch (logits.scalar_type()) {
    case at::kFloat: limits = limits_for_device<float>(logits.get_device()); break;
    case at::kBFloat16: limits = limits_for_device<__nv_bfloat16>(logits.get_device()); break;
    default: limits = limits_for_device<__half>(logits.get_device());
  }
  return static_cast<int64_t>(limits.clusters_of(Policy::kPortableClusterSize)) * Policy::kPortableClusterSize;
}

// The CTAs of a plain launch that are resident at once on like's device (float32 kernel, as the
// launch shape uses).
int64_t resident_ctas(const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  return limits_for_device<float>(like.get_device()).ctas;
}

// The threads of the register_rows_kernel a launch of this shape runs on like's device, or 0 if it runs
// the persistent kernel (tests and benchmarks name the path by it).
int64_t register_rows_threads(int64_t rows, int64_t stride, const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  if (!LaunchShape::register_rows(rows, stride, limits_for_device<float>(like.get_device()))) return 0;
  return kRegisterRowsThreads[Policy::register_rows_cta(stride)];
}

// The register_rows_kernel CTAs for this stride resident at once on like's device (0 past
// few_register_rows_max_stride): a launch of up to as many rows of a stride up to
// wave_register_rows_max_stride runs that kernel.
int64_t register_rows_resident_ctas(int64_t stride, const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  if (stride > Policy::kFewRegisterRowsMaxStride) return 0;
  return limits_for_device<float>(like.get_device()).register_rows_ctas[Policy::register_rows_cta(stride)];
}

// The CTAs per cluster of a launch of this shape on like's device (1: a plain launch). The launch
// shape of every dtype is the float32 kernel's (the three compile to the same resources), so that one
// plan serves them all.
int64_t launch_cluster_size(int64_t rows, int64_t stride, const at::Tensor& like) {
  const c10::cuda::CUDAGuard guard(like.device());
  return LaunchShape::of(rows, stride, limits_for_device<float>(like.get_device())).cluster_size;
}

RowSource row_source(const at::Tensor& bounds, const c10::optional<at::Tensor>& row_starts, int64_t window_mode,
                     int64_t next_n, int64_t stride) {
  RowSource source{};
  source.bounds = bounds.data_ptr<int32_t>();
  source.row_starts = row_starts.has_value() ? row_starts->data_ptr<int32_t>() : nullptr;
  source.window_mode = static_cast<int>(window_mode);
  source.next_n = static_cast<int>(next_n);
  source.stride = static_cast<int>(stride);
  return source;
}

void check_windows(const at::Tensor& bounds, const c10::optional<at::Tensor>& row_starts, int64_t window_mode,
                   int64_t next_n, int64_t rows) {
  TORCH_CHECK(bounds.is_cuda() && bounds.scalar_type() == at::kInt && bounds.is_contiguous(),
              "bounds: expected contiguous int32 on the GPU");
  TORCH_CHECK(window_mode >= kWindowLengths && window_mode <= kWindowStarts, "window_mode: out of range");
  if (window_mode == kWindowDecode) {
    TORCH_CHECK(next_n >= 1 && bounds.numel() * next_n == rows, "seq_lens: size does not match rows / next_n");
  } else {
    TORCH_CHECK(bounds.numel() == rows, "lengths: expected one entry per row");
  }
  if (window_mode == kWindowPrefill || window_mode == kWindowStarts) {
    TORCH_CHECK(row_starts.has_value() && row_starts->numel() == rows && row_starts->is_contiguous() &&
                    row_starts->scalar_type() == at::kInt, "row_starts: expected contiguous int32, one per row");
  }
}

// The plan kernel (plan.cuh) for `rows` rows of `stride` columns into plan (PlanLayout::bytes(rows)).
void launch_plan(const RowSource& source, int64_t rows, int64_t k, void* plan, int device, bool pdl,
                 cudaStream_t stream) {
  PlanParams q{};
  q.source = source;
  q.rows = static_cast<int>(rows);
  q.k = static_cast<int>(k);
  q.plan = plan;
  C10_CUDA_CHECK(launch_make_plan(q, limits_for_device<float>(device), pdl, stream));
}

// make_plan: the plan of these windows, for launches of (rows, stride, k), into `plan` (uint8, at
// least plan_bytes(rows)). One kernel on the current stream; no host sync.
void make_plan(const at::Tensor& bounds, const c10::optional<at::Tensor>& row_starts, int64_t window_mode,
               int64_t next_n, int64_t rows, int64_t stride, int64_t k, at::Tensor& plan) {
  TORCH_CHECK(rows >= 1 && rows <= OrderEntry::kMaxRows && stride >= 0 && stride < INT_MAX,
              "rows / stride: out of range (at most ", OrderEntry::kMaxRows, " rows)");
  TORCH_CHECK(k >= 1 && k < INT_MAX, "k: out of range");
  check_windows(bounds, row_starts, window_mode, next_n, rows);
  TORCH_CHECK(plan.is_cuda() && plan.scalar_type() == at::kByte && plan.is_contiguous() &&
                  plan.numel() >= PlanLayout::bytes(rows) && plan.get_device() == bounds.get_device(),
              "plan: expected a contiguous uint8 buffer of ", PlanLayout::bytes(rows), " bytes on the lengths' device");
  const c10::cuda::CUDAGuard guard(bounds.device());
  launch_plan(row_source(bounds, row_starts, window_mode, next_n, stride), rows, k, plan.data_ptr(),
              bounds.get_device(), /*pdl=*/false, c10::cuda::getCurrentCUDAStream());
}

void check_row_vector(const c10::optional<at::Tensor>& t, int64_t rows, const char* name) {
  if (!t.has_value()) return;
  TORCH_CHECK(t->is_cuda() && t->scalar_type() == at::kInt && t->is_contiguous() && t->numel() == rows, name,
              ": expected contiguous int32 on the GPU, one per row");
}

void check_index_out(const at::Tensor& t, int64_t rows, int64_t k, const char* name) {
  TORCH_CHECK(t.is_cuda() && t.scalar_type() == at::kInt && t.dim() == 2 && t.size(0) == rows && t.size(1) == k &&
                  (k <= 1 || t.stride(1) == 1) && (rows <= 1 || t.stride(0) >= k), name,
              ": expected a (rows, k) int32 tensor with contiguous rows");
}

// The index transform of a call (epilogue.cuh), checked so that no table read can leave the table.
IndexTransform index_transform(const c10::optional<at::Tensor>& page_table, int64_t page_size,
                               const c10::optional<at::Tensor>& row_to_table, int64_t rows_per_table,
                               const c10::optional<at::Tensor>& page_table_starts,
                               const c10::optional<at::Tensor>& offsets, int64_t rows) {
  IndexTransform t{};
  t.rows_per_table = 1;
  t.page_size = 1;
  check_row_vector(offsets, rows, "offsets");
  t.offsets = offsets.has_value() ? offsets->data_ptr<int32_t>() : nullptr;
  if (!page_table.has_value()) return t;
  TORCH_CHECK(!offsets.has_value(), "offsets: a call takes a page table or offsets, not both");
  TORCH_CHECK(page_table->is_cuda() && page_table->scalar_type() == at::kInt && page_table->dim() == 2 &&
                  (page_table->size(1) <= 1 || page_table->stride(1) == 1) && page_table->size(0) < INT_MAX &&
                  page_table->size(1) < INT_MAX, "page_table: expected a 2-D int32 tensor with contiguous rows");
  TORCH_CHECK(page_size >= 1 && page_size < INT_MAX, "page_size: out of range");
  TORCH_CHECK(rows_per_table >= 1 && rows_per_table < INT_MAX, "rows_per_table: out of range");
  check_row_vector(row_to_table, rows, "row_to_table");
  check_row_vector(page_table_starts, rows, "page_table_starts");
  t.page_table = page_table->data_ptr<int32_t>();
  t.page_table_pitch = page_table->stride(0);
  t.page_table_rows = static_cast<int>(page_table->size(0));
  t.page_table_width = static_cast<int>(page_table->size(1));
  t.page_size = static_cast<int>(page_size);
  t.row_to_table = row_to_table.has_value() ? row_to_table->data_ptr<int32_t>() : nullptr;
  t.rows_per_table = static_cast<int>(rows_per_table);
  t.page_table_starts = page_table_starts.has_value() ? page_table_starts->data_ptr<int32_t>() : nullptr;
  return t;
}

// Python (persistent_topk/ops.py) has checked types, shapes and devices; this re-checks what a
// mistake here would turn into an out-of-bounds access. Without a plan, the op's own plan is made
// first in the workspace (a second launch, which the kernel may overlap: PDL behind its own plan).
void select_rows(const at::Tensor& logits, const at::Tensor& bounds, const c10::optional<at::Tensor>& row_starts,
                 int64_t window_mode, int64_t next_n, int64_t k, bool by_value,
                 const c10::optional<at::Tensor>& page_table, int64_t page_size,
                 const c10::optional<at::Tensor>& row_to_table, int64_t rows_per_table,
                 const c10::optional<at::Tensor>& page_table_starts, const c10::optional<at::Tensor>& offsets,
                 at::Tensor& out, const c10::optional<at::Tensor>& values, const c10::optional<at::Tensor>& raw_out,
                 const c10::optional<at::Tensor>& plan, const c10::optional<at::Tensor>& workspace,
                 int64_t workspace_rows, int64_t workspace_stride, int64_t workspace_k, bool pdl) {
  TORCH_CHECK(logits.is_cuda() && logits.dim() == 2, "logits: expected a 2-D CUDA tensor");
  TORCH_CHECK(logits.size(1) <= 1 || logits.stride(1) == 1, "logits: the last dimension must be contiguous");
  TORCH_CHECK(logits.size(0) <= OrderEntry::kMaxRows && logits.size(1) < INT_MAX,
              "logits: at most ", OrderEntry::kMaxRows, " rows and 2^31 - 1 columns");
  TORCH_CHECK(k >= 1 && k < INT_MAX, "k: out of range");
  TORCH_CHECK(!by_value || k <= Policy::kMaxSortedK, "k: sorted=True supports k <= ", Policy::kMaxSortedK,
              " on CUDA, got ", k);
  const int64_t rows = logits.size(0), stride = logits.size(1);
  check_index_out(out, rows, k, "out");
  if (raw_out.has_value()) check_index_out(*raw_out, rows, k, "raw_indices");
  TORCH_CHECK(workspace.has_value(), "workspace: required for CUDA tensors");
  TORCH_CHECK(rows <= workspace_rows && stride <= workspace_stride && k <= workspace_k, "workspace: sized for ",
              workspace_rows, " rows x ", workspace_stride, " columns, k=", workspace_k, "; this call has ", rows,
              " x ", stride, ", k=", k);
  const int64_t needed = WorkspaceLayout::bytes(workspace_rows, workspace_stride, workspace_k);
  TORCH_CHECK(workspace->numel() >= needed, "workspace: ", workspace->numel(), " bytes, its layout needs ", needed);
  check_windows(bounds, row_starts, window_mode, next_n, rows);
  if (values.has_value()) {
    TORCH_CHECK(values->scalar_type() == logits.scalar_type() && values->is_contiguous() &&
                    values->numel() == rows * k, "values: expected a contiguous (rows, k) tensor of logits' dtype");
  }
  const IndexTransform transform =
      index_transform(page_table, page_size, row_to_table, rows_per_table, page_table_starts, offsets, rows);
  if (plan.has_value()) {
    TORCH_CHECK(plan->is_cuda() && plan->scalar_type() == at::kByte && plan->is_contiguous() &&
                    plan->numel() >= PlanLayout::bytes(rows), "plan: expected a plan buffer for ", rows, " rows");
  }
  if (rows == 0) return;

  Params params{};
  params.logits = logits.data_ptr();
  params.row_pitch = logits.stride(0);
  params.rows = static_cast<int>(rows);
  params.source = row_source(bounds, row_starts, window_mode, next_n, stride);
  params.k = static_cast<int>(k);
  params.by_value = by_value ? 1 : 0;
  params.transform = transform;
  params.out = out.data_ptr<int32_t>();
  params.out_pitch = rows > 1 ? out.stride(0) : k;
  params.raw_out = raw_out.has_value() ? raw_out->data_ptr<int32_t>() : nullptr;
  params.raw_pitch = raw_out.has_value() && rows > 1 ? raw_out->stride(0) : k;
  params.values = values.has_value() ? values->data_ptr() : nullptr;
  params.queue = reinterpret_cast<uint32_t*>(workspace->data_ptr<uint8_t>());

  const c10::cuda::CUDAGuard guard(logits.device());
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int device = logits.get_device();
  // A launch whose stride fits registers reads a plan only to report STALE, which the op's own plan
  // never is: without one it runs alone (PlanView{}: no plan), one launch instead of two.
  const bool plans_itself =
      !plan.has_value() && !LaunchShape::register_rows(rows, stride, limits_for_device<float>(device));
  if (plan.has_value()) {
    params.plan = PlanView::of(plan->data_ptr(), params.rows);
  } else if (plans_itself) {
    void* own = WorkspaceLayout::own_plan(workspace->data_ptr());
    launch_plan(params.source, rows, k, own, device, pdl, stream);
    params.plan = PlanView::of(own, params.rows);
  }
  const bool kernel_pdl = pdl || plans_itself;  // behind its own plan kernel, always
  switch (logits.scalar_type()) {
    case at::kFloat: launch<float>(params, device, kernel_pdl, stream); break;
    case at::kBFloat16: launch<__nv_bfloat16>(params, device, kernel_pdl, stream); break;
    case at::kHalf: launch<__half>(params, device, kernel_pdl, stream); break;
    default: TORCH_CHECK(false, "logits: expected float32, bfloat16 or float16, got ", logits.scalar_type());
  }
}

}  // namespace
}  // namespace persistent_topk

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "persistent_topk CUDA kernels (see persistent_topk/ops.py for the public API)";
  m.def("workspace_bytes", &persistent_topk::workspace_bytes, "Workspace bytes for (rows, stride, k)");
  m.def("launch_grid", &persistent_topk::launch_grid, "CTAs of the largest (clustered) persistent grid for logits' device and dtype");
  m.def("resident_ctas", &persistent_topk::resident_ctas, "CTAs of a plain launch resident at once on like's device");
  m.def("launch_cluster_size", &persistent_topk::launch_cluster_size,
        "CTAs per cluster of a launch of (rows, stride) on logits' device (1: a plain launch, no team rows)");
  m.def("register_rows_threads", &persistent_topk::register_rows_threads,
        "Threads per CTA of the register_rows_kernel a launch of (rows, stride) runs on like's device (0: none)");
  m.def("register_rows_resident_ctas", &persistent_topk::register_rows_resident_ctas,
        "register_rows_kernel CTAs for a stride resident at once on like's device (0: no such kernel)");
  m.def("plan_bytes", &persistent_topk::plan_bytes, "Plan buffer bytes for rows");
  m.def("make_plan", &persistent_topk::make_plan, "Launch the plan kernel into a plan buffer");
  m.def("select_rows", &persistent_topk::select_rows,
        "Launch the persistent top-k kernel (one launch with a plan; the op's own plan first without one)");
  m.attr("max_sorted_k") = persistent_topk::Policy::kMaxSortedK;
  m.attr("smem_keys") = persistent_topk::Policy::kSmemKeys;
  m.attr("register_max_keys") = persistent_topk::Policy::kRegisterMaxKeys;
  m.attr("register_rows_max_stride") = persistent_topk::Policy::kRegisterRowsMaxStride;
  m.attr("few_register_rows_max_stride") = persistent_topk::Policy::kFewRegisterRowsMaxStride;
  m.attr("wave_register_rows_max_stride") = persistent_topk::Policy::kWaveRegisterRowsMaxStride;
  m.attr("stream_min_keys") = persistent_topk::Policy::kStreamMinKeys;
  m.attr("stream_min_stride") = persistent_topk::Policy::kStreamMinStride;
  m.attr("solo_max_keys") = persistent_topk::Policy::kSoloMaxKeys;
  m.attr("team_min_length") = persistent_topk::Policy::kTeamMinLength;
  m.attr("team_slice_keys") = persistent_topk::Policy::kTeamSliceKeys;
  m.attr("max_cluster_size") = persistent_topk::Policy::kMaxClusterSize;
  m.attr("portable_cluster_size") = persistent_topk::Policy::kPortableClusterSize;
  m.attr("plan_stale") = persistent_topk::kPlanStale;
  m.attr("threads") = persistent_topk::Policy::kThreads;
}
