"""The fused index transforms and launch options on the GPU, bit for bit against the CPU oracle:
page tables (per row, per request in decode, via row_to_table, with start entries, narrower than the
logits), ragged offsets, raw indices beside them, row-strided outputs, row_starts windows, and
programmatic dependent launch (pdl=True), eagerly and under graph replay with new lengths."""
import pytest
import torch

import persistent_topk as pt
from persistent_topk import plan as plan_module
from persistent_topk import reference
from distributions import make_logits
from test_gpu import I32, POISON, assert_same, bits, kernels_of, path_lengths, poisoned

pytestmark = pytest.mark.gpu


def random_table(tables, width, g):
    """A block table of distinct-looking physical pages (large values, so a slot can't pass by chance)."""
    return torch.randint(0, 1 << 20, (tables, width), generator=g).to(I32)


def strided_index_out(rows, k, pad=37):
    """A (rows, k) int32 view with row pitch k + pad, poisoned, inside a poisoned wider buffer."""
    wide = torch.full((rows, k + pad), POISON, dtype=I32, device="cuda")
    return wide, wide[:, 3:3 + k]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("by_value", [False, True])
@pytest.mark.parametrize("next_n", [1, 2, 3])
def test_decode_page_table_per_request(next_n, by_value, dtype, gen):
    """Decode as V3.2 runs it: one block table row per request, row r uses r // next_n; the table only
    as wide as the longest sequence needs (indices past it: -1), raw indices beside it, strided out."""
    batch, stride, k, page_size = 14, 150_000, 2048, 64
    seq_lens = path_lengths(stride, k, gen, batch)
    width = (int(seq_lens.clamp(min=0, max=stride).max()) + page_size - 1) // page_size
    width = max(1, width - 3)  # a few pages short: the coverage rule is exercised on the longest rows
    table = random_table(batch, width, gen)
    rows = batch * next_n
    logits = make_logits("ties", rows, stride, dtype, gen, device="cuda")
    lengths = reference.decode_lengths(seq_lens, next_n)
    raw_want, val_want = reference.reference_topk(logits.cpu(), lengths, k, sorted=by_value)
    table_rows = torch.arange(rows) // next_n
    want = reference.page_table_transform(raw_want.long(), table, page_size, table_rows).to(I32)
    wide, out = strided_index_out(rows, k)
    raw = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    _, values = poisoned(rows, k, dtype)
    # Unsorted without values: the transform is fused into the selection's writes; sorted=True (with
    # values) finishes the row from the bare indices instead.
    got = pt.top_k_per_row_decode(logits, seq_lens.cuda(), next_n, k, page_table=table.cuda(), page_size=page_size,
                                  raw_indices=raw, out=out, values=values if by_value else None, sorted=by_value)
    assert got.data_ptr() == out.data_ptr()
    assert_same(out, want, "decode page table")
    assert_same(raw, raw_want, "decode raw indices")
    if by_value:
        assert_same(bits(values), bits(val_want), "decode values")
    assert bool((wide[:, :3] == POISON).all() and (wide[:, 3 + k:] == POISON).all()), "wrote outside out's rows"


@pytest.mark.parametrize("page_size", [1, 64, 100])
def test_page_table_with_row_to_table_and_start_entries(page_size, gen):
    """Prefill-shaped: windows from row_starts, table rows by row_to_table (some outside the table),
    start entries per row (some negative); every path's lengths."""
    rows, stride, k = 40, 120_000, 1024
    lengths = path_lengths(stride, k, gen, rows)
    starts = torch.randint(-3, 2000, (rows,), generator=gen).to(I32)
    tables = 7
    row_to_table = torch.randint(-1, tables + 1, (rows,), generator=gen).to(I32)
    width = (stride + page_size - 1) // page_size + 4
    table = random_table(tables, width, gen)
    entry_starts = torch.randint(-2, 5, (rows,), generator=gen).to(I32)
    logits = make_logits("shared_high_bits", rows, stride, torch.float16, gen, device="cuda")
    raw_want, _ = reference.reference_topk(logits.cpu(), lengths, k, starts=starts)
    want = reference.page_table_transform(raw_want.long(), table, page_size, row_to_table, entry_starts).to(I32)
    for plan in (None, pt.make_plan(lengths.cuda(), stride, k, row_starts=starts.cuda())):
        out, _ = poisoned(rows, k, logits.dtype)
        raw = torch.full((rows, k), POISON, dtype=I32, device="cuda")
        pt.top_k_page_table_transform(logits, lengths.cuda(), table.cuda(), page_size, k, row_starts=starts.cuda(),
                                      row_to_table=row_to_table.cuda(), page_table_starts=entry_starts.cuda(),
                                      raw_indices=raw, out=out, plan=plan)
        assert_same(out, want, f"page table via row_to_table (plan={plan is not None})")
        assert_same(raw, raw_want, "raw indices")
        if plan is not None:
            assert plan.status() == plan_module.FRESH


