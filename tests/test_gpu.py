"""The CUDA kernel against the CPU oracle, bit for bit: indices, order, -1 padding, values.

Every launch writes into outputs poisoned with values no correct kernel produces; inputs are fresh
random draws each run, with garbage (NaN, +inf) past every row's valid window.
"""
import time

import pytest
import torch

import persistent_topk as pt
from persistent_topk import plan as plan_module
from persistent_topk import reference, suite
from distributions import ALL, make_logits

pytestmark = pytest.mark.gpu
I32 = torch.int32
POISON = 0x5EED5EED
DTYPES = [torch.float32, torch.bfloat16, torch.float16]
ALL_NAMES = sorted(ALL)


def poisoned(rows, k, dtype):
    out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    values = torch.full((rows, k), float("nan"), dtype=dtype, device="cuda")
    return out, values


def assert_same(got, want, what):
    got = got.cpu()
    if torch.equal(got, want):
        return
    bad = (got != want).any(dim=1).nonzero().flatten()
    r = int(bad[0])
    cols = (got[r] != want[r]).nonzero().flatten()[:8].tolist()
    raise AssertionError(f"{what}: {len(bad)} rows differ; row {r} at columns {cols}: "
                         f"got {got[r, cols].tolist()} want {want[r, cols].tolist()}")


def bits(values):
    return values.view(torch.int16 if values.element_size() == 2 else torch.int32)


def check(logits, lengths, k, *, by_value=False, what=""):
    """top_k_per_row on the GPU == the oracle on the CPU, indices and values."""
    rows = logits.shape[0]
    want_idx, want_val = reference.reference_topk(logits.cpu(), lengths.cpu(), k, sorted=by_value)
    out, values = poisoned(rows, k, logits.dtype)
    pt.top_k_per_row(logits, lengths.cuda(), k, out=out, values=values, sorted=by_value)
    torch.cuda.synchronize()
    assert_same(out, want_idx, f"indices {what}")
    assert_same(bits(values), bits(want_val), f"values {what}")


def path_lengths(stride, k, g, rows):
    """Lengths that put rows on every path: empty, short (<= k), solo (one CTA), team (a cluster of
    CTAs, slices in shared memory or over global memory), and the edges between them, plus negatives
    and lengths past the stride."""
    kernels = pt._backend.require_cuda_kernels()
    few, solo, smem = kernels.team_min_length, kernels.solo_max_keys, kernels.smem_keys
    registers = kernels.register_max_keys
    eight, largest = kernels.portable_cluster_size * smem, kernels.max_cluster_size * smem
    slice_keys = kernels.team_slice_keys  # teams of 2, 4, 8 hold up to 2, 4, 8 slices of this
    edges = [0, -1, 1, k - 1, k, k + 1, registers, registers + 1, few, few + 1, solo, solo + 1, smem - 1, smem + 1,
             3 * solo + 5, 2 * slice_keys, 2 * slice_keys + 1, 4 * slice_keys + 1, 8 * slice_keys + 1,
             eight - 1, eight, eight + 1, 262_144, largest, largest + 1, stride, stride + 100]
    edges = list(dict.fromkeys(e for e in edges if e <= stride + 100))
    lengths = torch.randint(-2, stride + 50, (rows,), generator=g)
    lengths[: min(rows, len(edges))] = torch.tensor(edges[:rows])
    return lengths[torch.randperm(rows, generator=g)].to(I32)


@pytest.mark.parametrize("case", suite.cases(), ids=lambda c: c["name"])
def test_suite_shapes(case, gen):
    """Every suite case's shape (its own k, dtype and stride), with a plan made once and without."""
    lengths = torch.from_numpy(suite.case_lengths(case))
    stride = suite.case_stride(case, lengths.numpy())
    k = case.get("k", suite.load_suite()["k"])
    dtype = getattr(torch, case.get("dtype", "float32"))
    logits = make_logits("normal", case["rows"], stride, dtype, gen, lengths, device="cuda")
    check(logits, lengths, k, what=case["name"])
    plan = pt.make_plan(lengths.cuda(), stride, k)
    want, _ = reference.reference_topk(logits.cpu(), lengths, k)
    for call in range(2):
        out = torch.full((case["rows"], k), POISON, dtype=I32, device="cuda")
        pt.top_k_per_row(logits, lengths.cuda(), k, out=out, plan=plan)
        assert_same(out, want, f"{case['name']} with a plan, call {call}")
    assert plan.status() == plan_module.FRESH


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("dist", sorted(ALL))
def test_distributions_on_every_path(dist, dtype, gen):
    rows, stride, k = 20, 100_003, 2048
    lengths = path_lengths(stride, k, gen, rows)
    logits = make_logits(dist, rows, stride, dtype, gen, lengths, device="cuda")
    check(logits, lengths, k, what=f"{dist} {dtype}")


@pytest.mark.parametrize("k", [1, 7, 512, 1024, 2048, 4096])
@pytest.mark.parametrize("by_value", [False, True])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_k_values(k, by_value, dtype, gen):
    rows, stride = 24, 150_000
    dists = ("normal", "ties", "shared_high_bits") if dtype == torch.float32 else ("shared_high_bits",)
    for dist in dists:
        lengths = path_lengths(stride, k, gen, rows)
        logits = make_logits(dist, rows, stride, dtype, gen, lengths, device="cuda")
        check(logits, lengths, k, by_value=by_value, what=f"{dist} k={k} sorted={by_value}")


REGISTER_KS = [1, 7, 512, 1024, 2048]


