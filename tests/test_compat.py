"""persistent_topk.compat: the engines' call shapes, pinned against an independent brute force (CPU) and
the CUDA kernel against the CPU path, eagerly and under CUDA-graph capture + replay (GPU).

Each case builds fresh random inputs for one compat function (every logit distribution of
tests/distributions.py, garbage past each row's window, rows of length 0, negative, shorter than k and
past the width, strided outputs), calls the function argument for argument as the engine does, and
states what it must return with a plain-Python selection written here (no library code): per row the
stable sort of the window by value (NaN above +inf, -0.0 below +0.0), descending, first min(k, n),
ascending, then the engine's own mapping (page table, offsets, request lookup) and -1 padding.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Tuple

import pytest
import torch

import persistent_topk as pt
from persistent_topk import compat
from persistent_topk import plan as plan_module
from distributions import ALL, make_logits

I32 = torch.int32
POISON = 0x5EED5EED
POISON16 = 0x5EED
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
DIST_NAMES = sorted(ALL)


# ----------------------------------------------------------------------------------------------------
# Random inputs
# ----------------------------------------------------------------------------------------------------
def randint(gen, lo, hi):
    """Uniform int in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


def pick(gen, options):
    return options[randint(gen, 0, len(options) - 1)]


def sizes(gen, big):
    """(width, k): small enough for the brute force on the CPU; across the kernel's paths on the GPU."""
    if big:
        return pick(gen, [300, 6_000, 40_000]), pick(gen, [64, 512, 2048])
    return randint(gen, 1, 300), pick(gen, [1, 5, 32, 100])


