"""The per-decode-step plan (SPEC §5): made once from the lengths, reused by every layer.

On CUDA, ``make_plan`` launches one small device kernel (csrc/plan.cuh) that reads the live lengths
and writes, into a plan buffer: each row's planned length, the order in which the persistent kernel
hands rows out (team rows longest first, then every other row longest first) and a status word.
No host sync, no allocation when a workspace is given, capturable in a CUDA graph. Every call handed
the plan is exactly one kernel launch. As the kernel takes each row it compares the live length with
the planned one; on a mismatch the row is still selected exactly from its live length and the status
word becomes STALE, which ``plan.status()`` reads later (one host sync).

On the CPU a plan keeps the clamped lengths and the same status; the CPU path compares them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from . import _backend

FRESH = 0
STALE = 1

# The status word's index in the plan buffer viewed as int32 (csrc/plan.cuh, PlanHeader::status).
_STATUS_WORD = 6

MODE_LENGTHS = 0   # bounds = lengths[rows]; start 0
MODE_DECODE = 1    # bounds = seq_lens[rows / next_n]; n = seq_lens[r // next_n] - next_n + r % next_n + 1
MODE_PREFILL = 2   # bounds = row_ends[rows], row_starts[rows]; n = row_ends[r] - row_starts[r]
MODE_STARTS = 3    # bounds = lengths[rows], row_starts[rows]; the window [row_starts[r], row_starts[r] + n)


@dataclass
class TopKPlan:
    """A plan for calls of ``rows`` rows of ``stride`` columns and top-``k`` on ``device``.

    Pass it as ``plan=`` to every op of the decode step. Made by :func:`make_plan`.
    """
    rows: int
    stride: int
    k: int
    device: torch.device
    buffer: Optional[torch.Tensor]          # CUDA: the plan (uint8); None on the CPU
    cpu_lengths: Optional[torch.Tensor]     # CPU: the clamped planned lengths
    cpu_status: Optional[torch.Tensor]      # CPU: int32[1]
    workspace: object = None                # the Workspace whose plan buffer holds it, if any
    generation: int = 0                     # that workspace's make_plan count when it was made

    def status(self) -> int:
        """FRESH (0) if every call since the plan was made saw the lengths it was made from, else STALE (1)."""
        if self.buffer is None:
            return int(self.cpu_status.item())
        return int(self.buffer[: 4 * (_STATUS_WORD + 1)].view(torch.int32)[_STATUS_WORD].item())

    def check_usable(self, rows: int, stride: int, k: int, device: torch.device) -> None:
        """Raise ValueError (naming ``plan``) unless this plan was made for calls of this shape."""
        if (rows, stride, k) != (self.rows, self.stride, self.k):
            raise ValueError(f"plan: made for rows={self.rows}, stride={self.stride}, k={self.k}; this call has "
                             f"rows={rows}, stride={stride}, k={k} (make one plan per decode step and shape)")
        if torch.device(device) != self.device:
            raise ValueError(f"plan: made on {self.device}, but the logits are on {device}")
        if self.workspace is not None and self.workspace.plan_generation != self.generation:
            raise ValueError("plan: its workspace's plan buffer has since been overwritten by a later make_plan "
                             "(one plan per workspace at a time)")

    def record_cpu(self, live: torch.Tensor) -> None:
        """CPU path: mark STALE if the live lengths (clamped_lengths) differ from the planned ones."""
        if self.cpu_lengths is None or not torch.equal(live.cpu(), self.cpu_lengths):
            self.cpu_status.fill_(STALE)


def _check_int(name, value, low):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    if value < low:
        raise ValueError(f"{name}: must be >= {low}, got {value}")


def make_plan(lengths: torch.Tensor, stride: int, k: int, *, workspace=None, next_n: int = 1,
              row_starts: Optional[torch.Tensor] = None, ends: bool = False) -> TopKPlan:
    """Plan one decode step's calls from the row lengths, on their device, without a host sync.

    Args:
        lengths: int32 [rows] valid columns per row (as ``top_k_per_row`` takes them). With
            ``next_n > 1`` these are decode's ``seq_lens`` [rows / next_n] instead; with ``row_starts``
            and ``ends=True`` they are prefill's ``row_ends``.
        stride: the logits width of the calls (columns per row).
        k: the calls' k.
        workspace: a :class:`Workspace` sized for the calls; the plan goes into its plan buffer (no
            allocation, so the call can be captured in a CUDA graph). One plan per workspace at a time.
            Without one, the plan gets a buffer of its own.
        next_n, row_starts, ends: the windows, as the ops take them: ``next_n`` as
            top_k_per_row_decode; ``row_starts`` as top_k_per_row(row_starts=) (lengths counted from
            the starts) or, with ``ends=True``, as top_k_per_row_prefill (row_ends).
    Returns:
        A :class:`TopKPlan` for calls of exactly this (rows, stride, k).
    """
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths: expected a torch.Tensor, got {type(lengths).__name__}")
    if lengths.dim() != 1 or lengths.dtype != torch.int32:
        raise TypeError(f"lengths: expected a 1-D int32 tensor, got {lengths.dim()}-D {lengths.dtype}")
    _check_int("stride", stride, 0)
    _check_int("k", k, 1)
    _check_int("next_n", next_n, 1)
    if not isinstance(ends, bool):
        raise TypeError(f"ends: expected a bool, got {type(ends).__name__}")
    if ends and row_starts is None:
        raise ValueError("ends: row ends need row_starts (prefill windows)")
    if row_starts is not None:
        if next_n != 1:
            raise ValueError("row_starts: prefill windows take no next_n")
        if not isinstance(row_starts, torch.Tensor) or row_starts.dtype != torch.int32 or \
                row_starts.shape != lengths.shape or row_starts.device != lengths.device:
            raise ValueError("row_starts: expected int32 [rows] on the lengths' device, one per row")
    rows = lengths.numel() * next_n
    if row_starts is not None:
        mode = MODE_PREFILL if ends else MODE_STARTS
    else:
        mode = MODE_DECODE if next_n > 1 else MODE_LENGTHS
    device = lengths.device
    if device.type != "cuda":
        return TopKPlan(rows, stride, k, device, None, clamped_lengths(lengths, stride, next_n, row_starts, mode=mode),
                        torch.zeros(1, dtype=torch.int32))
    if rows == 0:
        raise ValueError("lengths: a plan needs at least one row")
    kernels = _backend.require_cuda_kernels()
    if workspace is not None:
        if workspace.device != device:
            raise ValueError(f"workspace: lives on {workspace.device}, but lengths are on {device}")
        buffer = workspace.plan_buffer_for(rows, stride, k)
    else:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError("workspace: make_plan inside CUDA-graph capture needs workspace= (it cannot "
                               "allocate a plan buffer there)")
        buffer = torch.empty(kernels.plan_bytes(rows), dtype=torch.uint8, device=device)
    torch.ops.persistent_topk.make_plan(lengths.contiguous(), row_starts, mode, next_n, rows, stride, k, buffer)
    plan = TopKPlan(rows, stride, k, device, buffer, None, None)
    if workspace is not None:
        plan.workspace, plan.generation = workspace, workspace.plan_generation
    return plan


def clamped_lengths(bounds: torch.Tensor, stride: int, next_n: int = 1,
                    row_starts: Optional[torch.Tensor] = None, mode: Optional[int] = None) -> torch.Tensor:
    """int32 [rows]: each row's window length n, clamped as the kernel clamps it (csrc/plan.cuh,
    RowSource::window): a start in [0, stride], then n in [0, stride - start]. With row_starts the
    bounds are row ends (MODE_PREFILL, the default then) or lengths (MODE_STARTS)."""
    bounds = bounds.to(torch.int64)
    start = torch.zeros_like(bounds)
    if row_starts is not None:
        length = bounds if mode == MODE_STARTS else bounds - row_starts.to(torch.int64)
        start = row_starts.to(torch.int64).clamp(0, stride)
    elif next_n == 1:
        length = bounds
    else:
        r = torch.arange(bounds.numel() * next_n, device=bounds.device)
        length = bounds[r // next_n] - next_n + (r % next_n) + 1
        start = torch.zeros_like(length)
    return torch.minimum(length.clamp(min=0), stride - start).to(torch.int32)


# The op behind make_plan on CUDA (torch.library, so that torch.compile and graphs see it).
@torch.library.custom_op("persistent_topk::make_plan", mutates_args=("plan",))
def _make_plan_op(bounds: torch.Tensor, row_starts: Optional[torch.Tensor], window_mode: int, next_n: int, rows: int,
                  stride: int, k: int, plan: torch.Tensor) -> None:
    raise RuntimeError("persistent_topk::make_plan runs on CUDA tensors only")


@_make_plan_op.register_kernel("cuda")
def _make_plan_cuda(bounds, row_starts, window_mode, next_n, rows, stride, k, plan):
    _backend.require_cuda_kernels().make_plan(bounds, row_starts, window_mode, next_n, rows, stride, k, plan)


@_make_plan_op.register_fake
def _(bounds, row_starts, window_mode, next_n, rows, stride, k, plan):
    return None
