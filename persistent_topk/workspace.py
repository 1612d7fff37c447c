"""Scratch memory for the top-k kernel (SPEC §6).

A Workspace holds two zero-initialised byte buffers, both sized once from (max_rows, max_stride, k):
- ``buffer``: what the kernel shares between CTAs through global memory (the work queue's counters,
  which reset themselves by the end of every launch, so a captured CUDA graph needs no memset node),
  then the plan an op makes for itself when it is given none. (Long rows are selected by the CTAs of
  one thread-block cluster, which combine through distributed shared memory and need no scratch here.)
- ``plan_buffer``: where ``make_plan(..., workspace=ws)`` puts the decode step's plan (one at a time).
Their sizes come from the kernel's own layouts (csrc/dispatch.cuh WorkspaceLayout, csrc/plan.cuh
PlanLayout), so Python never duplicates the arithmetic.

A workspace serves one stream at a time: two launches running concurrently on one workspace would
share its counters. The default workspaces (ops called without workspace=) are one per (device, stream).
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

from . import _backend


class Workspace:
    """Scratch memory sized for calls of at most ``max_rows`` rows of ``max_stride`` columns and top-``k``.

    Args:
        device: the CUDA device the kernel runs on.
        max_rows: largest number of logits rows a call will pass.
        max_stride: largest logits width (columns per row, SPEC's "stride").
        k: largest k a call will ask for.

    ``lock()`` after CUDA-graph capture: from then on a call that needs more raises instead of
    reallocating (a reallocation would leave the captured graph pointing at freed memory).
    """

    def __init__(self, device, max_rows: int, max_stride: int, k: int = 2048):
        for name, value in (("max_rows", max_rows), ("max_stride", max_stride), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"Workspace: {name} must be an int, got {type(value).__name__}")
            if value < (1 if name == "k" else 0):
                raise ValueError(f"Workspace: {name} must be >= {1 if name == 'k' else 0}, got {value}")
        self.device = torch.device(device)
        if self.device.type != "cuda":
            raise ValueError(f"Workspace: device must be a CUDA device, got {self.device}")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.max_rows, self.max_stride, self.k = max_rows, max_stride, k
        self.locked = False
        self.plan_generation = getattr(self, "plan_generation", 0)
        # Buffers replaced by growth stay alive: a graph captured earlier may still use them.
        self.retired = getattr(self, "retired", [])
        if hasattr(self, "buffer"):
            self.retired += [self.buffer, self.plan_buffer]
        self.buffer = torch.zeros(_backend.workspace_bytes(max_rows, max_stride, k), dtype=torch.uint8,
                                  device=self.device)
        self.plan_buffer = torch.zeros(_backend.plan_bytes(max(max_rows, 1)), dtype=torch.uint8, device=self.device)

    @property
    def nbytes(self) -> int:
        return self.buffer.numel()

    def lock(self) -> "Workspace":
        """Forbid growth from now on (call after capturing the graphs that use this workspace)."""
        self.locked = True
        return self

    def fits(self, rows: int, stride: int, k: int) -> bool:
        return rows <= self.max_rows and stride <= self.max_stride and k <= self.k

    def plan_buffer_for(self, rows: int, stride: int, k: int) -> torch.Tensor:
        """The plan buffer for a plan of calls of this shape (grown first if needed, never once locked);
        every plan made in it before is overwritten."""
        self.ensure(rows, stride, k)
        self.plan_generation += 1
        return self.plan_buffer

    def ensure(self, rows: int, stride: int, k: int) -> torch.Tensor:
        """The buffer, grown first if a call of this shape needs more (never once locked). Growth never
        frees a buffer: a graph captured before may still use it."""
        if self.fits(rows, stride, k):
            return self.buffer
        need = f"rows={rows}, stride={stride}, k={k}"
        have = f"max_rows={self.max_rows}, max_stride={self.max_stride}, k={self.k}"
        if self.locked:
            raise RuntimeError(f"workspace: this call needs {need} but the locked workspace was sized for {have}; "
                               "size the Workspace for the largest call before capturing graphs")
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"workspace: this call needs {need} but the workspace was sized for {have}, and it "
                               "cannot grow during CUDA-graph capture; pass a large enough Workspace(...)")
        self.__init__(self.device, max(rows, self.max_rows), max(stride, self.max_stride), max(k, self.k))
        return self.buffer


_default: Dict[Tuple[torch.device, int], Workspace] = {}


def default_workspace(device: torch.device, rows: int, stride: int, k: int) -> Workspace:
    """The workspace of (device, current stream) used when a call passes none; grown on demand (eager
    mode only). One per stream: two streams running top-k at once never share counters."""
    device = torch.device(device)
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    key = (device, torch.cuda.current_stream(device).cuda_stream)
    ws: Optional[Workspace] = _default.get(key)
    if ws is None:
        if torch.cuda.is_current_stream_capturing():
            raise RuntimeError("workspace: no default workspace exists yet for "
                               f"{device} and none can be allocated during CUDA-graph capture; run the op once "
                               "before capture or pass workspace=Workspace(...)")
        ws = _default[key] = Workspace(device, rows, stride, k)
    ws.ensure(rows, stride, k)
    return ws
