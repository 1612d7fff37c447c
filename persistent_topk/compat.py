"""Drop-in call shapes of the engines' DSA top-k entry points (issue 11 item 3).

Each function here takes exactly the arguments the engine's own function takes, in the same order,
so an engine switches by changing an import. Every one is a thin layer over the ops of
persistent_topk.ops: no kernel of its own; argument adaptation uses only views and cheap,
graph-capturable torch ops (no host sync, no data-dependent shape), so a call captures in a CUDA
graph like the op under it. CPU tensors run the CPU oracle, like every op.

What every function shares (SPEC §3), and where it differs from the engines:

* Exact selection, and the same one every time: the m = min(k, n) largest of the row's n valid logits,
  ties at the threshold won by the lowest column index (the engines pick an arbitrary subset of the
  tied values; FlashInfer's ``tie_break=1`` is the same rule as ours). NaN (either sign) ranks above
  +inf, -0.0 just below +0.0. (The engines' radix keys put a NaN with the sign bit set below -inf.)
* Output order: ascending column index within the row (the engines give no order).
* Padding: -1 past m, as every engine. Indices are int32, as every engine.
* Row lengths are clamped to [0, width] (width = logits.shape[1], less the row's start): the engines
  do not clamp (a length past the width reads the next row; SGLang's V4 kernels require non-negative
  lengths).
* A page-table lookup whose table row or entry lies outside the table writes -1 (the engines read
  out of bounds). ``k`` is any value >= 1 (SGLang's V3.2 functions assert k == 2048, vLLM's
  persistent_topk takes 512/1024/2048, SGLang's V4 kernels k <= 2048 or 1024).
* Logits may be float32, bfloat16 or float16 everywhere (vLLM and SGLang take float32 only).
* No dtype is converted: every engine already passes int32 lengths, tables and offsets, which is
  what the ops take. Shapes are adapted by views only (vLLM's (B, 1) / (B, next_n) lengths are
  flattened, vLLM's stride0 builds a row-strided view).
* Optional ``workspace=`` (a :class:`persistent_topk.Workspace`; keyword-only where the engine has no
  such argument): needed to capture a call in a CUDA graph without a warm-up call on the capture
  stream (SPEC §6). vLLM's uint8 ``workspace`` tensor and FlashInfer's ``workspace`` dict are
  accepted and ignored.

=================================  ======================================  =======================================
engine function                    persistent_topk op                      what else differs
=================================  ======================================  =======================================
vLLM persistent_topk               top_k_per_row (lengths flattened,       writes ``output``, returns None; lengths
                                   logits narrowed to max_seq_len cols)    capped at min(max_seq_len, width)
vLLM top_k_per_row_decode          top_k_per_row_decode                    writes ``indices``, returns None;
                                                                           stride1 must be 1 (ValueError)
vLLM top_k_per_row_prefill         top_k_per_row_prefill                   as top_k_per_row_decode
SGLang fast_topk_v2                top_k_per_row (row_starts)              returns a new (B, topk) tensor
SGLang fast_topk_transform_fused   top_k_page_table_transform, page size   returns a new tensor; a row in no
                                   1, row_to_table from cu_seqlens_q       cu_seqlens_q range is all -1
SGLang fast_topk_transform_        top_k_ragged_transform                  returns a new tensor
ragged_fused
SGLang topk_transform_512          top_k_page_table_transform (without a   writes ``out_page_indices`` (and
                                   table: top_k_per_row)                   ``out_raw_indices``), returns None
SGLang plan_topk_v2                make_plan, lazily (TopKV2Metadata)      returns a TopKV2Metadata, not SGLang's
                                                                           tensor; ``out`` is not written
SGLang topk_transform_paged_v2     as topk_transform_512, plan= the        any other ``metadata`` (SGLang's tensor)
                                   metadata's plan                         is ignored: the call plans itself
FlashInfer top_k_page_table_       top_k_page_table_transform (page_table  tie_break=2: NotImplementedError;
transform                          _starts = page_table_row_starts, by     deterministic / dsa_graph_safe always
                                   default row_starts when page_size 1)    hold (accepted, no effect)
FlashInfer top_k_ragged_transform  top_k_ragged_transform                  as above
FlashInfer top_k_varlen            top_k_per_row_decode (compress_ratio    value padding -inf (FlashInfer's masked
                                   1), else top_k_per_row on lengths       backend: 0); pre_idx, backend,
                                   derived by elementwise torch ops        load_balance, approx_ties ignored
=================================  ======================================  =======================================
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import ops
from .plan import TopKPlan, make_plan
from .workspace import Workspace

__all__ = [
    # vLLM
    "persistent_topk", "top_k_per_row_decode", "top_k_per_row_prefill",
    # SGLang V3.2 (sgl_kernel) and V4 (DeepSeek-V4 JIT kernels)
    "fast_topk_v2", "fast_topk_transform_fused", "fast_topk_transform_ragged_fused",
    "topk_transform_512", "plan_topk_v2", "topk_transform_paged_v2", "TopKV2Metadata",
    # FlashInfer
    "top_k_page_table_transform", "top_k_ragged_transform", "top_k_varlen", "TopKTieBreak",
]


# ----------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------
def _workspace(workspace, name="workspace") -> Optional[Workspace]:
    """A persistent_topk Workspace, or None for anything the engine passes in that slot (vLLM's uint8
    scratch tensor, FlashInfer's dict of GVR buffers) that this library has no use for."""
    if workspace is None or isinstance(workspace, Workspace):
        return workspace
    if isinstance(workspace, (torch.Tensor, dict)):
        return None
    raise TypeError(f"{name}: expected a persistent_topk.Workspace (or the engine's own scratch tensor/dict, "
                    f"which is ignored), got {type(workspace).__name__}")


def _tensor(name, t):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    return t


def _int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")
    return value


def _power_of_two(name, value, high=None):
    _int(name, value, 1)
    if value & (value - 1) or (high is not None and value > high):
        bound = "" if high is None else f" no greater than {high}"
        raise ValueError(f"{name}: must be a positive power of two{bound}, got {value}")
    return value


def _out_columns(name, out):
    _tensor(name, out)
    if out.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D [rows, k] int32 tensor, got shape {tuple(out.shape)}")
    return out.shape[1]


# ----------------------------------------------------------------------------------------------------
# vLLM (torch.ops._C.persistent_topk / top_k_per_row_decode / top_k_per_row_prefill)
# ----------------------------------------------------------------------------------------------------
def persistent_topk(logits: torch.Tensor, lengths: torch.Tensor, output: torch.Tensor, workspace, k: int,
                    max_seq_len: int) -> None:
    """vLLM's ``torch.ops._C.persistent_topk(logits, lengths, output, workspace, k, max_seq_len)``.

    Args:
        logits: [num_rows, width] logits (vLLM: float32; here also bf16/fp16).
        lengths: int32 per-row valid lengths, [num_rows], or vLLM's [B, 1] / [B, next_n] (one entry per
            row, row-major: the MTP draft rows' own lengths); flattened by a view.
        output: [num_rows, k] int32, written in place (its rows may be strided: out.stride(0) >= k; vLLM
            assumes a pitch of k whatever the tensor's stride).
        workspace: vLLM's uint8 scratch tensor (ignored), or a persistent_topk.Workspace (used).
        k: columns per row to select (vLLM: 512, 1024 or 2048; here any k >= 1).
        max_seq_len: host-side bound on every row's length (vLLM: the batch's longest sequence):
            row r selects from its first clamp(lengths[r], 0, min(max_seq_len, width)) columns, as
            vLLM's kernel clamps them (vLLM bounds by the row pitch logits.stride(0), here by the
            width logits.shape[1]). Implemented as a narrowing view of logits, so it costs nothing.
    Returns:
        None (as vLLM's op). ``output`` holds per row the selected column indices in ascending order,
        then -1.
    """
    ops._check_logits(logits)
    _tensor("lengths", lengths)
    _tensor("output", output)
    _int("k", k, 1)
    _int("max_seq_len", max_seq_len, -(1 << 62))
    ws = _workspace(workspace)
    rows, width = logits.shape
    if lengths.dim() not in (1, 2) or lengths.numel() != rows:
        raise ValueError(f"lengths: expected one entry per logits row ({rows}), as [rows], [B, 1] or [B, next_n]; "
                         f"got shape {tuple(lengths.shape)}")
    if not lengths.is_contiguous():
        raise ValueError("lengths: must be contiguous (vLLM reads it as a flat [num_rows] array)")
    lengths = lengths.reshape(rows)
    bound = min(max_seq_len, width)
    if bound <= 0:  # no row has a valid column
        ops._check_row_vector("lengths", lengths, rows, logits.device)
        ops._check_index_out("output", output, rows, k, logits.device)
        output.fill_(-1)
        return None
    if bound < width:
        logits = logits[:, :bound]
    ops.top_k_per_row(logits, lengths, k, out=output, workspace=ws)
    return None


def _vllm_rows(logits, num_rows, stride0, stride1, indices, top_k):
    """(logits view, indices view) of vLLM's raw-pointer arguments: row r of the logits starts stride0
    elements after row r - 1; indices [num_rows, top_k]."""
    ops._check_logits(logits)
    _int("num_rows", num_rows, 0)
    _int("stride0", stride0, 0)
    _int("stride1", stride1, 0)
    _int("top_k", top_k, 1)
    _tensor("indices", indices)
    if stride1 != 1:
        raise ValueError(f"stride1: the logits' last dimension must be contiguous (stride1 == 1), got {stride1}")
    if num_rows > logits.shape[0] and stride0 == logits.stride(0):
        raise ValueError(f"num_rows: {num_rows} rows requested but logits has {logits.shape[0]}")
    if stride0 == logits.stride(0) or num_rows <= 1:
        view = logits[:num_rows]
    else:
        if stride0 < logits.shape[1]:
            raise ValueError(f"stride0: row pitch {stride0} is below the logits width {logits.shape[1]}")
        view = logits.as_strided((num_rows, logits.shape[1]), (stride0, 1))
    if indices.dim() != 2 or indices.shape[0] < num_rows or indices.shape[1] < top_k:
        raise ValueError(f"indices: expected an int32 tensor of at least ({num_rows}, {top_k}), got shape "
                         f"{tuple(indices.shape)}")
    return view, indices[:num_rows, :top_k]


def top_k_per_row_decode(logits: torch.Tensor, next_n: int, seq_lens: torch.Tensor, indices: torch.Tensor,
                         num_rows: int, stride0: int, stride1: int, top_k: int, *,
                         workspace: Optional[Workspace] = None) -> None:
    """vLLM's ``torch.ops._C.top_k_per_row_decode(logits, next_n, seq_lens, indices, num_rows, stride0,
    stride1, top_k)``.

    Row r (of num_rows; logits row r starts stride0 elements after row r - 1, stride1 must be 1) is
    draft token r % next_n of request r // next_n and selects among its first
    seq_lens[r // next_n] - next_n + (r % next_n) + 1 columns (clamped to [0, width]).
    seq_lens: int32, one entry per request (num_rows / next_n of them; any shape, flattened by a view).
    indices: int32, at least [num_rows, top_k]; indices[:num_rows, :top_k] is written in place (vLLM
    writes with a pitch of top_k whatever the tensor's stride; here the tensor's own strides are used).
    Returns None (as vLLM's op): column indices in ascending order, then -1.
    """
    view, out = _vllm_rows(logits, num_rows, stride0, stride1, indices, top_k)
    _int("next_n", next_n, 1)
    _tensor("seq_lens", seq_lens)
    if seq_lens.numel() * next_n != num_rows:
        raise ValueError(f"seq_lens: {seq_lens.numel()} entries x next_n={next_n} != num_rows={num_rows}: give one "
                         "length per request (for per-row lengths pass next_n=1)")
    if num_rows == 0:
        return None
    ops.top_k_per_row_decode(view, seq_lens.reshape(-1), next_n, top_k, out=out, workspace=_workspace(workspace))
    return None


def top_k_per_row_prefill(logits: torch.Tensor, row_starts: torch.Tensor, row_ends: torch.Tensor,
                          indices: torch.Tensor, num_rows: int, stride0: int, stride1: int, top_k: int, *,
                          workspace: Optional[Workspace] = None) -> None:
    """vLLM's ``torch.ops._C.top_k_per_row_prefill(logits, row_starts, row_ends, indices, num_rows, stride0,
    stride1, top_k)``.

    Row r selects among columns [row_starts[r], row_ends[r]) (int32 [num_rows], clamped to
    [0, width]); the written indices are relative to row_starts[r], as vLLM's. indices: int32, at least
    [num_rows, top_k], written in place. Returns None: ascending relative indices, then -1.
    """
    view, out = _vllm_rows(logits, num_rows, stride0, stride1, indices, top_k)
    _tensor("row_starts", row_starts)
    _tensor("row_ends", row_ends)
    if num_rows == 0:
        return None
    ops.top_k_per_row_prefill(view, row_starts[:num_rows], row_ends[:num_rows], top_k, out=out,
                              workspace=_workspace(workspace))
    return None


# ----------------------------------------------------------------------------------------------------
# SGLang, DeepSeek-V3.2 (sgl_kernel.top_k)
# ----------------------------------------------------------------------------------------------------
def fast_topk_v2(score: torch.Tensor, lengths: torch.Tensor, topk: int, row_starts: Optional[torch.Tensor] = None,
                 *, workspace: Optional[Workspace] = None) -> torch.Tensor:
    """SGLang's ``sgl_kernel.fast_topk_v2(score, lengths, topk, row_starts=None)``.

    Row b selects among score[b, ks : ks + lengths[b]] (ks = row_starts[b], 0 without row_starts);
    indices are relative to ks. lengths/row_starts: int32 [B]. Returns a new int32 [B, topk] tensor:
    ascending indices, then -1 (SGLang asserts topk == 2048; any topk here).
    """
    return ops.top_k_per_row(score, lengths, topk, row_starts=row_starts, workspace=workspace)


def fast_topk_transform_fused(score: torch.Tensor, lengths: torch.Tensor, page_table_size_1: torch.Tensor,
                              cu_seqlens_q: torch.Tensor, topk: int, row_starts: Optional[torch.Tensor] = None,
                              *, workspace: Optional[Workspace] = None) -> torch.Tensor:
    """SGLang's ``sgl_kernel.fast_topk_transform_fused(score, lengths, page_table_size_1, cu_seqlens_q, topk,
    row_starts=None)``: top-k, then each index idx written as page_table_size_1[t, idx] (page size 1).

    Args:
        score: [B, L] logits, one row per query token.
        lengths, row_starts: int32 [B]: row b's window is [ks, ks + lengths[b]), ks = row_starts[b]
            (0 without); idx is relative to ks and looks up table entry idx (not ks + idx), as SGLang.
        page_table_size_1: int32 [bs, entries] token-level page table, one row per request.
        cu_seqlens_q: int32 [bs + 1] cumulative query tokens per request: row b belongs to request t with
            cu_seqlens_q[t] <= b < cu_seqlens_q[t + 1]. When row_starts is None and bs == B (SGLang's
            decode kernel) t = b and cu_seqlens_q is not read; otherwise t comes from one
            torch.searchsorted (capturable, no host sync). A row in no request's range gets -1
            everywhere (SGLang reads an unset table pointer there).
    Returns:
        A new int32 [B, topk] tensor of table entries, in ascending order of idx, then -1; an idx past the
        table's width gives -1.
    """
    ops._check_logits(score)
    _tensor("page_table_size_1", page_table_size_1)
    _tensor("cu_seqlens_q", cu_seqlens_q)
    if page_table_size_1.dim() != 2:
        raise ValueError(f"page_table_size_1: expected a 2-D [batch, entries] tensor, got shape "
                         f"{tuple(page_table_size_1.shape)}")
    if cu_seqlens_q.dim() != 1 or cu_seqlens_q.numel() < 1:
        raise ValueError(f"cu_seqlens_q: expected a 1-D [batch + 1] tensor, got shape {tuple(cu_seqlens_q.shape)}")
    rows = score.shape[0]
    batch = cu_seqlens_q.numel() - 1
    if page_table_size_1.shape[0] != batch:
        raise ValueError(f"page_table_size_1: expected {batch} rows (len(cu_seqlens_q) - 1), got "
                         f"{page_table_size_1.shape[0]}")
    if batch > rows:
        raise ValueError(f"cu_seqlens_q: {batch} requests but only {rows} score rows")
    row_to_table = None
    if row_starts is not None or batch != rows:
        if cu_seqlens_q.device != score.device:
            raise ValueError(f"cu_seqlens_q: expected a tensor on {score.device}, got {cu_seqlens_q.device}")
        positions = torch.arange(rows, dtype=cu_seqlens_q.dtype, device=score.device)
        row_to_table = torch.searchsorted(cu_seqlens_q, positions, right=True, out_int32=True) - 1
    return ops.top_k_page_table_transform(score, lengths, page_table_size_1, 1, topk, row_starts=row_starts,
                                          row_to_table=row_to_table, workspace=workspace)


def fast_topk_transform_ragged_fused(score: torch.Tensor, lengths: torch.Tensor, topk_indices_offset: torch.Tensor,
                                     topk: int, row_starts: Optional[torch.Tensor] = None, *,
                                     workspace: Optional[Workspace] = None) -> torch.Tensor:
    """SGLang's ``sgl_kernel.fast_topk_transform_ragged_fused(score, lengths, topk_indices_offset, topk,
    row_starts=None)``: idx (relative to row_starts[b]) written as idx + topk_indices_offset[b].
    Returns a new int32 [B, topk] tensor, ascending, then -1 (the padding gets no offset)."""
    return ops.top_k_ragged_transform(score, lengths, topk_indices_offset, topk, row_starts=row_starts,
                                      workspace=workspace)


# ----------------------------------------------------------------------------------------------------
# SGLang, DeepSeek-V4 (sglang.kernels.jit deepseek_v4 top-k)
# ----------------------------------------------------------------------------------------------------
def _check_paged(page_tables, out_page_indices, page_size, out_raw_indices):
    """k (the output width), after SGLang's own argument rules."""
    k = _out_columns("out_page_indices", out_page_indices)
    _power_of_two("page_size", page_size)
    if page_tables is None and out_raw_indices is not None:
        raise ValueError("out_raw_indices: requires a page table (without one, out_page_indices holds the raw indices)")
    return k


def _paged(scores, seq_lens, page_tables, out_page_indices, page_size, out_raw_indices, plan, workspace):
    k = _check_paged(page_tables, out_page_indices, page_size, out_raw_indices)
    if page_tables is None:
        ops.top_k_per_row(scores, seq_lens, k, out=out_page_indices, plan=plan, workspace=workspace)
    else:
        ops.top_k_page_table_transform(scores, seq_lens, page_tables, page_size, k, raw_indices=out_raw_indices,
                                       out=out_page_indices, plan=plan, workspace=workspace)


def topk_transform_512(scores: torch.Tensor, seq_lens: torch.Tensor, page_tables: torch.Tensor,
                       out_page_indices: torch.Tensor, page_size: int, out_raw_indices: Optional[torch.Tensor] = None,
                       *, workspace: Optional[Workspace] = None) -> None:
    """SGLang's DeepSeek-V4 ``topk_transform_512(scores, seq_lens, page_tables, out_page_indices, page_size,
    out_raw_indices=None)`` (``topk_transform_paged`` / ``deepseek_v4_topk_transform_512``).

    Row b selects k = out_page_indices.shape[1] of its first seq_lens[b] scores (int32 [B], clamped to
    [0, width]; SGLang requires them non-negative) and writes each index idx to out_page_indices as
    page_tables[b, idx // page_size] * page_size + idx % page_size (page_tables: int32 [B, pages];
    page_size: a power of two, else ValueError, as SGLang); -1 padding, and -1 for an idx whose page
    lies past the table's width. out_raw_indices (optional, int32 [B, k]) also receives the bare indices.
    Without page_tables (None) out_page_indices receives the bare indices.
    Returns None; both outputs in ascending order of idx.
    """
    _paged(scores, seq_lens, page_tables, out_page_indices, page_size, out_raw_indices, None, workspace)
    return None


class TopKV2Metadata:
    """What :func:`plan_topk_v2` returns in place of SGLang's (B + 1, 2) routing tensor.

    Our plan (make_plan) is keyed by (rows, stride, k), and plan_topk_v2 knows neither the score width
    nor k. So the plan is made lazily: the first :func:`topk_transform_paged_v2` call handed this object
    runs make_plan (one small capturable kernel, no host sync) on ``seq_lens`` for that call's
    (rows, width, k), and every later call of the same shape reuses it: one kernel launch per call, as
    SGLang's planned kernel. A call of another shape re-plans. Inside CUDA-graph capture the plan kernel
    is captured with the first call, so every replay re-plans from the live seq_lens. Without a
    ``workspace`` a CUDA plan gets a small buffer of its own, which cannot be allocated during graph
    capture: there the call plans itself instead (two launches, same result). A plan whose lengths went
    stale is still exact (SPEC §5); ``status()`` reads whether that happened (one host sync).
    """

    def __init__(self, seq_lens: torch.Tensor, static_threshold: int = -1, out: Optional[torch.Tensor] = None,
                 workspace: Optional[Workspace] = None):
        self.seq_lens = seq_lens
        self.static_threshold = static_threshold
        self.out = out
        self.workspace = workspace
        self._key = None
        self._plan: Optional[TopKPlan] = None

    def plan_for(self, scores: torch.Tensor, k: int) -> Optional[TopKPlan]:
        """The plan for a call on these scores with this k (made now if there is none yet)."""
        rows, stride = scores.shape
        key = (rows, stride, k, scores.device)
        plan = self._plan
        if plan is not None and self._key == key and (
                plan.workspace is None or plan.workspace.plan_generation == plan.generation):
            return plan
        if rows == 0 or self.seq_lens.numel() != rows or self.seq_lens.device != scores.device:
            return None  # the op itself names whatever is wrong with seq_lens
        ws = self.workspace
        if scores.device.type == "cuda" and ws is None and torch.cuda.is_current_stream_capturing():
            return None
        self._plan = make_plan(self.seq_lens, stride, k, workspace=ws)
        self._key = key
        return self._plan

    def status(self) -> Optional[int]:
        """The current plan's status (plan.FRESH or plan.STALE; one host sync), or None if none was made."""
        return None if self._plan is None else self._plan.status()


def plan_topk_v2(seq_lens: torch.Tensor, static_threshold: int = -1, *, out: Optional[torch.Tensor] = None,
                 workspace: Optional[Workspace] = None) -> TopKV2Metadata:
    """SGLang's DeepSeek-V4 ``plan_topk_v2(seq_lens, static_threshold=-1, *, out=None)``.

    Returns a :class:`TopKV2Metadata` to pass as ``metadata`` to :func:`topk_transform_paged_v2`; no work
    is launched here (the plan is made at the first transform call, see TopKV2Metadata).
    static_threshold (SGLang's cluster-routing threshold) is ignored: our kernel picks each row's path
    from its real length. ``out`` (SGLang's preallocated (B + 1, 2) int32 buffer) is accepted and not
    written. ``workspace`` (ours, optional) holds the plan, which makes the lazy plan capturable.
    """
    _tensor("seq_lens", seq_lens)
    if seq_lens.dim() != 1 or seq_lens.dtype != torch.int32:
        raise TypeError(f"seq_lens: expected a 1-D int32 tensor, got {seq_lens.dim()}-D {seq_lens.dtype}")
    _int("static_threshold", static_threshold, -(1 << 62))
    if out is not None:
        _tensor("out", out)
    return TopKV2Metadata(seq_lens, static_threshold, out, _workspace(workspace))


def topk_transform_paged_v2(scores: torch.Tensor, seq_lens: torch.Tensor, page_tables: Optional[torch.Tensor],
                            out_page_indices: torch.Tensor, page_size: int, metadata,
                            out_raw_indices: Optional[torch.Tensor] = None, *,
                            workspace: Optional[Workspace] = None) -> None:
    """SGLang's DeepSeek-V4 ``topk_transform_paged_v2(scores, seq_lens, page_tables, out_page_indices,
    page_size, metadata, out_raw_indices=None)``: :func:`topk_transform_512`, planned.

    metadata: the :class:`TopKV2Metadata` from :func:`plan_topk_v2`; its plan is used (the call is one
    kernel launch). Any other value (e.g. SGLang's own metadata tensor) is accepted and ignored: the call
    then plans itself. Results never depend on the plan. page_tables None: out_page_indices receives the
    bare indices; with out_raw_indices (needs page_tables) both. Returns None.
    """
    plan = None
    if isinstance(metadata, TopKV2Metadata):
        ops._check_logits(scores)
        k = _check_paged(page_tables, out_page_indices, page_size, out_raw_indices)
        _int("k", k, 1)
        plan = metadata.plan_for(scores, k)
        if workspace is None:
            workspace = metadata.workspace
    _paged(scores, seq_lens, page_tables, out_page_indices, page_size, out_raw_indices, plan, workspace)
    return None


# ----------------------------------------------------------------------------------------------------
# FlashInfer (flashinfer.topk, flashinfer.topk_varlen)
# ----------------------------------------------------------------------------------------------------
class TopKTieBreak:
    """FlashInfer's tie-break values (flashinfer.topk.TopKTieBreak is an IntEnum with the same values)."""
    NONE = 0   # no explicit rule: served by ours (the lowest index wins)
    SMALL = 1  # prefer smaller indices: exactly ours
    LARGE = 2  # prefer larger indices: not supported yet


def _check_tie_break(tie_break, deterministic, dsa_graph_safe):
    for name, flag in (("deterministic", deterministic), ("dsa_graph_safe", dsa_graph_safe)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name}: expected a bool, got {type(flag).__name__}")
    if isinstance(tie_break, bool) or not isinstance(tie_break, int):
        raise TypeError(f"tie_break: expected an int (0 none, 1 smaller indices, 2 larger indices), got "
                        f"{type(tie_break).__name__}")
    if int(tie_break) == TopKTieBreak.LARGE:
        raise NotImplementedError("tie_break=2 (prefer larger indices) is not supported by persistent_topk yet: its "
                                  "kernel breaks ties by the lowest index (tie_break=0 and tie_break=1 are both "
                                  "served exactly)")
    if int(tie_break) not in (TopKTieBreak.NONE, TopKTieBreak.SMALL):
        raise ValueError(f"tie_break: expected 0, 1 or 2, got {int(tie_break)}")


def top_k_page_table_transform(input: torch.Tensor, src_page_table: torch.Tensor, lengths: torch.Tensor, k: int,
                               row_to_batch: Optional[torch.Tensor] = None, deterministic: bool = False,
                               tie_break: int = TopKTieBreak.NONE, dsa_graph_safe: bool = False,
                               row_starts: Optional[torch.Tensor] = None,
                               page_table_row_starts: Optional[torch.Tensor] = None, *, page_size: int = 1,
                               out: Optional[torch.Tensor] = None, out_raw_indices: Optional[torch.Tensor] = None,
                               workspace: Optional[Workspace] = None) -> torch.Tensor:
    """FlashInfer's ``flashinfer.top_k_page_table_transform`` (same arguments).

    Row i selects among input[i, rs : rs + lengths[i]] (rs = row_starts[i], 0 without); a selected idx
    (relative to rs) is written as

        src_page_table[b, ps + idx // page_size] * page_size + idx % page_size

    with b = row_to_batch[i] (i without) and ps = page_table_row_starts[i]. As FlashInfer, ps defaults
    to row_starts[i] when page_size == 1 (0 without row_starts), and page_size > 1 with row_starts
    requires page_table_row_starts (ValueError); page_size must be a power of two <= 2**30. An entry
    outside the table (b or the entry out of range) gives -1.
    deterministic and dsa_graph_safe always hold here (accepted, no effect). tie_break: 0 and 1 are both
    exactly our lowest-index rule; 2 raises NotImplementedError.
    out / out_raw_indices: optional int32 [rows, k] outputs (rows may be strided).
    Returns out (a new int32 [rows, k] tensor without one): ascending order of idx, then -1.
    """
    _check_tie_break(tie_break, deterministic, dsa_graph_safe)
    _power_of_two("page_size", page_size, 1 << 30)
    if page_size != 1 and row_starts is not None and page_table_row_starts is None:
        raise ValueError("page_table_row_starts: required with page_size > 1 and row_starts (the two starts "
                         "count different units)")
    if page_table_row_starts is None and page_size == 1:
        page_table_row_starts = row_starts
    return ops.top_k_page_table_transform(input, lengths, src_page_table, page_size, k, row_starts=row_starts,
                                          row_to_table=row_to_batch, page_table_starts=page_table_row_starts,
                                          raw_indices=out_raw_indices, out=out, workspace=workspace)


def top_k_ragged_transform(input: torch.Tensor, offsets: torch.Tensor, lengths: torch.Tensor, k: int,
                           deterministic: bool = False, tie_break: int = TopKTieBreak.NONE,
                           dsa_graph_safe: bool = False, row_starts: Optional[torch.Tensor] = None, *,
                           workspace: Optional[Workspace] = None) -> torch.Tensor:
    """FlashInfer's ``flashinfer.top_k_ragged_transform(input, offsets, lengths, k, deterministic=False,
    tie_break=0, dsa_graph_safe=False, row_starts=None)``.

    Row i selects among input[i, rs : rs + lengths[i]] (rs = row_starts[i], 0 without); a selected idx
    (relative to rs) is written as idx + offsets[i]; -1 padding (no offset). Flags as
    :func:`top_k_page_table_transform`. Returns a new int32 [rows, k] tensor, ascending order.
    """
    _check_tie_break(tie_break, deterministic, dsa_graph_safe)
    return ops.top_k_ragged_transform(input, lengths, offsets, k, row_starts=row_starts, workspace=workspace)


def top_k_varlen(logits: torch.Tensor, seq_lens: torch.Tensor, top_k: int, pre_idx: Optional[torch.Tensor] = None,
                 compress_ratio: int = 1, next_n: int = 1, return_values: bool = False,
                 out_indices: Optional[torch.Tensor] = None, out_values: Optional[torch.Tensor] = None,
                 backend: str = "auto", load_balance: bool = True, workspace=None,
                 approx_ties: bool = False) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """FlashInfer's ``flashinfer.top_k_varlen`` (same arguments).

    logits: [num_rows, N] with num_rows = len(seq_lens) * next_n; seq_lens: int32 [num_rows // next_n],
    each request's KV length in raw tokens. Row r (draft token nn = r % next_n of request
    b = r // next_n) selects among its first

        (seq_lens[b] - next_n + nn + 1) // compress_ratio      (clamped to [0, N])

    columns, as FlashInfer derives them. compress_ratio == 1 is one top_k_per_row_decode call; otherwise
    the row lengths are computed by a few elementwise torch ops first.
    Returns (indices, values): indices int32 [num_rows, top_k] (out_indices if given), ascending, then
    -1; values (logits.dtype, in the same order; out_values if given) only with return_values=True,
    else None. Padding values are -inf (FlashInfer's masked backend writes 0 there).
    pre_idx (a GVR hint), backend, load_balance and approx_ties are accepted and ignored: the one exact
    kernel serves every case (an exact result satisfies approx_ties=True too). workspace: a
    persistent_topk.Workspace is used; FlashInfer's dict of GVR buffers is ignored.
    """
    ops._check_logits(logits)
    _tensor("seq_lens", seq_lens)
    _int("top_k", top_k, 1)
    _int("compress_ratio", compress_ratio, 1)
    _int("next_n", next_n, 1)
    if not isinstance(backend, str):
        raise TypeError(f"backend: expected a str, got {type(backend).__name__}")
    if pre_idx is not None:
        _tensor("pre_idx", pre_idx)
    ws = _workspace(workspace)
    if seq_lens.dim() != 1 or seq_lens.dtype != torch.int32:
        raise TypeError(f"seq_lens: expected a 1-D int32 tensor, got {seq_lens.dim()}-D {seq_lens.dtype}")
    rows = logits.shape[0]
    if rows != seq_lens.shape[0] * next_n:
        raise ValueError(f"logits has {rows} rows but seq_lens has {seq_lens.shape[0]} entries with next_n={next_n}: "
                         "expected seq_lens.shape[0] * next_n == logits.shape[0]")
    values = out_values if return_values else None
    if return_values and values is None:
        values = torch.empty((rows, top_k), dtype=logits.dtype, device=logits.device)
    if compress_ratio == 1:
        if next_n == 1:
            indices = ops.top_k_per_row(logits, seq_lens, top_k, out=out_indices, values=values, workspace=ws)
        else:
            indices = ops.top_k_per_row_decode(logits, seq_lens, next_n, top_k, out=out_indices, values=values,
                                               workspace=ws)
    else:
        draft = torch.arange(1 - next_n, 1, dtype=torch.int32, device=seq_lens.device)
        lengths = torch.div(seq_lens.reshape(-1, 1) + draft, compress_ratio, rounding_mode="floor").reshape(-1)
        indices = ops.top_k_per_row(logits, lengths, top_k, out=out_indices, values=values, workspace=ws)
    return indices, values
