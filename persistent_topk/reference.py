"""The CPU oracle: SPEC §3 written as plain, vectorised torch.

Every GPU result is compared against this module bit for bit, so it favours obviousness over speed:
one order-preserving integer key per logit, one exact threshold per row, and the lowest-index rule for
ties at the threshold. It runs on any device torch supports, but the library calls it for CPU tensors.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

# Order-preserving keys live in int64 so that -1 can mark "not a valid column" below every real key.
INVALID_KEY = -1
_NAN_KEY = {torch.float32: 0xFFFFFFFF, torch.bfloat16: 0xFFFF, torch.float16: 0xFFFF}
SUPPORTED_DTYPES = tuple(_NAN_KEY)


def order_keys(logits: torch.Tensor) -> torch.Tensor:
    """Map floats to int64 keys whose integer order is the ranking of SPEC §3.

    Negative values have every bit flipped, non-negative ones only the sign bit, so -0.0 sorts just
    below +0.0 and -inf below every finite value; every NaN (any sign, any payload) becomes the
    largest key, above +inf, as torch.topk ranks it.
    """
    if logits.dtype == torch.float32:
        bits = logits.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
        sign = 0x80000000
    elif logits.dtype in (torch.bfloat16, torch.float16):
        bits = logits.contiguous().view(torch.int16).to(torch.int64) & 0xFFFF
        sign = 0x8000
    else:
        raise TypeError(f"logits: expected one of {SUPPORTED_DTYPES}, got {logits.dtype}")
    all_ones = 2 * sign - 1
    keys = torch.where(bits >= sign, all_ones - bits, bits | sign)
    return torch.where(torch.isnan(logits), torch.full_like(keys, _NAN_KEY[logits.dtype]), keys)


def clamp_ranges(starts: torch.Tensor, lengths: torch.Tensor, stride: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Clamp each row's window [start, start + length) to the columns [0, stride) that exist.

    Negative lengths become 0 and windows past the row end are cut, as SPEC §3 and §7 say for values
    that can only be checked on the device.
    """
    starts = starts.to(torch.int64).clamp(0, stride)
    lengths = lengths.to(torch.int64).clamp(min=0)
    lengths = torch.minimum(lengths, stride - starts)
    return starts, lengths


def decode_lengths(seq_lens: torch.Tensor, next_n: int) -> torch.Tensor:
    """Row lengths of multi-token-prediction decode (SPEC §1): row r is token r % next_n of request
    r // next_n and sees seq_lens[request] - next_n + (r % next_n) + 1 positions."""
    rows = seq_lens.numel() * next_n
    r = torch.arange(rows, device=seq_lens.device)
    lengths = seq_lens.to(torch.int64).repeat_interleave(next_n) - next_n + (r % next_n) + 1
    return lengths.clamp(min=0)


def select_rows(
    logits: torch.Tensor,
    starts: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    sorted: bool = False,
) -> torch.Tensor:
    """Indices (int64, rows x k, relative to each row's start) of SPEC §3's selection, -1 padded.

    starts/lengths must already be clamped (clamp_ranges).
    """
    rows, stride = logits.shape
    device = logits.device
    out = torch.full((rows, k), -1, dtype=torch.int64, device=device)
    if rows == 0 or stride == 0:
        return out

    columns = torch.arange(stride, device=device).expand(rows, stride)
    relative = columns - starts[:, None]
    valid = (relative >= 0) & (relative < lengths[:, None])
    keys = torch.where(valid, order_keys(logits), torch.full_like(relative, INVALID_KEY))

    # The exact threshold of each row is its m-th largest key. m == 0 only for rows without a valid
    # column, whose keys are all INVALID_KEY, so nothing there is above or at the threshold.
    m = torch.clamp(lengths, max=k)
    top = torch.topk(keys, min(k, stride), dim=1).values
    threshold = torch.where(m > 0, top.gather(1, (m - 1).clamp(min=0)[:, None]).squeeze(1), INVALID_KEY)

    above = keys > threshold[:, None]
    at = (keys == threshold[:, None]) & valid
    need = m - above.sum(dim=1)
    at_rank = torch.cumsum(at, dim=1) - at.long()  # how many equal keys come before, by column
    selected = above | (at & (at_rank < need[:, None]))

    position = torch.cumsum(selected, dim=1) - 1
    r, c = selected.nonzero(as_tuple=True)
    out[r, position[r, c]] = relative[r, c]

    if sorted:
        # Stable sort by key, descending: the ascending-index order above breaks ties by index.
        picked = torch.where(out >= 0, keys.gather(1, (out + starts[:, None]).clamp(0, stride - 1)),
                             torch.full_like(out, INVALID_KEY - 1))
        order = torch.sort(picked, dim=1, descending=True, stable=True).indices
        out = out.gather(1, order)
    return out