@pytest.mark.parametrize("by_value", [False, True])
def test_ragged_offsets(by_value, gen):
    rows, stride, k = 33, 100_000, 2048
    lengths = path_lengths(stride, k, gen, rows)
    starts = torch.randint(0, 500, (rows,), generator=gen).to(I32)
    offsets = torch.randint(-(1 << 30), 1 << 30, (rows,), generator=gen).to(I32)
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    raw_want, val_want = reference.reference_topk(logits.cpu(), lengths, k, starts=starts, sorted=by_value)
    want = reference.offset_transform(raw_want.long(), offsets).to(I32)
    wide, out = strided_index_out(rows, k)
    raw_wide, raw = strided_index_out(rows, k, pad=5)
    _, values = poisoned(rows, k, logits.dtype)
    pt.top_k_ragged_transform(logits, lengths.cuda(), offsets.cuda(), k, row_starts=starts.cuda(), raw_indices=raw,
                              out=out, values=values if by_value else None, sorted=by_value)
    assert_same(out, want, "ragged")
    assert_same(raw, raw_want, "ragged raw")
    if by_value:
        assert_same(bits(values), bits(val_want), "ragged values")
    assert bool((wide[:, :3] == POISON).all() and (raw_wide[:, :3] == POISON).all()), "wrote outside the rows"

    # values without sorting: the transform is applied as the row is finished (not fused), same answer
    out2, values2 = poisoned(rows, k, logits.dtype)
    pt.top_k_ragged_transform(logits, lengths.cuda(), offsets.cuda(), k, row_starts=starts.cuda(), out=out2,
                              values=values2)
    want2, val2 = reference.reference_topk(logits.cpu(), lengths, k, starts=starts, offsets=offsets)
    assert_same(out2, want2, "ragged with values")
    assert_same(bits(values2), bits(val2), "ragged values (unsorted)")


def test_row_starts_windows_and_strided_out(gen):
    rows, stride, k = 50, 90_000, 512
    lengths = path_lengths(stride, k, gen, rows)
    starts = torch.randint(-10, stride + 10, (rows,), generator=gen).to(I32)
    logits = make_logits("specials", rows, stride, torch.bfloat16, gen, device="cuda")
    want, _ = reference.reference_topk(logits.cpu(), lengths, k, starts=starts)
    wide, out = strided_index_out(rows, k)
    pt.top_k_per_row(logits, lengths.cuda(), k, row_starts=starts.cuda(), out=out)
    assert_same(out, want, "row_starts")
    assert bool((wide[:, :3] == POISON).all() and (wide[:, 3 + k:] == POISON).all()), "wrote outside out's rows"


def test_transforms_under_graph_replay_with_new_lengths(gen):
    """One graph holding the plan and a decode page-table call with PDL; replays move rows across paths."""
    batch, next_n, stride, k, page_size = 6, 2, 140_000, 2048, 64
    rows = batch * next_n
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    seq_lens = torch.full((batch,), stride, dtype=I32, device="cuda")
    width = stride // page_size + 1
    table = random_table(batch, width, gen).cuda()
    out = torch.empty((rows, k), dtype=I32, device="cuda")
    raw = torch.empty((rows, k), dtype=I32, device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)

    def step():
        plan = pt.make_plan(seq_lens, stride, k, workspace=workspace, next_n=next_n)
        pt.top_k_per_row_decode(logits, seq_lens, next_n, k, page_table=table, page_size=page_size, raw_indices=raw,
                                out=out, plan=plan, workspace=workspace, pdl=True)

    step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    workspace.lock()
    cpu_logits, cpu_table = logits.cpu(), table.cpu()
    table_rows = torch.arange(rows) // next_n
    for replay in range(30):
        new = path_lengths(stride, k, gen, batch)
        seq_lens.copy_(new)
        out.fill_(POISON)
        raw.fill_(POISON)
        graph.replay()
        raw_want, _ = reference.reference_topk(cpu_logits, reference.decode_lengths(new, next_n), k)
        want = reference.page_table_transform(raw_want.long(), cpu_table, page_size, table_rows).to(I32)
        assert_same(out, want, f"replay {replay}")
        assert_same(raw, raw_want, f"replay {replay} raw")


@pytest.mark.parametrize("with_plan", [False, True])
def test_pdl_launches_are_exact_and_still_one_kernel(with_plan, gen):
    """pdl=True behind another kernel that writes the logits: the top-k waits for it (exact), and the
    call is still one kernel with a plan, two without."""
    rows, stride, k = 24, 200_000, 2048
    source = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    logits = torch.empty_like(source)
    lengths = path_lengths(stride, k, gen, rows).cuda()
    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(lengths, stride, k, workspace=workspace) if with_plan else None
    want, _ = reference.reference_topk(source.cpu(), lengths.cpu(), k)
    for _ in range(3):
        out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
        logits.fill_(float("nan"))
        logits.copy_(source)  # the kernel ahead in the stream writes the logits
        pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace, pdl=True)
        assert_same(out, want, "pdl")
    names = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace,
                                                pdl=True))
    assert len(names) == (1 if with_plan else 2), names
    if with_plan:
        assert plan.status() == plan_module.FRESH
