"""Public ops (SPEC §2): exact per-row top-k over sparse-attention indexer logits.

Shapes and dtypes, for every op:
    logits   [rows, stride] float32, bfloat16 or float16; the last dimension contiguous, the row pitch
             (logits.stride(0)) anything >= stride, so row-strided views work.
    returns  out [rows, k] int32: per row the column indices of the min(k, n) largest valid logits, in
             ascending column order (or by value, descending, with sorted=True), then -1 padding.
    values   optional [rows, k] tensor of logits.dtype, filled with the selected logits (-inf at padding).

All four ops lower to one custom op, ``persistent_topk::select_rows``, registered with torch.library
with a fake implementation, so torch.compile(fullgraph=True) traces them. CUDA tensors run the
persistent kernel of csrc/: with ``plan=`` (from make_plan, once per decode step) a call is exactly one
kernel launch; without one the op plans itself first (two launches). CPU tensors run
persistent_topk.reference, the oracle the kernel is tested against.
"""
from __future__ import annotations

from typing import Optional

import torch

from . import _backend, reference
from .plan import MODE_DECODE, MODE_LENGTHS, MODE_PREFILL, TopKPlan, clamped_lengths, make_plan  # noqa: F401
from .workspace import Workspace, default_workspace


# ----------------------------------------------------------------------------------------------------
# The one registered op
# ----------------------------------------------------------------------------------------------------
@torch.library.custom_op("persistent_topk::select_rows", mutates_args=("out", "values", "plan", "workspace"))
def _select_rows(
    logits: torch.Tensor,
    bounds: torch.Tensor,
    row_starts: Optional[torch.Tensor],
    window_mode: int,
    next_n: int,
    k: int,
    by_value: bool,
    page_table: Optional[torch.Tensor],
    page_size: int,
    out: torch.Tensor,
    values: Optional[torch.Tensor],
    plan: Optional[torch.Tensor],
    workspace: Optional[torch.Tensor],
    workspace_rows: int,
    workspace_stride: int,
    workspace_k: int,
) -> None:
    starts, lengths = _row_windows(logits, bounds, row_starts, window_mode, next_n)
    indices, picked = reference.reference_topk(logits, lengths, k, starts=starts, sorted=by_value,
                                               page_table=page_table, page_size=page_size)
    out.copy_(indices)
    if values is not None:
        values.copy_(picked)


@_select_rows.register_kernel("cuda")
def _select_rows_cuda(logits, bounds, row_starts, window_mode, next_n, k, by_value, page_table, page_size, out, values,
                      plan, workspace, workspace_rows, workspace_stride, workspace_k):
    _backend.require_cuda_kernels().select_rows(logits, bounds, row_starts, window_mode, next_n, k, by_value, page_table,
                                                page_size, out, values, plan, workspace, workspace_rows,
                                                workspace_stride, workspace_k)


@_select_rows.register_fake
def _(logits, bounds, row_starts, window_mode, next_n, k, by_value, page_table, page_size, out, values, plan,
      workspace, workspace_rows, workspace_stride, workspace_k):
    return None


def _row_windows(logits, bounds, row_starts, window_mode, next_n):
    """(starts, lengths) per row, int64, before clamping: the CPU twin of the kernel's row_window()."""
    if window_mode == MODE_LENGTHS:
        return torch.zeros_like(bounds, dtype=torch.int64), bounds.to(torch.int64)
    if window_mode == MODE_DECODE:
        return (torch.zeros(logits.shape[0], dtype=torch.int64, device=bounds.device),
                reference.decode_lengths(bounds, next_n))
    return row_starts.to(torch.int64), bounds.to(torch.int64) - row_starts.to(torch.int64)


