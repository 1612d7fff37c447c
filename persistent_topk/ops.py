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
kernel launch; without one the op plans itself first (two launches), except where the stride fits
registers (at most 4,096 columns; 8,192 for no more rows than the GPU holds such CTAs at once, 264 on an
H200; 16,384 for a few rows, no more than the clusters of 8 CTAs the GPU holds at once: there the
kernel needs no plan and a call is one launch). CPU tensors run
persistent_topk.reference, the oracle the kernel is tested against.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import _backend, reference
from .plan import (MODE_DECODE, MODE_LENGTHS, MODE_PREFILL, MODE_STARTS, TopKPlan, clamped_lengths,  # noqa: F401
                   make_plan)
from .workspace import Workspace, default_workspace


# ----------------------------------------------------------------------------------------------------
# The one registered op
# ----------------------------------------------------------------------------------------------------
@torch.library.custom_op("persistent_topk::select_rows",
                         mutates_args=("out", "values", "raw_out", "plan", "workspace"))
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
    row_to_table: Optional[torch.Tensor],
    rows_per_table: int,
    page_table_starts: Optional[torch.Tensor],
    offsets: Optional[torch.Tensor],
    out: torch.Tensor,
    values: Optional[torch.Tensor],
    raw_out: Optional[torch.Tensor],
    plan: Optional[torch.Tensor],
    workspace: Optional[torch.Tensor],
    workspace_rows: int,
    workspace_stride: int,
    workspace_k: int,
    pdl: bool,
) -> None:
    starts, lengths = _row_windows(logits, bounds, row_starts, window_mode, next_n)
    table_rows = row_to_table
    if page_table is not None and table_rows is None:
        table_rows = torch.arange(logits.shape[0], device=logits.device) // rows_per_table
    raw, picked = reference.reference_topk(logits, lengths, k, starts=starts, sorted=by_value)
    mapped = raw
    if page_table is not None:
        mapped = reference.page_table_transform(raw.to(torch.int64), page_table, page_size, table_rows,
                                                page_table_starts).to(torch.int32)
    elif offsets is not None:
        mapped = reference.offset_transform(raw.to(torch.int64), offsets).to(torch.int32)
    out.copy_(mapped)
    if raw_out is not None:
        raw_out.copy_(raw)
    if values is not None:
        values.copy_(picked)


@_select_rows.register_kernel("cuda")
def _select_rows_cuda(logits, bounds, row_starts, window_mode, next_n, k, by_value, page_table, page_size,
                      row_to_table, rows_per_table, page_table_starts, offsets, out, values, raw_out, plan, workspace,
                      workspace_rows, workspace_stride, workspace_k, pdl):
    if workspace is None:
        # The default workspace of (device, current stream), looked up when the op runs rather than when
        # it is called, so that torch.compile traces calls without workspace= (a stream is no dict key
        # under dynamo) and a compiled function uses the stream it runs on.
        rows, stride = logits.shape
        default = default_workspace(logits.device, rows, stride, k)
        workspace, workspace_rows, workspace_stride, workspace_k = (default.buffer, default.max_rows,
                                                                    default.max_stride, default.k)
    _backend.require_cuda_kernels().select_rows(
        logits, bounds, row_starts, window_mode, next_n, k, by_value, page_table, page_size, row_to_table,
        rows_per_table, page_table_starts, offsets, out, values, raw_out, plan, workspace, workspace_rows,
        workspace_stride, workspace_k, pdl)


@_select_rows.register_fake
def _(logits, bounds, row_starts, window_mode, next_n, k, by_value, page_table, page_size, row_to_table,
      rows_per_table, page_table_starts, offsets, out, values, raw_out, plan, workspace, workspace_rows,
      workspace_stride, workspace_k, pdl):
    return None


def _row_windows(logits, bounds, row_starts, window_mode, next_n):
    """(starts, lengths) per row, int64, before clamping: the CPU twin of the kernel's row_window()."""
    if window_mode == MODE_LENGTHS:
        return torch.zeros_like(bounds, dtype=torch.int64), bounds.to(torch.int64)
    if window_mode == MODE_DECODE:
        return (torch.zeros(logits.shape[0], dtype=torch.int64, device=bounds.device),
                reference.decode_lengths(bounds, next_n))
    if window_mode == MODE_STARTS:
        return row_starts.to(torch.int64), bounds.to(torch.int64)
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