@pytest.mark.parametrize("k", REGISTER_KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_length_through_the_register_path(k, dtype, gen):
    """One row of every length from -1 to register_max_keys + 1 in the persistent kernel (a stride one
    past what a register-rows launch takes): rows that need no selection, every length its register
    path takes (float32 rows; 16-bit ones run the same lengths in shared memory), and the first ones
    past it, in one batch, with an adversarial distribution per (k, dtype); sorted with values for
    k = 512."""
    limit = pt._backend.require_cuda_kernels().register_max_keys
    lengths = torch.arange(-1, limit + 2, dtype=I32)
    lengths = lengths[torch.randperm(len(lengths), generator=gen)]
    dist = ALL_NAMES[(REGISTER_KS.index(k) * len(DTYPES) + DTYPES.index(dtype)) % len(ALL_NAMES)]
    logits = make_logits(dist, len(lengths), limit + 1, dtype, gen, lengths, device="cuda")
    check(logits, lengths, k, by_value=k == 512, what=f"{dist} k={k}")


# Launches whose stride fits registers (csrc/policy.cuh Policy::register_rows) run register_rows_kernel:
# CTA b selects rows b, b + grid, ... with no queue, each loaded over its whole stride while its length
# is read, every dtype from registers.
REGISTER_ROWS_KS = REGISTER_KS + [4096]


def register_rows_stride():
    return pt._backend.require_cuda_kernels().register_rows_max_stride


@pytest.mark.parametrize("k", REGISTER_ROWS_KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_register_rows_launch_every_length(k, dtype, gen):
    """The largest stride a register-rows launch takes, one row of every length from -1 to the stride + 1
    (more rows than the grid: CTAs take several), garbage past every window (NaN sorts above every key,
    so a column read past the window would be selected), an adversarial distribution per (k, dtype),
    sorted with values for k = 512; k = 4096 >= stride reads no logit."""
    stride = register_rows_stride()
    lengths = torch.arange(-1, stride + 2, dtype=I32)
    lengths = lengths[torch.randperm(len(lengths), generator=gen)]
    dist = ALL_NAMES[(REGISTER_ROWS_KS.index(k) * len(DTYPES) + DTYPES.index(dtype)) % len(ALL_NAMES)]
    logits = make_logits(dist, len(lengths), stride, dtype, gen, lengths, device="cuda")
    check(logits, lengths, k, by_value=k == 512, what=f"{dist} k={k}")


# Launches of few rows (no more than the clusters of 8 resident at once) whose stride is past
# register_rows_max_stride, up to few_register_rows_max_stride, run register_rows_kernel too, on a CTA of
# 512 threads x 16 keys (strides up to 8,192) or 1,024 x 16 (up to 16,384): csrc/policy.cuh. Up to
# wave_register_rows_max_stride, launches of a wave of rows (as many as those CTAs resident at once) too.
FEW_ROWS_STRIDES = [(8192, 512), (6001, 512), (16_384, 1024), (12_345, 1024)]


def assert_register_rows_launch(rows, stride, dtype, threads):
    """The launch of (rows, stride) runs register_rows_kernel on CTAs of `threads` threads."""
    kernels = pt._backend.require_cuda_kernels()
    like = torch.empty(1, device="cuda", dtype=dtype)
    assert kernels.register_rows_threads(rows, stride, like) == threads, (rows, stride)


def tier_lengths(stride, k, g, rows):
    """`rows` lengths for a register-rows launch of `stride`: the edges of every register-rows CTA and of
    k (each kept where it is at most the stride + 1), then random ones, from -2 to past the stride."""
    edges = [-1, 0, 1, k - 1, k, k + 1, 4095, 4096, 4097, 8191, 8192, 8193, 16_383, 16_384, stride - 1, stride,
             stride + 1]
    edges = list(dict.fromkeys(e for e in edges if e <= stride + 1))
    lengths = torch.randint(-2, stride + 50, (rows,), generator=g)
    lengths[: min(rows, len(edges))] = torch.tensor(edges[:rows])
    return lengths[torch.randperm(rows, generator=g)].to(I32)


@pytest.mark.parametrize("k", REGISTER_ROWS_KS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_few_rows_register_rows_every_edge(k, dtype, gen):
    """Few rows on the wider register-rows CTAs: at each CTA's largest stride and an odd one inside it, rows
    at every edge (the CTAs' limits, k, the stride) and random lengths, over several launches; 16
    consecutive lengths past 9,000, one per thread's last key offset; garbage past every window; an
    adversarial distribution per (k, dtype); sorted with values for k = 512; k = 4096 (below every stride
    here) selects from registers like the others."""
    rows = 16
    dist = ALL_NAMES[(REGISTER_ROWS_KS.index(k) * len(DTYPES) + DTYPES.index(dtype) + 3) % len(ALL_NAMES)]
    for stride, threads in FEW_ROWS_STRIDES:
        assert_register_rows_launch(rows, stride, dtype, threads)
        batches = [tier_lengths(stride, k, gen, rows) for _ in range(2)]
        batches.append(torch.arange(min(9000, stride - rows), min(9000, stride - rows) + rows, dtype=I32))
        for lengths in batches:
            logits = make_logits(dist, rows, stride, dtype, gen, lengths, device="cuda")
            check(logits, lengths, k, by_value=k == 512, what=f"{dist} k={k} stride={stride}")


def test_few_rows_register_rows_launch_kernels(gen):
    """Few rows of a stride past register_rows_max_stride launch register_rows_kernel on the narrowest CTA
    that holds the stride, one kernel with a plan or without, and so does a wave of rows (as many as the
    CTA's resident at once) of a stride up to wave_register_rows_max_stride; one row more than few past
    that stride, one row more than a wave up to it, or one column past few_register_rows_max_stride, the
    persistent kernel behind its own plan kernel. Every launch exact, at every edge of its lengths."""
    kernels = pt._backend.require_cuda_kernels()
    k, like = 2048, torch.empty(1, device="cuda")
    few = kernels.launch_grid(like) // kernels.portable_cluster_size
    widest, wave_stride = kernels.few_register_rows_max_stride, kernels.wave_register_rows_max_stride
    wave = kernels.register_rows_resident_ctas(wave_stride, like)
    assert wave > few and kernels.register_rows_resident_ctas(widest + 1, like) == 0
    shapes = [(few, register_rows_stride() + 1, "RegisterRowsCta<512, 16, 2>", 1),
              (few, 8192, "RegisterRowsCta<512, 16, 2>", 1), (few, 8193, "RegisterRowsCta<1024, 16, 1>", 1),
              (3, widest, "RegisterRowsCta<1024, 16, 1>", 1), (few + 1, wave_stride, "RegisterRowsCta<512, 16, 2>", 1),
              (wave, wave_stride, "RegisterRowsCta<512, 16, 2>", 1), (wave + 1, wave_stride, "persistent_topk_kernel", 2),
              (few + 1, wave_stride + 1, "persistent_topk_kernel", 2), (3, widest + 1, "persistent_topk_kernel", 2)]
    for rows, stride, kernel, unplanned in shapes:
        logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
        lengths = tier_lengths(stride, k, gen, rows).cuda()
        out = torch.empty((rows, k), dtype=I32, device="cuda")
        plan = pt.make_plan(lengths, stride, k)
        launched = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out, plan=plan))
        assert len(launched) == 1 and kernel in launched[0], (rows, stride, launched)
        launched = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out))
        assert len(launched) == unplanned and kernel in launched[-1], (rows, stride, launched)
        want, _ = reference.reference_topk(logits.cpu(), lengths.cpu(), k)
        assert_same(out, want, f"{rows} rows of stride {stride} without a plan")
        assert plan.status() == plan_module.FRESH


def misaligned(logits, offset):
    """The same logits as a view whose rows start `offset` elements past a 16-byte boundary, with a
    row pitch other than the width."""
    rows, width = logits.shape
    base = torch.full((rows, width + offset + 5), float("nan"), dtype=logits.dtype, device=logits.device)
    base[:, offset:offset + width] = logits
    return base[:, offset:offset + width]