# ----------------------------------------------------------------------------------------------------
# Argument checks (SPEC §7): raised before any launch, naming the argument
# ----------------------------------------------------------------------------------------------------
def _check_tensor(name, t, *, dim=None, dtype=None, device=None):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if dim is not None and t.dim() != dim:
        raise ValueError(f"{name}: expected a {dim}-D tensor, got shape {tuple(t.shape)}")
    if dtype is not None and t.dtype not in (dtype if isinstance(dtype, tuple) else (dtype,)):
        raise TypeError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if device is not None and t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device} (the logits' device), got {t.device}")


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")


def _check_logits(logits):
    _check_tensor("logits", logits, dim=2, dtype=reference.SUPPORTED_DTYPES)
    if logits.shape[1] > 1 and logits.stride(1) != 1:
        raise ValueError(f"logits: the last dimension must be contiguous (stride 1), got strides {logits.stride()}")
    if logits.device.type not in ("cpu", "cuda"):
        raise ValueError(f"logits: expected a CPU or CUDA tensor, got {logits.device}")


def _check_row_vector(name, t, rows, device):
    _check_tensor(name, t, dim=1, dtype=torch.int32, device=device)
    if t.numel() != rows:
        raise ValueError(f"{name}: expected {rows} entries (one per logits row), got {t.numel()}")


def _run(logits, bounds, row_starts, mode, next_n, k, out, values, plan, workspace, sorted, page_table=None,
         page_size=1):
    _check_int("k", k, 1)
    if not isinstance(sorted, bool):
        raise TypeError(f"sorted: expected a bool, got {type(sorted).__name__}")
    rows, stride = logits.shape
    device = logits.device
    if out is None:
        out = torch.empty((rows, k), dtype=torch.int32, device=device)
    else:
        _check_tensor("out", out, dim=2, dtype=torch.int32, device=device)
        if tuple(out.shape) != (rows, k) or not out.is_contiguous():
            raise ValueError(f"out: expected a contiguous ({rows}, {k}) int32 tensor, got shape {tuple(out.shape)}"
                             f" with strides {out.stride()}")
    if values is not None:
        _check_tensor("values", values, dim=2, dtype=logits.dtype, device=device)
        if tuple(values.shape) != (rows, k) or not values.is_contiguous():
            raise ValueError(f"values: expected a contiguous ({rows}, {k}) tensor, got shape {tuple(values.shape)}")
    if page_table is not None:
        _check_tensor("page_table", page_table, dim=2, dtype=torch.int32, device=device)
        if page_table.shape[0] != rows:
            raise ValueError(f"page_table: expected {rows} rows (one per logits row), got {page_table.shape[0]}")
        if page_table.shape[1] > 1 and page_table.stride(1) != 1:
            raise ValueError("page_table: the last dimension must be contiguous (stride 1)")
        _check_int("page_size", page_size, 1)
        if page_table.shape[1] * page_size < stride:
            raise ValueError(f"page_table: {page_table.shape[1]} pages of {page_size} cover fewer than the "
                             f"{stride} logits columns")
    if plan is not None and not isinstance(plan, TopKPlan):
        raise TypeError(f"plan: expected a TopKPlan from make_plan, got {type(plan).__name__}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise TypeError(f"workspace: expected a persistent_topk.Workspace, got {type(workspace).__name__}")

    workspace_buffer, workspace_rows, workspace_stride, workspace_k = None, 0, 0, 0
    if device.type == "cuda":
        _backend.require_cuda_kernels()
        if workspace is None:
            workspace = default_workspace(device, rows, stride, k)
        elif workspace.device != device:
            raise ValueError(f"workspace: lives on {workspace.device}, but logits are on {device}")
        workspace_buffer = workspace.ensure(rows, stride, k)
        workspace_rows, workspace_stride, workspace_k = workspace.max_rows, workspace.max_stride, workspace.k
        if sorted and k > _backend.require_cuda_kernels().max_sorted_k:
            raise ValueError(f"k: sorted=True supports k <= {_backend.require_cuda_kernels().max_sorted_k} on CUDA "
                             f"(the selection is sorted in shared memory), got {k}")
    plan_buffer = None
    if plan is not None:
        plan.check_usable(rows, stride, k, device)
        if device.type == "cuda":
            plan_buffer = plan.buffer
        else:  # the CPU path reads the plan only to keep its status
            plan.record_cpu(clamped_lengths(bounds, stride, next_n if mode == MODE_DECODE else 1, row_starts))
    if rows == 0:
        return out
    torch.ops.persistent_topk.select_rows(logits, bounds, row_starts, mode, next_n, k, sorted, page_table,
                                          page_size, out, values, plan_buffer, workspace_buffer, workspace_rows,
                                          workspace_stride, workspace_k)
    return out


# ----------------------------------------------------------------------------------------------------
# Public ops
# ----------------------------------------------------------------------------------------------------
def top_k_per_row(logits: torch.Tensor, lengths: torch.Tensor, k: int = 2048, *, out: Optional[torch.Tensor] = None,
                  values: Optional[torch.Tensor] = None, plan: Optional[TopKPlan] = None,
                  workspace: Optional[Workspace] = None, sorted: bool = False) -> torch.Tensor:
    """Top-k column indices of each row's first lengths[r] logits.

    Args:
        logits: [rows, stride] float32/bfloat16/float16, last dim contiguous.
        lengths: [rows] int32 valid columns per row; clamped to [0, stride] on the device.
        k: how many to select per row (>= 1).
        out: optional [rows, k] int32 destination.
        values: optional [rows, k] logits.dtype destination for the selected logits.
        plan: optional TopKPlan from make_plan(lengths, stride, k) for this shape: the call is then one
            kernel launch; a stale plan still gives exact results and records STALE (SPEC §5).
        workspace: optional Workspace; without one a per-device default grows on demand (eager only).
        sorted: order each row by value descending (ties by index) instead of by index ascending.
    Returns:
        [rows, k] int32 indices, -1 past min(k, n).
    """
    _check_logits(logits)
    _check_row_vector("lengths", lengths, logits.shape[0], logits.device)
    return _run(logits, lengths, None, MODE_LENGTHS, 1, k, out, values, plan, workspace, sorted)


def top_k_per_row_decode(logits: torch.Tensor, seq_lens: torch.Tensor, next_n: int, k: int = 2048, *,
                         out: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
                         plan: Optional[TopKPlan] = None, workspace: Optional[Workspace] = None,
                         sorted: bool = False) -> torch.Tensor:
    """Decode with multi-token prediction: logits [batch * next_n, stride], seq_lens [batch] int32.

    Row r is draft token r % next_n of request r // next_n and has
    seq_lens[r // next_n] - next_n + (r % next_n) + 1 valid columns (clamped at 0 and stride).
    """
    _check_logits(logits)
    _check_int("next_n", next_n, 1)
    _check_tensor("seq_lens", seq_lens, dim=1, dtype=torch.int32, device=logits.device)
    if seq_lens.numel() * next_n != logits.shape[0]:
        raise ValueError(f"seq_lens: {seq_lens.numel()} requests x next_n={next_n} != {logits.shape[0]} logits rows")
    return _run(logits, seq_lens, None, MODE_DECODE, next_n, k, out, values, plan, workspace, sorted)


def top_k_per_row_prefill(logits: torch.Tensor, row_starts: torch.Tensor, row_ends: torch.Tensor, k: int = 2048, *,
                          out: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
                          plan: Optional[TopKPlan] = None, workspace: Optional[Workspace] = None,
                          sorted: bool = False) -> torch.Tensor:
    """Prefill: row r covers columns [row_starts[r], row_ends[r]) of its logits row; indices are relative
    to row_starts[r]. row_starts/row_ends: [rows] int32, clamped to [0, stride]."""
    _check_logits(logits)
    _check_row_vector("row_starts", row_starts, logits.shape[0], logits.device)
    _check_row_vector("row_ends", row_ends, logits.shape[0], logits.device)
    return _run(logits, row_ends, row_starts, MODE_PREFILL, 1, k, out, values, plan, workspace, sorted)


def top_k_page_table_transform(logits: torch.Tensor, lengths: torch.Tensor, page_table: torch.Tensor,
                               page_size: int, k: int = 2048, *, out: Optional[torch.Tensor] = None,
                               values: Optional[torch.Tensor] = None, plan: Optional[TopKPlan] = None,
                               workspace: Optional[Workspace] = None, sorted: bool = False) -> torch.Tensor:
    """top_k_per_row, but each selected index idx is written as the KV-cache slot
    page_table[r, idx // page_size] * page_size + idx % page_size (fused into the kernel's write-out).

    page_table: [rows, pages] int32 with pages * page_size covering the row's valid columns.
    """
    _check_logits(logits)
    _check_row_vector("lengths", lengths, logits.shape[0], logits.device)
    return _run(logits, lengths, None, MODE_LENGTHS, 1, k, out, values, plan, workspace, sorted,
                page_table=page_table, page_size=page_size)