def _check_index_out(name, t, rows, k, device):
    """out / raw_indices: (rows, k) int32, each row contiguous; rows may be strided (a slice of a wider
    index buffer, as vLLM passes)."""
    _check_tensor(name, t, dim=2, dtype=torch.int32, device=device)
    if tuple(t.shape) != (rows, k) or (k > 1 and t.stride(1) != 1) or (rows > 1 and t.stride(0) < k):
        raise ValueError(f"{name}: expected a ({rows}, {k}) int32 tensor with contiguous rows, got shape "
                         f"{tuple(t.shape)} with strides {t.stride()}")


@dataclass(frozen=True)
class _Transform:
    """How selected indices are written (SPEC §2): bare, through a page table, or shifted by offsets.

    page_table [tables, entries] int32: index idx of row r becomes
    page_table[t, s + idx // page_size] * page_size + idx % page_size with t = row_to_table[r] (default
    r // rows_per_table) and s = page_table_starts[r] (default 0); an index whose t or entry lies
    outside the table becomes -1 and nothing outside the table is read. offsets [rows] int32: idx
    becomes idx + offsets[r]. raw_indices, if given, receives the bare indices too.
    """
    page_table: Optional[torch.Tensor] = None
    page_size: int = 1
    row_to_table: Optional[torch.Tensor] = None
    rows_per_table: int = 1
    page_table_starts: Optional[torch.Tensor] = None
    offsets: Optional[torch.Tensor] = None
    raw_indices: Optional[torch.Tensor] = None

    def check(self, rows, k, device):
        if self.page_table is not None:
            _check_tensor("page_table", self.page_table, dim=2, dtype=torch.int32, device=device)
            if self.page_table.shape[1] > 1 and self.page_table.stride(1) != 1:
                raise ValueError("page_table: the last dimension must be contiguous (stride 1)")
            _check_int("page_size", self.page_size, 1)
            if self.row_to_table is not None:
                _check_row_vector("row_to_table", self.row_to_table, rows, device)
            elif self.page_table.shape[0] * self.rows_per_table != rows:
                what = "one per logits row" if self.rows_per_table == 1 else \
                    f"one per request: {rows} rows / next_n={self.rows_per_table}"
                raise ValueError(f"page_table: expected {rows // self.rows_per_table} rows ({what}), got "
                                 f"{self.page_table.shape[0]}")
            if self.page_table_starts is not None:
                _check_row_vector("page_table_starts", self.page_table_starts, rows, device)
        if self.offsets is not None:
            _check_row_vector("offsets", self.offsets, rows, device)
        if self.raw_indices is not None:
            _check_index_out("raw_indices", self.raw_indices, rows, k, device)


_BARE = _Transform()


def _run(logits, bounds, row_starts, mode, next_n, k, out, values, plan, workspace, sorted, pdl, transform=_BARE):
    _check_int("k", k, 1)
    if not isinstance(sorted, bool):
        raise TypeError(f"sorted: expected a bool, got {type(sorted).__name__}")
    if not isinstance(pdl, bool):
        raise TypeError(f"pdl: expected a bool, got {type(pdl).__name__}")
    rows, stride = logits.shape
    device = logits.device
    if out is None:
        out = torch.empty((rows, k), dtype=torch.int32, device=device)
    else:
        _check_index_out("out", out, rows, k, device)
    if values is not None:
        _check_tensor("values", values, dim=2, dtype=logits.dtype, device=device)
        if tuple(values.shape) != (rows, k) or not values.is_contiguous():
            raise ValueError(f"values: expected a contiguous ({rows}, {k}) tensor, got shape {tuple(values.shape)}")
    transform.check(rows, k, device)
    if plan is not None and not isinstance(plan, TopKPlan):
        raise TypeError(f"plan: expected a TopKPlan from make_plan, got {type(plan).__name__}")
    if workspace is not None and not isinstance(workspace, Workspace):
        raise TypeError(f"workspace: expected a persistent_topk.Workspace, got {type(workspace).__name__}")

    workspace_buffer, workspace_rows, workspace_stride, workspace_k = None, 0, 0, 0
    if device.type == "cuda":
        _backend.require_cuda_kernels()
        if workspace is not None:  # (without one, the op's CUDA implementation takes the stream's default)
            if workspace.device != device:
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
            plan.record_cpu(clamped_lengths(bounds, stride, next_n if mode == MODE_DECODE else 1, row_starts,
                                            mode=mode))
    if rows == 0:
        return out
    t = transform
    torch.ops.persistent_topk.select_rows(logits, bounds, row_starts, mode, next_n, k, sorted, t.page_table,
                                          t.page_size, t.row_to_table, t.rows_per_table, t.page_table_starts,
                                          t.offsets, out, values, t.raw_indices, plan_buffer, workspace_buffer,
                                          workspace_rows, workspace_stride, workspace_k, pdl)
    return out