@pytest.mark.parametrize("dist", ALL_NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_register_rows_distributions_and_odd_strides(dist, dtype, gen):
    """Every distribution and dtype through register rows: fewer rows than the grid, odd strides, rows
    that start off a 16-byte boundary (loaded one logit at a time), lengths at every edge; then few rows
    on the 512 x 16 and 1024 x 16 CTAs (strides up to 8,192 and 16,384) the same way."""
    k = 2048
    for width, offset in ((register_rows_stride(), 0), (3001, 0), (2049, 3), (4000, 1)):
        lengths = path_lengths(width, k, gen, 40)
        logits = make_logits(dist, 40, width, dtype, gen, lengths, device="cuda")
        check(misaligned(logits, offset) if offset else logits, lengths, k, what=f"{dist} width={width}+{offset}")
    rows = 12
    for width, offset in ((8192, 0), (6001, 3), (16_384, 0), (12_345, 1)):
        assert_register_rows_launch(rows, width, dtype, threads=512 if width <= 8192 else 1024)
        lengths = tier_lengths(width, k, gen, rows)
        logits = make_logits(dist, rows, width, dtype, gen, lengths, device="cuda")
        check(misaligned(logits, offset) if offset else logits, lengths, k, what=f"{dist} width={width}+{offset}")


@pytest.mark.parametrize("rows, stride", [(300, 3000), (16, 7000), (12, 15_000)])
@pytest.mark.parametrize("by_value", [False, True])
def test_register_rows_windows_and_transforms(rows, stride, by_value, gen):
    """Register rows with windows that do not start at column 0 (prefill's starts and ends, garbage
    before and after every window), decode's next_n, and the page table fused into the selection's writes
    (or applied by the finish when sorted), with values; many rows on the narrow CTA, few on the wider
    ones."""
    k = 1024
    starts = torch.randint(-5, stride, (rows,), generator=gen).to(I32)
    ends = (starts + torch.randint(-100, stride, (rows,), generator=gen)).to(I32)
    logits = make_logits("ties", rows, stride, torch.float32, gen, device="cuda")
    col = torch.arange(stride, device="cuda")[None, :]
    outside = (col < starts.cuda().clamp(min=0)[:, None]) | (col >= ends.cuda()[:, None])
    logits = torch.where(outside, float("nan"), logits)
    want, want_val = reference.reference_topk(logits.cpu(), ends - starts, k, starts=starts, sorted=by_value)
    out, values = poisoned(rows, k, logits.dtype)
    pt.top_k_per_row_prefill(logits, starts.cuda(), ends.cuda(), k, out=out, values=values, sorted=by_value)
    assert_same(out, want, f"prefill windows sorted={by_value}")
    assert_same(bits(values), bits(want_val), "prefill windows values")

    batch, next_n = rows // 2, 2
    seq_lens = torch.randint(0, stride + 10, (batch,), generator=gen).to(I32)
    lengths = reference.decode_lengths(seq_lens, next_n)
    logits = make_logits("normal", batch * next_n, stride, torch.bfloat16, gen, lengths, device="cuda")
    want, _ = reference.reference_topk(logits.cpu(), lengths, k, sorted=by_value)
    out, _ = poisoned(batch * next_n, k, logits.dtype)
    pt.top_k_per_row_decode(logits, seq_lens.cuda(), next_n, k, out=out, sorted=by_value)
    assert_same(out, want, f"decode next_n={next_n} sorted={by_value}")

    page_size = 64
    lengths = path_lengths(stride, k, gen, rows)
    table = torch.randint(0, 1 << 20, (rows, (stride + page_size - 1) // page_size), generator=gen).to(I32)
    logits = make_logits("normal", rows, stride, torch.float16, gen, lengths, device="cuda")
    want, _ = reference.reference_topk(logits.cpu(), lengths, k, sorted=by_value, page_table=table,
                                       page_size=page_size)
    out, _ = poisoned(rows, k, logits.dtype)
    pt.top_k_page_table_transform(logits, lengths.cuda(), table.cuda(), page_size, k, out=out, sorted=by_value)
    assert_same(out, want, f"page table sorted={by_value}")


@pytest.mark.parametrize("rows, stride", [(300, 4096), (24, 8192), (8, 16_384)])
def test_register_rows_graph_replay_and_stale_plan(rows, stride, gen):
    """One plan and one captured graph, replayed with new lengths (rows moving between no selection,
    register rows and back) and new logits: every replay exact; the plan reads STALE once a live length
    differs from it. Then a graph of the call without a plan (the kernel alone), replayed the same way.
    Many rows on the narrow CTA, few on the wider ones."""
    k = 2048
    assert_register_rows_launch(rows, stride, torch.float32, threads=1024 if stride > 8192 else 512)
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    lengths = path_lengths(stride, k, gen, rows).cuda()
    out = torch.empty((rows, k), dtype=I32, device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(lengths, stride, k, workspace=workspace)
    pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace)  # warm-up outside capture

    def replay(graph, index, what):
        """New lengths and logits (but for replay 0), then the graph: exact."""
        if index > 0:
            new = path_lengths(stride, k, gen, rows)
            lengths.copy_(new)
            logits.copy_(make_logits(ALL_NAMES[index % len(ALL_NAMES)], rows, stride, torch.float32, gen, new))
        out.fill_(POISON)
        graph.replay()
        want, _ = reference.reference_topk(logits.cpu(), lengths.cpu(), k)
        assert_same(out, want, f"replay {index} {what}")

    planned = torch.cuda.CUDAGraph()
    with torch.cuda.graph(planned):
        pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace)
    for r in range(12):
        replay(planned, r, "with a plan")
        assert plan.status() == (plan_module.FRESH if r == 0 else plan_module.STALE), r
    assert not bool(workspace.buffer[:QUEUE_BYTES].any()), "work queue counters touched"

    # Without a plan the call is register_rows_kernel alone: captured once, exact on every replay.
    workspace.buffer.fill_(0x5A)  # nothing of the workspace is read
    unplanned = torch.cuda.CUDAGraph()
    with torch.cuda.graph(unplanned):
        pt.top_k_per_row(logits, lengths, k, out=out, workspace=workspace)
    for r in range(1, 7):
        replay(unplanned, r, "without a plan")


def test_register_rows_launch_is_one_kernel_of_its_own(gen):
    """A stride that fits registers launches register_rows_kernel, one kernel with a plan or without
    (it needs none of its own), whatever the rows; one column wider and more rows than the wider CTA
    holds at once (a wave: test_few_rows_register_rows_launch_kernels), the persistent kernel, behind
    its own plan kernel when it has no plan."""
    k = 2048
    kernels = pt._backend.require_cuda_kernels()
    wider = register_rows_stride() + 1
    beyond_wave = kernels.register_rows_resident_ctas(wider, torch.empty(1, device="cuda")) + 1
    for stride, rows, kernel, unplanned in ((register_rows_stride(), beyond_wave, "register_rows_kernel", 1),
                                            (wider, beyond_wave, "persistent_topk_kernel", 2)):
        logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
        lengths = path_lengths(stride, k, gen, rows).cuda()
        out = torch.empty((rows, k), dtype=I32, device="cuda")
        plan = pt.make_plan(lengths, stride, k)
        launched = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out, plan=plan))
        assert len(launched) == 1 and kernel in launched[0], (stride, launched)
        launched = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out))
        assert len(launched) == unplanned and kernel in launched[-1], (stride, launched)
        want, _ = reference.reference_topk(logits.cpu(), lengths.cpu(), k)
        assert_same(out, want, f"stride {stride} without a plan")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_cluster_launch_of_short_rows(dtype, gen):
    """Wide engine buffers of rows no longer than one CTA takes (a cluster launch whose plan has no team
    row, a CTA for every row): CTA b takes row b as a plain launch would, with no claim; the counters
    still reset; then a stale plan whose rows grew past a solo row's length (they are selected alone,
    streamed) is exact and reported."""
    rows, stride, k = 128, 163_840, 2048
    kernels = pt._backend.require_cuda_kernels()
    like = torch.empty(1, device="cuda", dtype=dtype)
    assert kernels.launch_cluster_size(rows, stride, like) > 1
    assert rows <= kernels.launch_grid(like)
    short = torch.randint(-2, kernels.solo_max_keys + 1, (rows,), generator=gen).to(I32)
    short[:4] = torch.tensor([0, k, k + 1, kernels.solo_max_keys], dtype=I32)
    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(short.cuda(), stride, k, workspace=workspace)
    assert planned_teams(plan, rows)[0] == 0, "no team row"
    grown = short.clone()
    grown[::5] = torch.randint(kernels.solo_max_keys + 1, stride + 1, (len(grown[::5]),), generator=gen).to(I32)
    for live, status in ((short, plan_module.FRESH), (short, plan_module.FRESH), (grown, plan_module.STALE)):
        logits = make_logits("normal", rows, stride, dtype, gen, live, device="cuda")
        want, _ = reference.reference_topk(logits.cpu(), live, k)
        out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
        pt.top_k_per_row(logits, live.cuda(), k, out=out, plan=plan, workspace=workspace)
        assert_same(out, want, f"{rows} rows of stride {stride}, {status}")
        assert not bool(workspace.buffer[:QUEUE_BYTES].any()), "work queue counters left set"
        assert plan.status() == status