def rand_lengths(gen, count, width, k):
    """int32 lengths mixing 0, negative, < k, == k, k + 1, the width, past the width and uniform ones."""
    opts = [0, -5, max(k // 2, 1), k, k + 1, width, width + 7]
    out = []
    for _ in range(count):
        c = randint(gen, 0, len(opts))
        out.append(opts[c] if c < len(opts) else randint(gen, 0, width))
    return torch.tensor(out, dtype=I32)


def rand_logits(gen, rows, width, dist, dtype=None):
    return make_logits(dist, rows, width, dtype or pick(gen, DTYPES), gen)


def with_garbage(x, starts, lengths, gen):
    """x with NaN/+inf everywhere outside each row's window [starts[r], starts[r] + lengths[r])."""
    rows, width = x.shape
    col = torch.arange(width)
    s = starts.long().reshape(-1).clamp(0, width)[:, None]
    n = lengths.long().reshape(-1).clamp(min=0)[:, None]
    inside = (col[None, :] >= s) & (col[None, :] < s + n)
    garbage = torch.where(torch.rand(x.shape, generator=gen) < 0.5, float("nan"), float("inf")).to(x.dtype)
    return torch.where(inside, x, garbage)


# ----------------------------------------------------------------------------------------------------
# The brute force (plain Python)
# ----------------------------------------------------------------------------------------------------
def rank(x: float):
    """Total order of SPEC §3: every NaN above +inf, -0.0 just below +0.0."""
    if math.isnan(x):
        return (2, 0.0, 0)
    return (1, x, 0 if math.copysign(1.0, x) < 0 else 1)


def window(width, start, length):
    s = min(max(int(start), 0), width)
    return s, min(max(int(length), 0), width - s)


def brute_select(logits, starts, lengths, k) -> List[List[int]]:
    """Per row: the selected indices relative to the window start, ascending (ties: lowest index)."""
    rows, width = logits.shape
    out = []
    for r in range(rows):
        s, n = window(width, starts[r], lengths[r])
        vals = logits[r, s:s + n].float().tolist()
        best = sorted(range(n), key=lambda i: rank(vals[i]), reverse=True)[:k]  # stable: lower index first
        out.append(sorted(best))
    return out


def padded(selected, k, mapping=lambda r, i: i) -> torch.Tensor:
    out = torch.full((len(selected), k), -1, dtype=torch.int64)
    for r, idx in enumerate(selected):
        for j, i in enumerate(idx):
            out[r, j] = mapping(r, i)
    return out.to(I32)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.view(torch.int32 if t.element_size() == 4 else torch.int16)


def value_bits(logits, starts, selected, k) -> torch.Tensor:
    """The selected logits' raw bits in the order of the indices, -inf bits at padding."""
    raw = bits(logits)
    out = bits(torch.full((len(selected), k), float("-inf"), dtype=logits.dtype)).clone()
    for r, idx in enumerate(selected):
        for j, i in enumerate(idx):
            out[r, j] = raw[r, int(starts[r]) + i]
    return out


# ----------------------------------------------------------------------------------------------------
# Cases: one compat function each, called exactly as the engine calls it
# ----------------------------------------------------------------------------------------------------
@dataclass
class Case:
    inputs: Dict[str, object]
    call: Callable     # (inputs, workspace or None) -> list of integer tensors (values viewed as bits)
    expect: Callable   # (inputs) -> the same list, from the brute force
    vary: Callable     # (gen) -> {name: new CPU tensor} for the length-like inputs
    dims: Tuple[int, int, int]  # (rows, stride, k) for a Workspace


def ws_kw(ws):
    return {} if ws is None else {"workspace": ws}


def case_vllm_persistent_topk(gen, big, dist):
    width, k = sizes(gen, big)
    batch, next_n = randint(gen, 1, 6), pick(gen, [1, 1, 2, 4])
    rows = batch * next_n
    shape = pick(gen, [(rows,), (batch, next_n)] if next_n > 1 else [(rows,), (rows, 1)])
    max_seq_len = pick(gen, [width, width + 50, max(width // 2, 1), k, 0])
    bound = max(min(max_seq_len, width), 0)
    lengths = rand_lengths(gen, rows, width, k).reshape(shape)
    logits = with_garbage(rand_logits(gen, rows, width, dist), torch.zeros(rows), lengths.clamp(max=bound), gen)
    pad = pick(gen, [0, 5])

    def call(inp, ws):
        out = inp["output"][:, :k]
        ret = compat.persistent_topk(inp["logits"], inp["lengths"], out, inp["scratch"] if ws is None else ws, k,
                                     max_seq_len)
        assert ret is None
        return [inp["output"]]

    def expect(inp):
        want = torch.full((rows, k + pad), POISON, dtype=I32)
        lens = inp["lengths"].reshape(-1).clamp(max=bound)
        want[:, :k] = padded(brute_select(inp["logits"], [0] * rows, lens, k), k)
        return [want]

    inputs = dict(logits=logits, lengths=lengths, output=torch.full((rows, k + pad), POISON, dtype=I32),
                  scratch=torch.zeros(1024, dtype=torch.uint8))
    return Case(inputs, call, expect, lambda g: {"lengths": rand_lengths(g, rows, width, k).reshape(shape)},
                (rows, width, k))


def _vllm_logits(gen, rows, width, dist, row_lens):
    """A [rows + extra, pitch] buffer and how to view it: as vLLM's logits tensor with stride0 == pitch
    ("view"), or as a contiguous [rows, width] tensor whose stride0 argument says pitch ("stride0")."""
    pitch = width + pick(gen, [0, 3, 16])
    extra = pick(gen, [0, 1])
    base = with_garbage(rand_logits(gen, rows + extra, pitch, dist), torch.zeros(rows + extra),
                        torch.cat([row_lens.clamp(max=width), torch.zeros(extra, dtype=I32)]), gen)
    form = pick(gen, ["view", "stride0"])

    def view(b):
        if form == "view":
            return b[:, :width]
        return b.reshape(-1)[: rows * width].view(rows, width)

    return base, pitch, view


def case_vllm_top_k_per_row_decode(gen, big, dist):
    width, k = sizes(gen, big)
    batch, next_n = randint(gen, 1, 6), pick(gen, [1, 2, 3])
    rows = batch * next_n
    seq_lens = rand_lengths(gen, batch, width, k)

    def row_lengths(sl):
        return torch.tensor([int(sl[r // next_n]) - next_n + r % next_n + 1 for r in range(rows)], dtype=I32)

    base, pitch, view = _vllm_logits(gen, rows, width, dist, row_lengths(seq_lens))
    pad_rows, pad_cols = pick(gen, [0, 2]), pick(gen, [0, 3])

    def call(inp, ws):
        ret = compat.top_k_per_row_decode(view(inp["base"]), next_n, inp["seq_lens"], inp["indices"], rows, pitch, 1,
                                          k, **ws_kw(ws))
        assert ret is None
        return [inp["indices"]]

    def expect(inp):
        want = torch.full((rows + pad_rows, k + pad_cols), POISON, dtype=I32)
        sel = brute_select(inp["base"][:rows, :width], [0] * rows, row_lengths(inp["seq_lens"]), k)
        want[:rows, :k] = padded(sel, k)
        return [want]

    inputs = dict(base=base, seq_lens=seq_lens, indices=torch.full((rows + pad_rows, k + pad_cols), POISON, dtype=I32))
    return Case(inputs, call, expect, lambda g: {"seq_lens": rand_lengths(g, batch, width, k)}, (rows, width, k))


def case_vllm_top_k_per_row_prefill(gen, big, dist):
    width, k = sizes(gen, big)
    rows = randint(gen, 1, 10)

    def ends_for(starts, g):
        return starts + rand_lengths(g, rows, width, k)

    starts = torch.tensor([randint(gen, 0, width) for _ in range(rows)], dtype=I32)
    ends = ends_for(starts, gen)
    pitch = width + pick(gen, [0, 8])
    base = with_garbage(rand_logits(gen, rows, pitch, dist), starts, (ends - starts).clamp(min=0), gen)
    pad_cols = pick(gen, [0, 4])

    def call(inp, ws):
        ret = compat.top_k_per_row_prefill(inp["base"][:, :width], inp["row_starts"], inp["row_ends"], inp["indices"],
                                           rows, pitch, 1, k, **ws_kw(ws))
        assert ret is None
        return [inp["indices"]]

    def expect(inp):
        want = torch.full((rows, k + pad_cols), POISON, dtype=I32)
        s, e = inp["row_starts"], inp["row_ends"]
        want[:, :k] = padded(brute_select(inp["base"][:, :width], s, e - s, k), k)
        return [want]

    inputs = dict(base=base, row_starts=starts, row_ends=ends,
                  indices=torch.full((rows, k + pad_cols), POISON, dtype=I32))
    return Case(inputs, call, expect, lambda g: {"row_ends": ends_for(inputs["row_starts"], g)}, (rows, width, k))


def case_sglang_fast_topk_v2(gen, big, dist):
    width, k = sizes(gen, big)
    rows = randint(gen, 1, 10)
    with_starts = pick(gen, [False, True])
    starts = torch.tensor([randint(gen, 0, width) for _ in range(rows)], dtype=I32) if with_starts else None
    lengths = rand_lengths(gen, rows, width, k)
    zero = torch.zeros(rows, dtype=I32)
    logits = with_garbage(rand_logits(gen, rows, width, dist), zero if starts is None else starts, lengths, gen)

    def call(inp, ws):
        args = (inp["logits"], inp["lengths"], k) + (() if starts is None else (inp["row_starts"],))
        out = compat.fast_topk_v2(*args, **ws_kw(ws))
        assert out.dtype == I32 and out.shape == (rows, k)
        return [out]

    def expect(inp):
        s = zero if starts is None else inp["row_starts"]
        return [padded(brute_select(inp["logits"], s, inp["lengths"], k), k)]

    inputs = dict(logits=logits, lengths=lengths, row_starts=starts)
    return Case(inputs, call, expect, lambda g: {"lengths": rand_lengths(g, rows, width, k)}, (rows, width, k))


def case_sglang_fast_topk_transform_fused(gen, big, dist):
    width, k = sizes(gen, big)
    mode = pick(gen, ["decode", "verify", "extend"])
    if mode == "decode":
        batch = rows = randint(gen, 1, 8)
        cu = torch.arange(rows + 1, dtype=I32) * pick(gen, [1, 0])  # not read in decode
    else:
        batch = randint(gen, 1, 5)
        q = torch.tensor([randint(gen, 0, 3) for _ in range(batch)], dtype=I32)
        cu = torch.cat([torch.zeros(1, dtype=I32), torch.cumsum(q, 0).to(I32)])
        rows = max(int(cu[-1]) + pick(gen, [0, 1]), batch)  # rows past cu[-1] belong to no request
    starts = torch.tensor([randint(gen, 0, width) for _ in range(rows)], dtype=I32) if mode == "extend" else None
    lengths = rand_lengths(gen, rows, width, k)
    logits = with_garbage(rand_logits(gen, rows, width, dist), torch.zeros(rows) if starts is None else starts,
                          lengths, gen)
    entries = max(1, pick(gen, [width, width // 2 + 1, width + 5]))
    table = torch.randint(0, 1 << 20, (batch, entries), generator=gen).to(I32)

    def request_of(r, c):
        if starts is None and batch == rows:
            return r  # SGLang's decode kernel: one table row per score row, cu_seqlens_q unread
        for i in range(batch):
            if int(c[i]) <= r < int(c[i + 1]):
                return i
        return -1

    def call(inp, ws):
        args = (inp["logits"], inp["lengths"], inp["table"], inp["cu"], k)
        args += () if starts is None else (inp["row_starts"],)
        out = compat.fast_topk_transform_fused(*args, **ws_kw(ws))
        assert out.dtype == I32 and out.shape == (rows, k)
        return [out]

    def expect(inp):
        s = torch.zeros(rows, dtype=I32) if starts is None else inp["row_starts"]
        sel = brute_select(inp["logits"], s, inp["lengths"], k)

        def mapping(r, i):
            t = request_of(r, inp["cu"])
            return int(inp["table"][t, i]) if 0 <= t < batch and i < entries else -1

        return [padded(sel, k, mapping)]

    inputs = dict(logits=logits, lengths=lengths, table=table, cu=cu, row_starts=starts)
    return Case(inputs, call, expect, lambda g: {"lengths": rand_lengths(g, rows, width, k)}, (rows, width, k))


def ragged_inputs(gen, big, dist):
    """(width, k, rows, starts or None, zero starts, lengths, offsets, logits) of a ragged-transform case."""
    width, k = sizes(gen, big)
    rows = randint(gen, 1, 10)
    starts = torch.tensor([randint(gen, 0, width) for _ in range(rows)], dtype=I32) if pick(gen, [0, 1]) else None
    lengths = rand_lengths(gen, rows, width, k)
    offsets = torch.randint(0, 1 << 20, (rows,), generator=gen).to(I32)
    zero = torch.zeros(rows, dtype=I32)
    logits = with_garbage(rand_logits(gen, rows, width, dist), zero if starts is None else starts, lengths, gen)
    return width, k, rows, starts, zero, lengths, offsets, logits


def case_sglang_fast_topk_transform_ragged_fused(gen, big, dist):
    width, k, rows, starts, zero, lengths, offsets, logits = ragged_inputs(gen, big, dist)

    def call(inp, ws):
        args = (inp["logits"], inp["lengths"], inp["offsets"], k) + (() if starts is None else (inp["row_starts"],))
        return [compat.fast_topk_transform_ragged_fused(*args, **ws_kw(ws))]

    def expect(inp):
        sel = brute_select(inp["logits"], zero if starts is None else inp["row_starts"], inp["lengths"], k)
        return [padded(sel, k, lambda r, i: i + int(inp["offsets"][r]))]

    inputs = dict(logits=logits, lengths=lengths, offsets=offsets, row_starts=starts)
    return Case(inputs, call, expect, lambda g: {"lengths": rand_lengths(g, rows, width, k)}, (rows, width, k))


def _v4_inputs(gen, big, dist):
    width, k = sizes(gen, big)
    rows = randint(gen, 1, 10)
    page_size = pick(gen, [1, 2, 64])
    pages = max(1, -(-width // page_size) - pick(gen, [0, 1]))  # sometimes one page short of the width
    lengths = rand_lengths(gen, rows, width, k)
    logits = with_garbage(rand_logits(gen, rows, width, dist), torch.zeros(rows), lengths, gen)
    mode = pick(gen, ["table", "table+raw", "none"])
    table = torch.randint(0, 1 << 16, (rows, pages), generator=gen).to(I32) if mode != "none" else None
    pad = pick(gen, [0, 3])
    inputs = dict(scores=logits, seq_lens=lengths, tables=table,
                  out=torch.full((rows, k + pad), POISON, dtype=I32),
                  raw=torch.full((rows, k), POISON, dtype=I32) if mode == "table+raw" else None)

    def expect(inp):
        sel = brute_select(inp["scores"], [0] * rows, inp["seq_lens"], k)
        out = torch.full((rows, k + pad), POISON, dtype=I32)
        if table is None:
            out[:, :k] = padded(sel, k)
        else:
            out[:, :k] = padded(sel, k, lambda r, i: int(inp["tables"][r, i // page_size]) * page_size + i % page_size
                                if i // page_size < pages else -1)
        return [out] + ([padded(sel, k)] if mode == "table+raw" else [])

    def outputs(inp):
        return [inp["out"]] + ([inp["raw"]] if mode == "table+raw" else [])

    return width, k, rows, page_size, mode, inputs, expect, outputs


def case_sglang_topk_transform_512(gen, big, dist):
    width, k, rows, page_size, mode, inputs, expect, outputs = _v4_inputs(gen, big, dist)

    def call(inp, ws):
        args = (inp["scores"], inp["seq_lens"], inp["tables"], inp["out"][:, :k], page_size)
        args += (inp["raw"],) if mode == "table+raw" else ()
        assert compat.topk_transform_512(*args, **ws_kw(ws)) is None
        return outputs(inp)

    return Case(inputs, call, expect, lambda g: {"seq_lens": rand_lengths(g, rows, width, k)}, (rows, width, k))


def case_sglang_topk_transform_paged_v2(gen, big, dist):
    width, k, rows, page_size, mode, inputs, expect, outputs = _v4_inputs(gen, big, dist)
    inputs["meta_buf"] = torch.full((rows + 1, 2), 7, dtype=I32)
    form = pick(gen, ["object", "object+out", "sglang tensor"])

    def call(inp, ws):
        if form == "object":
            metadata = compat.plan_topk_v2(inp["seq_lens"], **ws_kw(ws))
        elif form == "object+out":
            metadata = compat.plan_topk_v2(inp["seq_lens"], -1, out=inp["meta_buf"], **ws_kw(ws))
        else:
            metadata = inp["meta_buf"]
        results = []
        for layer in range(2):  # two indexer layers of one step share the metadata (and its plan)
            args = (inp["scores"], inp["seq_lens"], inp["tables"], inp["out"][:, :k], page_size, metadata)
            args += (inp["raw"],) if mode == "table+raw" else ()
            assert compat.topk_transform_paged_v2(*args, **ws_kw(ws)) is None
            results += [t.clone() for t in outputs(inp)]
        if form != "sglang tensor":
            assert isinstance(metadata, compat.TopKV2Metadata)
        return results

    def expect_twice(inp):
        once = expect(inp)
        return once + once

    return Case(inputs, call, expect_twice, lambda g: {"seq_lens": rand_lengths(g, rows, width, k)}, (rows, width, k))


def case_flashinfer_top_k_page_table_transform(gen, big, dist):
    width, k = sizes(gen, big)
    rows = randint(gen, 1, 10)
    page_size = pick(gen, [1, 2, 16])
    use_r2b, use_starts = pick(gen, [False, True]), pick(gen, [False, True])
    tables = rows + pick(gen, [0, 2]) if use_r2b else rows
    r2b = torch.tensor([randint(gen, -1, tables) for _ in range(rows)], dtype=I32) if use_r2b else None
    starts = torch.tensor([randint(gen, 0, width) for _ in range(rows)], dtype=I32) if use_starts else None
    give_ptrs = (page_size > 1 and use_starts) or pick(gen, [False, True])
    ptrs = torch.tensor([randint(gen, 0, 3) for _ in range(rows)], dtype=I32) if give_ptrs else None
    entries = max(1, -(-width // page_size) + pick(gen, [-1, 0, 4]))
    table = torch.randint(0, 1 << 16, (tables, entries), generator=gen).to(I32)
    lengths = rand_lengths(gen, rows, width, k)
    zero = torch.zeros(rows, dtype=I32)
    logits = with_garbage(rand_logits(gen, rows, width, dist), zero if starts is None else starts, lengths, gen)
    tie_break, deterministic = pick(gen, [0, 1]), pick(gen, [False, True])
    give_out, give_raw = pick(gen, [False, True]), pick(gen, [False, True])

    def call(inp, ws):
        kw = dict(page_size=page_size, **ws_kw(ws))
        if give_out:
            kw["out"] = inp["out"]
        if give_raw:
            kw["out_raw_indices"] = inp["raw"]
        res = compat.top_k_page_table_transform(inp["logits"], inp["table"], inp["lengths"], k, inp["r2b"],
                                                deterministic, tie_break, False, inp["row_starts"], inp["ptrs"], **kw)
        assert res.dtype == I32 and res.shape == (rows, k)
        if give_out:
            assert res.data_ptr() == inp["out"].data_ptr()
        return [res] + ([inp["raw"]] if give_raw else [])

    def expect(inp):
        s = zero if starts is None else inp["row_starts"]
        sel = brute_select(inp["logits"], s, inp["lengths"], k)
        if ptrs is not None:
            entry_start = inp["ptrs"]
        elif page_size == 1 and starts is not None:
            entry_start = inp["row_starts"]  # FlashInfer: page_table_row_starts defaults to row_starts
        else:
            entry_start = zero

        def mapping(r, i):
            b = r if r2b is None else int(inp["r2b"][r])
            e = int(entry_start[r]) + i // page_size
            ok = 0 <= b < tables and 0 <= e < entries
            return int(inp["table"][b, e]) * page_size + i % page_size if ok else -1

        return [padded(sel, k, mapping)] + ([padded(sel, k)] if give_raw else [])

    inputs = dict(logits=logits, table=table, lengths=lengths, r2b=r2b, row_starts=starts, ptrs=ptrs,
                  out=torch.full((rows, k), POISON, dtype=I32), raw=torch.full((rows, k), POISON, dtype=I32))
    return Case(inputs, call, expect, lambda g: {"lengths": rand_lengths(g, rows, width, k)}, (rows, width, k))


def case_flashinfer_top_k_ragged_transform(gen, big, dist):
    width, k, rows, starts, zero, lengths, offsets, logits = ragged_inputs(gen, big, dist)
    tie_break = pick(gen, [0, 1, compat.TopKTieBreak.SMALL])

    def call(inp, ws):
        if starts is None:
            res = compat.top_k_ragged_transform(inp["logits"], inp["offsets"], inp["lengths"], k, **ws_kw(ws))
        else:
            res = compat.top_k_ragged_transform(inp["logits"], inp["offsets"], inp["lengths"], k, True, tie_break,
                                                True, inp["row_starts"], **ws_kw(ws))
        return [res]

    def expect(inp):
        sel = brute_select(inp["logits"], zero if starts is None else inp["row_starts"], inp["lengths"], k)
        return [padded(sel, k, lambda r, i: i + int(inp["offsets"][r]))]

    inputs = dict(logits=logits, lengths=lengths, offsets=offsets, row_starts=starts)
    return Case(inputs, call, expect, lambda g: {"lengths": rand_lengths(g, rows, width, k)}, (rows, width, k))


def case_flashinfer_top_k_varlen(gen, big, dist):
    width, k = sizes(gen, big)
    batch, next_n, ratio = randint(gen, 1, 6), pick(gen, [1, 2, 3]), pick(gen, [1, 4])
    rows = batch * next_n

    def seq_lens_for(g):
        return rand_lengths(g, batch, width * ratio, k * ratio)

    def row_lengths(sl):  # FlashInfer: (seq_len - next_n + nn + 1) // compress_ratio, floor
        return torch.tensor([(int(sl[r // next_n]) - next_n + r % next_n + 1) // ratio for r in range(rows)],
                            dtype=I32)

    seq_lens = seq_lens_for(gen)
    logits = with_garbage(rand_logits(gen, rows, width, dist), torch.zeros(rows), row_lengths(seq_lens), gen)
    return_values, give_idx, give_vals = pick(gen, [False, True]), pick(gen, [False, True]), pick(gen, [False, True])

    def call(inp, ws):
        kw = {}
        if give_idx:
            kw["out_indices"] = inp["out_idx"]
        if give_vals:
            kw["out_values"] = inp["out_vals"]
        if ws is not None:
            kw["workspace"] = ws
        res = compat.top_k_varlen(inp["logits"], inp["seq_lens"], k, None, ratio, next_n, return_values, **kw)
        assert isinstance(res, tuple) and len(res) == 2
        idx, vals = res
        assert (vals is None) == (not return_values)
        if give_idx:
            assert idx.data_ptr() == inp["out_idx"].data_ptr()
        if return_values and give_vals:
            assert vals.data_ptr() == inp["out_vals"].data_ptr()
        return [idx] + ([bits(vals)] if return_values else [])

    def expect(inp):
        sel = brute_select(inp["logits"], [0] * rows, row_lengths(inp["seq_lens"]), k)
        return [padded(sel, k)] + ([value_bits(inp["logits"], [0] * rows, sel, k)] if return_values else [])

    inputs = dict(logits=logits, seq_lens=seq_lens, out_idx=torch.full((rows, k), POISON, dtype=I32),
                  out_vals=torch.full((rows, k), float("nan"), dtype=logits.dtype))
    return Case(inputs, call, expect, lambda g: {"seq_lens": seq_lens_for(g)}, (rows, width, k))


CASES = {f.__name__[len("case_"):]: f for f in (
    case_vllm_persistent_topk, case_vllm_top_k_per_row_decode, case_vllm_top_k_per_row_prefill,
    case_sglang_fast_topk_v2, case_sglang_fast_topk_transform_fused, case_sglang_fast_topk_transform_ragged_fused,
    case_sglang_topk_transform_512, case_sglang_topk_transform_paged_v2,
    case_flashinfer_top_k_page_table_transform, case_flashinfer_top_k_ragged_transform, case_flashinfer_top_k_varlen)}


def fresh(inputs, device="cpu"):
    return {n: v.to(device).clone() if isinstance(v, torch.Tensor) else v for n, v in inputs.items()}


def assert_same(got, want, what):
    assert len(got) == len(want), what
    for i, (g, w) in enumerate(zip(got, want)):
        g = g.cpu()
        if not torch.equal(g, w):
            bad = (g != w).nonzero()
            raise AssertionError(f"{what}, output {i}: {bad.shape[0]} entries differ, first at {bad[0].tolist()}: "
                                 f"got {g[tuple(bad[0])].item()}, want {w[tuple(bad[0])].item()}\n got row "
                                 f"{g[bad[0][0]].tolist()[:40]}\nwant row {w[bad[0][0]].tolist()[:40]}")


# ----------------------------------------------------------------------------------------------------
# CPU: every function against the brute force
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(CASES))
def test_cpu_matches_brute_force(name, gen):
    for dist in DIST_NAMES:
        for trial in range(2):
            case = CASES[name](gen, False, dist)
            for step in range(2):
                if step:
                    case.inputs.update(case.vary(gen))
                inputs = fresh(case.inputs)
                got = case.call(inputs, None)
                assert_same(got, case.expect(fresh(case.inputs)), f"{name} {dist} trial {trial} step {step}")


def test_all_equal_logits_pick_the_lowest_indices():
    """Ties everywhere: each function selects columns 0..k-1 of the window (every engine may pick any)."""
    rows, width, k = 3, 10, 4
    x = torch.zeros(rows, width)
    lens = torch.full((rows,), width, dtype=I32)
    first = torch.arange(k, dtype=I32).expand(rows, k)
    assert torch.equal(compat.fast_topk_v2(x, lens, k), first)
    assert torch.equal(compat.top_k_ragged_transform(x, torch.zeros(rows, dtype=I32), lens, k, tie_break=1), first)
    out = torch.empty(rows, k, dtype=I32)
    compat.persistent_topk(x, lens.view(rows, 1), out, torch.empty(0, dtype=torch.uint8), k, width)
    assert torch.equal(out, first)
    idx, _ = compat.top_k_varlen(x, lens, k)
    assert torch.equal(idx, first)
    x[:, 7] = float("nan")  # NaN ranks above everything, +inf included
    x[:, 2] = float("inf")
    assert compat.fast_topk_v2(x, lens, k)[0].tolist() == [0, 1, 2, 7]


def test_flashinfer_tie_break_modes():
    x = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.0, 3.0]])
    lens, offsets = torch.tensor([6], dtype=I32), torch.zeros(1, dtype=I32)
    table = torch.arange(100, 106, dtype=I32).view(1, 6)
    for tb in (0, 1, compat.TopKTieBreak.NONE, compat.TopKTieBreak.SMALL):
        assert compat.top_k_ragged_transform(x, offsets, lens, 2, tie_break=tb).tolist() == [[1, 2]]
        assert compat.top_k_page_table_transform(x, table, lens, 2, tie_break=tb).tolist() == [[101, 102]]
    with pytest.raises(NotImplementedError, match="tie_break"):
        compat.top_k_ragged_transform(x, offsets, lens, 2, tie_break=2)
    with pytest.raises(NotImplementedError, match="tie_break"):
        compat.top_k_page_table_transform(x, table, lens, 2, None, False, compat.TopKTieBreak.LARGE)
    with pytest.raises(ValueError, match="tie_break"):
        compat.top_k_ragged_transform(x, offsets, lens, 2, tie_break=3)


def test_flashinfer_page_table_row_starts_default():
    """page_size == 1: the table window starts at row_starts (FlashInfer's default); page_size > 1 with
    row_starts needs page_table_row_starts."""
    x = torch.tensor([[0.0, 0.0, 5.0, 4.0, 0.0, 0.0]])
    lens, starts = torch.tensor([3], dtype=I32), torch.tensor([2], dtype=I32)
    table = torch.arange(100, 108, dtype=I32).view(1, 8)
    # window [2, 5): idx 0 (5.0) and 1 (4.0) selected; table entries 2 + idx
    assert compat.top_k_page_table_transform(x, table, lens, 2, row_starts=starts).tolist() == [[102, 103]]
    assert compat.top_k_page_table_transform(x, table, lens, 2, None, False, 0, False, starts,
                                             torch.zeros(1, dtype=I32)).tolist() == [[100, 101]]
    with pytest.raises(ValueError, match="page_table_row_starts"):
        compat.top_k_page_table_transform(x, table, lens, 2, row_starts=starts, page_size=2)
    assert compat.top_k_page_table_transform(x, table, lens, 2, None, False, 0, False, starts,
                                             torch.tensor([1], dtype=I32), page_size=2).tolist() == [[202, 203]]
    with pytest.raises(ValueError, match="page_size"):
        compat.top_k_page_table_transform(x, table, lens, 2, page_size=3)


def test_sglang_v4_argument_rules():
    x = torch.randn(2, 16)
    lens = torch.tensor([16, 3], dtype=I32)
    table = torch.zeros(2, 4, dtype=I32)
    out, raw = torch.empty(2, 4, dtype=I32), torch.empty(2, 4, dtype=I32)
    with pytest.raises(ValueError, match="page_size"):
        compat.topk_transform_512(x, lens, table, out, 3)
    with pytest.raises(ValueError, match="out_raw_indices"):
        compat.topk_transform_paged_v2(x, lens, None, out, 4, compat.plan_topk_v2(lens), raw)
    with pytest.raises(TypeError):
        compat.topk_transform_512(x, lens, table, out)  # page_size is required, as SGLang's


def test_plan_topk_v2_metadata_is_lazy_reused_and_stale_aware(gen):
    rows, width = 4, 64
    x = torch.randn(rows, width, generator=gen)
    lens = torch.tensor([64, 10, 0, 33], dtype=I32)
    buf = torch.full((rows + 1, 2), 7, dtype=I32)
    meta = compat.plan_topk_v2(lens, 12345, out=buf)
    assert isinstance(meta, compat.TopKV2Metadata) and meta.status() is None  # nothing planned yet
    out = torch.empty(rows, 8, dtype=I32)
    compat.topk_transform_paged_v2(x, lens, None, out, 1, meta)
    plan = meta._plan
    assert plan is not None and (plan.rows, plan.stride, plan.k) == (rows, width, 8)
    compat.topk_transform_paged_v2(x, lens, None, out, 1, meta)
    assert meta._plan is plan and meta.status() == plan_module.FRESH
    assert torch.equal(buf, torch.full((rows + 1, 2), 7, dtype=I32))  # out is not written
    wide = torch.empty(rows, 16, dtype=I32)
    compat.topk_transform_paged_v2(x, lens, None, wide, 1, meta)  # another k: planned again
    assert meta._plan is not plan and meta._plan.k == 16
    lens[1] = 50  # the step's lengths changed behind the plan: still exact, and the plan says STALE
    compat.topk_transform_paged_v2(x, lens, None, wide, 1, meta)
    assert meta.status() == plan_module.STALE
    assert torch.equal(wide, padded(brute_select(x, [0] * rows, lens, 16), 16))


def test_vllm_argument_rules():
    x = torch.randn(4, 32)
    out = torch.empty(4, 8, dtype=I32)
    seq = torch.tensor([32, 5], dtype=I32)
    with pytest.raises(ValueError, match="stride1"):
        compat.top_k_per_row_decode(x, 2, seq, out, 4, 32, 2, 8)
    with pytest.raises(ValueError, match="seq_lens"):
        compat.top_k_per_row_decode(x, 1, seq, out, 4, 32, 1, 8)
    with pytest.raises(ValueError, match="lengths"):
        compat.persistent_topk(x, seq, out, torch.empty(0, dtype=torch.uint8), 8, 32)
    with pytest.raises(TypeError, match="workspace"):
        compat.persistent_topk(x, torch.full((4, 1), 9, dtype=I32), out, "scratch", 8, 32)
    # max_seq_len caps every row (vLLM clamps each length to it)
    compat.persistent_topk(x, torch.full((4, 1), 32, dtype=I32), out, torch.empty(0, dtype=torch.uint8), 8, 5)
    assert torch.equal(out, padded([list(range(5))] * 4, 8))


def test_top_k_varlen_argument_rules():
    x = torch.randn(6, 32)
    seq = torch.tensor([32, 5, 0], dtype=I32)
    with pytest.raises(ValueError, match="next_n"):
        compat.top_k_varlen(x, seq, 4, next_n=3)
    idx, vals = compat.top_k_varlen(x, seq, 4, torch.zeros(3, 4, dtype=I32), 1, 2, backend="gvr", load_balance=False,
                                    workspace={"gvr_counters": torch.zeros(2, dtype=I32)}, approx_ties=True)
    assert vals is None
    assert torch.equal(idx, padded(brute_select(x, [0] * 6, [31, 32, 4, 5, 0, 0], 4), 4))


# ----------------------------------------------------------------------------------------------------
# GPU: the CUDA path against the CPU path, eagerly and under CUDA-graph capture + replay
# ----------------------------------------------------------------------------------------------------
def poison_(tensors):
    for t in tensors:
        t.fill_(POISON if t.dtype == I32 else POISON16)


@pytest.mark.gpu
@pytest.mark.parametrize("name", sorted(CASES))
def test_gpu_matches_cpu_eager_and_under_graph_replay(name, gen):
    for trial in range(3):
        dist = DIST_NAMES[randint(gen, 0, len(DIST_NAMES) - 1)]
        case = CASES[name](gen, True, dist)
        want = case.call(fresh(case.inputs), None)
        # eager, default workspace
        got = case.call(fresh(case.inputs, "cuda"), None)
        assert_same(got, want, f"{name} {dist} eager")
        # eager with a workspace, then captured once and replayed with new lengths
        workspace = pt.Workspace("cuda", *case.dims)
        static = fresh(case.inputs, "cuda")
        assert_same(case.call(static, workspace), want, f"{name} {dist} eager, workspace")
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            outs = case.call(static, workspace)
        workspace.lock()
        for replay in range(3):
            new = case.vary(gen)
            case.inputs.update(new)
            for n, t in new.items():
                static[n].copy_(t)
            poison_(outs)
            graph.replay()
            torch.cuda.synchronize()
            assert_same(outs, case.call(fresh(case.inputs), None), f"{name} {dist} replay {replay}")