def _lengths_window(logits, lengths, row_starts):
    """(bounds, row_starts, mode) of a call that gives lengths, counted from row_starts if given."""
    _check_row_vector("lengths", lengths, logits.shape[0], logits.device)
    if row_starts is None:
        return lengths, None, MODE_LENGTHS
    _check_row_vector("row_starts", row_starts, logits.shape[0], logits.device)
    return lengths, row_starts, MODE_STARTS


# ----------------------------------------------------------------------------------------------------
# Public ops
# ----------------------------------------------------------------------------------------------------
# Keyword arguments every op shares:
#   out:        optional [rows, k] int32 destination; its rows may be strided (out.stride(0) >= k).
#   values:     optional contiguous [rows, k] logits.dtype destination for the selected logits (-inf at
#               padding), in the order of out.
#   plan:       optional TopKPlan from make_plan for this step's windows and shape: the call is then one
#               kernel launch; a stale plan still gives exact results and records STALE (SPEC §5).
#   workspace:  optional Workspace; without one a default per (device, stream) grows on demand (eager
#               mode only).
#   sorted:     order each row by value descending (ties by index) instead of by index ascending.
#   pdl:        launch with programmatic dependent launch: the kernel's prologue overlaps the tail of
#               the kernel ahead of it in the stream (an engine's indexer); it waits for that kernel
#               before reading anything. Off by default; CUDA only (ignored on the CPU).
# Every op returns out: [rows, k] int32, -1 past min(k, n).

def top_k_per_row(logits: torch.Tensor, lengths: torch.Tensor, k: int = 2048, *,
                  row_starts: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None,
                  values: Optional[torch.Tensor] = None, plan: Optional[TopKPlan] = None,
                  workspace: Optional[Workspace] = None, sorted: bool = False, pdl: bool = False) -> torch.Tensor:
    """Top-k column indices of each row's first lengths[r] logits.

    Args:
        logits: [rows, stride] float32/bfloat16/float16, last dim contiguous.
        lengths: [rows] int32 valid columns per row; clamped to [0, stride] on the device.
        k: how many to select per row (>= 1).
        row_starts: optional [rows] int32: row r's window is [row_starts[r], row_starts[r] + lengths[r])
            instead (FlashInfer's and SGLang's row_starts), indices relative to row_starts[r].
        out, values, plan, workspace, sorted: as every op (above).
    Returns:
        [rows, k] int32 indices, -1 past min(k, n).
    """
    _check_logits(logits)
    bounds, starts, mode = _lengths_window(logits, lengths, row_starts)
    return _run(logits, bounds, starts, mode, 1, k, out, values, plan, workspace, sorted, pdl)


def top_k_per_row_decode(logits: torch.Tensor, seq_lens: torch.Tensor, next_n: int, k: int = 2048, *,
                         page_table: Optional[torch.Tensor] = None, page_size: int = 1,
                         raw_indices: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None,
                         values: Optional[torch.Tensor] = None, plan: Optional[TopKPlan] = None,
                         workspace: Optional[Workspace] = None, sorted: bool = False,
                         pdl: bool = False) -> torch.Tensor:
    """Decode with multi-token prediction: logits [batch * next_n, stride], seq_lens [batch] int32.

    Row r is draft token r % next_n of request r // next_n and has
    seq_lens[r // next_n] - next_n + (r % next_n) + 1 valid columns (clamped at 0 and stride).

    page_table: optional [batch, pages] int32 block table, one row per request (row r uses table row
        r // next_n): index idx is then written as page_table[r // next_n, idx // page_size] *
        page_size + idx % page_size, fused into the kernel's write-out; an index past the table's
        width is written as -1 (never read out of bounds). raw_indices: optional [rows, k] int32 that
        also receives the bare indices.
    """
    _check_logits(logits)
    _check_int("next_n", next_n, 1)
    _check_tensor("seq_lens", seq_lens, dim=1, dtype=torch.int32, device=logits.device)
    if seq_lens.numel() * next_n != logits.shape[0]:
        raise ValueError(f"seq_lens: {seq_lens.numel()} requests x next_n={next_n} != {logits.shape[0]} logits rows")
    transform = _BARE
    if page_table is not None:
        transform = _Transform(page_table=page_table, page_size=page_size, rows_per_table=next_n,
                               raw_indices=raw_indices)
    elif raw_indices is not None:
        raise ValueError("raw_indices: only meaningful with page_table (without one, out holds the raw indices)")
    return _run(logits, seq_lens, None, MODE_DECODE, next_n, k, out, values, plan, workspace, sorted, pdl, transform)