@pytest.mark.parametrize("k", [512, 1024, 2048, 13_000])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_rows_past_a_team_of_eight(k, dtype, gen):
    """Rows past what 8 CTAs hold in shared memory (196,608 columns): larger teams up to 262,144 and
    beyond, and past what the largest team holds (slices over global memory), all exact."""
    kernels = pt._backend.require_cuda_kernels()
    eight, largest = kernels.portable_cluster_size * kernels.smem_keys, kernels.max_cluster_size * kernels.smem_keys
    stride = largest + 4000
    lengths = torch.tensor([eight - 1, eight, eight + 1, 229_376, 262_143, 262_144, 262_145, largest,
                            largest + 11, stride, k + 1, k, 5, 0], dtype=I32)
    logits = make_logits("shared_high_bits", len(lengths), stride, dtype, gen, lengths, device="cuda")
    check(logits, lengths, k, what="long rows")


@pytest.mark.parametrize("rows", [1, 8, 64])
def test_rows_of_256k_on_wide_teams(rows, gen):
    """DeepSeek-V4 shapes: rows of up to 262,144 compressed slots, k = 512 and 1024."""
    stride = 262_144
    for k in (512, 1024):
        lengths = torch.randint(1, stride + 1, (rows,), generator=gen).to(I32)
        lengths[0] = stride
        logits = make_logits("normal", rows, stride, torch.float32, gen, lengths, device="cuda")
        check(logits, lengths, k, what=f"{rows} rows k={k}")