def gather_values(logits: torch.Tensor, starts: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """The selected logits, same order as indices; -inf where the index is -1 padding.

    Gathered as raw bits: values are the input's bits exactly, NaN payloads and signs included (CPU
    torch's gather and where on 16-bit floats may rewrite NaN bits, which the GPU kernel never does).
    """
    stride = logits.shape[1]
    bits_dtype = torch.int32 if logits.element_size() == 4 else torch.int16
    minus_inf = torch.tensor(float("-inf"), dtype=logits.dtype).view(bits_dtype).to(logits.device)
    if stride == 0:
        return minus_inf.expand(indices.shape).clone().view(logits.dtype)
    columns = (indices + starts[:, None]).clamp(0, stride - 1)
    bits = logits.view(bits_dtype).gather(1, columns)
    return torch.where(indices >= 0, bits, minus_inf).view(logits.dtype)


def page_table_transform(indices: torch.Tensor, page_table: torch.Tensor, page_size: int,
                         table_rows: Optional[torch.Tensor] = None,
                         entry_starts: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Each index idx of row r written as the KV-cache slot of its page, -1 padding kept:

        page_table[t, e] * page_size + idx % page_size,  t = table_rows[r], e = entry_starts[r] + idx // page_size

    (t = r and e = idx // page_size by default). The table-coverage rule of SPEC §2 (docs/integration.md):
    an index whose table row t or entry e lies outside the table is written as -1; nothing outside the
    table is read.
    """
    rows = indices.shape[0]
    tables, width = page_table.shape
    if table_rows is None:
        table_rows = torch.arange(rows, device=indices.device)
    table_rows = table_rows.to(torch.int64).reshape(rows, 1)
    entries = indices.clamp(min=0) // page_size
    if entry_starts is not None:
        entries = entries + entry_starts.to(torch.int64).reshape(rows, 1)
    covered = (indices >= 0) & (table_rows >= 0) & (table_rows < tables) & (entries >= 0) & (entries < width)
    if tables == 0 or width == 0:
        return torch.full_like(indices, -1)
    flat = (table_rows.clamp(0, tables - 1) * width + entries.clamp(0, width - 1)).reshape(-1)
    pages = page_table.to(torch.int64).reshape(-1)[flat].reshape(indices.shape)
    slots = (pages * page_size + indices.clamp(min=0) % page_size).to(torch.int32).to(torch.int64)  # int32 wrap
    return torch.where(covered, slots, torch.full_like(indices, -1))


def offset_transform(indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """The ragged transform: idx + offsets[r] (int32 arithmetic), -1 padding kept."""
    shifted = (indices + offsets.to(torch.int64).reshape(-1, 1)).to(torch.int32).to(torch.int64)
    return torch.where(indices >= 0, shifted, indices)


def reference_topk(
    logits: torch.Tensor,
    lengths: torch.Tensor,
    k: int,
    *,
    starts: Optional[torch.Tensor] = None,
    sorted: bool = False,
    page_table: Optional[torch.Tensor] = None,
    page_size: int = 1,
    table_rows: Optional[torch.Tensor] = None,
    entry_starts: Optional[torch.Tensor] = None,
    offsets: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(indices int32 rows x k, values logits.dtype rows x k): the whole of SPEC §3 for one call.

    Indices are relative to each row's start; with ``page_table`` they go through
    page_table_transform, with ``offsets`` through offset_transform (the bare ones are what the same
    call without either returns)."""
    rows, stride = logits.shape
    if starts is None:
        starts = torch.zeros(rows, dtype=torch.int64, device=logits.device)
    starts, lengths = clamp_ranges(starts.to(logits.device), lengths.to(logits.device), stride)
    indices = select_rows(logits, starts, lengths, k, sorted)
    values = gather_values(logits, starts, indices)
    if page_table is not None:
        indices = page_table_transform(indices, page_table.to(logits.device), page_size,
                                       None if table_rows is None else table_rows.to(logits.device),
                                       None if entry_starts is None else entry_starts.to(logits.device))
    elif offsets is not None:
        indices = offset_transform(indices, offsets.to(logits.device))
    return indices.to(torch.int32), values