def top_k_per_row_prefill(logits: torch.Tensor, row_starts: torch.Tensor, row_ends: torch.Tensor, k: int = 2048, *,
                          out: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
                          plan: Optional[TopKPlan] = None, workspace: Optional[Workspace] = None,
                          sorted: bool = False, pdl: bool = False) -> torch.Tensor:
    """Prefill: row r covers columns [row_starts[r], row_ends[r]) of its logits row; indices are relative
    to row_starts[r]. row_starts/row_ends: [rows] int32, clamped to [0, stride]. A plan for these calls
    is make_plan(row_ends, stride, k, row_starts=row_starts, ends=True)."""
    _check_logits(logits)
    _check_row_vector("row_starts", row_starts, logits.shape[0], logits.device)
    _check_row_vector("row_ends", row_ends, logits.shape[0], logits.device)
    return _run(logits, row_ends, row_starts, MODE_PREFILL, 1, k, out, values, plan, workspace, sorted, pdl)


def top_k_page_table_transform(logits: torch.Tensor, lengths: torch.Tensor, page_table: torch.Tensor,
                               page_size: int, k: int = 2048, *, row_starts: Optional[torch.Tensor] = None,
                               row_to_table: Optional[torch.Tensor] = None,
                               page_table_starts: Optional[torch.Tensor] = None,
                               raw_indices: Optional[torch.Tensor] = None, out: Optional[torch.Tensor] = None,
                               values: Optional[torch.Tensor] = None, plan: Optional[TopKPlan] = None,
                               workspace: Optional[Workspace] = None, sorted: bool = False,
                         pdl: bool = False) -> torch.Tensor:
    """top_k_per_row, but each selected index idx (relative to the row's start) is written as the
    KV-cache slot page_table[t, s + idx // page_size] * page_size + idx % page_size, fused into the
    kernel's write-out.

    Args:
        page_table: [tables, pages] int32 (rows may be strided). t = row_to_table[r] if given, else r
            (then tables must equal rows). Engines size it by the longest sequence, not the logits
            width: the table-coverage rule is that an index whose page lies outside the table (t or the
            entry out of range) is written as -1, and nothing outside the table is read.
        page_size: KV positions per page (>= 1; a power of two is fastest).
        row_starts: optional [rows] int32 window starts (as top_k_per_row).
        row_to_table: optional [rows] int32 table row of each logits row (prefill: the request).
        page_table_starts: optional [rows] int32 s, the table entry of the row's index 0 (default 0).
        raw_indices: optional [rows, k] int32 that also receives the bare indices.
    """
    _check_logits(logits)
    bounds, starts, mode = _lengths_window(logits, lengths, row_starts)
    transform = _Transform(page_table=page_table, page_size=page_size, row_to_table=row_to_table,
                           page_table_starts=page_table_starts, raw_indices=raw_indices)
    _check_tensor("page_table", page_table, dim=2, dtype=torch.int32, device=logits.device)
    return _run(logits, bounds, starts, mode, 1, k, out, values, plan, workspace, sorted, pdl, transform)


def top_k_ragged_transform(logits: torch.Tensor, lengths: torch.Tensor, offsets: torch.Tensor, k: int = 2048, *,
                           row_starts: Optional[torch.Tensor] = None, raw_indices: Optional[torch.Tensor] = None,
                           out: Optional[torch.Tensor] = None, values: Optional[torch.Tensor] = None,
                           plan: Optional[TopKPlan] = None, workspace: Optional[Workspace] = None,
                           sorted: bool = False, pdl: bool = False) -> torch.Tensor:
    """top_k_per_row, but each selected index idx (relative to the row's start) is written as
    idx + offsets[r] (int32), fused into the kernel's write-out: the ragged KV layout, where a row's
    keys start at offsets[r] of one flat buffer (FlashInfer's top_k_ragged_transform).

    Args:
        offsets: [rows] int32.
        row_starts: optional [rows] int32 window starts (as top_k_per_row).
        raw_indices: optional [rows, k] int32 that also receives the bare indices.
    """
    _check_logits(logits)
    bounds, starts, mode = _lengths_window(logits, lengths, row_starts)
    _check_row_vector("offsets", offsets, logits.shape[0], logits.device)
    transform = _Transform(offsets=offsets, raw_indices=raw_indices)
    return _run(logits, bounds, starts, mode, 1, k, out, values, plan, workspace, sorted, pdl, transform)
