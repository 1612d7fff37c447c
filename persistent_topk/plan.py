"""The per-decode-step plan (SPEC §5): built once from the lengths, reused by every layer.

A plan holds the clamped lengths, the rows in longest-first (LPT) order and a fingerprint of what it
was built from: row count, sum and xor of the clamped lengths (SPEC §5), plus a position-weighted sum,
since sum and xor alone cannot see two rows trading lengths, which changes the plan's order. A call handed a plan whose fingerprint
no longer matches the live lengths still computes the exact result from the live lengths, and records
STALE in the plan's status, which the caller reads later with ``plan.status()`` (one host sync).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

FRESH = 0
STALE = 1


def fingerprint(lengths: torch.Tensor, stride: int) -> torch.Tensor:
    """int64[4]: (row count, sum, xor, sum of (row + 1) * length) of the lengths clamped to [0, stride]."""
    clamped = lengths.to(torch.int64).clamp(0, stride)
    rows = torch.full((1,), clamped.numel(), dtype=torch.int64, device=lengths.device)
    xor = torch.zeros(1, dtype=torch.int64, device=lengths.device)
    if clamped.numel():
        # xor-reduce by bit counting: bit b is set iff an odd number of lengths have it.
        bits = (clamped[:, None] >> torch.arange(32, device=lengths.device)) & 1
        xor = ((bits.sum(dim=0) & 1) << torch.arange(32, device=lengths.device)).sum().reshape(1)
    weights = torch.arange(1, clamped.numel() + 1, device=lengths.device, dtype=torch.int64)
    return torch.cat([rows, clamped.sum().reshape(1), xor, (clamped * weights).sum().reshape(1)])


@dataclass
class TopKPlan:
    lengths: torch.Tensor      # int32[rows], clamped to [0, stride]
    order: torch.Tensor        # int32[rows], row ids, longest first, ties by row id
    fingerprint: torch.Tensor  # int64[4], see fingerprint()
    stride: int
    k: int
    status_flag: torch.Tensor  # int32[1], FRESH or STALE; sticky once STALE

    def status(self) -> int:
        """FRESH (0) if every call since the plan was built saw the lengths it was built from, else STALE (1)."""
        return int(self.status_flag.item())

    def check(self, live_lengths: torch.Tensor) -> None:
        """Record STALE if live_lengths differ from what the plan was built from (no host sync)."""
        live = fingerprint(live_lengths, self.stride)
        stale = (live != self.fingerprint).any().to(torch.int32)
        self.status_flag.copy_(torch.maximum(self.status_flag, stale.reshape(1)))


def make_plan(lengths: torch.Tensor, stride: int, k: int, *, workspace=None) -> TopKPlan:
    """Build the plan for one decode step's row lengths (int32[rows]) on their device, without a host sync.

    workspace is accepted for the device plan's storage (SPEC §5); this version keeps the plan in its own
    small tensors.
    """
    if not isinstance(lengths, torch.Tensor):
        raise TypeError(f"lengths: expected a torch.Tensor, got {type(lengths).__name__}")
    if lengths.dim() != 1 or lengths.dtype != torch.int32:
        raise TypeError(f"lengths: expected a 1-D int32 tensor, got {lengths.dim()}-D {lengths.dtype}")
    for name, value, low in (("stride", stride, 0), ("k", k, 1)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
        if value < low:
            raise ValueError(f"{name}: must be >= {low}, got {value}")
    clamped = lengths.to(torch.int64).clamp(0, stride)
    order = torch.sort(clamped, descending=True, stable=True).indices.to(torch.int32)
    return TopKPlan(lengths=clamped.to(torch.int32), order=order, fingerprint=fingerprint(lengths, stride),
                    stride=stride, k=k, status_flag=torch.zeros(1, dtype=torch.int32, device=lengths.device))