def streamed_batch(gen, dtype, dist, k, rows=None, stride=None):
    """A batch that streams its long rows (Policy::streams: rows for at least half the grid, a stride past
    kStreamMinStride, so a plain launch where every row has one CTA): lengths at every path's edges and
    around kStreamMinKeys, the rest long."""
    kernels = pt._backend.require_cuda_kernels()
    like = torch.empty(1, device="cuda")
    rows = rows or -(-kernels.resident_ctas(like) // 2)
    stride = stride or kernels.stream_min_stride + 1001  # odd: rows start at every 16-byte offset
    assert kernels.launch_cluster_size(rows, stride, like) == 1
    lengths = path_lengths(stride, k, gen, rows)
    edge = kernels.stream_min_keys
    streamed = torch.tensor([edge - 1, edge, edge + 1, edge + 2, edge + 3, edge + 5, edge + 127, stride - 1, stride],
                            dtype=I32)
    lengths[-len(streamed):] = streamed
    long_rows = torch.randint(edge + 1, stride + 1, (rows // 2,), generator=gen).to(I32)
    lengths[: rows // 2] = long_rows
    logits = make_logits(dist, rows, stride, dtype, gen, lengths, device="cuda")
    return logits, lengths


@pytest.mark.parametrize("dist", ALL_NAMES)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_streamed_rows(dist, dtype, gen):
    """Long rows alone, streamed from global memory: a list of the keys at or above a sampled bound, then
    the selection over it; when the list cannot hold the row's top k (ascending rows put them all in one
    warp's span, ties make most keys equal to the bound) the row falls back to passes over global
    memory. Exact either way, every dtype and distribution, unaligned row starts."""
    for k in (7, 2048):
        logits, lengths = streamed_batch(gen, dtype, dist, k)
        check(logits, lengths, k, what=f"streamed {dist} k={k}")


@pytest.mark.parametrize("k, by_value", [(1, False), (512, True), (4096, False), (13_000, False)])
def test_streamed_rows_every_k(k, by_value, gen):
    """k = 1 (a list of a few keys), sorted with values, and k past what the list holds (the fallback)."""
    logits, lengths = streamed_batch(gen, torch.float32, "normal", k)
    check(logits, lengths, k, by_value=by_value, what=f"streamed k={k}")


@pytest.mark.parametrize("by_value", [False, True])
def test_streamed_rows_through_the_page_table(by_value, gen):
    """The page-table transform of streamed rows: fused into their selection's writes, or (sorted) applied
    by the row's finish."""
    k, page_size = 2048, 64
    logits, lengths = streamed_batch(gen, torch.float32, "normal", k)
    rows, stride = logits.shape
    pages = (stride + page_size - 1) // page_size
    table = torch.randint(0, 1 << 20, (rows, pages), generator=gen).to(I32)
    want, _ = reference.reference_topk(logits.cpu(), lengths, k, sorted=by_value, page_table=table,
                                       page_size=page_size)
    out, _ = poisoned(rows, k, logits.dtype)
    pt.top_k_page_table_transform(logits, lengths.cuda(), table.cuda(), page_size, k, out=out, sorted=by_value)
    assert_same(out, want, "streamed rows through the page table")


@pytest.mark.parametrize("dist", ["normal", "shared_high_bits", "specials"])
def test_team_rows_among_many_solo_rows(dist, gen):
    """More rows than clusters: long rows go to teams, the rest to single CTAs, in one launch."""
    rows, stride, k = 300, 70_000, 2048
    lengths = path_lengths(stride, k, gen, rows)
    logits = make_logits(dist, rows, stride, torch.float32, gen, lengths, device="cuda")
    check(logits, lengths, k, what=f"300 rows {dist}")


# Batches of many rows (more than the resident clusters of 8) take clusters of the smallest size among
# 2, 3, 4, 6, 8, 16 whose slices hold the stride (csrc/policy.cuh kClusterSizes, csrc/launch.cuh); few
# rows take clusters of 8.
CLUSTER_SIZE_OF_STRIDE = {40_000: 2, 70_000: 3, 90_000: 4, 110_000: 6, 131_072: 6, 160_000: 8, 190_000: 8}


@pytest.mark.parametrize("rows, stride", [(200, 40_000), (100, 70_000), (40, 90_000), (40, 110_000), (64, 131_072),
                                          (40, 160_000), (40, 190_000)])
def test_every_cluster_size(rows, stride, gen):
    k = 2048
    kernels = pt._backend.require_cuda_kernels()
    like = torch.empty(1, device="cuda")
    assert kernels.launch_cluster_size(rows, stride, like) == CLUSTER_SIZE_OF_STRIDE[stride]
    lengths = path_lengths(stride, k, gen, rows)
    lengths[rows // 2:] = stride  # at least half the rows are team rows, some as long as the stride
    logits = make_logits("normal", rows, stride, torch.float32, gen, lengths, device="cuda")
    check(logits, lengths, k, what=f"{rows} rows of stride {stride}")


def test_launch_cluster_sizes():
    """Few rows: none where the stride fits register rows (up to few_register_rows_max_stride; a wave of
    rows up to wave_register_rows_max_stride), clusters of 8 past it, of 16 where slices of 8 would leave
    no room to compact; many rows: none below a solo row's length, else the smallest cluster whose slices
    hold the stride."""
    kernels = pt._backend.require_cuda_kernels()
    like = torch.empty(1, device="cuda")
    few, eight = kernels.team_min_length, kernels.portable_cluster_size
    widest = kernels.few_register_rows_max_stride
    assert kernels.launch_cluster_size(1, few, like) == 1
    assert kernels.launch_cluster_size(8, few + 16, like) == 1 and kernels.register_rows_threads(8, few + 16, like)
    assert kernels.launch_cluster_size(8, widest, like) == 1 and kernels.register_rows_threads(8, widest, like)
    assert kernels.launch_cluster_size(8, widest + 16, like) == eight
    wave = kernels.register_rows_resident_ctas(few + 16, like)
    assert kernels.launch_cluster_size(wave, few + 16, like) == 1 and kernels.register_rows_threads(wave, few + 16, like)
    assert kernels.launch_cluster_size(wave + 1, few + 16, like) == 1
    assert not kernels.register_rows_threads(wave + 1, few + 16, like)
    # 163,840 columns (V3.2 engines): clusters of 16 when slices of 20,480 on 8 CTAs are past team_slice_keys.
    slice_of_eight = -(-163_840 // eight)
    assert kernels.launch_cluster_size(1, 163_840, like) == (eight if slice_of_eight <= kernels.team_slice_keys else 16)
    assert kernels.launch_cluster_size(1, eight * kernels.team_slice_keys, like) == eight
    assert kernels.launch_cluster_size(1, eight * kernels.smem_keys, like) == 16  # no room left to compact
    assert kernels.launch_cluster_size(1, 262_144, like) == 16  # Hopper runs clusters of up to 16
    assert kernels.launch_cluster_size(64, 262_144, like) == 16
    assert kernels.launch_cluster_size(300, kernels.solo_max_keys, like) == 1
    assert kernels.launch_cluster_size(300, 2 * kernels.solo_max_keys, like) == 2
    # Rows for at least half the grid, stride past kStreamMinStride: a plain launch, long rows streamed.
    half = -(-kernels.resident_ctas(like) // 2)
    assert kernels.launch_cluster_size(half, kernels.stream_min_stride + 16, like) == 1
    assert kernels.launch_cluster_size(half, kernels.stream_min_stride, like) > 1
    assert kernels.launch_cluster_size(half - 1, kernels.stream_min_stride + 16, like) > 1


PLAN_HEADER_WORDS = 16  # csrc/plan.cuh PlanHeader
ORDER_ROW_BITS = 27  # csrc/plan.cuh OrderEntry


def planned_teams(plan, rows):
    """(team rows, cluster size, capacity, [(row, team size)] in the order) read from a plan buffer."""
    words = plan.buffer.view(torch.int32).cpu()
    team_rows, cluster_size, capacity = int(words[1]), int(words[4]), int(words[5])
    order = words[PLAN_HEADER_WORDS + rows: PLAN_HEADER_WORDS + 2 * rows]
    entries = [(int(e) & ((1 << ORDER_ROW_BITS) - 1), (int(e) >> ORDER_ROW_BITS) + 1) for e in order]
    return team_rows, cluster_size, capacity, entries


@pytest.mark.parametrize("rows, stride, spread", [(64, 262_144, (1024, 262_144)), (64, 163_840, (4096, 163_840)),
                                                  (128, 65_536, (4096, 65_536)), (8, 131_072, (20_000, 131_072)),
                                                  (300, 262_144, (1024, 262_144))])
def test_plan_sizes_every_team_from_the_lengths(rows, stride, spread, gen):
    """The plan's teams (csrc/plan.cuh): team rows are those past kTeamMinLength that get 2 CTAs or more,
    listed first, longest first, each with a team of the cluster's size or a half, quarter... of it that
    never grows along the order (a cluster splits into teams by halving); all teams together fit the
    grid whenever the plan widened them; every other row once after them. Then the answer is exact."""
    k = 2048
    kernels = pt._backend.require_cuda_kernels()
    lo, hi = spread
    lengths = torch.exp(torch.empty(rows).uniform_(float(torch.tensor(lo).log()), float(torch.tensor(hi).log()),
                                                    generator=gen)).to(I32)
    logits = make_logits("normal", rows, stride, torch.float32, gen, lengths, device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(lengths.cuda(), stride, k, workspace=workspace)
    team_rows, cluster_size, capacity, entries = planned_teams(plan, rows)
    assert cluster_size == kernels.launch_cluster_size(rows, stride, logits)
    assert sorted(r for r, _ in entries) == list(range(rows))
    chain = {cluster_size}
    while min(chain) % 2 == 0 and min(chain) // 2 >= 2:
        chain.add(min(chain) // 2)
    sizes = [size for _, size in entries[:team_rows]]
    assert all(size in chain for size in sizes), sizes
    assert all(a >= b for a, b in zip(sizes, sizes[1:])), sizes
    assert all(size == 1 for _, size in entries[team_rows:])
    assert all(int(lengths[r]) > kernels.team_min_length for r, _ in entries[:team_rows])
    team_lengths = [int(lengths[r]) for r, _ in entries[:team_rows]]
    # Longest first by length class: (top / 1.25, top], tops at 2^e x 5/4, 6/4, 7/4, 8/4.
    assert all(a * 1.25 >= b for a, b in zip(team_lengths, team_lengths[1:])), "longest first (by length class)"
    for r, size in entries[:team_rows]:  # slices fit shared memory
        assert -(-int(lengths[r]) // size) <= kernels.smem_keys or size == cluster_size
    widenings = int(plan.buffer.view(torch.int32)[7])
    if widenings > 0:
        busy = sum(sizes) + sum(1 for r, _ in entries[team_rows:] if int(lengths[r]) > k)
        assert busy <= capacity, (busy, capacity)
    out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    pt.top_k_per_row(logits, lengths.cuda(), k, out=out, plan=plan, workspace=workspace)
    want, _ = reference.reference_topk(logits.cpu(), lengths, k)
    assert_same(out, want, f"{rows} rows of {lo}..{hi}, stride {stride}")
    assert not bool(workspace.buffer[:QUEUE_BYTES].any()), "work queue counters left set"
    assert plan.status() == plan_module.FRESH


QUEUE_BYTES = 256  # the work queue's counters at the workspace's start (csrc/dispatch.cuh WorkspaceLayout)


def queue_lengths(kind, rows, stride, g):
    if kind == "random":
        return path_lengths(stride, 2048, g, rows)
    if kind == "full":
        return torch.full((rows,), stride, dtype=I32)
    lengths = torch.randint(0, 16_000, (rows,), generator=g).to(I32)  # "scattered": three long rows
    lengths[[0, 1, rows - 3]] = stride
    return lengths


# The work queue's counters reset themselves (csrc/dispatch.cuh): plain launches with fewer CTAs than
# rows and with a CTA for every row; team launches whose clusters claim team rows (more team rows than
# clusters, or more rows than one search window holds) and whose clusters skip the claims; batches
# with and without rows left for single CTAs.
@pytest.mark.parametrize("rows, stride, kind", [(3000, 9000, "random"), (100, 9000, "random"), (8, 131_072, "full"),
                                                (64, 131_072, "full"), (64, 131_072, "random"),
                                                (1000, 40_000, "scattered"), (1000, 40_000, "random"),
                                                (600, 20_000, "random"), (520, 40_000, "full")])
def test_work_queue_counters_reset_themselves(rows, stride, kind, gen):
    k = 2048
    lengths = queue_lengths(kind, rows, stride, gen)
    logits = make_logits("normal", rows, stride, torch.float32, gen, lengths, device="cuda")
    want, _ = reference.reference_topk(logits.cpu(), lengths, k)
    workspace = pt.Workspace("cuda", rows, stride, k)
    for call in range(3):
        out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
        pt.top_k_per_row(logits, lengths.cuda(), k, out=out, workspace=workspace)
        torch.cuda.synchronize()
        assert_same(out, want, f"call {call}, {rows} rows of stride {stride} ({kind})")
        counters = workspace.buffer[:QUEUE_BYTES]
        assert not bool(counters.any()), f"call {call}: counters left at {counters[:8].tolist()}"


@pytest.mark.parametrize("width, offset", [(4099, 0), (30001, 1), (77777, 3), (50, 2)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_odd_strides_and_row_strided_views(width, offset, dtype, gen):
    rows, k = 9, 2048
    pitch = width + offset + 5
    base = make_logits("normal", rows, pitch, dtype, gen, device="cuda")
    view = base[:, offset:offset + width]  # misaligned start, row pitch != width
    lengths = path_lengths(width, k, gen, rows)
    check(view, lengths, k, what=f"view width={width} offset={offset}")


def test_many_rows_and_huge_lengths(gen):
    rows, stride = 3000, 9000
    lengths = torch.randint(-10, 2**31 - 1, (rows,), generator=gen).to(I32)
    lengths[::7] = torch.randint(0, stride, (len(lengths[::7]),), generator=gen).to(I32)
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    check(logits, lengths, 2048, what="3000 rows")


@pytest.mark.parametrize("next_n", [1, 2, 3])
def test_decode(next_n, gen):
    batch, stride, k = 17, 70_000, 2048
    seq_lens = torch.randint(0, stride + 10, (batch,), generator=gen).to(I32)
    seq_lens[0] = 1
    logits = make_logits("normal", batch * next_n, stride, torch.bfloat16, gen, device="cuda")
    want, _ = reference.reference_topk(logits.cpu(), reference.decode_lengths(seq_lens, next_n), k)
    out, _ = poisoned(batch * next_n, k, logits.dtype)
    pt.top_k_per_row_decode(logits, seq_lens.cuda(), next_n, k, out=out)
    assert_same(out, want, f"decode next_n={next_n}")


def test_prefill(gen):
    rows, stride, k = 40, 60_000, 2048
    starts = torch.randint(-5, stride, (rows,), generator=gen).to(I32)
    ends = (starts + torch.randint(-100, 50_000, (rows,), generator=gen)).to(I32)
    logits = make_logits("ties", rows, stride, torch.float32, gen, device="cuda")
    for by_value in (False, True):
        want, want_val = reference.reference_topk(logits.cpu(), ends - starts, k, starts=starts, sorted=by_value)
        out, values = poisoned(rows, k, logits.dtype)
        pt.top_k_per_row_prefill(logits, starts.cuda(), ends.cuda(), k, out=out, values=values, sorted=by_value)
        assert_same(out, want, f"prefill sorted={by_value}")
        assert_same(bits(values), bits(want_val), "prefill values")


@pytest.mark.parametrize("by_value", [False, True])
def test_page_table_transform(by_value, gen):
    rows, stride, k, page_size = 12, 80_000, 2048, 64
    lengths = path_lengths(stride, k, gen, rows)
    pages = (stride + page_size - 1) // page_size
    table = torch.randint(0, 1 << 20, (rows, pages), generator=gen).to(I32)
    logits = make_logits("normal", rows, stride, torch.float16, gen, lengths, device="cuda")
    want, _ = reference.reference_topk(logits.cpu(), lengths, k, sorted=by_value, page_table=table,
                                       page_size=page_size)
    out, _ = poisoned(rows, k, logits.dtype)
    pt.top_k_page_table_transform(logits, lengths.cuda(), table.cuda(), page_size, k, out=out, sorted=by_value)
    assert_same(out, want, "page table")


def test_graph_capture_replays_with_new_lengths(gen):
    """Capture once at the largest shape; replay with lengths that move rows between all paths."""
    rows, stride, k = 16, 70_000, 2048
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    lengths = torch.full((rows,), stride, dtype=I32, device="cuda")
    out = torch.empty((rows, k), dtype=I32, device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)
    pt.top_k_per_row(logits, lengths, k, out=out, workspace=workspace)  # warm-up outside capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        pt.top_k_per_row(logits, lengths, k, out=out, workspace=workspace)
    workspace.lock()
    cpu_logits = logits.cpu()
    for replay in range(100):
        new = path_lengths(stride, k, gen, rows)
        lengths.copy_(new)
        if replay % 10 == 0:
            logits.copy_(make_logits(ALL_NAMES[replay // 10 % len(ALL_NAMES)], rows, stride, torch.float32, gen))
            cpu_logits = logits.cpu()
        out.fill_(POISON)
        graph.replay()
        want, _ = reference.reference_topk(cpu_logits, new, k)
        assert_same(out, want, f"replay {replay}")
    with pytest.raises(RuntimeError, match="locked"):
        pt.top_k_per_row(logits[:, :1000].contiguous().repeat(2, 80), lengths.repeat(2), k, workspace=workspace)


def kernels_of(fn):
    """Names of the CUDA kernels one call of fn() launches."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def test_one_kernel_per_call_with_a_plan_two_without(gen):
    rows, stride, k = 64, 140_000, 2048
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    lengths = path_lengths(stride, k, gen, rows).cuda()
    out = torch.empty((rows, k), dtype=I32, device="cuda")
    values = torch.empty((rows, k), device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(lengths, stride, k, workspace=workspace)
    with_plan = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out, values=values, plan=plan,
                                                    workspace=workspace))
    assert len(with_plan) == 1 and "persistent_topk_kernel" in with_plan[0], with_plan
    without = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out, values=values, workspace=workspace))
    assert len(without) == 2 and "make_plan_kernel" in without[0] and "persistent_topk_kernel" in without[1], without
    planning = kernels_of(lambda: pt.make_plan(lengths, stride, k, workspace=workspace))
    assert len(planning) == 1 and "make_plan_kernel" in planning[0], planning


@pytest.mark.parametrize("rows,stride", [(300, 9000), (200, 9000), (8, 140_000), (600, 60_000), (40, 20_000)])
def test_each_launch_kind_runs_its_own_kernel(gen, rows, stride):
    """Plain launches run the persistent kernel built without team code (kClusters false), launches of
    clusters the one with it (csrc/dispatch.cuh); plain launches with more rows than CTAs the one that
    looks up each CTA's next row ahead (kPrefetchNext): the kernel's name says which, and all are exact."""
    k = 2048
    kernels = pt._backend.require_cuda_kernels()
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    lengths = path_lengths(stride, k, gen, rows).cuda()
    out = torch.empty((rows, k), dtype=I32, device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(lengths, stride, k, workspace=workspace)
    names = kernels_of(lambda: pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace))
    clusters = kernels.launch_cluster_size(rows, stride, logits) > 1
    ahead = not clusters and rows > kernels.resident_ctas(logits)
    assert len(names) == 1 and "persistent_topk_kernel" in names[0], names
    instance = f"<float, {str(clusters).lower()}, {str(ahead).lower()}>"
    assert instance in names[0].replace("(bool)1", "true").replace("(bool)0", "false"), (instance, names)
    out.fill_(POISON)
    pt.top_k_per_row(logits, lengths, k, out=out, plan=plan, workspace=workspace)
    want, _ = reference.reference_topk(logits.cpu(), lengths.cpu(), k)
    assert_same(out, want, f"{rows} x {stride}")


def test_rows_looked_up_ahead(gen):
    """Plain launches with more rows than CTAs look each CTA's next row up during the current one (its
    order entry, bound, start and planned length by asynchronous copies, then its logits into L2):
    exact with rows of every path in one batch, with a plan and without, sorted with values; with
    prefill's windows, decode's next_n and the page table fused into the writes (raw indices beside);
    and a stale plan (rows swapped, grown, shrunk: the planned length checked is the one looked up
    ahead) exact and reported STALE."""
    kernels = pt._backend.require_cuda_kernels()
    k, stride, like = 2048, 10_240, torch.empty(1, device="cuda")
    rows = 2 * kernels.resident_ctas(like) + 38
    assert kernels.launch_cluster_size(rows, stride, like) == 1 and kernels.register_rows_threads(rows, stride, like) == 0
    # (test_each_launch_kind_runs_its_own_kernel checks that such a launch runs the kPrefetchNext
    # instance; no profiler here, so that compute-sanitizer can run this test.)
    lengths = path_lengths(stride, k, gen, rows)
    logits = make_logits("ties", rows, stride, torch.float32, gen, lengths, device="cuda")
    check(logits, lengths, k, what="rows of every path")
    check(logits, lengths, k, by_value=True, what="rows of every path, sorted")

    workspace = pt.Workspace("cuda", rows, stride, k)
    plan = pt.make_plan(lengths.cuda(), stride, k, workspace=workspace)
    want, _ = reference.reference_topk(logits.cpu(), lengths, k)
    out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    pt.top_k_per_row(logits, lengths.cuda(), k, out=out, plan=plan, workspace=workspace)
    assert_same(out, want, "with a plan")
    assert plan.status() == plan_module.FRESH
    swapped, grown, shrunk = lengths.flip(0), torch.clamp(lengths + 3000, max=stride), lengths // 3
    for name, live in (("swapped", swapped), ("grown", grown), ("shrunk", shrunk)):
        fresh = pt.make_plan(lengths.cuda(), stride, k, workspace=workspace)
        live_logits = make_logits("normal", rows, stride, torch.float32, gen, live, device="cuda")
        want, _ = reference.reference_topk(live_logits.cpu(), live, k)
        out.fill_(POISON)
        pt.top_k_per_row(live_logits, live.cuda(), k, out=out, plan=fresh, workspace=workspace)
        assert_same(out, want, f"stale plan ({name})")
        assert fresh.status() == plan_module.STALE, name
        assert not bool(workspace.buffer[:QUEUE_BYTES].any()), "work queue counters left set"

    starts = torch.randint(-5, stride, (rows,), generator=gen).to(I32)
    ends = (starts + torch.randint(-100, stride, (rows,), generator=gen)).to(I32)
    col = torch.arange(stride, device="cuda")[None, :]
    outside = (col < starts.cuda().clamp(min=0)[:, None]) | (col >= ends.cuda()[:, None])
    windowed = torch.where(outside, float("nan"), make_logits("normal", rows, stride, torch.bfloat16, gen,
                                                              device="cuda"))
    want, _ = reference.reference_topk(windowed.cpu(), ends - starts, k, starts=starts)
    out.fill_(POISON)
    pt.top_k_per_row_prefill(windowed, starts.cuda(), ends.cuda(), k, out=out)
    assert_same(out, want, "prefill windows")

    next_n = 2
    seq_lens = torch.randint(0, stride + 10, (rows // next_n,), generator=gen).to(I32)
    decode_logits = make_logits("normal", rows // next_n * next_n, stride, torch.float16, gen,
                                reference.decode_lengths(seq_lens, next_n), device="cuda")
    decode_plan = pt.make_plan(seq_lens.cuda(), stride, k, next_n=next_n)
    want, _ = reference.reference_topk(decode_logits.cpu(), reference.decode_lengths(seq_lens, next_n), k)
    out = pt.top_k_per_row_decode(decode_logits, seq_lens.cuda(), next_n, k, plan=decode_plan)
    assert_same(out, want, f"decode next_n={next_n}")
    assert decode_plan.status() == plan_module.FRESH

    page_size = 64
    table = torch.randint(0, 1 << 20, (rows, (stride + page_size - 1) // page_size), generator=gen).to(I32)
    want, _ = reference.reference_topk(logits.cpu(), lengths, k, page_table=table, page_size=page_size)
    want_raw, _ = reference.reference_topk(logits.cpu(), lengths, k)
    out.fill_(POISON)
    raw = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    plan = pt.make_plan(lengths.cuda(), stride, k, workspace=workspace)
    pt.top_k_page_table_transform(logits, lengths.cuda(), table.cuda(), page_size, k, raw_indices=raw, out=out,
                                  plan=plan, workspace=workspace)
    assert_same(out, want, "page table")
    assert_same(raw, want_raw, "raw indices beside the page table")


def stale_cases(stride, k, g):
    """(name, planned lengths, live lengths) pairs that a decode step's plan may meet."""
    kernels = pt._backend.require_cuda_kernels()
    solo = kernels.solo_max_keys
    rows = 40
    base = path_lengths(stride, k, g, rows)
    grown, shrunk, swapped = base.clone(), base.clone(), base.clone()
    grown[::3] = torch.clamp(grown[::3] + 5000, max=stride)
    shrunk[::2] = torch.clamp(shrunk[::2] // 3, min=0)
    swapped[[0, 1, 2, 3]] = base[[3, 2, 1, 0]]
    across = torch.full((rows,), solo - 50, dtype=I32)  # solo rows that grow into team rows
    across_live = across.clone()
    across_live[::5] = solo + 50
    longer = torch.full((rows,), 3000, dtype=I32)  # more rows long than planned
    longer_live = torch.full((rows,), stride, dtype=I32)
    team_to_short = torch.full((rows,), stride, dtype=I32)  # team rows that become short or empty
    team_to_short_live = team_to_short.clone()
    team_to_short_live[::2] = torch.randint(-3, k + 1, (rows // 2,), generator=g).to(I32)
    return [("grown", base, grown), ("shrunk", base, shrunk), ("swapped", base, swapped),
            ("past the team threshold", across, across_live), ("more long rows", longer, longer_live),
            ("team rows gone short", team_to_short, team_to_short_live)]


@pytest.mark.parametrize("rows_scale", [1, 8])
def test_stale_plans_are_exact_and_reported(rows_scale, gen):
    """A plan made from other lengths: every call still exact (each row from its live length), and the
    plan says STALE; a plan of the live lengths stays FRESH."""
    stride, k = 210_000, 2048
    for name, planned, live in stale_cases(stride, k, gen):
        planned, live = planned.repeat(rows_scale), live.repeat(rows_scale)
        rows = len(live)
        logits = make_logits("normal", rows, stride, torch.float32, gen, live, device="cuda")
        workspace = pt.Workspace("cuda", rows, stride, k)
        plan = pt.make_plan(planned.cuda(), stride, k, workspace=workspace)
        want, _ = reference.reference_topk(logits.cpu(), live, k)
        for by_value in (False, True):
            out, values = poisoned(rows, k, logits.dtype)
            pt.top_k_per_row(logits, live.cuda(), k, out=out, values=values if by_value else None, plan=plan,
                             workspace=workspace, sorted=by_value)
            want_idx, want_val = reference.reference_topk(logits.cpu(), live, k, sorted=by_value)
            assert_same(out, want_idx, f"stale plan ({name}) sorted={by_value}")
            if by_value:
                assert_same(bits(values), bits(want_val), f"stale plan ({name}) values")
        assert plan.status() == plan_module.STALE, name
        fresh = pt.make_plan(live.cuda(), stride, k, workspace=workspace)
        out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
        pt.top_k_per_row(logits, live.cuda(), k, out=out, plan=fresh, workspace=workspace)
        assert_same(out, want, f"fresh plan after {name}")
        assert fresh.status() == plan_module.FRESH, name


def test_plan_for_decode_and_prefill_windows(gen):
    batch, next_n, stride, k = 9, 3, 70_000, 2048
    seq_lens = torch.randint(0, stride + 10, (batch,), generator=gen).to(I32)
    logits = make_logits("normal", batch * next_n, stride, torch.bfloat16, gen, device="cuda")
    plan = pt.make_plan(seq_lens.cuda(), stride, k, next_n=next_n)
    out = pt.top_k_per_row_decode(logits, seq_lens.cuda(), next_n, k, plan=plan)
    want, _ = reference.reference_topk(logits.cpu(), reference.decode_lengths(seq_lens, next_n), k)
    assert_same(out, want, "decode with a plan")
    assert plan.status() == plan_module.FRESH
    starts = torch.randint(-5, stride, (20,), generator=gen).to(I32)
    ends = (starts + torch.randint(-100, 50_000, (20,), generator=gen)).to(I32)
    logits = make_logits("ties", 20, stride, torch.float32, gen, device="cuda")
    plan = pt.make_plan(ends.cuda(), stride, k, row_starts=starts.cuda(), ends=True)
    out = pt.top_k_per_row_prefill(logits, starts.cuda(), ends.cuda(), k, plan=plan)
    want, _ = reference.reference_topk(logits.cpu(), ends - starts, k, starts=starts)
    assert_same(out, want, "prefill with a plan")
    assert plan.status() == plan_module.FRESH


def test_plan_reused_by_61_layers_in_one_graph(gen):
    """A decode step as engines capture it: the plan made once, then 61 layers, each with its own
    logits, all in one CUDA graph; replayed with new lengths and new logits, sampled layers exact."""
    layers, rows, stride, k = 61, 8, 70_000, 2048
    logits = [torch.empty((rows, stride), device="cuda") for _ in range(layers)]
    outs = [torch.empty((rows, k), dtype=I32, device="cuda") for _ in range(layers)]
    lengths = torch.full((rows,), stride, dtype=I32, device="cuda")
    workspace = pt.Workspace("cuda", rows, stride, k)

    def step():
        plan = pt.make_plan(lengths, stride, k, workspace=workspace)
        for layer in range(layers):
            pt.top_k_per_row(logits[layer], lengths, k, out=outs[layer], plan=plan, workspace=workspace)
        return plan

    step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        plan = step()
    workspace.lock()
    for replay in range(3):
        new = path_lengths(stride, k, gen, rows)
        lengths.copy_(new)
        for layer in range(layers):
            logits[layer].copy_(make_logits("normal", rows, stride, torch.float32, gen, new))
            outs[layer].fill_(POISON)
        graph.replay()
        torch.cuda.synchronize()
        for layer in (0, 1, 30, layers - 1):
            want, _ = reference.reference_topk(logits[layer].cpu(), new, k)
            assert_same(outs[layer], want, f"replay {replay} layer {layer}")
        assert plan.status() == plan_module.FRESH


def finishes_within(seconds, fn):
    """Run fn() (which launches GPU work) and wait for the GPU at most `seconds`: False on a hang."""
    fn()
    done = torch.cuda.Event()
    done.record()
    deadline = time.monotonic() + seconds
    while not done.query():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


@pytest.mark.parametrize("rows, length", [(1, 262_144), (4096, 256), (256, 262_144), (256, 131_072)])
def test_no_hang(rows, length, gen):
    k = 2048
    lengths = torch.full((rows,), length, dtype=I32)
    logits = make_logits("normal", rows, length, torch.float32, gen, device="cuda")
    out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    assert finishes_within(30, lambda: pt.top_k_per_row(logits, lengths.cuda(), k, out=out)), "hang"
    sample = torch.randint(0, rows, (4,), generator=gen)
    want, _ = reference.reference_topk(logits[sample].cpu(), lengths[sample], k)
    assert_same(out[sample], want, f"{rows} rows of {length}")


def test_no_hang_beside_a_kernel_holding_the_sms(gen):
    """A call while matrix products that fill every SM run on a second stream: the clusters wait for
    SMs to free up, never for each other across clusters."""
    rows, stride, k = 64, 262_144, 1024
    lengths = torch.randint(1, stride + 1, (rows,), generator=gen).to(I32)
    logits = make_logits("normal", rows, stride, torch.float32, gen, device="cuda")
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    out = torch.full((rows, k), POISON, dtype=I32, device="cuda")
    side = torch.cuda.Stream()
    plan = pt.make_plan(lengths.cuda(), stride, k)
    torch.cuda.synchronize()

    def both():
        with torch.cuda.stream(side):
            for _ in range(4):
                a @ a
        pt.top_k_per_row(logits, lengths.cuda(), k, out=out, plan=plan)

    assert finishes_within(60, both), "hang"
    torch.cuda.synchronize()
    want, _ = reference.reference_topk(logits.cpu(), lengths, k)
    assert_same(out, want, "beside matrix products")


def test_repeated_calls_are_bitwise_deterministic(gen):
    rows, stride, k = 32, 131_072, 2048
    lengths = path_lengths(stride, k, gen, rows).cuda()
    logits = make_logits("ties", rows, stride, torch.float32, gen, device="cuda")
    first = pt.top_k_per_row(logits, lengths, k)
    for _ in range(20):
        assert torch.equal(pt.top_k_per_row(logits, lengths, k), first)
